package fanout

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/pushgate/pushgate/hubcore"
)

// lane is one platform's delivery pipeline in this replica: a bounded queue
// and Concurrency goroutines that pace, send and retry. Lanes are shared by
// every job, so that one platform's slowness never holds another's.
type lane struct {
	e      *Engine
	p      hubcore.Platform
	sender hubcore.Sender
	pace   *pacer
	q      chan task
}

type task struct {
	r *run
	d *hubcore.Delivery
}

func newLane(e *Engine, p hubcore.Platform, s hubcore.Sender, pc *pacer) *lane {
	return &lane{e: e, p: p, sender: s, pace: pc, q: make(chan task, e.cfg.Concurrency)}
}

func (l *lane) start(ctx context.Context, wg *sync.WaitGroup) {
	for i := 0; i < l.e.cfg.Concurrency; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					l.drain()
					return
				case t := <-l.q:
					l.deliver(t)
				}
			}
		}()
	}
}

// drain releases tasks still queued when the lanes stop (none should be:
// the lanes stop after the last job returned); their jobs are not finished
// and will run again.
func (l *lane) drain() {
	for {
		select {
		case t := <-l.q:
			t.r.wg.Done()
		default:
			return
		}
	}
}

// put queues a delivery, waiting for room; false when the job ends first.
func (l *lane) put(r *run, d *hubcore.Delivery) bool {
	select {
	case l.q <- task{r, d}:
		return true
	case <-r.ctx.Done():
		return false
	}
}

// deliver sends one delivery with retries until it succeeds, fails for
// good, or its window closes.
func (l *lane) deliver(t task) {
	defer t.r.wg.Done()
	e, ctx, d := l.e, t.r.ctx, t.d
	if ctx.Err() != nil {
		return // the job ended; it is not finished and will run again
	}
	deadline := t.r.spec.Deadline
	if !e.cfg.Now().Before(deadline) {
		e.settle(t.r, l.p, hubcore.OutcomeAbandoned, 0) // queued past its window
		return
	}
	var took time.Duration
	for attempt := 0; ; attempt++ {
		if l.pace != nil {
			if !l.pace.wait(ctx) {
				return // the job ended: it is not finished, it will run again
			}
		}
		if !e.cfg.Now().Before(deadline) {
			// The backoff was chosen to end inside the window, but a late
			// wake-up (or the pace) can overrun it: the window is the
			// promise, so no attempt starts after it.
			e.settle(t.r, l.p, hubcore.OutcomeAbandoned, took)
			return
		}
		start := time.Now()
		err := l.sender.Send(ctx, d)
		took = time.Since(start)
		if err == nil {
			e.settle(t.r, l.p, hubcore.OutcomeSuccess, took)
			return
		}
		if ctx.Err() != nil {
			return
		}
		var pe *hubcore.PushError
		if !errors.As(err, &pe) {
			pe = &hubcore.PushError{Outcome: hubcore.OutcomePnsUnreachable, Retry: true, Err: err}
		}
		if pe.ExpireHandle {
			l.expire(t.r, d, pe)
		}
		if !pe.Retry || pe.ExpireHandle {
			e.settle(t.r, l.p, pe.Outcome, took)
			return
		}
		wait := backoff(e.cfg.RetryBase, e.cfg.RetryMax, attempt)
		if pe.RetryAfter > wait {
			wait = pe.RetryAfter
		}
		if !e.cfg.Now().Add(wait).Before(deadline) {
			e.settle(t.r, l.p, hubcore.OutcomeAbandoned, took)
			return
		}
		if e.cfg.Observer != nil {
			e.cfg.Observer.Retried(l.p, pe.Outcome)
		}
		if !sleep(ctx, wait) {
			return
		}
	}
}

// expire takes a dead handle out of every audience at once and records the
// feedback event.
func (l *lane) expire(r *run, d *hubcore.Delivery, pe *hubcore.PushError) {
	e := l.e
	now := e.cfg.Now()
	key := d.Channel.Key(d.Platform)
	if _, err := e.cfg.Store.ExpireHandle(r.ctx, d.Platform, key, now); err != nil {
		e.cfg.Logger.Warn("expiring a handle failed", "platform", d.Platform, "error", err)
	}
	ev := hubcore.FeedbackEvent{
		Time: now, Outcome: pe.Outcome, Reason: pe.Reason, Platform: d.Platform, Handle: key,
		RegistrationID: d.RegistrationID, InstallationID: d.InstallationID, NotificationID: d.NotificationID,
	}
	if err := e.cfg.Broker.AddFeedback(r.ctx, []hubcore.FeedbackEvent{ev}); err != nil {
		e.cfg.Logger.Warn("recording feedback failed", "error", err)
	}
}

// backoff is the full-jitter exponential backoff: uniform in [0, bound)
// with bound = min(max, base·2^attempt), but at least base/2 so that a
// storm of retries never turns into a tight loop.
func backoff(base, max time.Duration, attempt int) time.Duration {
	bound := base
	for i := 0; i < attempt && bound < max; i++ {
		bound *= 2
	}
	if bound > max {
		bound = max
	}
	w := time.Duration(rand.Int64N(int64(bound)))
	if w < base/2 {
		w = base / 2
	}
	return w
}

// pacer takes tokens from a shared bucket in small chunks, so that a busy
// replica asks the broker about ten times a second, not once per delivery.
type pacer struct {
	b     Broker
	pace  Pace
	chunk int64
	mu    sync.Mutex
	have  int64
}

func newPacer(b Broker, p Pace) *pacer {
	chunk := int64(p.Rate / 10) // a tenth of a second's worth
	chunk = max(1, min(chunk, p.Burst, 1000))
	return &pacer{b: b, pace: p, chunk: chunk}
}

// wait takes one token, waiting for the bucket to refill if needed.
func (p *pacer) wait(ctx context.Context) bool {
	for {
		p.mu.Lock()
		if p.have > 0 {
			p.have--
			p.mu.Unlock()
			return true
		}
		got, wait, err := p.b.Take(ctx, p.pace.Bucket, p.pace.Rate, p.pace.Burst, p.chunk)
		if err == nil && got > 0 {
			p.have += got - 1
			p.mu.Unlock()
			return true
		}
		p.mu.Unlock()
		if err != nil {
			wait = 100 * time.Millisecond
		}
		if wait <= 0 {
			wait = time.Millisecond
		}
		if !sleep(ctx, wait) {
			return false
		}
	}
}
