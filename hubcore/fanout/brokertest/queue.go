package brokertest

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"time"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/fanout"
	"github.com/pushgate/pushgate/hubcore/payload"
)

func testEnqueueClaim(h *harness) {
	s := h.enqueue("n1", 5)
	o := h.wantState("n1", fanout.Enqueued)
	if o.Parts != 5 || o.PartsDone != 0 || o.Targets != 0 || o.Counts.Total() != 0 {
		h.t.Errorf("fresh outcome: parts %d done %d targets %d counts %s", o.Parts, o.PartsDone, o.Targets, fmtCounts(o.Counts))
	}
	if !o.Enqueued.Equal(s.Enqueued) || !o.At.Equal(s.At) || !o.Started.IsZero() || !o.Ended.IsZero() {
		h.t.Errorf("fresh outcome times: enqueued %v at %v started %v ended %v", o.Enqueued, o.At, o.Started, o.Ended)
	}
	h.checkOutcome(o)

	cs := byPart(h.claimN("c1", 5, time.Hour))
	refs := map[string]bool{}
	for i, c := range cs {
		if c.NotificationID != "n1" || c.Part != i || c.Attempt != 1 {
			h.t.Errorf("claim %d: %+v, want n1 part %d attempt 1", i, c, i)
		}
		if c.Ref == "" || refs[c.Ref] {
			h.t.Errorf("claim %d: empty or repeated Ref %q", i, c.Ref)
		}
		refs[c.Ref] = true
	}
	h.claimNone("after every job was claimed", "c1", time.Hour)
	h.claimNone("another consumer, nothing idle long enough", "c2", time.Hour)

	// Jobs of several notifications come out each once; max bounds a claim.
	h.enqueue("n2", 3)
	h.enqueue("n3", 1)
	cs, err := h.b.Claim(h.ctx, "c2", 2, time.Hour, time.Second)
	if err != nil || len(cs) == 0 || len(cs) > 2 {
		h.t.Fatalf("Claim(max 2): %d claims, %v", len(cs), err)
	}
	cs = append(cs, h.claimN("c2", 4-len(cs), time.Hour)...)
	seen := map[fanout.Job]int{}
	for _, c := range cs {
		seen[c.Job]++
	}
	for _, j := range []fanout.Job{{NotificationID: "n2", Part: 0}, {NotificationID: "n2", Part: 1}, {NotificationID: "n2", Part: 2}, {NotificationID: "n3", Part: 0}} {
		if seen[j] != 1 {
			h.t.Errorf("job %+v claimed %d times", j, seen[j])
		}
	}
	h.claimNone("after the second batch", "c3", time.Hour)
}

func testEnqueueInvalid(h *harness) {
	h.enqueue("dup", 2)
	err := h.b.Enqueue(h.ctx, NewSpec("dup", 3))
	wantCode(h.t, "Enqueue of a stored id", err, hubcore.CodeConflict)
	if o := h.wantState("dup", fanout.Enqueued); o.Parts != 2 {
		h.t.Errorf("the conflicting Enqueue changed the outcome: parts %d", o.Parts)
	}
	h.claimN("c", 2, time.Hour)
	h.claimNone("after a conflicting Enqueue", "c", time.Hour)

	sched := NewSpec("sched", 1)
	sched.At = Base.Add(time.Hour)
	if err := h.b.Schedule(h.ctx, sched); err != nil {
		h.t.Fatal(err)
	}
	wantCode(h.t, "Enqueue of a scheduled id", h.b.Enqueue(h.ctx, NewSpec("sched", 1)), hubcore.CodeConflict)
	wantCode(h.t, "Schedule of an enqueued id", h.b.Schedule(h.ctx, NewSpec("dup", 1)), hubcore.CodeConflict)
	wantCode(h.t, "Schedule of a scheduled id", h.b.Schedule(h.ctx, sched), hubcore.CodeConflict)
	h.wantState("sched", fanout.Scheduled)

	for _, bad := range []*fanout.Spec{NewSpec("", 1), NewSpec("p0", 0), NewSpec("pneg", -1), NewSpec("pbig", 1<<16+1)} {
		wantCode(h.t, fmt.Sprintf("Enqueue(id %q, parts %d)", bad.ID, bad.Parts), h.b.Enqueue(h.ctx, bad), hubcore.CodeInvalid)
		wantCode(h.t, fmt.Sprintf("Schedule(id %q, parts %d)", bad.ID, bad.Parts), h.b.Schedule(h.ctx, bad), hubcore.CodeInvalid)
		if bad.ID != "" {
			_, err := h.b.Outcome(h.ctx, bad.ID)
			wantCode(h.t, "Outcome of a refused spec", err, hubcore.CodeNotFound)
		}
	}
	h.claimNone("after refused specs", "c", time.Hour)
	_, err = h.b.Claim(h.ctx, "c", 0, time.Hour, 0)
	wantCode(h.t, "Claim(max 0)", err, hubcore.CodeInvalid)
	_, err = h.b.Claim(h.ctx, "", 1, time.Hour, 0)
	wantCode(h.t, "Claim by consumer \"\"", err, hubcore.CodeInvalid)
	_, err = h.b.FireDue(h.ctx, Base, 0)
	wantCode(h.t, "FireDue(max 0)", err, hubcore.CodeInvalid)
}

// fullSpec sets every field, with awkward values.
func fullSpec(id string) *fanout.Spec {
	return &fanout.Spec{
		ID:        id,
		Format:    payload.Browser,
		Body:      []byte{0, 1, 2, 0xff, 0xfe, '"', '\\', '\n', 0x80},
		Headers:   []hubcore.Header{{Name: "TTL", Value: "60"}, {Name: "Urgency", Value: "high"}, {Name: "X-Empty", Value: ""}},
		Expr:      "(a || b) && !c",
		Broadcast: false,
		Handles: []hubcore.PushChannel{
			{Handle: "h1"},
			{Endpoint: "https://push.example/x", P256DH: "key", Auth: "auth"},
			{Handle: "bd", BaiduUserID: "u1"},
		},
		Parts:    3,
		Enqueued: Base,
		At:       Base.Add(90*time.Minute + 7),
		Deadline: Base.Add(90*time.Minute + 30*time.Minute + 11),
	}
}

func specEqual(a, b *fanout.Spec) bool {
	if a == nil || b == nil {
		return a == b
	}
	x, y := *a, *b
	if !x.Enqueued.Equal(y.Enqueued) || !x.At.Equal(y.At) || !x.Deadline.Equal(y.Deadline) {
		return false
	}
	x.Enqueued, x.At, x.Deadline = time.Time{}, time.Time{}, time.Time{}
	y.Enqueued, y.At, y.Deadline = time.Time{}, time.Time{}, time.Time{}
	if len(x.Headers) == 0 && len(y.Headers) == 0 {
		x.Headers, y.Headers = nil, nil
	}
	if len(x.Handles) == 0 && len(y.Handles) == 0 {
		x.Handles, y.Handles = nil, nil
	}
	if len(x.Body) == 0 && len(y.Body) == 0 {
		x.Body, y.Body = nil, nil
	}
	return reflect.DeepEqual(x, y)
}

func (h *harness) checkSpec(what string, want *fanout.Spec) {
	h.t.Helper()
	got, err := h.b.Spec(h.ctx, want.ID)
	if err != nil {
		h.t.Fatalf("%s: Spec: %v", what, err)
	}
	if !specEqual(got, want) {
		h.t.Errorf("%s: Spec\n got  %+v\n want %+v", what, got, want)
	}
	o := h.outcome(want.ID)
	if !specEqual(o.Spec, want) {
		h.t.Errorf("%s: Outcome.Spec\n got  %+v\n want %+v", what, o.Spec, want)
	}
	if !o.Enqueued.Equal(want.Enqueued) || !o.At.Equal(want.At) {
		h.t.Errorf("%s: Outcome times enqueued %v at %v, want %v %v", what, o.Enqueued, o.At, want.Enqueued, want.At)
	}
	if o.Parts != want.Parts {
		h.t.Errorf("%s: Outcome.Parts %d, want %d", what, o.Parts, want.Parts)
	}
}

func testSpecRoundTrip(h *harness) {
	direct := fullSpec("direct")
	direct.At = direct.Enqueued
	if err := h.b.Enqueue(h.ctx, direct); err != nil {
		h.t.Fatal(err)
	}
	h.checkSpec("enqueued direct send", direct)

	bc := NewSpec("broadcast", 2)
	bc.Expr, bc.Broadcast, bc.Headers, bc.Body = "", true, nil, nil
	bc.Format = payload.Template
	bc.Enqueued = time.Unix(1_800_000_000, 999_999_999).UTC()
	bc.At, bc.Deadline = bc.Enqueued, bc.Enqueued.Add(time.Hour)
	if err := h.b.Enqueue(h.ctx, bc); err != nil {
		h.t.Fatal(err)
	}
	h.checkSpec("enqueued broadcast", bc)

	sched := fullSpec("scheduled")
	if err := h.b.Schedule(h.ctx, sched); err != nil {
		h.t.Fatal(err)
	}
	h.checkSpec("scheduled", sched)
	if ids, err := h.b.FireDue(h.ctx, sched.At, 10); err != nil || len(ids) != 1 || ids[0] != "scheduled" {
		h.t.Fatalf("FireDue: %v, %v", ids, err)
	}
	h.checkSpec("fired", sched)

	// The spec is the broker's copy: changing the caller's does nothing.
	direct.Body[0], direct.Headers[0].Value, direct.Handles[0].Handle = 'X', "changed", "changed"
	h.checkSpec("after the caller changed its spec", fullSpecAt("direct", fullSpec("direct").Enqueued))
}

func fullSpecAt(id string, at time.Time) *fanout.Spec {
	s := fullSpec(id)
	s.At = at
	return s
}

func testNotFound(h *harness) {
	h.enqueue("known", 1)
	_, err := h.b.Outcome(h.ctx, "nope")
	wantCode(h.t, "Outcome", err, hubcore.CodeNotFound)
	_, err = h.b.Spec(h.ctx, "nope")
	wantCode(h.t, "Spec", err, hubcore.CodeNotFound)
	wantCode(h.t, "Start", h.b.Start(h.ctx, "nope", Base), hubcore.CodeNotFound)
	wantCode(h.t, "Cancel", h.b.Cancel(h.ctx, "nope"), hubcore.CodeNotFound)
	err = h.b.Dedupe(h.ctx, "nope", 0, 1, []uint64{1}, make([]bool, 1))
	wantCode(h.t, "Dedupe", err, hubcore.CodeNotFound)

	// Finish of a job whose notification is unknown (expired) releases it.
	c := h.claimN("c", 1, time.Hour)[0]
	bogus := c
	bogus.NotificationID = "nope"
	_, err = h.b.Finish(h.ctx, bogus, nil, Base)
	wantCode(h.t, "Finish", err, hubcore.CodeNotFound)
	h.claimNone("the released job", "other", time.Millisecond)
	if o := h.outcome("known"); o.PartsDone != 0 {
		h.t.Errorf("a Finish under another id counted for known: %+v", o)
	}
}

func testClaimConcurrent(h *harness) {
	const notes, parts, consumers = 20, 10, 6
	want := notes * parts
	for i := range notes {
		h.enqueue(fmt.Sprintf("n%02d", i), parts)
	}
	var mu sync.Mutex
	seen := map[fanout.Job]int{}
	refs := map[string]int{}
	total := 0
	deadline := time.Now().Add(eventually)
	parallel(consumers, func(i int) {
		consumer := fmt.Sprintf("c%d", i)
		for time.Now().Before(deadline) {
			mu.Lock()
			done := total >= want
			mu.Unlock()
			if done {
				return
			}
			cs, err := h.b.Claim(h.ctx, consumer, 3, time.Hour, 50*time.Millisecond)
			if err != nil {
				h.t.Errorf("Claim(%s): %v", consumer, err)
				return
			}
			mu.Lock()
			for _, c := range cs {
				seen[c.Job]++
				refs[c.Ref]++
				total++
				if c.Attempt != 1 {
					h.t.Errorf("fresh job %+v with attempt %d", c.Job, c.Attempt)
				}
			}
			mu.Unlock()
		}
	})
	if total != want || len(seen) != want || len(refs) != want {
		h.t.Fatalf("claimed %d jobs (%d distinct, %d refs), want %d each once", total, len(seen), len(refs), want)
	}
	for j, n := range seen {
		if n != 1 || j.Part < 0 || j.Part >= parts {
			h.t.Errorf("job %+v handed out %d times", j, n)
		}
	}
	h.claimNone("after all jobs", "late", time.Hour)
}

func testClaimBlocks(h *harness) {
	h.claimNone("empty queue", "c", time.Hour)
	type result struct {
		cs  []fanout.Claim
		err error
	}
	ch := make(chan result, 1)
	go func() {
		cs, err := h.b.Claim(h.ctx, "c", 10, time.Hour, 10*time.Second)
		ch <- result{cs, err}
	}()
	time.Sleep(150 * time.Millisecond)
	h.enqueue("late", 1)
	select {
	case r := <-ch:
		if r.err != nil || len(r.cs) != 1 || r.cs[0].NotificationID != "late" {
			h.t.Fatalf("blocked Claim: %+v, %v; want the job enqueued while it waited", r.cs, r.err)
		}
	case <-time.After(9 * time.Second):
		h.t.Fatal("a blocked Claim did not wake for a new job")
	}
	// A wait that ends empty is no error.
	start := time.Now()
	cs, err := h.b.Claim(h.ctx, "c", 10, time.Hour, 100*time.Millisecond)
	if err != nil || len(cs) != 0 {
		h.t.Fatalf("empty wait: %v, %v", cs, err)
	}
	if time.Since(start) > eventually {
		h.t.Fatal("Claim ignored its block")
	}
}

func testClaimContext(h *harness) {
	ctx, cancel := context.WithCancel(h.ctx)
	go func() {
		time.Sleep(100 * time.Millisecond)
		cancel()
	}()
	start := time.Now()
	cs, err := h.b.Claim(ctx, "c", 10, time.Hour, 20*time.Second)
	if err != nil || len(cs) != 0 {
		h.t.Fatalf("Claim with a cancelled context: %v, %v; want no claims and no error", cs, err)
	}
	if el := time.Since(start); el > 10*time.Second {
		h.t.Fatalf("Claim returned %v after its context was cancelled", el)
	}
	ctx, cancel2 := context.WithTimeout(h.ctx, 100*time.Millisecond)
	defer cancel2()
	cs, err = h.b.Claim(ctx, "c", 10, time.Hour, 20*time.Second)
	if err != nil || len(cs) != 0 {
		h.t.Fatalf("Claim past its context's deadline: %v, %v", cs, err)
	}
	// The job enqueued later is still there for a live context.
	h.enqueue("n", 1)
	h.claimN("c", 1, time.Hour)
}

// toucher touches claims for a consumer every few milliseconds until
// stopped (or the test ends), and tracks the longest gap between touches:
// on a starved machine it can exceed reclaimAfter, and then a reclaim is
// the machine's fault, not the broker's.
type toucher struct {
	stop func()
	mu   sync.Mutex
	last time.Time
	gap  time.Duration
}

func (tc *toucher) touched() {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	now := time.Now()
	tc.gap = max(tc.gap, now.Sub(tc.last))
	tc.last = now
}

// maxGap is the longest time the claims went untouched so far.
func (tc *toucher) maxGap() time.Duration {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return max(tc.gap, time.Since(tc.last))
}

func (h *harness) toucher(consumer string, cs []fanout.Claim) *toucher {
	tc := &toucher{last: time.Now()}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			if err := h.b.Touch(h.ctx, consumer, cs); err != nil {
				select {
				case <-done: // the test is over; the broker may be closed
				default:
					h.t.Errorf("Touch(%s): %v", consumer, err)
				}
				return
			}
			tc.touched()
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	var once sync.Once
	tc.stop = func() {
		once.Do(func() {
			close(done)
			wg.Wait()
		})
	}
	h.t.Cleanup(tc.stop)
	return tc
}

func testReclaim(h *harness) {
	for try := 1; ; try++ {
		if h.reclaimOnce(fmt.Sprintf("n%d", try)) {
			return
		}
		if try == 3 {
			h.t.Skip("the machine was too busy to keep claims touched in 3 tries")
		}
	}
}

// reclaimOnce runs the reclaim scenario on notification id. It returns
// false, having released every job, when a touched job was reclaimed but
// the touches had stalled for longer than half of reclaimAfter.
func (h *harness) reclaimOnce(id string) bool {
	const reclaimAfter = 300 * time.Millisecond
	h.enqueue(id, 2)
	held := byPart(h.claimN("A", 2, time.Hour))
	touchA := h.toucher("A", held[:1]) // A keeps part 0 alive and neglects part 1
	touchB := &toucher{last: time.Now()}
	var got []fanout.Claim
	starved := func(tc *toucher, extra ...fanout.Claim) bool {
		if gap := tc.maxGap(); gap > reclaimAfter/2 {
			h.t.Logf("touches stalled for %v with reclaimAfter %v: the machine is too busy; trying again", gap, reclaimAfter)
			touchA.stop()
			for _, c := range append(append(held, got...), extra...) {
				if _, err := h.b.Finish(h.ctx, c, nil, Base); err != nil {
					h.t.Fatal(err)
				}
			}
			return true
		}
		return false
	}

	deadline := time.Now().Add(eventually)
	var quiet time.Time // when B got part 1: from then on, watch for part 0
	for {
		cs, err := h.b.Claim(h.ctx, "B", 10, reclaimAfter, 50*time.Millisecond)
		if err != nil {
			h.t.Fatal(err)
		}
		for _, c := range cs {
			if c.Part == 0 {
				if starved(touchA, cs...) {
					return false
				}
				h.t.Fatalf("B reclaimed part 0, which A kept touching: %+v", c)
			}
			if c.NotificationID != id || c.Attempt != 2 {
				h.t.Errorf("reclaimed %+v, want %s part 1 attempt 2", c, id)
			}
			if len(got) > 0 {
				if starved(touchB, cs...) {
					return false
				}
				h.t.Fatalf("B reclaimed part 1 again though it kept touching it")
			}
			got = append(got, c)
			quiet = time.Now()
			touchB = &toucher{last: time.Now()}
		}
		// B keeps its own claim alive, or its next Claim would reclaim it.
		if err := h.b.Touch(h.ctx, "B", got); err != nil {
			h.t.Fatal(err)
		}
		touchB.touched()
		if len(got) == 1 && time.Since(quiet) > never+reclaimAfter {
			break
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("B did not reclaim the neglected job within %v", eventually)
		}
	}
	touchB = h.toucher("B", got)
	touchA.stop()
	// Now that A stopped touching, part 0 goes too.
	p0 := h.claimN("B", 1, reclaimAfter)[0]
	touchB.stop()
	if p0.Part != 0 {
		if starved(touchB, p0) {
			return false
		}
		h.t.Fatalf("B reclaimed %+v, which it kept touching", p0)
	}
	if p0.Attempt != 2 {
		h.t.Errorf("second reclaim %+v, want part 0 attempt 2", p0)
	}

	// A, presumed dead, finishes part 1 after all: that result counts, and
	// B's second Finish of part 1 only releases the job.
	a := fanout.Counts{}
	a.Add(hubcore.APNS, hubcore.OutcomeSuccess, 5)
	if h.finish(held[1], a, Base.Add(time.Second)) {
		h.t.Error("Finish of part 1 of 2 reported done")
	}
	b := fanout.Counts{}
	b.Add(hubcore.APNS, hubcore.OutcomeSuccess, 7)
	if h.finish(got[0], b, Base.Add(2*time.Second)) {
		h.t.Error("a second Finish of part 1 reported done")
	}
	if o := h.outcome(id); o.PartsDone != 1 || o.Targets != 5 || !countsEqual(o.Counts, a) {
		h.t.Errorf("after two Finishes of part 1: parts done %d targets %d counts %s; want 1, 5, %s", o.PartsDone, o.Targets, fmtCounts(o.Counts), fmtCounts(a))
	}
	c := fanout.Counts{}
	c.Add(hubcore.FCMV1, hubcore.OutcomeExpiredChannel, 2)
	if !h.finish(p0, c, Base.Add(3*time.Second)) {
		h.t.Error("Finish of the last part did not report done")
	}
	// A's own Finish of part 0 (attempt 1) after the end changes nothing.
	if h.finish(held[0], b, Base.Add(4*time.Second)) {
		h.t.Error("a late Finish reported done again")
	}
	a.Merge(c)
	o := h.wantState(id, fanout.Completed)
	if o.PartsDone != 2 || o.Targets != 7 || !countsEqual(o.Counts, a) || !o.Ended.Equal(Base.Add(3*time.Second)) {
		h.t.Errorf("final outcome: parts done %d targets %d counts %s ended %v", o.PartsDone, o.Targets, fmtCounts(o.Counts), o.Ended)
	}
	h.checkOutcome(o)
	h.claimNone("every job released", "C", time.Millisecond)
	return true
}

func testStaleTouch(h *harness) {
	const reclaimAfter = 200 * time.Millisecond
	h.enqueue("n", 1)
	a := h.claimN("A", 1, time.Hour)
	b := h.claimN("B", 1, reclaimAfter)
	if b[0].Attempt != 2 {
		h.t.Fatalf("reclaim: attempt %d, want 2", b[0].Attempt)
	}
	// A still believes it holds the job and touches it: that neither
	// takes it back from B nor keeps B's neglected claim alive.
	touch := h.toucher("A", a)
	c := h.claimN("C", 1, reclaimAfter)
	touch.stop()
	if c[0].Attempt != 3 || c[0].Job != a[0].Job {
		h.t.Fatalf("third claim %+v, want the job at attempt 3", c[0])
	}
	// Touching an unknown claim is harmless.
	bogus := fanout.Claim{Job: fanout.Job{NotificationID: "zz", Part: 3}, Ref: c[0].Ref, Attempt: 1}
	if err := h.b.Touch(h.ctx, "Z", []fanout.Claim{bogus}); err != nil {
		h.t.Errorf("Touch of a claim Z does not hold: %v", err)
	}
	if err := h.b.Touch(h.ctx, "C", nil); err != nil {
		h.t.Errorf("Touch of nothing: %v", err)
	}
}

func testStart(h *harness) {
	h.enqueue("n", 1)
	t1, t2 := Base.Add(time.Second+1), Base.Add(time.Minute)
	if err := h.b.Start(h.ctx, "n", t1); err != nil {
		h.t.Fatal(err)
	}
	o := h.wantState("n", fanout.Processing)
	if !o.Started.Equal(t1) || !o.Ended.IsZero() {
		h.t.Errorf("after Start: started %v ended %v, want %v", o.Started, o.Ended, t1)
	}
	if err := h.b.Start(h.ctx, "n", t2); err != nil {
		h.t.Fatal(err)
	}
	if o := h.wantState("n", fanout.Processing); !o.Started.Equal(t1) {
		h.t.Errorf("a second Start moved Started to %v", o.Started)
	}
	c := h.claimN("c", 1, time.Hour)[0]
	h.finish(c, nil, t2)
	if err := h.b.Start(h.ctx, "n", t2.Add(time.Hour)); err != nil {
		h.t.Fatal(err)
	}
	if o := h.wantState("n", fanout.NoTargetFound); !o.Started.Equal(t1) || !o.Ended.Equal(t2) {
		h.t.Errorf("Start after the end: started %v ended %v", o.Started, o.Ended)
	}

	s := NewSpec("later", 1)
	s.At = Base.Add(time.Hour)
	if err := h.b.Schedule(h.ctx, s); err != nil {
		h.t.Fatal(err)
	}
	if err := h.b.Start(h.ctx, "later", t1); err != nil {
		h.t.Fatal(err)
	}
	if o := h.wantState("later", fanout.Scheduled); !o.Started.IsZero() {
		h.t.Errorf("Start of a scheduled send set Started %v", o.Started)
	}
}
