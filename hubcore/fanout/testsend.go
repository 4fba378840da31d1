package fanout

import (
	"context"
	"errors"
	"math/rand/v2"

	"github.com/pushgate/pushgate/hubcore"
)

// MaxTestTargets is how many targets a test send reaches at most (as
// Notification Hubs' debug send).
const MaxTestTargets = 10

// TestResult is one target's outcome in a test send.
type TestResult struct {
	Platform       hubcore.Platform
	Handle         string
	RegistrationID string
	Outcome        hubcore.OutcomeName
	// Detail is the service's answer for a failure ("" on success).
	Detail string
}

// TestSend resolves a send's audience, picks at most MaxTestTargets of its
// targets at random (one pass, constant memory), and delivers to each once,
// synchronously, without retries or pacing, returning each outcome. A dead
// handle is expired as in a normal send. Nothing is stored about the send.
func (e *Engine) TestSend(ctx context.Context, s Send) ([]TestResult, error) {
	n := s.Notification
	p, err := hubcore.Prepare(n)
	if err != nil {
		return nil, err
	}
	var pool []hubcore.Target
	seen := 0
	take := func(t hubcore.Target) {
		seen++
		if len(pool) < MaxTestTargets {
			pool = append(pool, t)
		} else if k := rand.IntN(seen); k < MaxTestTargets {
			pool[k] = t
		}
	}
	switch {
	case len(s.Handles) > 0:
		for _, h := range s.Handles {
			take(hubcore.Target{Platform: p.Query.Platform, Channel: h})
		}
	case s.Broadcast || s.ExprSource != "":
		err := e.cfg.Store.Resolve(ctx, p.Query, hubcore.SendBatch, func(ts []hubcore.Target) error {
			for _, t := range ts {
				t.PushVariables = cloneVars(t.PushVariables) // the store's copy is reused
				take(t)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	out := make([]TestResult, 0, len(pool))
	dup := make(map[uint64]bool, len(pool))
	var buf []byte
	for i := range pool {
		t := &pool[i]
		res := TestResult{Platform: t.Platform, Handle: t.Channel.Key(t.Platform), RegistrationID: t.RegistrationID}
		h := handleHash(t.Platform, res.Handle)
		switch {
		case dup[h]:
			res.Outcome = hubcore.OutcomeSkipped
		case e.cfg.Senders[t.Platform] == nil:
			res.Outcome = hubcore.OutcomeNoCredentials
		default:
			dup[h] = true
			var d *hubcore.Delivery
			var bad hubcore.OutcomeName
			if d, buf, bad = p.Render(t, buf); bad != "" {
				res.Outcome = bad
				break
			}
			err := e.cfg.Senders[t.Platform].Send(ctx, d)
			if err == nil {
				res.Outcome = hubcore.OutcomeSuccess
				break
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			var pe *hubcore.PushError
			if !errors.As(err, &pe) {
				pe = &hubcore.PushError{Outcome: hubcore.OutcomePnsUnreachable, Retry: true, Err: err}
			}
			res.Outcome, res.Detail = pe.Outcome, pe.Error()
			if pe.ExpireHandle {
				l := &lane{e: e, p: t.Platform}
				l.expire(&run{ctx: ctx}, d, pe)
			}
		}
		out = append(out, res)
	}
	return out, nil
}

func cloneVars(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}
