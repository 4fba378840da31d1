package fanout

import (
	"context"
	"sync"
	"time"

	"github.com/pushgate/pushgate/hubcore"
)

// run is one job in progress: its counts, and the deliveries it has handed
// to the lanes and not yet seen finish.
type run struct {
	e      *Engine
	claim  Claim
	spec   *Spec
	ctx    context.Context
	wg     sync.WaitGroup
	mu     sync.Mutex
	counts Counts
	// local de-duplicates a one-part send in memory.
	local map[uint64]struct{}
}

func (r *run) count(p hubcore.Platform, o hubcore.OutcomeName) {
	r.mu.Lock()
	r.counts.Add(p, o, 1)
	r.mu.Unlock()
}

// handleHash is the identity of a target's handle for de-duplication. It
// must not differ between replicas, so it is FNV-1a, not maphash.
func handleHash(p hubcore.Platform, key string) uint64 {
	const off, prime = 14695981039346656037, 1099511628211
	h := uint64(off)
	for i := 0; i < len(p); i++ {
		h = (h ^ uint64(p[i])) * prime
	}
	h *= prime // the separator byte, 0
	for i := 0; i < len(key); i++ {
		h = (h ^ uint64(key[i])) * prime
	}
	return h
}

func (e *Engine) spec(ctx context.Context, id string) (*Spec, error) {
	if s := e.specs.get(id); s != nil {
		return s, nil
	}
	s, err := e.cfg.Broker.Spec(ctx, id)
	if err != nil {
		return nil, err
	}
	e.specs.put(s)
	return s, nil
}

// runJob runs one part of a send to the end and finishes it. It returns an
// error, leaving the job unfinished for a later attempt, when the store or
// the broker fails or ctx ends.
func (e *Engine) runJob(ctx context.Context, c Claim) error {
	spec, err := e.spec(ctx, c.NotificationID)
	if err != nil {
		if hubcore.CodeOf(err) == hubcore.CodeNotFound {
			// The send's record expired: nothing to account to. Release it.
			_, err = e.cfg.Broker.Finish(ctx, c, Counts{}, e.cfg.Now())
		}
		return err
	}
	// Marking the send Processing need not delay its first delivery; it
	// only has to happen before the part finishes.
	started := make(chan error, 1)
	go func() { started <- e.cfg.Broker.Start(ctx, spec.ID, e.cfg.Now()) }()
	jctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := &run{e: e, claim: c, spec: spec, ctx: jctx, counts: Counts{}}
	if spec.Parts == 1 {
		// The part is the whole send: duplicates can only be within it, so
		// this replica tells them apart itself (the audience is small, or
		// a direct send's list). A re-run after a crash starts afresh,
		// as the broker's rule for an earlier attempt of the same part.
		r.local = make(map[uint64]struct{})
	}

	// Keep the claim while working, so that no other replica takes it.
	touched := make(chan struct{})
	go func() {
		defer close(touched)
		t := time.NewTicker(e.cfg.ReclaimAfter / 3)
		defer t.Stop()
		for {
			select {
			case <-jctx.Done():
				return
			case <-t.C:
				if err := e.cfg.Broker.Touch(jctx, e.cfg.Consumer, []Claim{c}); err != nil && jctx.Err() == nil {
					e.cfg.Logger.Warn("touching a job failed", "notification", spec.ID, "error", err)
				}
			}
		}
	}()

	err = e.deliverPart(r)
	r.wg.Wait() // every delivery handed out has been counted
	cancel()
	<-touched
	if serr := <-started; err == nil {
		err = serr
	}
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	done, err := e.cfg.Broker.Finish(ctx, c, r.counts, e.cfg.Now())
	if err == nil && done {
		e.cfg.Logger.Info("send finished", "notification", spec.ID, "targets", r.counts.Total())
	}
	return err
}

// deliverPart resolves the part's targets and hands each to its lane.
func (e *Engine) deliverPart(r *run) error {
	spec := r.spec
	n := hubcore.Notification{Format: spec.Format, Body: spec.Body, Headers: spec.Headers}
	if len(spec.Handles) > 0 {
		p, err := hubcore.Prepare(n)
		if err != nil {
			return err
		}
		targets := make([]hubcore.Target, len(spec.Handles))
		for i, h := range spec.Handles {
			targets[i] = hubcore.Target{Platform: p.Query.Platform, Channel: h}
		}
		return e.deliverBatch(r, p, targets)
	}
	if !spec.Broadcast && spec.Expr == "" {
		return nil // nobody: NoTargetFound
	}
	if !spec.Broadcast {
		x, err := e.cfg.ParseExpr(spec.Expr)
		if err != nil {
			return err
		}
		n.Expr = x
	}
	p, err := hubcore.Prepare(n)
	if err != nil {
		return err
	}
	q := p.Query
	if spec.Parts > 1 {
		q.Part, q.Parts = r.claim.Part, spec.Parts
	}
	return e.cfg.Store.Resolve(r.ctx, q, hubcore.SendBatch, func(ts []hubcore.Target) error {
		return e.deliverBatch(r, p, ts)
	})
}

// deliverBatch de-duplicates a batch of targets through the broker, renders
// each and queues it on its platform's lane (waiting when the lane is full:
// that wait is what bounds memory whatever the audience).
func (e *Engine) deliverBatch(r *run, p *hubcore.Prepared, ts []hubcore.Target) error {
	hashes := make([]uint64, len(ts))
	for i := range ts {
		hashes[i] = handleHash(ts[i].Platform, ts[i].Channel.Key(ts[i].Platform))
	}
	fresh := make([]bool, len(ts))
	if r.local != nil {
		for i, h := range hashes {
			if _, dup := r.local[h]; !dup {
				r.local[h] = struct{}{}
				fresh[i] = true
			}
		}
	} else if err := e.cfg.Broker.Dedupe(r.ctx, r.spec.ID, r.claim.Part, r.claim.Attempt, hashes, fresh); err != nil {
		return err
	}
	past := !e.cfg.Now().Before(r.spec.Deadline)
	var buf []byte
	for i := range ts {
		t := &ts[i]
		if !fresh[i] {
			e.settle(r, t.Platform, hubcore.OutcomeSkipped, 0)
			continue
		}
		if past {
			e.settle(r, t.Platform, hubcore.OutcomeAbandoned, 0)
			continue
		}
		l := e.lanes[t.Platform]
		if l == nil {
			e.settle(r, t.Platform, hubcore.OutcomeNoCredentials, 0)
			continue
		}
		var d *hubcore.Delivery
		var bad hubcore.OutcomeName
		if d, buf, bad = p.Render(t, buf); bad != "" {
			e.settle(r, t.Platform, bad, 0)
			continue
		}
		d.NotificationID = r.spec.ID
		r.wg.Add(1)
		if !l.put(r, d) {
			r.wg.Done()
			return r.ctx.Err()
		}
	}
	return r.ctx.Err()
}

// settle counts a target's final outcome.
func (e *Engine) settle(r *run, p hubcore.Platform, o hubcore.OutcomeName, took time.Duration) {
	r.count(p, o)
	if e.cfg.Observer != nil {
		e.cfg.Observer.Delivered(p, o, took)
	}
}
