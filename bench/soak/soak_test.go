package main

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/pushgate/pushgate/internal/redistest"
)

// logWriter passes the soak's lines to the test log.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestSoakQuick is `make soak` in small: the same run for 20 s with fewer
// clients and users, against a redis-server of its own. Every request must
// get the one answer its client expects and every delivery must succeed;
// memory and goroutines are not judged over so short a run.
func TestSoakQuick(t *testing.T) {
	redistest.Require(t)
	cfg := Config{
		Duration: 20 * time.Second, Clients: 4, Users: 40, DevicesPerUser: 3, Rate: 40,
		Policy: "../../policy/examples/per_user", Dir: t.TempDir(),
		Report: 5 * time.Second, Out: logWriter{t},
	}
	res, err := run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.defaults()
	t.Log("\n" + summary(res, &cfg))
	if !res.Passed() {
		t.Fatalf("the soak failed: %s", strings.Join(res.Failures, "; "))
	}
	// A run that made no request of some kind, or delivered nothing, has
	// not tested what it claims to.
	for _, k := range kinds {
		if res.Requests[k] == 0 {
			t.Errorf("no %s request was made", k)
		}
	}
	if res.Sends == 0 || res.Deliveries["Success"] == 0 || res.Accepted == 0 {
		t.Errorf("nothing was delivered: %d sends, deliveries %v, %d accepted by the fakes", res.Sends, res.Deliveries, res.Accepted)
	}
}

// series makes samples every 5 s for 10 minutes, plus one after a drain,
// with the given live heap and goroutine functions of time and noise.
func series(heap func(s float64) float64, gor func(s float64) float64, rest int) []Sample {
	rng := rand.New(rand.NewPCG(1, 2))
	var ss []Sample
	for at := 0; at <= 600; at += 5 {
		x := float64(at)
		ss = append(ss, Sample{At: time.Duration(at) * time.Second,
			HeapLive:   uint64(heap(x) + (rng.Float64()-0.5)*3*(1<<20)),
			Goroutines: int(gor(x)) + rng.IntN(120)})
	}
	ss[0].Goroutines = 560
	return append(ss, Sample{At: 605 * time.Second, HeapLive: uint64(heap(600)), Goroutines: rest})
}

// TestCheckGrowth shows that the growth checks pass a flat, noisy run and
// fail each kind of leak.
func TestCheckGrowth(t *testing.T) {
	const mib = 1 << 20
	flatHeap := func(float64) float64 { return 14 * mib }
	flatGor := func(float64) float64 { return 690 }
	warmup, end := 120*time.Second, 600*time.Second
	cases := map[string]struct {
		samples []Sample
		want    string // a substring of the one expected failure; "" for none
	}{
		"flat":                  {series(flatHeap, flatGor, 565), ""},
		"warm-up growth only":   {series(func(x float64) float64 { return (8 + 6*min(x, 100)/100) * mib }, flatGor, 565), ""},
		"heap leak":             {series(func(x float64) float64 { return 14*mib + x*100*mib/3600 }, flatGor, 565), "live heap grew"},
		"goroutine leak":        {series(flatHeap, func(x float64) float64 { return 690 + x/2 }, 565), "goroutines grew"},
		"goroutines left after": {series(flatHeap, flatGor, 700), "goroutines left behind"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			fails := checkGrowth(c.samples, warmup, end, DefaultLimits)
			switch {
			case c.want == "" && len(fails) > 0:
				t.Fatalf("failed a healthy run: %v", fails)
			case c.want != "" && (len(fails) != 1 || !strings.Contains(fails[0], c.want)):
				t.Fatalf("failures %q, want one about %q", fails, c.want)
			}
		})
	}

	// A 3-minute run: its noise alone must not fail it, a leak of a few
	// MiB a minute must.
	short := func(heap func(float64) float64) []Sample {
		var ss []Sample
		rng := rand.New(rand.NewPCG(3, 4))
		for at := 0; at <= 180; at += 5 {
			ss = append(ss, Sample{At: time.Duration(at) * time.Second, HeapLive: uint64(heap(float64(at)) + (rng.Float64()-0.5)*3*mib), Goroutines: 700})
		}
		return ss
	}
	if fails := checkGrowth(short(flatHeap), time.Minute, 180*time.Second, DefaultLimits); len(fails) > 0 {
		t.Errorf("a flat 3-minute run failed: %v", fails)
	}
	if fails := checkGrowth(short(func(x float64) float64 { return 14*mib + x*4*mib/60 }), time.Minute, 180*time.Second, DefaultLimits); len(fails) != 1 {
		t.Errorf("a 3-minute run leaking 4 MiB/min passed: %v", fails)
	}
	if fails := checkGrowth(short(flatHeap)[:3], time.Minute, 180*time.Second, DefaultLimits); len(fails) != 1 || !strings.Contains(fails[0], "too few samples") {
		t.Errorf("too few samples: %v", fails)
	}
}

func TestHeapSlope(t *testing.T) {
	var ss []Sample
	for i := range 10 {
		ss = append(ss, Sample{At: time.Duration(i) * time.Second, HeapLive: uint64(1000 + 250*i)})
	}
	if got := heapSlope(ss); got < 249.999 || got > 250.001 {
		t.Fatalf("slope %v, want 250 bytes/s", got)
	}
}

func TestRequireLoopback(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:6379": true, "localhost:6379": true, "[::1]:6379": true, "127.1.2.3:1": true,
		"10.0.0.1:6379": false, "redis.example.com:6379": false, "0.0.0.0:6379": false, "127.0.0.1": false,
	} {
		if err := requireLoopback(addr); (err == nil) != ok {
			t.Errorf("%s: err %v, want ok=%v", addr, err, ok)
		}
	}
}
