package brokertest

import (
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/fanout"
)

func (h *harness) schedule(id string, parts int, at time.Time) *fanout.Spec {
	h.t.Helper()
	s := NewSpec(id, parts)
	s.At, s.Deadline = at, at.Add(30*time.Minute)
	if err := h.b.Schedule(h.ctx, s); err != nil {
		h.t.Fatalf("Schedule(%s): %v", id, err)
	}
	return s
}

func (h *harness) fire(now time.Time, max int) []string {
	h.t.Helper()
	ids, err := h.b.FireDue(h.ctx, now, max)
	if err != nil {
		h.t.Fatalf("FireDue: %v", err)
	}
	if len(ids) > max {
		h.t.Fatalf("FireDue(max %d) fired %d", max, len(ids))
	}
	sort.Strings(ids)
	return ids
}

func (h *harness) wantFired(what string, now time.Time, max int, want ...string) {
	h.t.Helper()
	got := h.fire(now, max)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		h.t.Errorf("%s: FireDue fired %v, want %v", what, got, want)
	}
}

func testSchedule(h *harness) {
	at := Base.Add(time.Hour + 5)
	s := h.schedule("s1", 2, at)
	o := h.wantState("s1", fanout.Scheduled)
	if !o.At.Equal(at) || !o.Enqueued.Equal(s.Enqueued) || o.Parts != 2 || o.PartsDone != 0 || !o.Started.IsZero() {
		h.t.Errorf("scheduled outcome: %+v", o)
	}
	h.claimNone("before it fires", "c", time.Millisecond)
	h.wantFired("a nanosecond early", at.Add(-1), 10)
	h.wantFired("long before", Base, 10)
	h.claimNone("after early FireDue", "c", time.Millisecond)
	h.wantFired("due now", at, 10, "s1")
	o = h.wantState("s1", fanout.Enqueued)
	if !o.At.Equal(at) || !o.Enqueued.Equal(s.Enqueued) {
		h.t.Errorf("fired outcome times: enqueued %v at %v", o.Enqueued, o.At)
	}
	cs := byPart(h.claimN("c", 2, time.Hour))
	for i, c := range cs {
		if c.NotificationID != "s1" || c.Part != i || c.Attempt != 1 {
			h.t.Errorf("fired job %d: %+v", i, c)
		}
	}
	h.wantFired("again", at.Add(24*time.Hour), 10)
	h.claimNone("after firing again", "c", time.Hour)

	// Several: only the due ones, oldest first when max cuts.
	h.schedule("a", 1, Base.Add(time.Minute))
	h.schedule("b", 1, Base.Add(2*time.Minute))
	h.schedule("c", 1, Base.Add(3*time.Minute))
	h.wantFired("two due", Base.Add(150*time.Second), 10, "a", "b")
	h.wantFired("the third", Base.Add(time.Hour), 1, "c")
	h.wantFired("none left", Base.Add(time.Hour), 10)
	for i := range 5 {
		h.schedule(fmt.Sprintf("m%d", i), 1, Base.Add(time.Duration(i)*time.Second))
	}
	h.wantFired("max 2", Base.Add(time.Hour), 2, "m0", "m1")
	h.wantFired("max 2 again", Base.Add(time.Hour), 2, "m2", "m3")
	h.wantFired("the rest", Base.Add(time.Hour), 2, "m4")
	h.claimN("c", 8, time.Hour)
	h.claimNone("every fired job claimed", "c", time.Hour)

	// A send scheduled in the past fires at the next FireDue.
	h.schedule("past", 1, Base.Add(-time.Hour))
	h.wantFired("overdue", Base, 10, "past")
}

func testFireDueConcurrent(h *harness) {
	const due, later, callers = 150, 20, 8
	now := Base.Add(time.Hour)
	parts := map[string]int{}
	for i := range due {
		id := fmt.Sprintf("d%03d", i)
		parts[id] = 1 + i%2
		h.schedule(id, parts[id], Base.Add(time.Duration(i)*time.Second))
	}
	for i := range later {
		h.schedule(fmt.Sprintf("l%02d", i), 1, now.Add(time.Duration(i+1)*time.Millisecond))
	}
	var mu sync.Mutex
	fired := map[string]int{}
	deadline := time.Now().Add(eventually)
	parallel(callers, func(int) {
		for time.Now().Before(deadline) {
			mu.Lock()
			n := len(fired)
			mu.Unlock()
			if n >= due {
				return
			}
			ids, err := h.b.FireDue(h.ctx, now, 7)
			if err != nil {
				h.t.Errorf("FireDue: %v", err)
				return
			}
			if len(ids) > 7 {
				h.t.Errorf("FireDue(max 7) fired %d", len(ids))
			}
			mu.Lock()
			for _, id := range ids {
				fired[id]++
			}
			mu.Unlock()
		}
	})
	if len(fired) != due {
		h.t.Errorf("fired %d distinct sends, want %d", len(fired), due)
	}
	jobs := 0
	for id, n := range fired {
		if n != 1 || parts[id] == 0 {
			h.t.Errorf("%s fired %d times", id, n)
		}
		jobs += parts[id]
	}
	h.wantFired("after the race", now, 1000)
	for i := range later {
		h.wantState(fmt.Sprintf("l%02d", i), fanout.Scheduled)
	}
	cs := h.claimN("c", jobs, time.Hour)
	seen := map[fanout.Job]bool{}
	for _, c := range cs {
		if seen[c.Job] || c.Part >= parts[c.NotificationID] {
			h.t.Errorf("job %+v claimed twice or unexpected", c.Job)
		}
		seen[c.Job] = true
	}
	h.claimNone("after every fired job", "c", time.Hour)
}

func testCancel(h *harness) {
	h.schedule("c1", 2, Base.Add(time.Hour))
	if err := h.b.Cancel(h.ctx, "c1"); err != nil {
		h.t.Fatalf("Cancel: %v", err)
	}
	h.wantState("c1", fanout.Cancelled)
	h.wantFired("a cancelled send", Base.Add(48*time.Hour), 10)
	h.wantState("c1", fanout.Cancelled)
	h.claimNone("a cancelled send", "c", time.Millisecond)
	wantCode(h.t, "Cancel of a cancelled send", h.b.Cancel(h.ctx, "c1"), hubcore.CodeConflict)
	if err := h.b.Start(h.ctx, "c1", Base); err != nil {
		h.t.Fatal(err)
	}
	h.wantState("c1", fanout.Cancelled)

	h.schedule("c2", 1, Base.Add(time.Minute))
	h.wantFired("c2", Base.Add(time.Hour), 10, "c2")
	wantCode(h.t, "Cancel after fire", h.b.Cancel(h.ctx, "c2"), hubcore.CodeConflict)
	h.wantState("c2", fanout.Enqueued)
	c := h.claimN("c", 1, time.Hour)[0]
	h.finish(c, nil, Base)
	wantCode(h.t, "Cancel of a finished send", h.b.Cancel(h.ctx, "c2"), hubcore.CodeConflict)
	h.wantState("c2", fanout.NoTargetFound)

	h.enqueue("e1", 1)
	wantCode(h.t, "Cancel of an enqueued send", h.b.Cancel(h.ctx, "e1"), hubcore.CodeConflict)
	h.wantState("e1", fanout.Enqueued)
	if c := h.claimN("c", 1, time.Hour)[0]; c.NotificationID != "e1" {
		h.t.Fatalf("claimed %+v, want e1's job", c)
	}
	wantCode(h.t, "Cancel of an unknown send", h.b.Cancel(h.ctx, "zz"), hubcore.CodeNotFound)

	// Cancel racing FireDue: exactly one wins.
	for i := range 20 {
		id := fmt.Sprintf("r%d", i)
		h.schedule(id, 1, Base)
		var fired []string
		var cerr error
		parallel(2, func(k int) {
			if k == 0 {
				fired = h.fire(Base, 10)
			} else {
				cerr = h.b.Cancel(h.ctx, id)
			}
		})
		switch {
		case len(fired) == 1 && hubcore.CodeOf(cerr) == hubcore.CodeConflict:
			h.wantState(id, fanout.Enqueued)
			if c := h.claimN("c", 1, time.Hour)[0]; c.NotificationID != id {
				h.t.Fatalf("claimed %+v, want %s's job", c, id)
			}
		case len(fired) == 0 && cerr == nil:
			h.wantState(id, fanout.Cancelled)
		default:
			h.t.Fatalf("FireDue and Cancel of %s: fired %v, cancel %v", id, fired, cerr)
		}
	}
	h.claimNone("after the races", "c", time.Hour)
}
