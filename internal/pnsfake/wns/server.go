// Package wns is a strict fake of the Windows Push Notification Services
// and of its access token endpoint, for tests and benchmarks. It checks
// every request the way Microsoft documents it and answers with WNS's
// status codes and X-WNS-* response headers, so that a sender bug fails a
// test instead of passing silently. A request that passes the checks gets
// its channel's scripted action (pnsfake.Script).
//
// The token endpoint (POST /accesstoken.srf) takes the client-credentials
// grant with client_id, client_secret and scope=notify.windows.com as form
// parameters, and answers {"access_token", "token_type":"bearer",
// "expires_in"} or an OAuth error (400).
//
// Channels are https://{host}/w/?token={channel}; the fake serves the /w/
// path and identifies a channel by its token query value. A notification
// (POST) is checked in this order: the bearer token (401), the channel (404
// when malformed, 410 after Unregister, 403 when bound to another app by
// BindChannel), Content-Length (400), X-WNS-Type (400), Content-Type
// matching the type (400), the other X-WNS-* headers (400), the size (413
// above 5000 bytes), and for toast, tile and badge a well-formed XML
// document whose root element is toast, tile or badge (400). Other methods
// answer 405. Answers carry X-WNS-Debug-Trace, and on success
// X-WNS-NotificationStatus: received and X-WNS-Msg-ID. Log sees requests
// to /w/ only: Arrive for each, then Accept or Refuse (a dropped
// connection is neither).
//
// Where Microsoft's documentation leaves a choice open, the fake decides
// so:
//
//   - X-WNS-* headers it does not know are refused (400), like bad values
//     of known ones: X-WNS-Cache-Policy is cache or no-cache,
//     X-WNS-RequestForStatus and X-WNS-SuppressPopup are true or false,
//     X-WNS-TTL is a number of seconds, X-WNS-Tag and X-WNS-Group are 1 to
//     16 characters. X-WNS-Tag applies to toast and tile, X-WNS-Group and
//     X-WNS-SuppressPopup to toast only.
//   - X-WNS-Match, documented for DELETE, is accepted on POST when it is
//     well-formed (type:wns/toast;group=…;tag=…, …;group=…, …;tag=…, or
//     …;all), since the hub passes X-WNS-* headers through.
//   - DELETE (notification removal) is not supported: 405 like GET.
//   - A channel token is well-formed when it is 1 to 1024 characters of
//     base64 (standard or URL-safe, padding allowed).
//   - A Fail action with Status 200 answers 200 with Reason as
//     X-WNS-NotificationStatus (dropped, channelthrottled), or "disconnected"
//     for dropped with X-WNS-DeviceConnectionStatus: disconnected.
package wns

import (
	"crypto/rand"
	"encoding/base64"
	"log"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushgate/pushgate/internal/pnsfake"
)

// Options configure a fake.
type Options struct {
	// ClientID and ClientSecret, if set, are an app the token endpoint
	// knows (AddApp adds more).
	ClientID, ClientSecret string
	// TokenTTL is the lifetime of the access tokens issued, answered as
	// expires_in in whole seconds (default a day, as in WNS's example).
	TokenTTL time.Duration
	// MaxConcurrentStreams is the HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS
	// the fake advertises (default 1000).
	MaxConcurrentStreams int
	// Hostnames are extra names (or IP addresses) for the fake's TLS
	// certificate, besides localhost and the loopback addresses.
	Hostnames []string
	// Now is the fake's clock for token expiry; time.Now when nil.
	Now func() time.Time
	// ErrorLog receives the HTTP server's errors; discarded when nil.
	ErrorLog *log.Logger
}

// Server is one fake WNS endpoint with its token endpoint.
type Server struct {
	// Script decides the answer to each notification that passes the
	// checks, by channel token.
	Script pnsfake.Script
	// Log counts (and with Keep, records) the notifications accepted;
	// Body is the payload as sent.
	Log pnsfake.Log
	// Host serves the fake over TLS (Start, Serve, URL, CertPool, Close…).
	*pnsfake.Host

	opts Options
	now  func() time.Time

	issued atomic.Int64
	msgSeq atomic.Uint64

	apps         sync.Map // client id → secret
	tokens       sync.Map // access token → *grant
	unregistered sync.Map // channel token → struct{}
	bound        sync.Map // channel token → client id
	hasUnreg     atomic.Bool
	hasBound     atomic.Bool
	xml          xmlCache
	traceV       []string // X-WNS-Debug-Trace, the same on every answer
}

type grant struct {
	app     string
	expires atomic.Int64 // unix nanoseconds
}

// New makes a fake; Start or Serve runs it.
func New(opts Options) *Server {
	if opts.TokenTTL <= 0 {
		opts.TokenTTL = 24 * time.Hour
	}
	if opts.MaxConcurrentStreams <= 0 {
		opts.MaxConcurrentStreams = 1000
	}
	s := &Server{opts: opts, now: opts.Now}
	if s.now == nil {
		s.now = time.Now
	}
	if opts.ClientID != "" {
		s.AddApp(opts.ClientID, opts.ClientSecret)
	}
	var tb [6]byte
	_, _ = rand.Read(tb[:])
	s.traceV = []string{"PNSFAKE-" + base64.RawURLEncoding.EncodeToString(tb[:])}
	s.Host = pnsfake.NewHost(s, pnsfake.HostOptions{Name: "pnsfake wns", Hosts: opts.Hostnames, MaxConcurrentStreams: opts.MaxConcurrentStreams, IdleTimeout: 5 * time.Minute, ErrorLog: opts.ErrorLog})
	return s
}

// TokenURL is the fake's access token endpoint.
func (s *Server) TokenURL() string { return s.URL() + "/accesstoken.srf" }

// ChannelURI is a channel URI for the channel token ch as WNS hands them
// out, on a notify.windows.com host (send it with EndpointOverride set to
// URL).
func ChannelURI(ch string) string {
	return "https://wns2-by3p.notify.windows.com/w/?token=" + url.QueryEscape(ch)
}

// Channel returns a well-formed channel token derived from name.
func Channel(name string) string {
	return "AwYAAAD" + base64.StdEncoding.EncodeToString([]byte(name))
}

// LocalChannelURI is a channel URI on the fake itself, for clients without
// an endpoint override.
func (s *Server) LocalChannelURI(ch string) string {
	return s.URL() + "/w/?token=" + url.QueryEscape(ch)
}

// TokensIssued is the number of access tokens issued, by the token
// endpoint or AccessToken.
func (s *Server) TokensIssued() int64 { return s.issued.Load() }

// AddApp makes the token endpoint accept clientID with secret.
func (s *Server) AddApp(clientID, secret string) { s.apps.Store(clientID, secret) }

// AccessToken issues a token for clientID without the token endpoint, for
// load tools that cannot do OAuth (h2load). The app need not be known.
func (s *Server) AccessToken(clientID string) string {
	tok, _ := s.issue(clientID)
	return tok
}

func (s *Server) issue(app string) (string, int64) {
	var rb [32]byte
	_, _ = rand.Read(rb[:])
	tok := "EgAfake" + base64.RawStdEncoding.EncodeToString(rb[:]) + "="
	ttl := int64(s.opts.TokenTTL / time.Second)
	if ttl < 1 {
		ttl = 1
	}
	g := &grant{app: app}
	g.expires.Store(s.now().Add(time.Duration(ttl) * time.Second).UnixNano())
	s.tokens.Store(tok, g)
	s.issued.Add(1)
	return tok, ttl
}

// Unregister makes channel answer 410 Gone from now on, as WNS does for
// an expired channel.
func (s *Server) Unregister(channel string) {
	s.unregistered.Store(channel, struct{}{})
	s.hasUnreg.Store(true)
}

// BindChannel makes channel belong to the app clientID: a notification
// with another app's token answers 403 Forbidden.
func (s *Server) BindChannel(channel, clientID string) {
	s.bound.Store(channel, clientID)
	s.hasBound.Store(true)
}

// ExpireTokens makes every access token issued so far expired.
func (s *Server) ExpireTokens() {
	past := s.now().Add(-time.Second).UnixNano()
	s.tokens.Range(func(_, v any) bool {
		v.(*grant).expires.Store(past)
		return true
	})
}

// ServeHTTP routes to the token endpoint and the channels.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/accesstoken.srf":
		s.serveToken(w, r)
	case "/w/", "/w":
		s.serveNotify(w, r)
	default:
		// Not a channel: answered like an unknown one, but not logged,
		// since Log is about notifications.
		w.Header().Set("X-Wns-Error-Description", "The channel URI is not valid.")
		w.WriteHeader(http.StatusNotFound)
	}
}

// Close stops the fake and drops its connections.
func (s *Server) Close() { _ = s.Host.Close() }
