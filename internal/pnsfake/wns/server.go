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
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io"
	"log"
	"net"
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

	opts    Options
	now     func() time.Time
	tlsCert tls.Certificate
	leaf    *x509.Certificate
	certErr error
	srv     *http.Server

	conns  atomic.Int64
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

	mu   sync.Mutex
	addr string
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
	s.tlsCert, s.leaf, s.certErr = pnsfake.ServerCert("pnsfake wns", opts.Hostnames)
	errLog := opts.ErrorLog
	if errLog == nil {
		errLog = log.New(io.Discard, "", 0)
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetHTTP2(true)
	s.srv = &http.Server{
		Handler: s,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{s.tlsCert},
			MinVersion:   tls.VersionTLS12,
			NextProtos:   []string{"h2", "http/1.1"},
		},
		Protocols: &protos,
		HTTP2:     &http.HTTP2Config{MaxConcurrentStreams: opts.MaxConcurrentStreams},
		ErrorLog:  errLog,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			s.conns.Add(1)
			return pnsfake.ConnContext(ctx, c)
		},
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
	}
	return s
}

// Start serves on a new loopback port.
func (s *Server) Start() error {
	if s.certErr != nil {
		return s.certErr
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s.setAddr(l.Addr().String())
	go s.Serve(l) //nolint:errcheck // Close ends it
	return nil
}

// Serve serves TLS (HTTP/1.1 and HTTP/2) on l until Close.
func (s *Server) Serve(l net.Listener) error {
	if s.certErr != nil {
		return s.certErr
	}
	s.setAddr(l.Addr().String())
	err := s.srv.ServeTLS(l, "", "")
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func (s *Server) setAddr(a string) {
	s.mu.Lock()
	if s.addr == "" {
		s.addr = a
	}
	s.mu.Unlock()
}

// URL is the fake's base URL (https://127.0.0.1:port): a sender's
// EndpointOverride.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return "https://" + s.addr
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

// CertPool holds the fake's certificate, for a client's RootCAs.
func (s *Server) CertPool() *x509.CertPool {
	p := x509.NewCertPool()
	if s.leaf != nil {
		p.AddCert(s.leaf)
	}
	return p
}

// Conns is the number of connections accepted so far.
func (s *Server) Conns() int64 { return s.conns.Load() }

// TokensIssued is the number of access tokens issued, by the token
// endpoint or AccessToken.
func (s *Server) TokensIssued() int64 { return s.issued.Load() }

// Close stops the fake and drops its connections.
func (s *Server) Close() { s.srv.Close() }

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
