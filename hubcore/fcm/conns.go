package fcm

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/pushgate/pushgate/hubcore/internal/pnshttp"
)

// connPool spreads requests over a fixed number of HTTP/2 connections to
// one host. Each connection sends at most as many requests at once as the
// server's SETTINGS_MAX_CONCURRENT_STREAMS allows; further requests wait
// for a stream to finish instead of opening more connections.
//
// It is built on http.ClientConn rather than on a Transport in strict
// mode (http.HTTP2Config.StrictMaxConcurrentRequests, or x/net/http2's
// StrictMaxConcurrentStreams) because strict mode stalls for good once
// more requests wait than the server allows streams: each waiting request
// holds a reservation that counts against the limit (golang/go#70809).
type connPool struct {
	tr     *http.Transport // dials; its own connection cache is unused
	scheme string
	addr   string // host:port
	slots  []poolSlot
	next   atomic.Uint64
	closed atomic.Bool
}

type poolSlot struct {
	mu sync.Mutex
	c  *poolConn
}

// poolConn is one connection.
type poolConn struct {
	cc *http.ClientConn
}

func newConnPool(tr *http.Transport, base *url.URL, n int) *connPool {
	addr := base.Host
	if _, _, err := net.SplitHostPort(addr); err != nil {
		port := "443"
		if base.Scheme == "http" {
			port = "80"
		}
		addr = net.JoinHostPort(strings.Trim(base.Hostname(), "[]"), port)
	}
	return &connPool{tr: tr, scheme: base.Scheme, addr: addr, slots: make([]poolSlot, n)}
}

var errPoolClosed = errors.New("the sender is closed")

// conn returns a usable connection from the next slot, dialing if needed.
func (p *connPool) conn(ctx context.Context) (*poolConn, error) {
	if p.closed.Load() {
		return nil, errPoolClosed
	}
	s := &p.slots[p.next.Add(1)%uint64(len(p.slots))]
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c != nil && s.c.cc.Err() == nil {
		return s.c, nil
	}
	// A connection that failed or was told to go away is dropped; the
	// HTTP/2 client closes it itself once its last stream ends.
	cc, err := p.tr.NewClientConn(ctx, p.scheme, p.addr)
	if err != nil {
		return nil, err
	}
	if err := pnshttp.AwaitSettings(ctx, cc, p.scheme+"://"+p.addr); err != nil {
		cc.Close()
		return nil, err
	}
	if p.closed.Load() {
		cc.Close()
		return nil, errPoolClosed
	}
	s.c = &poolConn{cc: cc}
	return s.c, nil
}

// roundTrip sends a request on one of the pool's connections. Requests
// the server provably did not process (a refused stream; a connection
// going away before the request left) are tried again, twice at most, on a
// fresh pick; newReq builds the request for each try.
func (p *connPool) roundTrip(ctx context.Context, newReq func() (*http.Request, error)) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		pc, err := p.conn(ctx)
		if err != nil {
			return nil, err
		}
		req, err := newReq()
		if err != nil {
			return nil, err
		}
		resp, err := pc.cc.RoundTrip(req)
		if err != nil && attempt < 2 && ctx.Err() == nil && pnshttp.Unprocessed(err) {
			continue
		}
		return resp, err
	}
}

func (p *connPool) close() {
	p.closed.Store(true)
	for i := range p.slots {
		s := &p.slots[i]
		s.mu.Lock()
		if s.c != nil {
			s.c.cc.Close()
			s.c = nil
		}
		s.mu.Unlock()
	}
}
