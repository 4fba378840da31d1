// Package pnsfake holds what the strict push-service fakes share: per-token
// scripts (succeed, fail with a status, throttle, stall, drop the
// connection) and a record of what each fake accepted. The fakes themselves
// live in the subpackages (apns, fcm, wns, webpush), one per service, and
// `go run ./cmd/pnsfake` serves them on loopback for benchmarks.
package pnsfake

import (
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// ActionKind is what a fake does with one request once it has checked it.
type ActionKind int

// Actions.
const (
	// Accept answers as the service does for a delivered notification.
	Accept ActionKind = iota
	// Fail answers with Status and Reason in the service's error shape.
	Fail
	// Throttle answers 429 (406 for WNS) with a Retry-After of RetryAfter.
	Throttle
	// Slow waits Delay, then accepts.
	Slow
	// Drop closes the request's connection without an answer.
	Drop
)

// Action is one scripted answer.
type Action struct {
	Kind       ActionKind
	Status     int
	Reason     string
	RetryAfter time.Duration
	Delay      time.Duration
}

// Script answers requests per device token: each token has a queue of
// actions consumed one per request; when the queue is empty (or the token has
// none) the default applies, Accept unless SetDefault changed it.
type Script struct {
	mu   sync.Mutex
	q    map[string][]Action
	dflt Action
}

// Push appends actions to token's queue.
func (s *Script) Push(token string, actions ...Action) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.q == nil {
		s.q = make(map[string][]Action)
	}
	s.q[token] = append(s.q[token], actions...)
}

// SetDefault sets the action for tokens with nothing queued.
func (s *Script) SetDefault(a Action) {
	s.mu.Lock()
	s.dflt = a
	s.mu.Unlock()
}

// Next takes token's next action.
func (s *Script) Next(token string) Action {
	s.mu.Lock()
	defer s.mu.Unlock()
	if q := s.q[token]; len(q) > 0 {
		a := q[0]
		if len(q) == 1 {
			delete(s.q, token)
		} else {
			s.q[token] = q[1:]
		}
		return a
	}
	return s.dflt
}

// Delivered is one notification a fake accepted.
type Delivered struct {
	Token   string
	Header  http.Header
	Body    []byte // as the device would see it (decrypted for Web Push)
	Arrived time.Time
}

// Log records accepted notifications. Counting is always on; keeping each
// notification (Keep) is for tests, not for million-message benchmarks.
type Log struct {
	Keep bool
	// OnArrive, if set, is called as each request arrives, before it is
	// checked: latency measurements hang off it.
	OnArrive func(token string, at time.Time)

	accepted atomic.Int64
	refused  atomic.Int64
	mu       sync.Mutex
	items    []Delivered
}

// Arrive notes a request's arrival.
func (l *Log) Arrive(token string) {
	if l.OnArrive != nil {
		l.OnArrive(token, time.Now())
	}
}

// Accept records an accepted notification.
func (l *Log) Accept(d Delivered) {
	l.accepted.Add(1)
	if !l.Keep {
		return
	}
	l.mu.Lock()
	l.items = append(l.items, d)
	l.mu.Unlock()
}

// Refuse counts a request the fake answered with an error.
func (l *Log) Refuse() { l.refused.Add(1) }

// Accepted is the number of notifications accepted so far.
func (l *Log) Accepted() int64 { return l.accepted.Load() }

// Refused is the number of requests answered with an error so far.
func (l *Log) Refused() int64 { return l.refused.Load() }

// Items returns a copy of the kept notifications.
func (l *Log) Items() []Delivered {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Delivered(nil), l.items...)
}

// For returns the kept notifications for one token.
func (l *Log) For(token string) []Delivered {
	var out []Delivered
	for _, d := range l.Items() {
		if d.Token == token {
			out = append(out, d)
		}
	}
	return out
}

type connKey struct{}

// ConnContext is an http.Server.ConnContext that lets a handler reach its
// connection, so that Drop can close it (HTTP/2 gives handlers no Hijack).
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// DropConn closes the connection r arrived on (the server must use
// ConnContext); it reports whether it could.
func DropConn(r *http.Request) bool {
	c, ok := r.Context().Value(connKey{}).(net.Conn)
	if ok {
		c.Close()
	}
	return ok
}
