// Package pnshttp holds what the push senders share: the access-token
// cache of the OAuth-authenticated ones (FCM, WNS), the Retry-After parser,
// and the handling of a new HTTP/2 connection.
package pnshttp

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

// Token is a minted access token as requests use it.
type Token struct {
	// Header is the Authorization value, shared read-only by requests.
	Header []string
	// RefreshAt is when a new token starts being minted in the
	// background; zero means never (the token endpoint gave no expiry).
	RefreshAt time.Time
	// UsableUntil is when sends stop using this token and wait for the
	// new one.
	UsableUntil time.Time
}

// Cache shares one access token among all goroutines. It does its own
// caching rather than using oauth2.ReuseTokenSource because it must also
// (a) drop a token the service refused, once, however many requests saw the
// refusal; (b) refresh ahead of expiry without making sends wait; (c) let a
// caller whose context ends stop waiting for a mint in progress; and (d)
// read the current token without taking a lock.
type Cache struct {
	mint          func() (*oauth2.Token, error)
	refreshBefore time.Duration
	// Now is the cache's clock (time.Now); tests move it.
	Now func() time.Time

	cur atomic.Pointer[Token]

	mu        sync.Mutex
	call      *mintCall // the mint in progress, or nil
	failErr   error     // a refusal by the token endpoint, remembered briefly
	failUntil time.Time
}

type mintCall struct {
	done chan struct{}
	tok  *Token
	err  error
}

// failMemory is how long a credential refusal is remembered, so that a
// bad key does not turn every send into a request to the token endpoint.
const failMemory = 5 * time.Second

// New makes a cache minting with mint; a token is refreshed refreshBefore
// its expiry (at most a tenth of its lifetime).
func New(mint func() (*oauth2.Token, error), refreshBefore time.Duration) *Cache {
	return &Cache{mint: mint, refreshBefore: refreshBefore, Now: time.Now}
}

// Get returns a usable token, minting one if there is none.
func (c *Cache) Get(ctx context.Context) (*Token, error) {
	now := c.Now()
	if t := c.cur.Load(); t != nil {
		if t.RefreshAt.IsZero() || now.Before(t.RefreshAt) {
			return t, nil
		}
		if now.Before(t.UsableUntil) {
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
func (c *Cache) start(now time.Time) (*mintCall, error) {
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

func (c *Cache) run(call *mintCall) {
	tok, err := c.mint()
	now := c.Now()
	var at *Token
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

func (c *Cache) wrap(tok *oauth2.Token, now time.Time) (*Token, error) {
	if tok == nil || tok.AccessToken == "" {
		return nil, errors.New("the token endpoint answered without an access token")
	}
	at := &Token{Header: []string{"Bearer " + tok.AccessToken}}
	if !tok.Expiry.IsZero() {
		life := tok.Expiry.Sub(now)
		margin := max(0, min(c.refreshBefore, life/10))
		at.RefreshAt = tok.Expiry.Add(-margin)
		at.UsableUntil = tok.Expiry.Add(-margin / 4)
	}
	return at, nil
}

// Invalidate drops bad, the token a request was refused with, unless a newer
// token has already replaced it: of many requests refused at once, only the
// first causes a mint.
func (c *Cache) Invalidate(bad *Token) {
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
		ra, _ := ParseRetryAfter(re.Response.Header.Get("Retry-After"), time.Now())
		return &hubcore.PushError{Outcome: hubcore.OutcomePnsUnavailable, Status: code, Reason: reason, Retry: true, RetryAfter: ra, Err: err}
	}
	return &hubcore.PushError{Outcome: hubcore.OutcomeInvalidCredentials, Status: code, Reason: reason, Err: err}
}

// Current is the cached token, or nil.
func (c *Cache) Current() *Token { return c.cur.Load() }

// WaitMint waits for the mint in progress, if any (tests use it to see a
// background refresh land).
func (c *Cache) WaitMint() {
	c.mu.Lock()
	call := c.call
	c.mu.Unlock()
	if call != nil {
		<-call.done
	}
}
