package memstore

import (
	"context"
	"testing"
	"time"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/fanout"
	"github.com/pushgate/pushgate/hubcore/fanout/brokertest"
)

func TestBrokerConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T) fanout.Broker {
		return NewBroker(BrokerOptions{})
	})
}

// fakeClock is a settable clock for retention tests.
type fakeClock struct{ now time.Time }

func (c *fakeClock) Now() time.Time { return c.now }

func TestBrokerRetention(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{now: brokertest.Base}
	b := NewBroker(BrokerOptions{Now: clock.Now, FeedbackKeep: 5, FeedbackTTL: time.Hour})

	if err := b.Enqueue(ctx, brokertest.NewSpec("n", 1)); err != nil {
		t.Fatal(err)
	}
	s := brokertest.NewSpec("s", 1)
	s.At = brokertest.Base.Add(48 * time.Hour)
	if err := b.Schedule(ctx, s); err != nil {
		t.Fatal(err)
	}
	clock.now = clock.now.Add(fanout.OutcomeTTL - time.Second)
	if _, err := b.Outcome(ctx, "n"); err != nil {
		t.Fatalf("outcome before its TTL: %v", err)
	}
	clock.now = clock.now.Add(time.Second)
	if _, err := b.Outcome(ctx, "n"); hubcore.CodeOf(err) != hubcore.CodeNotFound {
		t.Fatalf("outcome after its TTL: %v, want not found", err)
	}
	// A scheduled send is kept OutcomeTTL from when it is due.
	clock.now = s.At.Add(fanout.OutcomeTTL - time.Second)
	if _, err := b.Outcome(ctx, "s"); err != nil {
		t.Fatalf("scheduled outcome before At+TTL: %v", err)
	}
	// The id of an expired note can be used again, and the stale schedule
	// entry of the old one does not fire the new one.
	clock.now = s.At.Add(fanout.OutcomeTTL)
	s2 := brokertest.NewSpec("s", 1)
	s2.At = clock.now.Add(time.Hour)
	if err := b.Schedule(ctx, s2); err != nil {
		t.Fatalf("reusing an expired id: %v", err)
	}
	if ids, err := b.FireDue(ctx, clock.now, 10); err != nil || len(ids) != 0 {
		t.Fatalf("FireDue fired %v, %v; the stale entry must not fire the new send", ids, err)
	}
	if ids, _ := b.FireDue(ctx, s2.At, 10); len(ids) != 1 {
		t.Fatalf("the new send did not fire: %v", ids)
	}
	b.mu.Lock()
	if len(b.sched) != 0 {
		t.Errorf("%d schedule entries left", len(b.sched))
	}
	b.mu.Unlock()

	// Feedback: at most FeedbackKeep, none older than FeedbackTTL.
	for i := range 8 {
		if err := b.AddFeedback(ctx, []hubcore.FeedbackEvent{brokertest.FeedbackEvent(i)}); err != nil {
			t.Fatal(err)
		}
	}
	evs, _, err := b.Feedback(ctx, "", 100)
	if err != nil || len(evs) != 5 || evs[0].Handle != brokertest.FeedbackEvent(3).Handle {
		t.Fatalf("feedback after 8 adds with keep 5: %d events, %v", len(evs), err)
	}
	clock.now = clock.now.Add(2 * time.Hour)
	if evs, next, err := b.Feedback(ctx, "", 100); err != nil || len(evs) != 0 || next != "" {
		t.Fatalf("feedback past its TTL: %d events, %q, %v", len(evs), next, err)
	}
}

func TestBrokerDedupeDroppedWhenFinal(t *testing.T) {
	ctx := context.Background()
	b := NewBroker(BrokerOptions{})
	if err := b.Enqueue(ctx, brokertest.NewSpec("n", 1)); err != nil {
		t.Fatal(err)
	}
	out := make([]bool, 2)
	if err := b.Dedupe(ctx, "n", 0, 1, []uint64{1, 2}, out); err != nil || !out[0] || !out[1] {
		t.Fatalf("Dedupe: %v %v", out, err)
	}
	cs, err := b.Claim(ctx, "c", 1, time.Hour, 0)
	if err != nil || len(cs) != 1 {
		t.Fatalf("Claim: %v %v", cs, err)
	}
	if done, err := b.Finish(ctx, cs[0], nil, brokertest.Base); err != nil || !done {
		t.Fatalf("Finish: %v %v", done, err)
	}
	b.mu.Lock()
	if b.notes["n"].dedupe != nil {
		t.Error("the dedupe map of a final notification was kept")
	}
	b.mu.Unlock()
	if err := b.Dedupe(ctx, "n", 0, 2, []uint64{1, 3}, out); err != nil || out[0] || out[1] {
		t.Fatalf("Dedupe after the end: %v %v; want all false", out, err)
	}
}
