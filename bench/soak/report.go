package main

import (
	"context"
	"fmt"
	"os"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/pushgate/pushgate/internal/nhwire"
)

// Limits are the growth tolerances after warm-up.
type Limits struct {
	// GoroutineFactor and GoroutineSlack bound the goroutine count: the
	// median over the last fifth of the run may be at most
	// GoroutineFactor × the median over the second half of the warm-up +
	// GoroutineSlack, and the count after the drain at most that factor
	// and slack over the count before the load. Medians, not single
	// samples, because the count moves with the requests in flight (a
	// few goroutines per request); a leak moves the median too.
	GoroutineFactor float64
	GoroutineSlack  int
	// HeapPerHour bounds the growth of the live heap (as of the last GC):
	// the slope of a least-squares line through the samples after warm-up,
	// projected to an hour. HeapSlack is the growth along that line over
	// the whole post-warm-up window that is always tolerated, so that the
	// sampling noise of a short run (a MiB or two around the line) cannot
	// fail it: the slope bound governs once the window exceeds
	// HeapSlack/HeapPerHour (under 4 minutes by default).
	HeapPerHour float64
	HeapSlack   float64
}

// DefaultLimits are the tolerances of `make soak`. At steady state the
// live heap holds 10 to 20 MiB and the goroutine count sits around 700;
// 64 MiB/h is what a leak of about 50 bytes per request at 400 requests/s
// adds, while a 10-minute run's noise projects to a few MiB/h.
var DefaultLimits = Limits{GoroutineFactor: 1.10, GoroutineSlack: 20, HeapPerHour: 64 << 20, HeapSlack: 4 << 20}

// Sample is one reading of the process.
type Sample struct {
	At         time.Duration // since the load started
	HeapLive   uint64        // live heap as of the last GC
	HeapInUse  uint64        // heap bytes in objects (live and not yet swept)
	RSS        uint64        // resident set size
	Goroutines int
}

var sampleMetrics = []metrics.Sample{
	{Name: "/gc/heap/live:bytes"},
	{Name: "/memory/classes/heap/objects:bytes"},
	{Name: "/sched/goroutines:goroutines"},
}

func takeSample(at time.Duration) Sample {
	ms := slices.Clone(sampleMetrics)
	metrics.Read(ms)
	return Sample{At: at, HeapLive: ms[0].Value.Uint64(), HeapInUse: ms[1].Value.Uint64(), Goroutines: int(ms[2].Value.Uint64()), RSS: rss()}
}

// rss reads this process's resident set size from the kernel.
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// Result is what a run did and whether it passed.
type Result struct {
	Duration     time.Duration
	LoadEnd      time.Duration // when the load stopped (the drain follows)
	Warmup       time.Duration
	Requests     map[string]int64
	Errors       map[string]int64
	Latency      map[string]Latency
	ErrorSamples []string
	Sends        int64
	// Deliveries are the engine's final outcomes by name (all platforms),
	// Retries its retried attempts; Accepted and Refused the fakes'.
	Deliveries         map[string]int64
	Retries            int64
	Accepted, Refused  int64
	Samples            []Sample
	Failures           []string
	TotalReq, TotalErr int64
}

// Latency is the mean and the longest time of a kind's answered requests.
type Latency struct{ Mean, Max time.Duration }

// Passed reports whether the run met every check.
func (r *Result) Passed() bool { return len(r.Failures) == 0 }

// drive runs the clients for cfg.Duration with the sampler and reporter
// beside them, waits for the deliveries to settle and judges the run.
func drive(ctx context.Context, cfg *Config, e *env) (*Result, error) {
	st := newStats()
	sas := nhwire.Sign(e.base+"/", nhRule, e.nhKey, time.Now().Add(cfg.Duration+2*time.Hour))
	pace, stopPace := pacer(cfg.Rate)
	defer stopPace()
	fmt.Fprintf(cfg.Out, "soak: %s, %d clients, %d users × %d devices, rate %s, warm-up %s; hub %q at %s\n",
		cfg.Duration, cfg.Clients, cfg.Users, cfg.DevicesPerUser, rateText(cfg.Rate), cfg.Warmup, e.hub, e.base)

	start := time.Now()
	res := &Result{Duration: cfg.Duration, Warmup: cfg.Warmup}
	res.Samples = append(res.Samples, takeSample(0))

	loadCtx, stop := context.WithTimeout(ctx, cfg.Duration)
	defer stop()
	var wg sync.WaitGroup
	for n := 0; n < cfg.Clients; n++ {
		c := newClient(n, cfg, e, st, pace, sas)
		wg.Go(func() { c.loop(loadCtx) })
	}
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		sample := time.NewTicker(cfg.Sample)
		defer sample.Stop()
		report := time.NewTicker(cfg.Report)
		defer report.Stop()
		prevReq, prevAt := int64(0), time.Duration(0)
		for {
			select {
			case <-loadCtx.Done():
				return
			case <-sample.C:
				// Only this goroutine appends until samplerDone.
				res.Samples = append(res.Samples, takeSample(time.Since(start)))
			case <-report.C:
				s := takeSample(time.Since(start))
				req, _ := st.totals()
				fmt.Fprintf(cfg.Out, "%s rate=%.0f/s\n", progressLine(s, st, e), float64(req-prevReq)/(s.At-prevAt).Seconds())
				prevReq, prevAt = req, s.At
			}
		}
	}()
	wg.Wait()
	<-samplerDone
	loadEnd := time.Since(start)

	// Let the engine finish what was sent: until its counts and the
	// fakes' stop moving.
	settled := drain(e, 60*time.Second)
	final := takeSample(time.Since(start))
	fmt.Fprintln(cfg.Out, progressLine(final, st, e)+" (after the drain)")
	res.LoadEnd = loadEnd
	res.Samples = append(res.Samples, final)

	res.Requests, res.Errors, res.Latency = map[string]int64{}, map[string]int64{}, map[string]Latency{}
	for _, k := range kinds {
		res.Requests[k], res.Errors[k] = st.requests[k].Load(), st.errors[k].Load()
		res.Latency[k] = Latency{Mean: st.latency[k].mean(), Max: time.Duration(st.latency[k].max.Load())}
	}
	res.TotalReq, res.TotalErr = st.totals()
	res.ErrorSamples = st.samples
	if len(st.last) > 0 {
		res.ErrorSamples = append(res.ErrorSamples, "…")
		res.ErrorSamples = append(res.ErrorSamples, st.last...)
	}
	res.Sends = st.sent.Load()
	res.Deliveries, res.Retries = deliveryCounts()
	res.Accepted, res.Refused = e.accepted(), e.refused()

	if res.TotalErr > 0 {
		res.Failures = append(res.Failures, fmt.Sprintf("%d of %d requests failed", res.TotalErr, res.TotalReq))
	}
	if res.TotalReq == 0 {
		res.Failures = append(res.Failures, "no request was made")
	}
	for out, n := range res.Deliveries {
		if out != "Success" && n > 0 {
			res.Failures = append(res.Failures, fmt.Sprintf("%d deliveries ended %s", n, out))
		}
	}
	if res.Refused > 0 {
		res.Failures = append(res.Failures, fmt.Sprintf("the push-service fakes refused %d requests", res.Refused))
	}
	if ok := res.Deliveries["Success"]; ok > res.Accepted {
		res.Failures = append(res.Failures, fmt.Sprintf("the engine counted %d deliveries as Success but the fakes accepted %d", ok, res.Accepted))
	}
	if !settled {
		res.Failures = append(res.Failures, "deliveries still moving 60s after the load stopped")
	}
	if cfg.CheckGrowth {
		res.Failures = append(res.Failures, checkGrowth(res.Samples, cfg.Warmup, loadEnd, cfg.Limits)...)
	}
	return res, nil
}

// pacer hands out rate tokens per second, in bursts of up to a tenth of
// a second's worth so that a slow answer does not lose the tokens that
// fell due meanwhile; a nil channel when unpaced.
func pacer(rate float64) (<-chan struct{}, func()) {
	if rate <= 0 {
		return nil, func() {}
	}
	ch := make(chan struct{}, max(1, int(rate/10)))
	done := make(chan struct{})
	go func() {
		const tick = 10 * time.Millisecond
		t := time.NewTicker(tick)
		defer t.Stop()
		owed := 0.0
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			for owed += rate * tick.Seconds(); owed >= 1; owed-- {
				select {
				case ch <- struct{}{}:
				default: // the bucket is full: the clients are behind
				}
			}
		}
	}()
	return ch, func() { close(done) }
}

func rateText(r float64) string {
	if r <= 0 {
		return "unpaced"
	}
	return fmt.Sprintf("%.0f req/s", r)
}

// drain waits until the engine's outcome counts and the fakes' accepted
// counts have not moved for two seconds.
func drain(e *env, limit time.Duration) bool {
	type counts struct{ outcomes, accepted int64 }
	last, still := counts{-1, -1}, 0
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		d, _ := deliveryCounts()
		now := counts{accepted: e.apns.Log.Accepted() + e.fcm.Log.Accepted()}
		for _, v := range d {
			now.outcomes += v
		}
		if now == last {
			if still++; still >= 8 {
				return true
			}
			continue
		}
		last, still = now, 0
	}
	return false
}

// deliveryCounts reads the engine's outcome and retry counters from
// Caddy's metrics registry, summed over platforms.
func deliveryCounts() (map[string]int64, int64) {
	ctx := caddy.ActiveContext()
	reg := ctx.GetMetricsRegistry()
	out := map[string]int64{}
	var retries int64
	if reg == nil {
		return out, 0
	}
	fams, err := reg.Gather()
	if err != nil {
		return out, 0
	}
	for _, f := range fams {
		switch f.GetName() {
		case "pushgate_delivery_notifications_total":
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "outcome" {
						out[l.GetValue()] += int64(m.GetCounter().GetValue())
					}
				}
			}
		case "pushgate_delivery_retries_total":
			for _, m := range f.GetMetric() {
				retries += int64(m.GetCounter().GetValue())
			}
		}
	}
	return out, retries
}

func mib(b uint64) string { return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20)) }

func progressLine(s Sample, st *stats, e *env) string {
	var b strings.Builder
	req, errs := st.totals()
	fmt.Fprintf(&b, "t=%-6s req=%d errors=%d [", s.At.Truncate(time.Second), req, errs)
	for i, k := range kinds {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", k, st.requests[k].Load())
		if n := st.errors[k].Load(); n > 0 {
			fmt.Fprintf(&b, "!%d", n)
		}
	}
	d, retries := deliveryCounts()
	outs := make([]string, 0, len(d))
	for k, v := range d {
		outs = append(outs, fmt.Sprintf("%s=%d", k, v))
	}
	slices.Sort(outs)
	fmt.Fprintf(&b, "] heap live=%s inuse=%s rss=%s goroutines=%d | sends=%d deliveries{%s} retries=%d fakes accepted=%d refused=%d",
		mib(s.HeapLive), mib(s.HeapInUse), mib(s.RSS), s.Goroutines, st.sent.Load(), strings.Join(outs, " "), retries,
		e.accepted(), e.refused())
	return b.String()
}

// accepted counts the notifications the fakes accepted.
func (e *env) accepted() int64 { return e.apns.Log.Accepted() + e.fcm.Log.Accepted() }

// refused counts the notifications the fakes refused. The APNs sender's
// first request on each connection is a HEAD of "/" that learns the
// server's stream limit (pnshttp.AwaitSettings), and APNs refuses every
// method but POST: those are not notifications.
func (e *env) refused() int64 {
	return e.apns.Log.Refused() - e.apns.Conns() + e.fcm.Log.Refused()
}

// checkGrowth judges the samples: those taken while the load ran (up to
// end) against the limits, and the last one (after the drain) against the
// first (before the load). It returns one failure per broken limit.
func checkGrowth(samples []Sample, warmup, end time.Duration, lim Limits) []string {
	var fails []string
	var warm, tail, after []Sample
	for _, s := range samples {
		if s.At > end {
			continue
		}
		if s.At >= warmup/2 && s.At <= warmup {
			warm = append(warm, s)
		}
		if s.At >= warmup {
			after = append(after, s)
		}
		if s.At >= end-end/5 {
			tail = append(tail, s)
		}
	}
	if len(warm) == 0 || len(tail) == 0 || len(after) < 3 {
		return []string{fmt.Sprintf("too few samples to judge growth (%d in the warm-up, %d after it); run longer", len(warm), len(after))}
	}
	bound := func(level int) int { return int(float64(level)*lim.GoroutineFactor) + lim.GoroutineSlack }
	wm, tm := medianGoroutines(warm), medianGoroutines(tail)
	if tm > bound(wm) {
		fails = append(fails, fmt.Sprintf("goroutines grew: median %d over the last fifth of the run, above %d (warm-up median %d × %.2f + %d)",
			tm, bound(wm), wm, lim.GoroutineFactor, lim.GoroutineSlack))
	}
	if first, last := samples[0], samples[len(samples)-1]; last.At > end && last.Goroutines > bound(first.Goroutines) {
		fails = append(fails, fmt.Sprintf("goroutines left behind: %d after the drain, above %d (%d before the load × %.2f + %d)",
			last.Goroutines, bound(first.Goroutines), first.Goroutines, lim.GoroutineFactor, lim.GoroutineSlack))
	}
	slope := heapSlope(after)
	window := (after[len(after)-1].At - after[0].At).Seconds()
	if slope*3600 > lim.HeapPerHour && slope*window > lim.HeapSlack {
		fails = append(fails, fmt.Sprintf("live heap grew at %s/h after warm-up (%s over %.0fs), above the %s/h bound",
			mibSigned(slope*3600), mibSigned(slope*window), window, mibSigned(lim.HeapPerHour)))
	}
	return fails
}

func medianGoroutines(ss []Sample) int {
	g := make([]int, len(ss))
	for i, s := range ss {
		g[i] = s.Goroutines
	}
	slices.Sort(g)
	return g[len(g)/2]
}

// heapSlope is the least-squares slope of the live heap over time, in
// bytes per second.
func heapSlope(ss []Sample) float64 {
	n := float64(len(ss))
	var sx, sy, sxx, sxy float64
	for _, s := range ss {
		x, y := s.At.Seconds(), float64(s.HeapLive)
		sx += x
		sy += y
		sxx += x * x
		sxy += x * y
	}
	den := n*sxx - sx*sx
	if den == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / den
}

func mibSigned(b float64) string { return fmt.Sprintf("%.1fMiB", b/(1<<20)) }

// summary prints the end of the run.
func summary(r *Result, cfg *Config) string {
	var b strings.Builder
	fmt.Fprintf(&b, "summary: %d requests, %d errors over %s (warm-up %s), %.0f requests/s\n",
		r.TotalReq, r.TotalErr, r.Duration, r.Warmup, float64(r.TotalReq)/r.LoadEnd.Seconds())
	for _, k := range kinds {
		fmt.Fprintf(&b, "  %-8s %8d requests %6d errors  latency mean %-8s max %s\n", k, r.Requests[k], r.Errors[k],
			r.Latency[k].Mean.Round(10*time.Microsecond), r.Latency[k].Max.Round(10*time.Microsecond))
	}
	for _, s := range r.ErrorSamples {
		fmt.Fprintf(&b, "  error: %s\n", s)
	}
	outs := make([]string, 0, len(r.Deliveries))
	for k, v := range r.Deliveries {
		outs = append(outs, fmt.Sprintf("%s=%d", k, v))
	}
	slices.Sort(outs)
	fmt.Fprintf(&b, "  sends %d; deliveries {%s}; retries %d; fakes accepted %d, refused %d\n", r.Sends, strings.Join(outs, " "), r.Retries, r.Accepted, r.Refused)
	if len(r.Samples) > 0 {
		var after []Sample
		for _, s := range r.Samples {
			if s.At >= r.Warmup && s.At <= r.LoadEnd {
				after = append(after, s)
			}
		}
		first, last := r.Samples[0], r.Samples[len(r.Samples)-1]
		var window float64
		if len(after) > 1 {
			window = (after[len(after)-1].At - after[0].At).Seconds()
		}
		slope := heapSlope(after)
		fmt.Fprintf(&b, "  heap live %s at start, %s after the drain; after warm-up %s/h, %s over %.0fs (fails above %s/h and %s)\n",
			mib(first.HeapLive), mib(last.HeapLive), mibSigned(slope*3600), mibSigned(slope*window), window,
			mibSigned(cfg.Limits.HeapPerHour), mibSigned(cfg.Limits.HeapSlack))
		fmt.Fprintf(&b, "  rss %s at start, %s after the drain; goroutines %d at start, %d after the drain\n",
			mib(first.RSS), mib(last.RSS), first.Goroutines, last.Goroutines)
	}
	if !cfg.CheckGrowth {
		b.WriteString("  growth checks off\n")
	}
	if cfg.Verbose {
		b.WriteString("  samples (s, live heap MiB, heap in use MiB, RSS MiB, goroutines):\n")
		for _, s := range r.Samples {
			fmt.Fprintf(&b, "    %6.0f %7.1f %7.1f %7.1f %6d\n", s.At.Seconds(), float64(s.HeapLive)/(1<<20), float64(s.HeapInUse)/(1<<20), float64(s.RSS)/(1<<20), s.Goroutines)
		}
	}
	if r.Passed() {
		b.WriteString("PASS\n")
	} else {
		for _, f := range r.Failures {
			fmt.Fprintf(&b, "FAIL: %s\n", f)
		}
	}
	return b.String()
}
