// Package webpush is a strict fake Web Push service: it hands out
// subscriptions the way a browser's push service does, and checks every
// push request as RFC 8030 (protocol), RFC 8291/8188 (message encryption)
// and RFC 8292 (VAPID) require, down to decrypting the payload with the
// subscription's private key, before the per-subscription pnsfake.Script
// decides the answer.
//
// Answers follow the RFCs and, where they leave a choice, Mozilla
// autopush's documented behaviour and error body
// {"code","errno","error","message"}:
//
//	405  method other than POST (Allow: POST)
//	404  unknown subscription (errno 102)
//	410  unsubscribed subscription (errno 103)
//	400  TTL missing (errno 111) or not 1*DIGIT (errno 112); Urgency not
//	     very-low/low/normal/high; Topic not 1–32 base64url characters
//	     (errno 113)
//	415  a body without Content-Encoding: aes128gcm (errno 110, with
//	     Accept-Encoding: aes128gcm, RFC 9110 §15.5.16); only an empty body
//	     may omit it (a push without payload, RFC 8030 §5)
//	401  no Authorization, not the vapid scheme, or t or k missing (errno
//	     109, with WWW-Authenticate: vapid): authentication absent, RFC 8292
//	     §4.2
//	403  vapid credentials present but invalid: a malformed JWT, another
//	     alg than ES256, a signature k does not verify, aud not the fake's
//	     origin, exp past or more than 24 h ahead, sub missing or not a
//	     mailto:/https: URI, k not the key the subscription is bound to
//	     (errno 109), RFC 8292 §2 and §4.2
//	413  body over 4096 bytes (errno 104), RFC 8030 §7.2
//	400  a body that is not one aes128gcm record the subscription's keys
//	     decrypt: rs below 18, idlen not 65, more ciphertext than rs, a
//	     failed AES-GCM tag, a delimiter other than 0x02, or the message
//	     key equal to the VAPID key (errno 110), RFC 8188 §2, RFC 8291 §4,
//	     RFC 8292 §3.2
//	201  accepted: Location of the message resource, TTL as applied
//
// Only a request that passes every check reaches the script: Fail answers
// its Status (500 if unset) with Reason as the message and, when RetryAfter
// is set, a Retry-After; Throttle answers 429 with Retry-After in whole
// seconds, rounded up; Slow waits, then accepts; Drop closes the
// connection. Every request is first noted by Log.Arrive with the
// subscription id; every error answer calls Log.Refuse.
//
// The fake is built for load: each distinct Authorization value is verified
// once and remembered until its token expires, and each subscription
// remembers the key derivation of the last message key it saw, so a
// replayed request (h2load) costs neither an ECDSA verification nor an ECDH.
package webpush

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/internal/pnsfake"
)

// MaxTTL is the longest TTL the fake applies; a longer request is served
// with this TTL and says so in the response's TTL header (RFC 8030 §5.2).
// It is autopush's documented maximum (30 days).
const MaxTTL = 30 * 24 * 60 * 60

// Options configure a Server.
type Options struct {
	// VAPIDPublicKey, when set (base64url of the 65-byte uncompressed P-256
	// point), is the applicationServerKey every subscription is created
	// with: requests must then prove possession of that key (RFC 8292 §4).
	VAPIDPublicKey string
	// Origin is the origin the fake puts in endpoints and requires as the
	// VAPID aud, e.g. https://push.test:8443. Empty means
	// https://<listen address>, right for 127.0.0.1 listeners.
	Origin string
	// MaxConcurrentStreams is the HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS
	// the fake announces; zero means 1000. Tests lower it to check that
	// senders queue rather than open more connections.
	MaxConcurrentStreams int
}

// Server is the fake push service. Script decides the answer per
// subscription id (the last segment of the endpoint, see ID); Log records
// what was accepted, with the decrypted payload.
type Server struct {
	Script pnsfake.Script
	Log    pnsfake.Log

	opts   Options
	bound  string // raw applicationServerKey from Options, or ""
	cert   tls.Certificate
	pool   *x509.CertPool
	srv    *http.Server
	origin atomic.Pointer[string]
	conns  atomic.Int64
	msgs   atomic.Uint64

	mu   sync.RWMutex
	subs map[string]*subscription

	grants   grantCache
	verified atomic.Int64

	initErr error
}

// New returns a fake that is not yet serving; call Start or Serve.
func New(opts Options) *Server {
	s := &Server{opts: opts, subs: make(map[string]*subscription)}
	if opts.VAPIDPublicKey != "" {
		k, err := decodeKey(opts.VAPIDPublicKey)
		if err != nil {
			s.initErr = fmt.Errorf("webpush fake: Options.VAPIDPublicKey: %v", err)
		}
		s.bound = string(k)
	}
	if s.initErr == nil {
		s.cert, s.pool, s.initErr = selfSigned()
	}
	streams := opts.MaxConcurrentStreams
	if streams <= 0 {
		streams = 1000
	}
	s.srv = &http.Server{
		Handler:     s,
		ConnContext: pnsfake.ConnContext,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{s.cert},
			NextProtos:   []string{"h2", "http/1.1"},
			MinVersion:   tls.VersionTLS12,
		},
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: streams},
		ReadHeaderTimeout: 10 * time.Second,
		// Dropped connections and clients that hang up are part of the
		// tests; their log lines are noise.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	if opts.Origin != "" {
		o := strings.TrimSuffix(opts.Origin, "/")
		s.origin.Store(&o)
	}
	return s
}

// Start serves on a fresh 127.0.0.1 port in the background.
func (s *Server) Start() error {
	if s.initErr != nil {
		return s.initErr
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s.setOrigin(l)
	go s.Serve(l)
	return nil
}

// Serve serves HTTPS (HTTP/2 and HTTP/1.1) on l until Close. A command
// uses it to serve the fake on a fixed port.
func (s *Server) Serve(l net.Listener) error {
	if s.initErr != nil {
		return s.initErr
	}
	s.setOrigin(l)
	err := s.srv.ServeTLS(&countingListener{Listener: l, n: &s.conns}, "", "")
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func (s *Server) setOrigin(l net.Listener) {
	o := "https://" + l.Addr().String()
	s.origin.CompareAndSwap(nil, &o)
}

// URL is the fake's origin, e.g. https://127.0.0.1:41234.
func (s *Server) URL() string {
	if o := s.origin.Load(); o != nil {
		return *o
	}
	return ""
}

// CertPool trusts the fake's certificate: a sender's RootCAs.
func (s *Server) CertPool() *x509.CertPool { return s.pool }

// Conns is the number of connections accepted so far.
func (s *Server) Conns() int64 { return s.conns.Load() }

// VerifiedTokens is the number of distinct VAPID credentials the fake has
// verified (each is verified once, then remembered): how many tokens the
// senders minted.
func (s *Server) VerifiedTokens() int64 { return s.verified.Load() }

// Close stops serving and closes every connection.
func (s *Server) Close() error { return s.srv.Close() }

// SubscribeOptions fix what a browser would choose when subscribing.
type SubscribeOptions struct {
	// Key is the user agent's ECDH key pair; nil means a fresh one.
	Key *ecdh.PrivateKey
	// Auth is the 16-byte authentication secret; nil means a fresh one.
	Auth []byte
	// ApplicationServerKey restricts the subscription to that VAPID key
	// (base64url, 65 bytes); empty means Options.VAPIDPublicKey.
	ApplicationServerKey string
}

// Subscribe creates a subscription, as PushManager.subscribe does, and
// returns it as the hub stores it.
func (s *Server) Subscribe() (hubcore.PushChannel, error) {
	return s.SubscribeWith(SubscribeOptions{})
}

// SubscribeWith creates a subscription with chosen keys (the RFC 8291
// example's, for instance).
func (s *Server) SubscribeWith(o SubscribeOptions) (hubcore.PushChannel, error) {
	origin := s.URL()
	if origin == "" {
		return hubcore.PushChannel{}, errors.New("webpush fake: not serving yet; call Start or Serve first")
	}
	sub := &subscription{key: o.Key, auth: o.Auth, bound: s.bound}
	var err error
	if sub.key == nil {
		if sub.key, err = ecdh.P256().GenerateKey(rand.Reader); err != nil {
			return hubcore.PushChannel{}, err
		}
	}
	if sub.key.Curve() != ecdh.P256() {
		return hubcore.PushChannel{}, errors.New("webpush fake: the subscription key must be P-256")
	}
	if sub.auth == nil {
		sub.auth = make([]byte, 16)
		rand.Read(sub.auth)
	}
	if len(sub.auth) != 16 {
		return hubcore.PushChannel{}, errors.New("webpush fake: the auth secret is 16 bytes")
	}
	if o.ApplicationServerKey != "" {
		k, err := decodeKey(o.ApplicationServerKey)
		if err != nil {
			return hubcore.PushChannel{}, fmt.Errorf("webpush fake: ApplicationServerKey: %v", err)
		}
		sub.bound = string(k)
	}
	sub.pub = sub.key.PublicKey().Bytes()
	idb := make([]byte, 16)
	rand.Read(idb)
	id := base64.RawURLEncoding.EncodeToString(idb)
	s.mu.Lock()
	s.subs[id] = sub
	s.mu.Unlock()
	return hubcore.PushChannel{
		Endpoint: origin + pushPath + id,
		P256DH:   base64.RawURLEncoding.EncodeToString(sub.pub),
		Auth:     base64.RawURLEncoding.EncodeToString(sub.auth),
	}, nil
}

// Unsubscribe ends a subscription, as PushSubscription.unsubscribe does:
// later requests to it are answered 410 Gone. It reports whether id
// existed.
func (s *Server) Unsubscribe(id string) bool {
	s.mu.RLock()
	sub := s.subs[id]
	s.mu.RUnlock()
	if sub == nil {
		return false
	}
	sub.gone.Store(true)
	return true
}

const pushPath = "/push/"

// ID returns the subscription id of an endpoint the fake handed out: the
// token its Script and Log are keyed by.
func ID(endpoint string) string {
	if i := strings.LastIndex(endpoint, pushPath); i >= 0 {
		return endpoint[i+len(pushPath):]
	}
	return ""
}

func (s *Server) lookup(id string) *subscription {
	s.mu.RLock()
	sub := s.subs[id]
	s.mu.RUnlock()
	return sub
}

// decodeKey reads a base64url uncompressed P-256 public key.
func decodeKey(k string) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(k)
	if err != nil {
		return nil, fmt.Errorf("not base64url: %v", err)
	}
	if _, err := ecdh.P256().NewPublicKey(b); err != nil {
		return nil, errors.New("not an uncompressed P-256 point")
	}
	return b, nil
}

// countingListener counts accepted connections, to show that senders reuse
// them.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}
