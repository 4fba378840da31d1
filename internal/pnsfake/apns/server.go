// Package apns is a strict fake of Apple's push notification service (the
// HTTP/2 provider API) for tests and benchmarks. It checks every request
// the way Apple documents it (method, path, device token, provider token or
// client certificate, apns-* headers, payload shape and size) and answers
// with Apple's status codes and {"reason":…} bodies, so that a sender bug
// fails a test instead of passing silently. A request that passes the
// checks gets its device token's scripted action (pnsfake.Script).
//
// Where Apple's documentation leaves a choice open, the fake decides so:
//
//   - HTTP/1.x requests (Apple serves HTTP/2 only) are answered 505 HTTP
//     Version Not Supported and the connection is closed; clients offering
//     only http/1.1 in ALPN still get a TLS session, so that the 505 is
//     what they see.
//   - A payload that is not a JSON object, or has no "aps" dictionary
//     (mdm pushes excepted: their payload is {"mdm": …}), is answered 400
//     with the reason "BadPayload". Apple names no reason for this case;
//     the name is the fake's own.
//   - TooManyProviderTokenUpdates (429, as Apple answers it) is judged per
//     connection and per team, as Apple's engineers describe the limit: on
//     one connection, a token replacing a still-valid token of the same
//     team must be at least 20 minutes newer (by iat). Tokens older than
//     the connection's current one are accepted without counting as a
//     change, so that requests that raced a refresh do not flap. Fresh
//     connections start with no token, so fresh senders never trip it.
//   - An iat more than a minute in the fake's future is InvalidProviderToken;
//     an iat more than an hour in its past is ExpiredProviderToken. A
//     scripted ExpiredProviderToken (and ExpireTokens) expires the token
//     for good, as Apple's answer would mean.
package apns

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"log"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushgate/pushgate/internal/pnsfake"
)

// Key is a provider token signing key the fake trusts.
type Key struct {
	TeamID string
	Public *ecdsa.PublicKey
}

// Options configure a fake.
type Options struct {
	// Keys are the provider token keys by key ID (the JWT's kid).
	Keys map[string]Key
	// Topics lists, per team ID, the topics the team's apps may push to:
	// bundle IDs, and suffixed topics such as "{bundle}.voip" only if
	// listed. A topic listed nowhere is BadTopic; one of another team is
	// TopicDisallowed.
	Topics map[string][]string
	// ClientCAs switches the fake to certificate authentication: every
	// connection must present a client certificate signed by one of these
	// (see CA), and its topics are the certificate's userId attributes.
	// Provider tokens are then ignored.
	ClientCAs *x509.CertPool
	// Now is the fake's clock for token ages and unregistration times;
	// time.Now when nil.
	Now func() time.Time
	// AllowFrequentTokenUpdates turns off TooManyProviderTokenUpdates.
	AllowFrequentTokenUpdates bool
	// MaxConcurrentStreams is the HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS
	// the fake advertises; 1000 when zero.
	MaxConcurrentStreams int
	// ErrorLog receives the HTTP server's errors (TLS handshake failures
	// and the like); discarded when nil.
	ErrorLog *log.Logger
}

// Server is one fake APNs endpoint.
type Server struct {
	// Script decides the answer to each request that passes the checks,
	// by device token (as written in the request path).
	Script pnsfake.Script
	// Log counts (and with Keep, records) what the fake accepted.
	Log pnsfake.Log
	// Host serves the fake over TLS (Start, Serve, URL, CertPool, Close…).
	*pnsfake.Host

	opts      Options
	now       func() time.Time
	topicTeam map[string]string

	cache       jwtCache
	revokeBelow atomic.Uint64
	tokens      atomic.Int64

	regMu  sync.RWMutex
	reg    map[string]registration
	hasReg atomic.Bool

	idPrefix [8]byte
	idSeq    atomic.Uint64
}

type registration struct {
	topic          string
	unregistered   bool
	unregisteredAt int64 // ms since the epoch
}

// New makes a fake; Start or Serve runs it.
func New(opts Options) *Server {
	s := &Server{opts: opts, now: opts.Now, topicTeam: make(map[string]string)}
	if s.now == nil {
		s.now = time.Now
	}
	if s.opts.MaxConcurrentStreams <= 0 {
		s.opts.MaxConcurrentStreams = 1000
	}
	for team, topics := range opts.Topics {
		for _, t := range topics {
			s.topicTeam[t] = team
		}
	}
	_, _ = rand.Read(s.idPrefix[:]) // never fails (crypto/rand)
	// HTTP/1.1 is served only to answer 505, as Apple refuses it.
	s.Host = pnsfake.NewHost(s, pnsfake.HostOptions{
		Name: "pnsfake apns", MaxConcurrentStreams: s.opts.MaxConcurrentStreams, ErrorLog: opts.ErrorLog, ClientCAs: opts.ClientCAs,
		ConnContext: func(ctx context.Context) context.Context { return context.WithValue(ctx, connKey{}, &connState{}) },
	})
	return s
}

// Tokens is the number of distinct provider tokens that verified so far:
// a sender that shares its token mints exactly one per refresh.
func (s *Server) Tokens() int64 { return s.tokens.Load() }

// Register ties a device token to a topic: requests for it with another
// topic are answered DeviceTokenNotForTopic. Tokens compare
// case-insensitively, as Apple's hex tokens do.
func (s *Server) Register(token, topic string) {
	s.regMu.Lock()
	defer s.regMu.Unlock()
	if s.reg == nil {
		s.reg = make(map[string]registration)
	}
	r := s.reg[strings.ToLower(token)]
	r.topic = topic
	s.reg[strings.ToLower(token)] = r
	s.hasReg.Store(true)
}

// Unregister makes later requests for token answer 410 Unregistered, with
// the current time (of the fake's clock) as the timestamp.
func (s *Server) Unregister(token string) {
	s.regMu.Lock()
	defer s.regMu.Unlock()
	if s.reg == nil {
		s.reg = make(map[string]registration)
	}
	r := s.reg[strings.ToLower(token)]
	r.unregistered = true
	r.unregisteredAt = s.now().UnixMilli()
	s.reg[strings.ToLower(token)] = r
	s.hasReg.Store(true)
}

// ExpireTokens makes every provider token seen so far answer
// ExpiredProviderToken from now on, as if an hour had passed for them:
// a sender must mint a new one.
func (s *Server) ExpireTokens() {
	s.revokeBelow.Store(s.cache.seq.Load() + 1)
}

func (s *Server) registration(token string) (registration, bool) {
	if !s.hasReg.Load() {
		return registration{}, false
	}
	s.regMu.RLock()
	r, ok := s.reg[strings.ToLower(token)]
	s.regMu.RUnlock()
	return r, ok
}
