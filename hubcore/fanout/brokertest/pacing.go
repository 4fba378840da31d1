package brokertest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/fanout"
)

func (h *harness) take(bucket string, rate float64, burst, n int64) (int64, time.Duration) {
	h.t.Helper()
	got, wait, err := h.b.Take(h.ctx, bucket, rate, burst, n)
	if err != nil {
		h.t.Fatalf("Take(%s): %v", bucket, err)
	}
	if got < 0 || got > n {
		h.t.Fatalf("Take(%s, n %d) took %d", bucket, n, got)
	}
	if got > 0 && wait != 0 {
		h.t.Errorf("Take(%s) took %d and asked to wait %v", bucket, got, wait)
	}
	return got, wait
}

func testTakeBurst(h *harness) {
	// A slow bucket: a token a second, so refill during the test is small.
	if got, _ := h.take("slow", 1, 10, 4); got != 4 {
		h.t.Errorf("first take: %d, want 4", got)
	}
	if got, _ := h.take("slow", 1, 10, 4); got != 4 {
		h.t.Errorf("second take: %d, want 4", got)
	}
	if got, _ := h.take("slow", 1, 10, 4); got != 2 {
		h.t.Errorf("third take: %d, want the 2 left", got)
	}
	got, wait := h.take("slow", 1, 10, 1)
	if got != 0 || wait <= 0 || wait > time.Second+time.Millisecond {
		h.t.Errorf("empty bucket: took %d, wait %v; want 0 and a wait in (0, 1s]", got, wait)
	}
	if got, wait := h.take("slow", 1, 10, 0); got != 0 || wait != 0 {
		h.t.Errorf("Take(n 0): %d, %v", got, wait)
	}
	// Never more than burst at once, and buckets are independent.
	if got, _ := h.take("big", 1, 25, 1000); got != 25 {
		h.t.Errorf("Take(n 1000) from a full bucket of 25: %d", got)
	}
	if got, _ := h.take("other", 1, 10, 3); got != 3 {
		h.t.Errorf("another bucket: %d, want 3", got)
	}

	for _, bad := range []struct {
		rate     float64
		burst, n int64
	}{{0, 10, 1}, {-1, 10, 1}, {1, 0, 1}, {1, -5, 1}, {1, 10, -1}} {
		_, _, err := h.b.Take(h.ctx, "bad", bad.rate, bad.burst, bad.n)
		wantCode(h.t, fmt.Sprintf("Take(rate %v, burst %d, n %d)", bad.rate, bad.burst, bad.n), err, hubcore.CodeInvalid)
	}
}

// drainStats is what one taker saw.
type drainStats struct {
	took int64
	// oversleep is how much longer than told the taker slept in total: on
	// a starved machine it is large, and then only the upper bound of the
	// pace says anything.
	oversleep time.Duration
	// misses counts the times a taker that slept the wait it was told
	// still got nothing (only meaningful for a lone taker).
	misses int
}

// drain takes from bucket as fast as the bucket allows until stop,
// sleeping the waits it is told.
func drain(b fanout.Broker, h *harness, bucket string, rate float64, burst, n int64, stop time.Time) drainStats {
	var st drainStats
	slept := false
	for time.Now().Before(stop) {
		got, wait, err := b.Take(h.ctx, bucket, rate, burst, n)
		if err != nil {
			h.t.Errorf("Take: %v", err)
			return st
		}
		st.took += got
		if got > 0 {
			slept = false
			continue
		}
		if slept {
			st.misses++
		}
		if wait <= 0 || wait > time.Second {
			h.t.Errorf("took nothing with wait %v", wait)
			wait = time.Millisecond
		}
		if d := time.Until(stop); wait > d {
			wait = d
		}
		t0 := time.Now()
		time.Sleep(wait)
		st.oversleep += time.Since(t0) - wait
		slept = true
	}
	return st
}

// starved reports whether the takers overslept so much that the machine
// cannot have kept the pace: then a lower bound would only test the
// machine.
func starved(t *testing.T, oversleep, elapsed time.Duration) bool {
	if oversleep > elapsed/4 {
		t.Logf("the takers overslept %v of %v: the machine is too busy to check the lower bound", oversleep, elapsed)
		return true
	}
	return false
}

func testTakeRate(h *harness) {
	const rate, burst = 200.0, 20
	start := time.Now()
	st := drain(h.b, h, "rate", rate, burst, 5, start.Add(time.Second))
	elapsed := time.Since(start)
	// The bucket holds burst and refills at rate: no more can be taken.
	if hi := burst + int64(rate*elapsed.Seconds()) + 2; st.took > hi {
		h.t.Errorf("took %d in %v at %v/s with burst %d; want at most %d", st.took, elapsed, rate, burst, hi)
	}
	// And it does refill: at about the rate, and the wait it tells is
	// enough.
	if lo := burst + int64(rate*elapsed.Seconds()/2); st.took < lo && !starved(h.t, st.oversleep, elapsed) {
		h.t.Errorf("took %d in %v at %v/s with burst %d; want at least %d", st.took, elapsed, rate, burst, lo)
	}
	if st.misses > 2 {
		h.t.Errorf("%d times a lone taker slept the wait it was told and still got nothing", st.misses)
	}
}

// TakeConcurrent checks the pace many takers keep: whatever their number,
// they never take more than burst + rate·elapsed between them.
func testTakeConcurrent(h *harness) {
	CheckSharedPace(h.t, []fanout.Broker{h.b}, 8)
}

// CheckSharedPace has takers goroutines, spread over brokers (several
// instances sharing one backend, as replicas do), take from one bucket for
// about a second, and fails t if together they took more than burst +
// rate·elapsed, or (on a machine not too busy to tell) much less than the
// pace allows.
func CheckSharedPace(t *testing.T, brokers []fanout.Broker, takers int) {
	t.Helper()
	const rate, burst = 150.0, 15
	h := &harness{t: t, ctx: context.Background()}
	var total atomic.Int64
	var mu sync.Mutex
	var oversleep time.Duration
	start := time.Now()
	stop := start.Add(time.Second)
	var wg sync.WaitGroup
	for i := range takers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := drain(brokers[i%len(brokers)], h, "shared", rate, burst, int64(1+i%3), stop)
			total.Add(st.took)
			mu.Lock()
			oversleep = max(oversleep, st.oversleep)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	got := total.Load()
	if hi := burst + int64(rate*elapsed.Seconds()) + 2; got > hi {
		t.Errorf("%d takers on %d brokers took %d in %v at %v/s with burst %d; want at most %d", takers, len(brokers), got, elapsed, rate, burst, hi)
	}
	if lo := burst + int64(rate*elapsed.Seconds()/3); got < lo && !starved(t, oversleep, elapsed) {
		t.Errorf("%d takers on %d brokers took %d in %v at %v/s with burst %d; want at least %d", takers, len(brokers), got, elapsed, rate, burst, lo)
	}
}
