package webpush

import (
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

// h1Factor widens the connection bound for a push service that only speaks
// HTTP/1.1, where a connection carries one request at a time.
const h1Factor = 16

// conns keeps the connections to the push services, up to Conns per host,
// and hands out concurrency slots on them.
//
// It exists because a Transport cannot both bound connections per host and
// honour SETTINGS_MAX_CONCURRENT_STREAMS: with MaxConnsPerHost, a request
// finding every connection full waits for one to close, not for a stream to
// finish; and the HTTP/2 client's strict mode counts callers queued for a
// connection against its limit, so a burst larger than the limit stalls
// until callers time out (seen with Go 1.26; net/http's own test of that
// mode is skipped). Here a request first reserves a slot
// (http.ClientConn.Reserve refuses once the server's limit is reached), so
// nothing is sent beyond the limit and nobody waits inside the HTTP/2
// client.
type conns struct {
	tr     *http.Transport
	max    int
	closed atomic.Bool

	mu    sync.RWMutex
	hosts map[string]*hostConns // by URL host
}

// hostConns are the connections to one host.
type hostConns struct {
	c    *conns
	addr string // host:port, as dialed
	// live is the current connections, replaced (never mutated) under mu so
	// that reserving a slot takes no lock.
	live    atomic.Pointer[[]*pconn]
	next    atomic.Uint32
	h1      atomic.Bool // the host answered over HTTP/1.x
	waiters atomic.Int32

	// wake is closed, and replaced, when a slot may have freed. It is
	// swapped atomically because the connections' state hooks run inside
	// Reserve and RoundTrip, where taking mu could deadlock.
	wake atomic.Pointer[chan struct{}]

	// mu guards dialing and the replacement of live. It is never held
	// across a connection call that may run the state hook (Reserve,
	// RoundTrip, Close).
	mu      sync.Mutex
	dialing int
}

// pconn is one connection. A new connection carries only the request of
// whoever dialed it until that request is answered: until then the server's
// SETTINGS (its stream limit) may not have arrived, and a burst sent on the
// client's default limit would be refused stream by stream.
type pconn struct {
	cc   *http.ClientConn
	warm atomic.Bool
}

func newConns(tr *http.Transport, max int) *conns {
	return &conns{tr: tr, max: max, hosts: make(map[string]*hostConns)}
}

// host returns the connections for a URL host (host or host:port).
func (c *conns) host(urlHost string) *hostConns {
	c.mu.RLock()
	h := c.hosts[urlHost]
	c.mu.RUnlock()
	if h != nil {
		return h
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if h = c.hosts[urlHost]; h == nil {
		h = &hostConns{c: c, addr: hostPort(urlHost)}
		h.live.Store(&[]*pconn{})
		wake := make(chan struct{})
		h.wake.Store(&wake)
		c.hosts[urlHost] = h
	}
	return h
}

// close closes every connection; no new ones are dialed afterwards.
func (c *conns) close() {
	c.closed.Store(true)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, h := range c.hosts {
		for _, pc := range *h.live.Load() {
			pc.cc.Close()
		}
	}
	c.tr.CloseIdleConnections()
}

// reserve returns a connection with a slot reserved for one request: on a
// warm connection with room, else on a new connection when fewer than the
// bound exist, else the first slot to free. The caller must follow with
// exactly one RoundTrip or Release, then call done.
func (h *hostConns) reserve(ctx context.Context) (*pconn, error) {
	if pc := h.tryReserve(); pc != nil {
		return pc, nil
	}
	// Counted, and the wake channel taken, before looking again: a slot
	// freed from here on closes that channel (stateChanged does nothing
	// while nobody waits).
	h.waiters.Add(1)
	defer h.waiters.Add(-1)
	for {
		wake := *h.wake.Load()
		if pc := h.tryReserve(); pc != nil {
			return pc, nil
		}
		h.mu.Lock()
		live := h.prune()
		limit := h.c.max
		if h.h1.Load() {
			limit *= h1Factor
		}
		if len(live)+h.dialing < limit {
			h.dialing++
			h.mu.Unlock()
			return h.dial(ctx)
		}
		h.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// tryReserve reserves a slot on a warm connection, starting at a rotating
// index so that load spreads over the connections.
func (h *hostConns) tryReserve() *pconn {
	live := *h.live.Load()
	n := len(live)
	if n == 0 {
		return nil
	}
	start := int(h.next.Add(1))
	for i := range n {
		pc := live[(start+i)%n]
		if pc.warm.Load() && pc.cc.Reserve() == nil {
			return pc
		}
	}
	return nil
}

// prune drops failed connections (the client has already closed them);
// h.mu must be held.
func (h *hostConns) prune() []*pconn {
	live := *h.live.Load()
	keep := live[:0:0]
	for _, pc := range live {
		if pc.cc.Err() == nil {
			keep = append(keep, pc)
		}
	}
	if len(keep) != len(live) {
		h.live.Store(&keep)
	}
	return keep
}

// dial opens a connection with a slot reserved for the caller and adds it;
// h.dialing was counted by the caller.
func (h *hostConns) dial(ctx context.Context) (*pconn, error) {
	var cc *http.ClientConn
	err := errClosed
	if !h.c.closed.Load() {
		cc, err = h.c.tr.NewClientConn(ctx, "https", h.addr)
	}
	if err == nil {
		if err = cc.Reserve(); err != nil {
			cc.Close()
		}
	}
	var pc *pconn
	h.mu.Lock()
	h.dialing--
	if err == nil {
		pc = &pconn{cc: cc}
		live := append(append([]*pconn{}, *h.live.Load()...), pc)
		h.live.Store(&live)
	}
	h.mu.Unlock()
	if err != nil {
		h.broadcast() // a waiter may dial in our place
		return nil, err
	}
	cc.SetStateHook(h.stateChanged)
	return pc, nil
}

// done is called when a request on pc has its answer (or failed): a new
// connection becomes available to everyone.
func (h *hostConns) done(pc *pconn) {
	if !pc.warm.Load() {
		pc.warm.Store(true)
		h.stateChanged(pc.cc)
	}
}

// stateChanged is every connection's state hook: a request finished, the
// server raised its stream limit, or the connection failed. Waiters, if
// any, look again.
func (h *hostConns) stateChanged(*http.ClientConn) {
	if h.waiters.Load() != 0 {
		h.broadcast()
	}
}

func (h *hostConns) broadcast() {
	next := make(chan struct{})
	close(*h.wake.Swap(&next))
}

// hostPort is the address to dial for an https URL host.
func hostPort(host string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	h := host
	if len(h) > 1 && h[0] == '[' && h[len(h)-1] == ']' {
		h = h[1 : len(h)-1]
	}
	return net.JoinHostPort(h, "443")
}
