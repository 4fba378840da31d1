package fanout

import (
	"context"
	"time"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/payload"
)

// State is a notification's place in its life, with Notification Hubs'
// names.
type State string

// States. Scheduled → Enqueued (fired) or Cancelled; Enqueued → Processing
// (a part started) → Completed, NoTargetFound (no target at all) or
// Abandoned (the delivery window closed before every part finished).
const (
	Scheduled     State = "Scheduled"
	Enqueued      State = "Enqueued"
	Processing    State = "Processing"
	Completed     State = "Completed"
	NoTargetFound State = "NoTargetFound"
	Abandoned     State = "Abandoned"
	Cancelled     State = "Cancelled"
)

// Final reports whether the state can no longer change.
func (s State) Final() bool {
	return s == Completed || s == NoTargetFound || s == Abandoned || s == Cancelled
}

// Spec is a stored send: everything a replica needs to run any of its parts.
type Spec struct {
	ID      string
	Format  payload.Format
	Body    []byte
	Headers []hubcore.Header
	// Expr is the tag expression's source; "" with Broadcast false means
	// the direct send to Handles.
	Expr      string
	Broadcast bool
	// Handles are the targets of a direct send (no registry lookup).
	Handles []hubcore.PushChannel `json:",omitempty"`
	// Parts is the number of jobs the audience is cut into (AudienceQuery
	// Part/Parts); every part is one job.
	Parts int
	// Enqueued is when the send was accepted; At when it is due (equal
	// unless scheduled); Deadline when its window closes (At + window):
	// what is not delivered by then is abandoned.
	Enqueued time.Time
	At       time.Time
	Deadline time.Time
}

// Job is one part of one notification.
type Job struct {
	NotificationID string
	Part           int
}

// Claim is a job a consumer holds. Attempt counts how many times the job
// has been handed out (1 the first time; more after its consumer died and
// another reclaimed it).
type Claim struct {
	Job
	// Ref is the broker's handle on the claim (a stream entry id).
	Ref     string
	Attempt int64
}

// Counts are a send's outcome counts per platform and outcome name.
type Counts map[hubcore.Platform]map[hubcore.OutcomeName]int64

// Add adds n to one count.
func (c Counts) Add(p hubcore.Platform, o hubcore.OutcomeName, n int64) {
	m := c[p]
	if m == nil {
		m = make(map[hubcore.OutcomeName]int64)
		c[p] = m
	}
	m[o] += n
}

// Merge adds every count of d.
func (c Counts) Merge(d Counts) {
	for p, m := range d {
		for o, n := range m {
			c.Add(p, o, n)
		}
	}
}

// Total is the sum of every count.
func (c Counts) Total() int64 {
	var t int64
	for _, m := range c {
		for _, n := range m {
			t += n
		}
	}
	return t
}

// Outcome is what is known of a notification: its state, times and the
// counts of the parts finished so far.
type Outcome struct {
	ID       string
	State    State
	Enqueued time.Time
	At       time.Time
	// Started is when the first part started, Ended when the last ended
	// (zero until then).
	Started time.Time
	Ended   time.Time
	// Targets is the number of targets of the finished parts; it equals
	// Counts.Total().
	Targets   int64
	Counts    Counts
	Parts     int
	PartsDone int
	Spec      *Spec
}

// Broker is the state that the replicas of a hub share for sending: the
// queue of jobs, scheduled sends, outcomes, per-handle de-duplication,
// feedback and pacing. It is declared here, by the engine that uses it;
// redisstore implements it for several replicas sharing one Redis, memstore
// for a single process, and brokertest is the suite both pass.
//
// Errors are *hubcore.Error: CodeNotFound for an unknown (or expired)
// notification, CodeConflict for a state that forbids the call (cancelling
// a send that already fired), CodeUnavailable when the backend fails.
type Broker interface {
	// Enqueue stores spec as Enqueued and queues its Parts jobs, all or
	// nothing: a notification is never stored without its jobs.
	Enqueue(ctx context.Context, spec *Spec) error
	// Schedule stores spec as Scheduled, due at spec.At.
	Schedule(ctx context.Context, spec *Spec) error
	// Cancel cancels a scheduled send that has not fired: it becomes
	// Cancelled and never fires. CodeNotFound if unknown, CodeConflict if
	// it is not Scheduled (already fired, or already cancelled).
	Cancel(ctx context.Context, id string) error
	// FireDue enqueues (as Enqueue does) up to max scheduled sends due at
	// or before now, and returns their ids. Each scheduled send fires
	// exactly once, whichever of many concurrent callers gets it.
	FireDue(ctx context.Context, now time.Time, max int) ([]string, error)

	// Claim hands consumer up to max jobs: first jobs that another
	// consumer has held without Touch for longer than reclaimAfter (that
	// consumer is presumed dead), then new jobs, waiting up to block for a
	// new one when there is none. It returns no claims and no error when
	// the wait ends empty or ctx ends.
	Claim(ctx context.Context, consumer string, max int, reclaimAfter, block time.Duration) ([]Claim, error)
	// Touch tells the broker that consumer still works on claims, so that
	// they are not reclaimed.
	Touch(ctx context.Context, consumer string, claims []Claim) error
	// Spec returns a notification's spec.
	Spec(ctx context.Context, id string) (*Spec, error)
	// Start marks an Enqueued notification Processing as of at; it does
	// nothing in any other state.
	Start(ctx context.Context, id string, at time.Time) error
	// Dedupe decides, for each handle key hash of one batch of part's
	// targets, whether this attempt should deliver to it: out[i] is true
	// the first time a hash is seen in the notification, and also when it
	// was last seen by an earlier attempt of the same part (that attempt
	// died; delivering again is at-least-once for the interrupted part);
	// false when another part, or this attempt already, took it (a
	// duplicate handle: Skipped). len(out) == len(hashes).
	Dedupe(ctx context.Context, id string, part int, attempt int64, hashes []uint64, out []bool) error
	// Finish records a part's result and releases its job, once per part:
	// when a reclaimed part finishes twice, the second Finish only
	// releases the job. When the last part finishes the notification
	// becomes NoTargetFound if it had no target at all, Abandoned if every
	// target was abandoned (counted as hubcore.OutcomeAbandoned), otherwise
	// Completed, with Ended = at; done reports that.
	Finish(ctx context.Context, c Claim, counts Counts, at time.Time) (done bool, err error)
	// Outcome returns what is known of a notification, Spec included.
	Outcome(ctx context.Context, id string) (*Outcome, error)

	// AddFeedback records PNS feedback events; the broker keeps the most
	// recent ones (at least FeedbackKeep, for at least FeedbackTTL).
	AddFeedback(ctx context.Context, evs []hubcore.FeedbackEvent) error
	// Feedback lists recorded events in the order they were recorded,
	// after the cursor ("" from the oldest kept), at most limit; next is
	// the cursor to continue with, "" at the end.
	Feedback(ctx context.Context, cursor string, limit int) (evs []hubcore.FeedbackEvent, next string, err error)

	// Take takes up to n tokens from the bucket named bucket, shared by
	// every replica, which holds at most burst tokens and refills at rate
	// tokens per second. It returns how many it took (0..n) and, when it
	// took none, how long until one is available.
	Take(ctx context.Context, bucket string, rate float64, burst, n int64) (int64, time.Duration, error)
}

// Retention of what the broker keeps.
const (
	// OutcomeTTL is how long a notification's spec and outcome are kept
	// after it was accepted (or, when scheduled, after it is due).
	OutcomeTTL = 24 * time.Hour
	// FeedbackKeep and FeedbackTTL bound the feedback kept.
	FeedbackKeep = 100_000
	FeedbackTTL  = 7 * 24 * time.Hour
)
