// Package brokertest is the conformance suite of fanout.Broker: every
// broker (memstore's for one process, redisstore's for replicas sharing a
// Redis) runs it from its own tests, so that the engine can rely on the
// same behaviour from both, down to error codes and the points the Broker
// documentation leaves open (see Decisions below).
//
// A broker's test is a few lines:
//
//	func TestBroker(t *testing.T) {
//		brokertest.Run(t, func(t *testing.T) fanout.Broker {
//			return memstore.NewBroker(memstore.BrokerOptions{})
//		})
//	}
//
// Each subtest gets a fresh, empty broker from the factory. The suite uses
// real time: Claim's reclaimAfter and Take's refill are measured by the
// broker's own clock (Redis's for redisstore), so the suite cannot move
// them with a fake clock. It keeps reclaimAfter at a few hundred
// milliseconds and asserts on time only as "eventually, within a generous
// deadline" or as bounds loose enough for a loaded machine, so that it is
// quick and not flaky.
//
// # Decisions
//
// Where the Broker documentation is silent, the suite expects:
//   - Enqueue and Schedule of an id that is already stored (in any state):
//     CodeConflict, and nothing changes. An empty ID, Parts < 1 or
//     Parts > 65536: CodeInvalid. The broker keeps its own copy of the
//     spec; Spec and Outcome.Spec return equal specs (times equal to the
//     nanosecond, in any zone).
//   - Claim and FireDue with max < 1, and Claim by an empty consumer name:
//     CodeInvalid. Claim with reclaimAfter <= 0 reclaims nothing (it only
//     hands out new jobs). A fresh job's Attempt is 1; each reclaim adds 1.
//     A consumer may reclaim its own neglected jobs.
//   - Touch by a consumer that no longer holds a claim (another consumer
//     reclaimed it) does nothing: it neither takes the claim back nor keeps
//     the new holder's claim alive. Unknown claims are ignored.
//   - Start, Dedupe, Finish, Spec, Outcome and Cancel of an unknown id:
//     CodeNotFound; Finish still releases the job. Finish with a Part
//     outside 0..Parts-1: CodeInvalid. A part that finishes without Start
//     leaves Started zero.
//   - Cancel of a send that is not Scheduled: CodeConflict, whether it
//     fired, is being processed, finished or was cancelled. Cancel racing
//     FireDue: exactly one of them wins.
//   - Dedupe with len(out) != len(hashes): CodeInvalid. A hash repeated in
//     one batch is true at most once. What Dedupe answers once the
//     notification is final is the broker's choice (no part is left to
//     deliver).
//   - FireDue fires a send whose At equals now (at or before, to the
//     nanosecond), and never one whose At is later; when max cuts, the
//     earliest due fire first.
//   - Feedback: limit 0 means hubcore.DefaultPageSize; a negative limit or
//     a malformed cursor is CodeInvalid. Events come back with equal fields
//     (Time equal to the nanosecond).
//   - Take: rate <= 0, burst < 1 or n < 0 is CodeInvalid; n == 0 takes
//     nothing and returns no wait. An unused bucket starts full. After a
//     lone taker sleeps the wait it was told, a token is there.
package brokertest

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/fanout"
	"github.com/pushgate/pushgate/hubcore/payload"
)

// Factory returns a fresh, empty broker for one subtest. Releasing it
// (closing a client) is the factory's business, with t.Cleanup.
type Factory func(t *testing.T) fanout.Broker

// Run runs the whole suite against brokers from newBroker.
func Run(t *testing.T, newBroker func(t *testing.T) fanout.Broker) {
	tests := []struct {
		name string
		fn   func(h *harness)
	}{
		{"EnqueueClaim", testEnqueueClaim},
		{"EnqueueInvalid", testEnqueueInvalid},
		{"SpecRoundTrip", testSpecRoundTrip},
		{"NotFound", testNotFound},
		{"ClaimConcurrent", testClaimConcurrent},
		{"ClaimBlocks", testClaimBlocks},
		{"ClaimContext", testClaimContext},
		{"Reclaim", testReclaim},
		{"StaleTouch", testStaleTouch},
		{"Start", testStart},
		{"Dedupe", testDedupe},
		{"DedupeBig", testDedupeBig},
		{"Finish", testFinish},
		{"FinalStates", testFinalStates},
		{"FinishConcurrent", testFinishConcurrent},
		{"Schedule", testSchedule},
		{"FireDueConcurrent", testFireDueConcurrent},
		{"Cancel", testCancel},
		{"Feedback", testFeedback},
		{"FeedbackInvalid", testFeedbackInvalid},
		{"TakeBurst", testTakeBurst},
		{"TakeRate", testTakeRate},
		{"TakeConcurrent", testTakeConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(&harness{t: t, ctx: context.Background(), b: newBroker(t)})
		})
	}
}

// harness is one subtest's broker with helpers that fail the test on
// unexpected errors.
type harness struct {
	t   *testing.T
	ctx context.Context
	b   fanout.Broker
}

// Base is the time the suite's specs are accepted at: the start of the
// test process's current second, so that brokers that keep outcomes for
// fanout.OutcomeTTL by the real clock still hold them, plus nanoseconds and
// in a zone other than UTC, so that a broker that rounds times or loses
// their instant fails.
var Base = time.Now().Truncate(time.Second).Add(123456789).In(time.FixedZone("X", 3600))

// Generous deadlines for "eventually".
const (
	eventually = 15 * time.Second
	// never is how long the suite watches for something that must not
	// happen (a touched job being reclaimed).
	never = 800 * time.Millisecond
)

// NewSpec returns a valid spec with id and parts and every field set.
func NewSpec(id string, parts int) *fanout.Spec {
	return &fanout.Spec{
		ID:       id,
		Format:   payload.Apple,
		Body:     []byte(`{"aps":{"alert":"hi ` + id + `"}}`),
		Headers:  []hubcore.Header{{Name: "apns-priority", Value: "10"}, {Name: "apns-push-type", Value: "alert"}},
		Expr:     "a && !b",
		Parts:    parts,
		Enqueued: Base,
		At:       Base,
		Deadline: Base.Add(30 * time.Minute),
	}
}

func (h *harness) enqueue(id string, parts int) *fanout.Spec {
	h.t.Helper()
	s := NewSpec(id, parts)
	if err := h.b.Enqueue(h.ctx, s); err != nil {
		h.t.Fatalf("Enqueue(%s): %v", id, err)
	}
	return s
}

func (h *harness) outcome(id string) *fanout.Outcome {
	h.t.Helper()
	o, err := h.b.Outcome(h.ctx, id)
	if err != nil {
		h.t.Fatalf("Outcome(%s): %v", id, err)
	}
	if o.ID != id {
		h.t.Fatalf("Outcome(%s).ID = %q", id, o.ID)
	}
	return o
}

func (h *harness) wantState(id string, want fanout.State) *fanout.Outcome {
	h.t.Helper()
	o := h.outcome(id)
	if o.State != want {
		h.t.Fatalf("%s: state %s, want %s", id, o.State, want)
	}
	return o
}

// wantCode fails unless err is a *hubcore.Error with code want.
func wantCode(t *testing.T, what string, err error, want hubcore.Code) {
	t.Helper()
	var he *hubcore.Error
	if !errors.As(err, &he) {
		t.Errorf("%s: error %v (%T), want a *hubcore.Error with code %s", what, err, err, want)
		return
	}
	if he.Code != want {
		t.Errorf("%s: code %s (%v), want %s", what, he.Code, err, want)
	}
}

// claimN claims until consumer holds n jobs, failing if more come or
// they do not come in time.
func (h *harness) claimN(consumer string, n int, reclaimAfter time.Duration) []fanout.Claim {
	h.t.Helper()
	var got []fanout.Claim
	deadline := time.Now().Add(eventually)
	for len(got) < n {
		if time.Now().After(deadline) {
			h.t.Fatalf("%s claimed %d jobs within %v, want %d", consumer, len(got), eventually, n)
		}
		cs, err := h.b.Claim(h.ctx, consumer, n-len(got), reclaimAfter, 100*time.Millisecond)
		if err != nil {
			h.t.Fatalf("Claim(%s): %v", consumer, err)
		}
		if len(cs) > n-len(got) {
			h.t.Fatalf("Claim(%s, max %d) returned %d claims", consumer, n-len(got), len(cs))
		}
		got = append(got, cs...)
	}
	return got
}

// claimNone checks that consumer gets nothing now.
func (h *harness) claimNone(what, consumer string, reclaimAfter time.Duration) {
	h.t.Helper()
	cs, err := h.b.Claim(h.ctx, consumer, 100, reclaimAfter, 20*time.Millisecond)
	if err != nil {
		h.t.Fatalf("%s: Claim: %v", what, err)
	}
	if len(cs) != 0 {
		h.t.Fatalf("%s: claimed %v, want nothing", what, cs)
	}
}

func (h *harness) finish(c fanout.Claim, counts fanout.Counts, at time.Time) bool {
	h.t.Helper()
	done, err := h.b.Finish(h.ctx, c, counts, at)
	if err != nil {
		h.t.Fatalf("Finish(%s part %d): %v", c.NotificationID, c.Part, err)
	}
	return done
}

// byPart sorts claims by notification and part.
func byPart(cs []fanout.Claim) []fanout.Claim {
	sort.Slice(cs, func(i, j int) bool {
		if cs[i].NotificationID != cs[j].NotificationID {
			return cs[i].NotificationID < cs[j].NotificationID
		}
		return cs[i].Part < cs[j].Part
	})
	return cs
}

// countsEqual compares counts, treating absent and zero alike.
func countsEqual(a, b fanout.Counts) bool {
	return countsIn(a, b) && countsIn(b, a)
}

func countsIn(a, b fanout.Counts) bool {
	for p, m := range a {
		for o, n := range m {
			if n != 0 && b[p][o] != n {
				return false
			}
		}
	}
	return true
}

func fmtCounts(c fanout.Counts) string {
	var parts []string
	for p, m := range c {
		for o, n := range m {
			if n != 0 {
				parts = append(parts, fmt.Sprintf("%s/%s=%d", p, o, n))
			}
		}
	}
	sort.Strings(parts)
	return fmt.Sprint(parts)
}

// checkOutcome checks the invariants every outcome keeps.
func (h *harness) checkOutcome(o *fanout.Outcome) {
	h.t.Helper()
	if o.Targets != o.Counts.Total() {
		h.t.Errorf("%s: Targets %d != Counts.Total() %d", o.ID, o.Targets, o.Counts.Total())
	}
	if o.PartsDone < 0 || o.PartsDone > o.Parts {
		h.t.Errorf("%s: PartsDone %d of %d", o.ID, o.PartsDone, o.Parts)
	}
	if o.Spec == nil || o.Spec.ID != o.ID {
		h.t.Errorf("%s: Outcome.Spec %+v", o.ID, o.Spec)
	}
}

// parallel runs fn(i) for i in 0..n-1 in goroutines and waits.
func parallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(i)
		}()
	}
	wg.Wait()
}
