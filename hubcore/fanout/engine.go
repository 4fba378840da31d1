package fanout

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/payload"
	"github.com/pushgate/pushgate/hubcore/tagexpr"
)

// Store is what the engine needs from the registry. It is a subset of
// hubcore.Store, declared here so that tests can count what the engine asks.
type Store interface {
	Plan(ctx context.Context, e *tagexpr.Expr) (*tagexpr.Plan, error)
	Resolve(ctx context.Context, q hubcore.AudienceQuery, batch int, fn func([]hubcore.Target) error) error
	ExpireHandle(ctx context.Context, p hubcore.Platform, handle string, at time.Time) (int, error)
}

// Pace is a credential's shared rate: every replica together sends at most
// Rate notifications per second through it, in bursts of at most Burst.
type Pace struct {
	// Bucket names the credential's bucket in the broker; replicas using
	// the same credential must use the same name.
	Bucket string
	Rate   float64
	Burst  int64
}

// Observer hears about deliveries, for metrics. Its methods must be fast
// and safe for concurrent use.
type Observer interface {
	// Delivered reports one target's final outcome and, when a sender was
	// called, the time of the last attempt.
	Delivered(p hubcore.Platform, o hubcore.OutcomeName, took time.Duration)
	// Retried reports a delivery attempt that will be retried.
	Retried(p hubcore.Platform, o hubcore.OutcomeName)
}

// Config configures an Engine.
type Config struct {
	Store  Store
	Broker Broker
	// Senders hands deliveries to each platform's push service; a platform
	// without a sender counts its targets as OutcomeNoCredentials.
	Senders map[hubcore.Platform]hubcore.Sender
	// Paces are the platforms' shared rates; a platform without one is not
	// paced.
	Paces map[hubcore.Platform]Pace
	// ParseExpr parses a stored expression again on the replica that runs
	// a part (the hub's parser, with its limits).
	ParseExpr func(string) (*tagexpr.Expr, error)
	// Consumer names this replica in the broker: unique per process.
	// Empty: a random name.
	Consumer string
	// Workers is how many jobs this replica runs at once (default 4).
	Workers int
	// Concurrency is how many deliveries per platform are in flight at
	// once in this replica (default 256).
	Concurrency int
	// Parts is how many jobs a large send is cut into (default 16; the
	// store's shard count is the natural choice).
	Parts int
	// SmallSend: a send whose plan estimates at most this many candidates
	// runs as one job (default 5000): one claim instead of Parts, which is
	// what keeps a single user's send fast.
	SmallSend int64
	// ReclaimAfter is how long a job may go untouched before another
	// replica takes it over (default 30 s); jobs in progress are touched
	// every third of it.
	ReclaimAfter time.Duration
	// Window is the delivery window: what is not delivered this long after
	// a send is due is abandoned (default 30 min, as Notification Hubs).
	Window time.Duration
	// RetryBase and RetryMax bound the exponential backoff between
	// attempts (defaults 500 ms and 60 s); each wait is drawn uniformly
	// below the bound (full jitter), and never shorter than the service's
	// Retry-After.
	RetryBase, RetryMax time.Duration
	// Poll is how often this replica looks for due scheduled sends
	// (default 500 ms).
	Poll time.Duration
	// Grace is how long Run lets the jobs in progress finish once its
	// context ends (default 0: they stop at once and are reclaimed).
	Grace    time.Duration
	Now      func() time.Time
	Logger   *slog.Logger
	Observer Observer
}

// MaxScheduleAhead is how far ahead a send may be scheduled (as Notification
// Hubs: 7 days).
const MaxScheduleAhead = 7 * 24 * time.Hour

// Engine runs sends. Submit, Cancel and Outcome may be called from any
// replica; Run makes this replica claim and run jobs.
type Engine struct {
	cfg    Config
	specs  specCache
	lanes  map[hubcore.Platform]*lane
	paces  map[string]*pacer
	mu     sync.Mutex
	closed bool
}

// New checks cfg and fills in its defaults.
func New(cfg Config) (*Engine, error) {
	if cfg.Store == nil || cfg.Broker == nil {
		return nil, errors.New("fanout: Store and Broker are required")
	}
	if cfg.ParseExpr == nil {
		cfg.ParseExpr = func(s string) (*tagexpr.Expr, error) { return tagexpr.Parse(s, tagexpr.Limits{}) }
	}
	if cfg.Consumer == "" {
		cfg.Consumer = "replica-" + randomID(6)
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.Workers, 4)
	def(&cfg.Concurrency, 256)
	def(&cfg.Parts, 16)
	if cfg.SmallSend <= 0 {
		cfg.SmallSend = 5000
	}
	defd(&cfg.ReclaimAfter, 30*time.Second)
	defd(&cfg.Window, 30*time.Minute)
	defd(&cfg.RetryBase, 500*time.Millisecond)
	defd(&cfg.RetryMax, 60*time.Second)
	defd(&cfg.Poll, 500*time.Millisecond)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	e := &Engine{cfg: cfg, lanes: make(map[hubcore.Platform]*lane), paces: make(map[string]*pacer)}
	e.specs.init(1024)
	for p, s := range cfg.Senders {
		if s == nil {
			continue
		}
		var pc *pacer
		if pace, ok := cfg.Paces[p]; ok && pace.Rate > 0 {
			if pace.Bucket == "" {
				return nil, fmt.Errorf("fanout: the pace of %s needs a bucket name", p)
			}
			pc = e.paces[pace.Bucket]
			if pc == nil {
				pc = newPacer(cfg.Broker, pace)
				e.paces[pace.Bucket] = pc
			}
		}
		e.lanes[p] = newLane(e, p, s, pc)
	}
	return e, nil
}

// Send is a send to submit.
type Send struct {
	// Notification is the send; its Expr is the parsed ExprSource.
	Notification hubcore.Notification
	// ExprSource is the tag expression as the caller wrote it; "" with
	// Broadcast false and no Handles is an audience of nobody (Notification
	// Hubs' empty tag header: NoTargetFound).
	ExprSource string
	Broadcast  bool
	// Handles makes a direct send to these handles, registered or not
	// (native formats only).
	Handles []hubcore.PushChannel
	// At schedules the send; zero sends now.
	At time.Time
}

// Submit checks a send and queues it (or schedules it), returning its
// notification id. Bad input is *hubcore.Error CodeInvalid or CodeLimit.
func (e *Engine) Submit(ctx context.Context, s Send) (string, error) {
	if _, err := hubcore.Prepare(s.Notification); err != nil {
		return "", err
	}
	if len(s.Handles) > 0 && s.Notification.Format == payload.Template {
		return "", &hubcore.Error{Code: hubcore.CodeInvalid, Field: "format", Reason: "a direct send needs a native format, not template"}
	}
	if len(s.Handles) > 0 && (s.Broadcast || s.ExprSource != "") {
		return "", &hubcore.Error{Code: hubcore.CodeInvalid, Field: "tags", Reason: "a direct send takes no tag expression"}
	}
	now := e.cfg.Now()
	at := now
	if !s.At.IsZero() {
		if s.At.After(now.Add(MaxScheduleAhead)) {
			return "", &hubcore.Error{Code: hubcore.CodeInvalid, Field: "scheduleTime", Reason: "a send can be scheduled at most 7 days ahead"}
		}
		if s.At.After(now) {
			at = s.At
		}
	}
	spec := &Spec{
		ID:        newNotificationID(now),
		Format:    s.Notification.Format,
		Body:      s.Notification.Body,
		Headers:   s.Notification.Headers,
		Expr:      s.ExprSource,
		Broadcast: s.Broadcast,
		Handles:   s.Handles,
		Parts:     1,
		Enqueued:  now,
		At:        at,
		Deadline:  at.Add(e.cfg.Window),
	}
	if spec.Broadcast {
		spec.Expr = ""
	}
	if len(s.Handles) == 0 && (spec.Broadcast || spec.Expr != "") {
		plan, err := e.cfg.Store.Plan(ctx, s.Notification.Expr)
		if err != nil {
			return "", err
		}
		if !plan.Estimated || plan.Estimate > e.cfg.SmallSend {
			spec.Parts = e.cfg.Parts
		}
	}
	var err error
	if at.After(now) {
		err = e.cfg.Broker.Schedule(ctx, spec)
	} else {
		e.specs.put(spec) // this replica is likely to run it: spare a read
		err = e.cfg.Broker.Enqueue(ctx, spec)
	}
	if err != nil {
		return "", err
	}
	return spec.ID, nil
}

// Cancel cancels a scheduled send that has not fired.
func (e *Engine) Cancel(ctx context.Context, id string) error { return e.cfg.Broker.Cancel(ctx, id) }

// Outcome returns a send's state and counts.
func (e *Engine) Outcome(ctx context.Context, id string) (*Outcome, error) {
	return e.cfg.Broker.Outcome(ctx, id)
}

// Feedback lists the PNS feedback recorded by every replica.
func (e *Engine) Feedback(ctx context.Context, cursor string, limit int) ([]hubcore.FeedbackEvent, string, error) {
	return e.cfg.Broker.Feedback(ctx, cursor, limit)
}

// Run claims and runs jobs and fires due scheduled sends until ctx ends.
// Then it claims nothing more and gives the jobs in progress Grace to
// finish; a job cut short is not finished, and another replica (or this
// one, restarted) reclaims it.
func (e *Engine) Run(ctx context.Context) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return errors.New("fanout: engine already ran")
	}
	e.closed = true
	e.mu.Unlock()
	hard, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()
	// Lanes outlive the workers: a job waits for every delivery it handed
	// out, so the lanes must keep taking (and, once the job's context has
	// ended, promptly dropping) them until the last job has returned.
	laneCtx, stopLanes := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLanes()
	var lanes, workers sync.WaitGroup
	for _, l := range e.lanes {
		l.start(laneCtx, &lanes)
	}
	for i := 0; i < e.cfg.Workers; i++ {
		workers.Add(1)
		go func() {
			defer workers.Done()
			e.work(ctx, hard)
		}()
	}
	workers.Add(1)
	go func() {
		defer workers.Done()
		e.schedule(ctx)
	}()
	idle := make(chan struct{})
	go func() {
		select {
		case <-idle:
		case <-ctx.Done():
			t := time.NewTimer(e.cfg.Grace)
			defer t.Stop()
			select {
			case <-idle:
			case <-t.C:
				cancelHard()
			}
		}
	}()
	workers.Wait()
	close(idle)
	cancelHard()
	stopLanes()
	lanes.Wait()
	return nil
}

func (e *Engine) work(ctx, hard context.Context) {
	for ctx.Err() == nil {
		claims, err := e.cfg.Broker.Claim(ctx, e.cfg.Consumer, 1, e.cfg.ReclaimAfter, 2*time.Second)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			e.cfg.Logger.Warn("claiming jobs failed", "error", err)
			sleep(ctx, time.Second)
			continue
		}
		for _, c := range claims {
			if err := e.runJob(hard, c); err != nil && hard.Err() == nil {
				// Left unfinished: the job is reclaimed after ReclaimAfter.
				e.cfg.Logger.Warn("job failed; it will be retried", "notification", c.NotificationID, "part", c.Part, "attempt", c.Attempt, "error", err)
			}
		}
	}
}

func (e *Engine) schedule(ctx context.Context) {
	t := time.NewTicker(e.cfg.Poll)
	defer t.Stop()
	for {
		if ids, err := e.cfg.Broker.FireDue(ctx, e.cfg.Now(), 100); err != nil && ctx.Err() == nil {
			e.cfg.Logger.Warn("firing scheduled sends failed", "error", err)
		} else if len(ids) > 0 {
			e.cfg.Logger.Info("scheduled sends fired", "notifications", ids)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newNotificationID makes an id shaped like the service's (random hex, the
// UTC time, a sequence), which clients only ever echo back.
func newNotificationID(now time.Time) string {
	return randomID(16) + "-" + now.UTC().Format("20060102150405")
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// specCache keeps recent specs: they are immutable, and every part of a
// send needs the same one.
type specCache struct {
	mu    sync.Mutex
	max   int
	m     map[string]*Spec
	order []string
}

func (c *specCache) init(max int) { c.max, c.m = max, make(map[string]*Spec) }

func (c *specCache) get(id string) *Spec {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[id]
}

func (c *specCache) put(s *Spec) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[s.ID]; ok {
		return
	}
	if len(c.order) >= c.max {
		delete(c.m, c.order[0])
		c.order = c.order[1:]
	}
	c.m[s.ID] = s
	c.order = append(c.order, s.ID)
}
