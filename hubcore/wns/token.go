package wns

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"

	"github.com/pushgate/pushgate/hubcore"
)

// accessToken is a minted token as requests use it.
type accessToken struct {
	// header is the Authorization value, shared read-only by requests.
	header []string
	// refreshAt is when a new token starts being minted in the
	// background; zero means never (the token endpoint gave no expiry).
	refreshAt time.Time
	// usableUntil is when sends stop using this token and wait for the
	// new one.
	usableUntil time.Time
}

// tokenCache shares one access token among all goroutines. It does its own
// caching rather than using oauth2.ReuseTokenSource because it must also
// (a) drop a token the service refused, once, however many requests saw the
// refusal; (b) refresh ahead of expiry without making sends wait; (c) let a
// caller whose context ends stop waiting for a mint in progress; and (d)
// read the current token without taking a lock.
type tokenCache struct {
	mint          func() (*oauth2.Token, error)
	refreshBefore time.Duration
	now           func() time.Time // time.Now; tests move it

	cur atomic.Pointer[accessToken]

	mu        sync.Mutex
	call      *mintCall // the mint in progress, or nil
	failErr   error     // a refusal by the token endpoint, remembered briefly
	failUntil time.Time
}

type mintCall struct {
	done chan struct{}
	tok  *accessToken
	err  error
}

// failMemory is how long a credential refusal is remembered, so that a
// bad key does not turn every send into a request to the token endpoint.
const failMemory = 5 * time.Second

func newTokenCache(mint func() (*oauth2.Token, error), refreshBefore time.Duration) *tokenCache {
	return &tokenCache{mint: mint, refreshBefore: refreshBefore, now: time.Now}
}

// get returns a usable token, minting one if there is none.
func (c *tokenCache) get(ctx context.Context) (*accessToken, error) {
	now := c.now()
	if t := c.cur.Load(); t != nil {
		if t.refreshAt.IsZero() || now.Before(t.refreshAt) {
			return t, nil
		}
		if now.Before(t.usableUntil) {
			c.start(now) // refresh in the background
			return t, nil
		}
	}
	call, err := c.start(now)
	if err != nil {
		return nil, err
	}
	select {
	case <-call.done:
		return call.tok, call.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// start joins the mint in progress or begins one.
func (c *tokenCache) start(now time.Time) (*mintCall, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.call != nil {
		return c.call, nil
	}
	if now.Before(c.failUntil) {
		return nil, c.failErr
	}
	call := &mintCall{done: make(chan struct{})}
	c.call = call
	go c.run(call)
	return call, nil
}

func (c *tokenCache) run(call *mintCall) {
	tok, err := c.mint()
	now := c.now()
	var at *accessToken
	if err == nil {
		at, err = c.wrap(tok, now)
	}
	if err != nil {
		err = classifyTokenError(err)
	}
	var pe *hubcore.PushError
	refused := err != nil && errors.As(err, &pe) && !pe.Retry
	c.mu.Lock()
	if err == nil {
		c.cur.Store(at)
	} else if refused {
		c.failErr, c.failUntil = err, now.Add(failMemory)
	}
	c.call = nil
	c.mu.Unlock()
	call.tok, call.err = at, err
	close(call.done)
}

func (c *tokenCache) wrap(tok *oauth2.Token, now time.Time) (*accessToken, error) {
	if tok == nil || tok.AccessToken == "" {
		return nil, errors.New("the token endpoint answered without an access token")
	}
	at := &accessToken{header: []string{"Bearer " + tok.AccessToken}}
	if !tok.Expiry.IsZero() {
		life := tok.Expiry.Sub(now)
		margin := max(0, min(c.refreshBefore, life/10))
		at.refreshAt = tok.Expiry.Add(-margin)
		at.usableUntil = tok.Expiry.Add(-margin / 4)
	}
	return at, nil
}

// invalidate drops bad, the token a request was refused with, unless a newer
// token has already replaced it: of many requests refused at once, only the
// first causes a mint.
func (c *tokenCache) invalidate(bad *accessToken) {
	c.cur.CompareAndSwap(bad, nil)
}

// classifyTokenError reports a token endpoint's refusal as a PushError:
// InvalidCredentials for a refused key (no retry), PnsUnavailable for a
// token endpoint that is overloaded or failing. Transport failures stay
// plain errors, which the engine retries.
func classifyTokenError(err error) error {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.Response == nil {
		return err
	}
	code := re.Response.StatusCode
	reason := re.ErrorCode
	if reason == "" {
		var body struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(re.Body, &body) == nil {
			reason = body.Error
		}
	}
	if reason == "" {
		reason = http.StatusText(code)
	}
	reason = "token endpoint: " + reason
	if code == http.StatusTooManyRequests || code >= 500 {
		ra, _ := parseRetryAfter(re.Response.Header.Get("Retry-After"), time.Now())
		return &hubcore.PushError{Outcome: hubcore.OutcomePnsUnavailable, Status: code, Reason: reason, Retry: true, RetryAfter: ra, Err: err}
	}
	return &hubcore.PushError{Outcome: hubcore.OutcomeInvalidCredentials, Status: code, Reason: reason, Err: err}
}
