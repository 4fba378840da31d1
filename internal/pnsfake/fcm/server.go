// Package fcm is a strict fake of Firebase Cloud Messaging's HTTP v1 API and
// of the Google OAuth 2.0 token endpoint that mints its access tokens, for
// tests and benchmarks. It checks every request the way Google documents
// it and answers with Google's status codes and google.rpc.Status error
// bodies, so that a sender bug fails a test instead of passing silently. A
// request that passes the checks gets its registration token's scripted
// action (pnsfake.Script).
//
// The token endpoint (POST /token) takes the JWT-bearer grant of RFC 7523:
// an RS256 assertion signed with a registered service account's key (see
// NewServiceAccount), whose iss is the account's client_email, aud the
// token URL, and exp at most an hour after iat.
//
// The send endpoint (POST /v1/projects/{project}/messages:send) checks, in
// this order: the bearer token (401 UNAUTHENTICATED), the project against
// the token's (403 PERMISSION_DENIED), the token's scope (403), the
// Content-Type (400), the body (400 INVALID_ARGUMENT: strict JSON, only
// "message" and "validate_only" at the top, only known message fields,
// exactly one of token, topic and condition, string-only data maps, no
// reserved data keys, a valid android.ttl and android.priority, and the
// size rule below), the registration token's format (400, "The
// registration token is not a valid FCM registration token"), Unregister
// (404 UNREGISTERED) and BindToken (403 SENDER_ID_MISMATCH). Log sees the
// send endpoint's requests only: Arrive for each, then Accept or Refuse
// (a dropped connection is neither).
//
// Where Google's documentation leaves a choice open, the fake decides so:
//
//   - Size: FCM's error-code reference limits "the total size of the
//     payload data" to 4096 bytes (2048 for topic messages), keys and
//     values included. The fake applies 4096 to the message object as
//     sent, without white space and without its token member, and the
//     topic limit to the data map's keys and values. Both answer 400
//     INVALID_ARGUMENT with "Message is too big".
//   - A registration token is plausible when it has 64 to 4096 characters,
//     all base64url or ':'. Real tokens are about 150 to 200 characters;
//     Token makes test tokens of that shape.
//   - Reserved data keys are "from", "gcm" and keys starting with
//     "google" (the error-code reference's examples).
//   - An assertion with an empty scope is refused at the token endpoint
//     (invalid_scope); one whose scope lacks both firebase.messaging and
//     cloud-platform gets a token that the send endpoint refuses with 403
//     PERMISSION_DENIED, insufficient scopes, as Google does.
package fcm

import (
	"log"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushgate/pushgate/internal/pnsfake"
)

// Options configure a fake.
type Options struct {
	// TokenTTL is the lifetime of the access tokens the token endpoint
	// issues, answered as expires_in in whole seconds (default an hour,
	// as Google's).
	TokenTTL time.Duration
	// MaxConcurrentStreams is the HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS
	// the fake advertises (default 1000).
	MaxConcurrentStreams int
	// Hostnames are extra names (or IP addresses) for the fake's TLS
	// certificate, besides localhost and the loopback addresses.
	Hostnames []string
	// Now is the fake's clock for assertion times and token expiry;
	// time.Now when nil.
	Now func() time.Time
	// ErrorLog receives the HTTP server's errors; discarded when nil.
	ErrorLog *log.Logger
}

// Server is one fake FCM endpoint with its token endpoint.
type Server struct {
	// Script decides the answer to each request that passes the checks,
	// by registration token.
	Script pnsfake.Script
	// Log counts (and with Keep, records) the messages accepted; Body is
	// the message object as sent, token included.
	Log pnsfake.Log
	// Host serves the fake over TLS (Start, Serve, URL, CertPool, Close…).
	*pnsfake.Host

	opts Options
	now  func() time.Time

	issued atomic.Int64
	msgSeq atomic.Uint64

	accounts     sync.Map // client_email → *account
	tokens       sync.Map // access token → *grant
	unregistered sync.Map // registration token → struct{}
	bound        sync.Map // registration token → project
	hasBound     atomic.Bool
	hasUnreg     atomic.Bool
}

// grant is an issued access token.
type grant struct {
	project string
	scoped  bool         // the scope allows sending
	expires atomic.Int64 // unix nanoseconds
}

// New makes a fake; Start or Serve runs it.
func New(opts Options) *Server {
	if opts.TokenTTL <= 0 {
		opts.TokenTTL = time.Hour
	}
	if opts.MaxConcurrentStreams <= 0 {
		opts.MaxConcurrentStreams = 1000
	}
	s := &Server{opts: opts, now: opts.Now}
	if s.now == nil {
		s.now = time.Now
	}
	s.Host = pnsfake.NewHost(s, pnsfake.HostOptions{Name: "pnsfake fcm", Hosts: opts.Hostnames, MaxConcurrentStreams: opts.MaxConcurrentStreams, ErrorLog: opts.ErrorLog})
	return s
}

// TokenURL is the fake's token endpoint: the token_uri of its key files.
func (s *Server) TokenURL() string { return s.URL() + "/token" }

// TokensIssued is the number of access tokens issued, by the token
// endpoint or AccessToken.
func (s *Server) TokensIssued() int64 { return s.issued.Load() }

// AddServiceAccount trusts a key file made by NewServiceAccount: the token
// endpoint will accept assertions signed with its key.
func (s *Server) AddServiceAccount(keyJSON []byte) error {
	a, err := parseKeyFile(keyJSON)
	if err != nil {
		return err
	}
	s.accounts.Store(a.email, a)
	return nil
}

// ServiceAccount makes a key file for projectID whose token_uri is the
// fake's, and trusts it.
func (s *Server) ServiceAccount(projectID string) ([]byte, error) {
	key, err := NewServiceAccount(projectID, s.TokenURL())
	if err != nil {
		return nil, err
	}
	return key, s.AddServiceAccount(key)
}

// AccessToken issues an access token for projectID without the token
// endpoint, for load tools that cannot sign assertions (h2load).
func (s *Server) AccessToken(projectID string) string {
	tok, _ := s.issue(projectID, true)
	return tok
}

// Unregister makes token answer 404 UNREGISTERED from now on, as FCM does
// for an app instance that is gone.
func (s *Server) Unregister(token string) {
	s.unregistered.Store(token, struct{}{})
	s.hasUnreg.Store(true)
}

// BindToken makes token belong to project's sender: a send for any other
// project answers 403 SENDER_ID_MISMATCH.
func (s *Server) BindToken(token, project string) {
	s.bound.Store(token, project)
	s.hasBound.Store(true)
}

// ExpireTokens makes every access token issued so far expired, so that the
// next request with one is answered 401 UNAUTHENTICATED.
func (s *Server) ExpireTokens() {
	past := s.now().Add(-time.Second).UnixNano()
	s.tokens.Range(func(_, v any) bool {
		v.(*grant).expires.Store(past)
		return true
	})
}

// ServeHTTP routes to the token and send endpoints.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if p == "/token" {
		s.serveToken(w, r)
		return
	}
	if rest, ok := strings.CutPrefix(p, "/v1/projects/"); ok {
		if project, ok := strings.CutSuffix(rest, "/messages:send"); ok && project != "" && !strings.Contains(project, "/") {
			s.serveSend(w, r, project)
			return
		}
	}
	writeError(w, http.StatusNotFound, "NOT_FOUND", "The requested URL was not found on this server.", "")
}

// Close stops the fake and drops its connections.
func (s *Server) Close() { _ = s.Host.Close() }
