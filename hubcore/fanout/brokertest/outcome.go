package brokertest

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/fanout"
)

func (h *harness) dedupe(id string, part int, attempt int64, hashes []uint64) []bool {
	h.t.Helper()
	out := make([]bool, len(hashes))
	for i := range out {
		out[i] = i%2 == 0 // garbage the broker must overwrite
	}
	if err := h.b.Dedupe(h.ctx, id, part, attempt, hashes, out); err != nil {
		h.t.Fatalf("Dedupe(%s, part %d, attempt %d): %v", id, part, attempt, err)
	}
	return out
}

func (h *harness) wantDedupe(what, id string, part int, attempt int64, hashes []uint64, want ...bool) {
	h.t.Helper()
	got := h.dedupe(id, part, attempt, hashes)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		h.t.Errorf("%s: Dedupe(part %d, attempt %d, %v) = %v, want %v", what, part, attempt, hashes, got, want)
	}
}

func testDedupe(h *harness) {
	h.enqueue("n", 3)
	h.enqueue("m", 1)
	const max = math.MaxUint64
	hs := func(v ...uint64) []uint64 { return v }

	h.wantDedupe("first sight; a repeat in the batch", "n", 0, 1, hs(1, 2, 3, 2, 0, max, 1<<63), true, true, true, false, true, true, true)
	h.wantDedupe("this attempt again", "n", 0, 1, hs(1, 4, max), false, true, false)
	h.wantDedupe("another part", "n", 1, 1, hs(1, 5, 0), false, true, false)
	h.wantDedupe("a later attempt of the same part", "n", 0, 2, hs(1, 2, 3, 5, 6), true, true, true, false, true)
	h.wantDedupe("the later attempt again", "n", 0, 2, hs(1, 6), false, false)
	h.wantDedupe("the earlier attempt, late", "n", 0, 1, hs(1, 7), false, true)
	h.wantDedupe("another part after the retake", "n", 1, 1, hs(2, 1), false, false)
	h.wantDedupe("part 1 retried", "n", 1, 2, hs(5, 4), true, false)
	h.wantDedupe("a third part", "n", 2, 1, hs(1, 5, 8, 7), false, false, true, false)
	h.wantDedupe("another notification", "m", 0, 1, hs(1, 5, 8), true, true, true)
	h.wantDedupe("an empty batch", "n", 0, 3, nil)

	err := h.b.Dedupe(h.ctx, "n", 0, 1, hs(1, 2), make([]bool, 1))
	wantCode(h.t, "Dedupe with a short out", err, hubcore.CodeInvalid)
}

// splitmix is a tiny deterministic generator of well-spread hashes.
type splitmix uint64

func (s *splitmix) next() uint64 {
	*s += 0x9e3779b97f4a7c15
	z := uint64(*s)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func countTrue(bs []bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

func testDedupeBig(h *harness) {
	const n = 10_000
	h.enqueue("big", 2)
	var g splitmix = 42
	a := make([]uint64, n)
	for i := range a {
		a[i] = g.next()
	}
	b := make([]uint64, n) // half of a, half new
	copy(b, a[:n/2])
	for i := n / 2; i < n; i++ {
		b[i] = g.next()
	}
	if got := countTrue(h.dedupe("big", 0, 1, a)); got != n {
		h.t.Errorf("first batch: %d true, want %d", got, n)
	}
	if got := countTrue(h.dedupe("big", 0, 1, a)); got != 0 {
		h.t.Errorf("the same batch again: %d true, want 0", got)
	}
	out := h.dedupe("big", 1, 1, b)
	for i, v := range out {
		if v != (i >= n/2) {
			h.t.Fatalf("part 1 batch: out[%d] = %v", i, v)
		}
	}
	if got := countTrue(h.dedupe("big", 0, 2, a)); got != n {
		h.t.Errorf("part 0 retried: %d true, want %d", got, n)
	}
	out = h.dedupe("big", 1, 2, b)
	for i, v := range out {
		if v != (i >= n/2) {
			h.t.Fatalf("part 1 retried: out[%d] = %v", i, v)
		}
	}
}

func testFinish(h *harness) {
	h.enqueue("n", 3)
	t0 := Base.Add(time.Second)
	if err := h.b.Start(h.ctx, "n", t0); err != nil {
		h.t.Fatal(err)
	}
	cs := byPart(h.claimN("c", 3, time.Hour))
	want := fanout.Counts{}

	c0 := fanout.Counts{}
	c0.Add(hubcore.APNS, hubcore.OutcomeSuccess, 3)
	c0.Add(hubcore.APNS, hubcore.OutcomeExpiredChannel, 1)
	if h.finish(cs[0], c0, t0.Add(time.Second)) {
		h.t.Error("first of 3 parts reported done")
	}
	want.Merge(c0)
	o := h.wantState("n", fanout.Processing)
	if o.PartsDone != 1 || o.Targets != 4 || !countsEqual(o.Counts, want) || !o.Ended.IsZero() {
		h.t.Errorf("after part 0: done %d targets %d counts %s ended %v", o.PartsDone, o.Targets, fmtCounts(o.Counts), o.Ended)
	}
	if h.finish(cs[0], c0, t0.Add(2*time.Second)) {
		h.t.Error("a repeated Finish reported done")
	}
	if o := h.outcome("n"); o.PartsDone != 1 || !countsEqual(o.Counts, want) {
		h.t.Errorf("a repeated Finish counted: done %d counts %s", o.PartsDone, fmtCounts(o.Counts))
	}

	c1 := fanout.Counts{}
	c1.Add(hubcore.FCMV1, hubcore.OutcomeSuccess, 2)
	c1.Add(hubcore.APNS, hubcore.OutcomeSuccess, 1)
	c1.Add(hubcore.WNS, hubcore.OutcomeAbandoned, 4)
	if h.finish(cs[1], c1, t0.Add(3*time.Second)) {
		h.t.Error("second of 3 parts reported done")
	}
	want.Merge(c1)
	_, err := h.b.Finish(h.ctx, fanout.Claim{Job: fanout.Job{NotificationID: "n", Part: 3}, Ref: cs[2].Ref, Attempt: 1}, c1, t0)
	wantCode(h.t, "Finish of part 3 of 3", err, hubcore.CodeInvalid)
	_, err = h.b.Finish(h.ctx, fanout.Claim{Job: fanout.Job{NotificationID: "n", Part: -1}, Ref: cs[2].Ref, Attempt: 1}, c1, t0)
	wantCode(h.t, "Finish of part -1", err, hubcore.CodeInvalid)

	end := t0.Add(4*time.Second + 17)
	if !h.finish(cs[2], nil, end) {
		h.t.Error("the last part did not report done")
	}
	o = h.wantState("n", fanout.Completed)
	if o.PartsDone != 3 || o.Targets != 11 || !countsEqual(o.Counts, want) || !o.Ended.Equal(end) || !o.Started.Equal(t0) {
		h.t.Errorf("final: done %d targets %d counts %s started %v ended %v; want 3, 11, %s, %v, %v",
			o.PartsDone, o.Targets, fmtCounts(o.Counts), o.Started, o.Ended, fmtCounts(want), t0, end)
	}
	h.checkOutcome(o)
	if h.finish(cs[2], c0, end.Add(time.Hour)) {
		h.t.Error("Finish after the end reported done")
	}
	if o := h.outcome("n"); !countsEqual(o.Counts, want) || !o.Ended.Equal(end) || o.State != fanout.Completed {
		h.t.Errorf("Finish after the end changed the outcome: %+v", o)
	}
	h.claimNone("every job released", "other", time.Millisecond)
}

func testFinalStates(h *harness) {
	cnt := func(kv ...any) fanout.Counts {
		c := fanout.Counts{}
		for i := 0; i < len(kv); i += 3 {
			c.Add(kv[i].(hubcore.Platform), kv[i+1].(hubcore.OutcomeName), int64(kv[i+2].(int)))
		}
		return c
	}
	ab, ok := hubcore.OutcomeAbandoned, hubcore.OutcomeSuccess
	cases := []struct {
		name  string
		parts []fanout.Counts
		want  fanout.State
	}{
		{"none", []fanout.Counts{nil, {}}, fanout.NoTargetFound},
		{"zeroes", []fanout.Counts{cnt(hubcore.APNS, ok, 0), cnt(hubcore.WNS, ab, 0)}, fanout.NoTargetFound},
		{"abandoned", []fanout.Counts{cnt(hubcore.APNS, ab, 3), cnt(hubcore.FCMV1, ab, 2)}, fanout.Abandoned},
		{"abandonedAndEmpty", []fanout.Counts{cnt(hubcore.APNS, ab, 3), nil}, fanout.Abandoned},
		{"mixed", []fanout.Counts{cnt(hubcore.APNS, ab, 3), cnt(hubcore.APNS, ok, 1)}, fanout.Completed},
		{"failures", []fanout.Counts{cnt(hubcore.APNS, hubcore.OutcomeBadChannel, 3), cnt(hubcore.APNS, hubcore.OutcomeSkipped, 1)}, fanout.Completed},
	}
	for _, tc := range cases {
		h.enqueue(tc.name, len(tc.parts))
	}
	cs := h.claimN("c", 2*len(cases), time.Hour)
	want := map[string]fanout.Counts{}
	for i, c := range byPart(cs) {
		for _, tc := range cases {
			if tc.name == c.NotificationID {
				counts := tc.parts[c.Part]
				if want[tc.name] == nil {
					want[tc.name] = fanout.Counts{}
				}
				want[tc.name].Merge(counts)
				done := h.finish(c, counts, Base.Add(time.Duration(i)))
				if done != (c.Part == 1) {
					h.t.Errorf("%s part %d: done %v", tc.name, c.Part, done)
				}
			}
		}
	}
	for _, tc := range cases {
		o := h.outcome(tc.name)
		if o.State != tc.want || !countsEqual(o.Counts, want[tc.name]) || o.PartsDone != 2 || o.Ended.IsZero() {
			h.t.Errorf("%s: state %s counts %s done %d ended %v; want %s %s", tc.name, o.State, fmtCounts(o.Counts), o.PartsDone, o.Ended, tc.want, fmtCounts(want[tc.name]))
		}
		h.checkOutcome(o)
	}
}

func testFinishConcurrent(h *harness) {
	const parts, workers = 64, 16
	h.enqueue("n", parts)
	var cs []fanout.Claim
	var mu sync.Mutex
	parallel(4, func(i int) {
		got := h.claimN(fmt.Sprintf("c%d", i), parts/4, time.Hour)
		mu.Lock()
		cs = append(cs, got...)
		mu.Unlock()
	})
	want := fanout.Counts{}
	for i := range parts {
		want.Add(hubcore.APNS, hubcore.OutcomeSuccess, int64(i+1))
		want.Add(hubcore.WNS, hubcore.OutcomeBadChannel, 1)
	}
	var dones atomic.Int64
	next := atomic.Int64{}
	parallel(workers, func(int) {
		for {
			k := int(next.Add(1)) - 1
			if k >= len(cs) {
				return
			}
			c := cs[k]
			counts := fanout.Counts{}
			counts.Add(hubcore.APNS, hubcore.OutcomeSuccess, int64(c.Part+1))
			counts.Add(hubcore.WNS, hubcore.OutcomeBadChannel, 1)
			done, err := h.b.Finish(h.ctx, c, counts, Base.Add(time.Duration(c.Part)))
			if err != nil {
				h.t.Errorf("Finish part %d: %v", c.Part, err)
			}
			if done {
				dones.Add(1)
			}
			// Half of the parts finish twice, concurrently with the rest.
			if c.Part%2 == 0 {
				if done, err := h.b.Finish(h.ctx, c, counts, Base); err != nil || done {
					h.t.Errorf("second Finish of part %d: %v, %v", c.Part, done, err)
				}
			}
		}
	})
	if dones.Load() != 1 {
		h.t.Errorf("%d Finishes reported done, want exactly 1", dones.Load())
	}
	o := h.wantState("n", fanout.Completed)
	wantTargets := int64(parts*(parts+1)/2 + parts)
	if o.PartsDone != parts || o.Targets != wantTargets || !countsEqual(o.Counts, want) || o.Ended.IsZero() {
		h.t.Errorf("final: done %d targets %d counts %s; want %d %d %s", o.PartsDone, o.Targets, fmtCounts(o.Counts), parts, wantTargets, fmtCounts(want))
	}
	h.checkOutcome(o)
}
