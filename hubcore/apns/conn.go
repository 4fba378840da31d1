package apns

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"

	"github.com/pushgate/pushgate/hubcore/internal/pnshttp"
)

// conn is one connection of the pool, dialled on first use and again after
// it fails. An http.ClientConn sends on exactly one connection and, when
// APNs' SETTINGS_MAX_CONCURRENT_STREAMS are all in use, makes requests
// wait for a stream instead of opening another connection: APNs punishes
// connection churn, and a fixed pool keeps the count what Config.Conns says.
type conn struct {
	cc atomic.Pointer[http.ClientConn]
	// lock is held while dialling; a channel so that waiters can give up
	// when their context ends.
	lock chan struct{}
}

func newConn() *conn { return &conn{lock: make(chan struct{}, 1)} }

// get returns the live connection, dialling one if there is none.
func (c *conn) get(ctx context.Context, s *Sender) (*http.ClientConn, error) {
	if cc := c.cc.Load(); cc != nil && cc.Err() == nil {
		return cc, nil
	}
	select {
	case c.lock <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-c.lock }()
	old := c.cc.Load()
	if old != nil && old.Err() == nil {
		return old, nil // another request redialled meanwhile
	}
	if s.closed.Load() {
		return nil, ErrClosed
	}
	// The connection outlives this request: its context bounds only the
	// dial (the transport's dial and handshake timeouts bound it too).
	cc, err := s.dialer.NewClientConn(ctx, "https", s.host)
	if err != nil {
		return nil, fmt.Errorf("apns: connecting to %s: %w", s.host, err)
	}
	// Nobody sends on it before APNs' stream limit is known.
	if err := pnshttp.AwaitSettings(ctx, cc, "https://"+s.host); err != nil {
		cc.Close()
		return nil, fmt.Errorf("apns: connecting to %s: %w", s.host, err)
	}
	if old != nil {
		old.Close()
	}
	c.cc.Store(cc)
	return cc, nil
}

// close closes the connection, waiting out a dial in progress so that it
// cannot store a connection after Close.
func (c *conn) close() {
	c.lock <- struct{}{}
	defer func() { <-c.lock }()
	if cc := c.cc.Swap(nil); cc != nil {
		cc.Close()
	}
}
