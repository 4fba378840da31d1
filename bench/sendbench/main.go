// Command sendbench measures delivery as docs/BENCHMARKS.md reports it, in
// one run on one machine:
//
//  1. a broadcast to -n installations (half APNs, half FCM v1) stored in
//     Redis, through the real senders to the strict fakes (cmd/pnsfake, in
//     its own process), as notifications per second and as a ratio of what
//     h2load reaches against the same fakes just before; the peak RSS of
//     this process (the pushgate side) throughout;
//
//  2. the time from a single-user send request to the first byte at a fake
//     APNs, at idle (p50/p99 over -sends sends).
//
//     go run ./bench/sendbench -n 1000000
//
// It starts its own redis-server and pnsfake on loopback ports.
package main

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/apns"
	"github.com/pushgate/pushgate/hubcore/fanout"
	"github.com/pushgate/pushgate/hubcore/fcm"
	"github.com/pushgate/pushgate/hubcore/payload"
	apnsfake "github.com/pushgate/pushgate/internal/pnsfake/apns"
	fcmfake "github.com/pushgate/pushgate/internal/pnsfake/fcm"
	"github.com/pushgate/pushgate/internal/redistest"
	"github.com/pushgate/pushgate/redisstore"
)

type info struct {
	APNSURL            string `json:"apns_url"`
	FCMURL             string `json:"fcm_url"`
	CAFile             string `json:"ca_file"`
	APNSKeyFile        string `json:"apns_key_file"`
	APNSKeyID          string `json:"apns_key_id"`
	APNSTeamID         string `json:"apns_team_id"`
	APNSTopic          string `json:"apns_topic"`
	APNSBearer         string `json:"apns_bearer"`
	FCMCredentialsFile string `json:"fcm_credentials_file"`
	FCMProject         string `json:"fcm_project"`
	FCMBearer          string `json:"fcm_bearer"`
}

func main() {
	var (
		n         = flag.Int("n", 1_000_000, "installations (half APNs, half FCM)")
		h2n       = flag.Int("h2load-n", 200_000, "requests per h2load baseline run")
		conc      = flag.Int("concurrency", 512, "deliveries in flight per platform")
		workers   = flag.Int("workers", 4, "parts run at once")
		conns     = flag.Int("conns", 2, "HTTP/2 connections per sender")
		sends     = flag.Int("sends", 1000, "single-user sends for the latency figure")
		skipLoad  = flag.Bool("skip-load", false, "measure only the latency")
		keepRedis = flag.String("addr", "", "use this loopback Redis (FLUSHALLed) instead of starting one")
	)
	flag.Parse()
	if err := run(*n, *h2n, *conc, *workers, *conns, *sends, *skipLoad, *keepRedis); err != nil {
		fmt.Fprintln(os.Stderr, "sendbench:", err)
		os.Exit(1)
	}
}

func run(n, h2n, conc, workers, conns, sends int, skipLoad bool, addr string) error {
	ctx := context.Background()
	tmp, err := os.MkdirTemp("", "sendbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	fmt.Printf("machine: %d CPUs, %s; GOMAXPROCS %d\n", runtime.NumCPU(), cpuModel(), runtime.GOMAXPROCS(0))

	if addr == "" {
		rdir := filepath.Join(tmp, "redis")
		if err := os.MkdirAll(rdir, 0o700); err != nil {
			return err
		}
		srv, err := redistest.StartServer(rdir, redistest.Options{})
		if err != nil {
			return err
		}
		defer srv.Stop()
		addr = srv.Addr
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		return err
	}

	// The fakes run in their own process, as the real services would.
	bin := filepath.Join(tmp, "pnsfake")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/pnsfake").CombinedOutput(); err != nil {
		return fmt.Errorf("building pnsfake: %v\n%s", err, out)
	}
	fdir := filepath.Join(tmp, "fake")
	fake := exec.Command(bin, "-dir", fdir, "-every", "0")
	fake.Stderr = os.Stderr
	if err := fake.Start(); err != nil {
		return err
	}
	defer func() { _ = fake.Process.Signal(os.Interrupt); _ = fake.Wait() }()
	var in info
	for deadline := time.Now().Add(20 * time.Second); ; {
		js, err := os.ReadFile(filepath.Join(fdir, "info.json"))
		if err == nil && json.Unmarshal(js, &in) == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pnsfake did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}

	st, err := redisstore.New(ctx, redisstore.Options{Redis: redis.UniversalOptions{Addrs: []string{addr}}, Hub: "bench"})
	if err != nil {
		return err
	}
	defer st.Close()
	b, err := redisstore.NewBroker(st.Client(), "bench", redisstore.BrokerOptions{})
	if err != nil {
		return err
	}
	pem, err := os.ReadFile(in.CAFile)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	p8, err := os.ReadFile(in.APNSKeyFile)
	if err != nil {
		return err
	}
	as, err := apns.New(apns.Config{Endpoint: in.APNSURL, KeyPEM: p8, KeyID: in.APNSKeyID, TeamID: in.APNSTeamID, Topic: in.APNSTopic, RootCAs: roots, Conns: conns})
	if err != nil {
		return err
	}
	defer as.Close()
	sa, err := os.ReadFile(in.FCMCredentialsFile)
	if err != nil {
		return err
	}
	fs, err := fcm.New(fcm.Config{CredentialsJSON: sa, Endpoint: in.FCMURL, RootCAs: roots, Conns: conns})
	if err != nil {
		return err
	}
	defer fs.Close()

	if !skipLoad {
		if err := load(ctx, st, n); err != nil {
			return err
		}
		apnsRate, err := h2load(in.APNSURL+"/3/device/"+apnsToken(0), h2n, `{"aps":{"alert":"hello"}}`,
			"authorization: bearer "+in.APNSBearer, "apns-topic: "+in.APNSTopic, "apns-push-type: alert")
		if err != nil {
			return err
		}
		fcmRate, err := h2load(in.FCMURL+"/v1/projects/"+in.FCMProject+"/messages:send", h2n,
			`{"message":{"token":"`+fcmfake.Token("d0")+`","notification":{"title":"hello"}}}`,
			"authorization: Bearer "+in.FCMBearer, "content-type: application/json")
		if err != nil {
			return err
		}
		// Half the targets go to each fake, one after the other in the
		// limit: the mix's baseline is the harmonic mean.
		baseline := 2 / (1/apnsRate + 1/fcmRate)
		fmt.Printf("h2load baseline: APNs %.0f req/s, FCM %.0f req/s, 50/50 mix %.0f req/s\n", apnsRate, fcmRate, baseline)

		en, err := fanout.New(fanout.Config{Store: st, Broker: b, Senders: map[hubcore.Platform]hubcore.Sender{hubcore.APNS: as, hubcore.FCMV1: fs},
			Paces:   map[hubcore.Platform]fanout.Pace{hubcore.FCMV1: {Bucket: "fcm:" + in.FCMProject, Rate: 1e6, Burst: 1e6}},
			Workers: workers, Concurrency: conc, Parts: st.Shards()})
		if err != nil {
			return err
		}
		rctx, stop := context.WithCancel(ctx)
		defer stop()
		done := make(chan struct{})
		go func() { _ = en.Run(rctx); close(done) }()
		var peak atomic.Int64
		sampling := make(chan struct{})
		go func() {
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-sampling:
					return
				case <-t.C:
					if r := rss(); r > peak.Load() {
						peak.Store(r)
					}
				}
			}
		}()
		start := time.Now()
		id, err := en.Submit(ctx, fanout.Send{Notification: hubcore.Notification{Format: payload.Template, Body: []byte(`{"msg":"hello"}`)}, Broadcast: true})
		if err != nil {
			return err
		}
		var o *fanout.Outcome
		for {
			if o, err = en.Outcome(ctx, id); err != nil {
				return err
			}
			if o.State.Final() {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		elapsed := time.Since(start)
		close(sampling)
		stop()
		<-done
		ok := o.Counts[hubcore.APNS][hubcore.OutcomeSuccess] + o.Counts[hubcore.FCMV1][hubcore.OutcomeSuccess]
		rate := float64(ok) / elapsed.Seconds()
		fmt.Printf("broadcast: %d targets, %d delivered, state %s, in %.1fs: %.0f notifications/s = %.2f x h2load; peak RSS %d MB; counts %v\n",
			o.Targets, ok, o.State, elapsed.Seconds(), rate, rate/baseline, peak.Load()>>20, o.Counts)
	}
	return latency(ctx, st, b, sends)
}

// load writes n installations through the store's import, streaming.
func load(ctx context.Context, st *redisstore.Store, n int) error {
	start := time.Now()
	pr, pw := io.Pipe()
	go func() {
		w := bufio.NewWriterSize(pw, 1<<20)
		enc := json.NewEncoder(w)
		for i := 0; i < n; i++ {
			in := &hubcore.Installation{InstallationID: fmt.Sprintf("inst-%d", i), UserID: fmt.Sprintf("user-%d", i/2), Tags: []string{fmt.Sprintf("team:%d", i%100)}}
			if i%2 == 0 {
				in.Platform, in.PushChannel = hubcore.APNS, hubcore.PushChannel{Handle: apnsToken(i)}
				in.Templates = map[string]*hubcore.Template{"t": {Body: `{"aps":{"alert":"$(msg)"}}`}}
			} else {
				in.Platform, in.PushChannel = hubcore.FCMV1, hubcore.PushChannel{Handle: fcmfake.Token(fmt.Sprintf("d%d", i))}
				in.Templates = map[string]*hubcore.Template{"t": {Body: `{"message":{"notification":{"title":"$(msg)"}}}`}}
			}
			if err := enc.Encode(hubcore.ExportRecord{Installation: in}); err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		pw.CloseWithError(w.Flush())
	}()
	got, err := st.Import(ctx, pr)
	if err != nil {
		return err
	}
	fmt.Printf("loaded %d installations in %.0fs\n", got, time.Since(start).Seconds())
	return nil
}

func apnsToken(i int) string { return fmt.Sprintf("%064x", i+1) }

var h2Rate = regexp.MustCompile(`finished in [0-9.]+m?s, ([0-9.]+) req/s`)
var h2OK = regexp.MustCompile(`requests: .* ([0-9]+) succeeded, ([0-9]+) failed`)

// h2load posts the same body n times with 2 connections × 100 streams and
// returns the rate; every request must succeed.
func h2load(url string, n int, body string, headers ...string) (float64, error) {
	f, err := os.CreateTemp("", "h2body")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	f.WriteString(body)
	f.Close()
	args := []string{"-n", strconv.Itoa(n), "-c", "2", "-m", "100", "-d", f.Name()}
	for _, h := range headers {
		args = append(args, "-H", h)
	}
	args = append(args, url)
	out, err := exec.Command("h2load", args...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("h2load: %v\n%s", err, out)
	}
	m := h2Rate.FindSubmatch(out)
	ok := h2OK.FindSubmatch(out)
	if m == nil || ok == nil {
		return 0, fmt.Errorf("h2load output not understood:\n%s", out)
	}
	if string(ok[2]) != "0" {
		return 0, fmt.Errorf("h2load: %s requests failed:\n%s", ok[2], out)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

// latency measures single-user sends at idle: from the Submit call to the
// request's arrival at an in-process fake APNs.
func latency(ctx context.Context, st *redisstore.Store, b fanout.Broker, sends int) error {
	p8, pub, err := apnsfake.GenerateKey()
	if err != nil {
		return err
	}
	fake := apnsfake.New(apnsfake.Options{Keys: map[string]apnsfake.Key{"LATENCYKEY": {TeamID: "LATENCYTEA", Public: pub}},
		Topics: map[string][]string{"LATENCYTEA": {"com.example.latency"}}})
	var mu sync.Mutex
	arrived := map[string]time.Time{}
	fake.Log.OnArrive = func(token string, at time.Time) {
		mu.Lock()
		arrived[token] = at
		mu.Unlock()
	}
	if err := fake.Start(); err != nil {
		return err
	}
	defer fake.Close()
	as, err := apns.New(apns.Config{Endpoint: fake.URL(), KeyPEM: p8, KeyID: "LATENCYKEY", TeamID: "LATENCYTEA", Topic: "com.example.latency", RootCAs: fake.CertPool()})
	if err != nil {
		return err
	}
	defer as.Close()
	h := hubcore.NewHub(st, hubcore.HubOptions{})
	const users = 100
	for u := 0; u < users; u++ {
		in := &hubcore.Installation{InstallationID: fmt.Sprintf("lat-%d", u), UserID: fmt.Sprintf("lat-user-%d", u), Platform: hubcore.APNS,
			PushChannel: hubcore.PushChannel{Handle: fmt.Sprintf("%064x", 1<<40+u)}}
		if _, err := h.PutInstallation(ctx, in, hubcore.Always); err != nil {
			return err
		}
	}
	en, err := fanout.New(fanout.Config{Store: st, Broker: b, Senders: map[hubcore.Platform]hubcore.Sender{hubcore.APNS: as}, ParseExpr: h.ParseExpression})
	if err != nil {
		return err
	}
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = en.Run(rctx) }()
	var ds []time.Duration
	for i := -20; i < sends; i++ { // 20 warm-up sends
		u := (i + 20) % users
		token := fmt.Sprintf("%064x", 1<<40+u)
		expr := fmt.Sprintf("$UserId:{lat-user-%d}", u)
		x, err := h.ParseExpression(expr)
		if err != nil {
			return err
		}
		mu.Lock()
		delete(arrived, token)
		mu.Unlock()
		start := time.Now()
		if _, err := en.Submit(ctx, fanout.Send{Notification: hubcore.Notification{Format: payload.Apple, Body: []byte(`{"aps":{"alert":"hi"}}`), Expr: x}, ExprSource: expr}); err != nil {
			return err
		}
		for deadline := start.Add(5 * time.Second); ; {
			mu.Lock()
			at, ok := arrived[token]
			mu.Unlock()
			if ok {
				if i >= 0 {
					ds = append(ds, at.Sub(start))
				}
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("send %d never arrived", i)
			}
			time.Sleep(50 * time.Microsecond)
		}
		time.Sleep(2 * time.Millisecond) // idle between sends
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	q := func(p float64) time.Duration { return ds[int(p*float64(len(ds)-1))] }
	fmt.Printf("single-user send → first byte at the fake APNs, %d sends at idle: p50 %v, p90 %v, p99 %v, max %v\n",
		len(ds), q(0.5).Round(time.Microsecond), q(0.9).Round(time.Microsecond), q(0.99).Round(time.Microsecond), ds[len(ds)-1].Round(time.Microsecond))
	return nil
}

// rss is this process's resident set size in bytes.
func rss() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
		}
	}
	return "unknown CPU"
}
