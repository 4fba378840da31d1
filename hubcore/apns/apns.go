// Package apns sends notifications to Apple's push notification service
// over its HTTP/2 provider API, authenticated with a provider token (a
// .p8 signing key) or a client certificate. It is a hubcore.Sender: it
// reports each answer of APNs as nil or a *hubcore.PushError and leaves
// retrying and pacing to the caller, except for the one token refresh
// APNs asks for with ExpiredProviderToken.
package apns

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/internal/pnshttp"
)

// APNs endpoints.
const (
	Production = "https://api.push.apple.com"
	Sandbox    = "https://api.sandbox.push.apple.com"
)

// Defaults and bounds.
const (
	DefaultConns    = 2
	DefaultTimeout  = 30 * time.Second
	DefaultTokenTTL = 40 * time.Minute
	// Apple asks providers to reuse a token for 20 to 60 minutes: more
	// often is TooManyProviderTokenUpdates, older is ExpiredProviderToken.
	MinTokenTTL = 20 * time.Minute
	MaxTokenTTL = 60 * time.Minute
)

// Config configures a Sender. Authenticate with either the provider token
// fields (KeyPEM, KeyID, TeamID) or Certificate, not both.
type Config struct {
	// Endpoint is the base URL of APNs: Production (the default), Sandbox,
	// or a fake's URL in tests.
	Endpoint string

	// KeyPEM is the contents of the AuthKey_<KeyID>.p8 file (a PKCS#8
	// P-256 key) that signs provider tokens.
	KeyPEM []byte
	// KeyID is the 10-character key identifier shown with the key.
	KeyID string
	// TeamID is the developer team the key belongs to (the token's iss).
	TeamID string

	// Certificate is a push certificate with its private key, used
	// instead of a provider token.
	Certificate *tls.Certificate

	// Topic is the default apns-topic, usually the app's bundle ID; an
	// apns-topic header of a delivery overrides it. Required with a
	// provider token, which (unlike a certificate) names no app.
	Topic string

	// RootCAs verifies the server; the system pool when nil.
	RootCAs *x509.CertPool
	// Conns is the number of HTTP/2 connections, each multiplexing as many
	// streams as APNs allows; DefaultConns when zero.
	Conns int
	// Timeout bounds one request, including the wait for a free stream;
	// DefaultTimeout when zero.
	Timeout time.Duration
	// TokenTTL is how long a provider token is used before a new one is
	// minted, between MinTokenTTL and MaxTokenTTL; DefaultTokenTTL when zero.
	TokenTTL time.Duration
	// Now is the clock for token times and Retry-After dates; time.Now
	// when nil. Tests move it.
	Now func() time.Time
}

// Sender delivers to APNs. It is safe for concurrent use.
type Sender struct {
	base    string // endpoint + "/3/device/"
	host    string // host:port to dial
	dialer  *http.Transport
	conns   []*conn
	next    atomic.Uint32
	signer  *signer // nil with a certificate
	topic   []string
	timeout time.Duration
	now     func() time.Time
	closed  atomic.Bool
}

// Shared header values: read-only slices that every request's header map
// may point at, so that the common headers cost no allocation.
var (
	hvJSON       = []string{"application/json"}
	hvAlert      = []string{"alert"}
	hvBackground = []string{"background"}
	hvPrio10     = []string{"10"}
	hvPrio5      = []string{"5"}
)

// ErrClosed is returned by Send after Close.
var ErrClosed = errors.New("apns: sender is closed")

// New checks cfg and makes a Sender. It does not connect: the first Send
// does.
func New(cfg Config) (*Sender, error) {
	if cfg.Endpoint == "" {
		cfg.Endpoint = Production
	}
	u, err := url.Parse(cfg.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("apns: Endpoint: %w", err)
	}
	if u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("apns: Endpoint %q is not an https://host[:port] URL; APNs speaks HTTP/2 over TLS only", cfg.Endpoint)
	}
	tokenAuth := len(cfg.KeyPEM) > 0 || cfg.KeyID != "" || cfg.TeamID != ""
	switch {
	case tokenAuth && cfg.Certificate != nil:
		return nil, errors.New("apns: set either a provider token key (KeyPEM, KeyID, TeamID) or a Certificate, not both")
	case !tokenAuth && cfg.Certificate == nil:
		return nil, errors.New("apns: no credentials: set KeyPEM, KeyID and TeamID, or a Certificate")
	}
	switch {
	case cfg.Conns < 0:
		return nil, fmt.Errorf("apns: Conns %d is negative", cfg.Conns)
	case cfg.Conns == 0:
		cfg.Conns = DefaultConns
	}
	switch {
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("apns: Timeout %s is negative", cfg.Timeout)
	case cfg.Timeout == 0:
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Sender{
		base:    strings.TrimSuffix(u.String(), "/") + "/3/device/",
		timeout: cfg.Timeout,
		now:     cfg.Now,
	}
	if cfg.Topic != "" {
		if !validHeaderValue(cfg.Topic) {
			return nil, fmt.Errorf("apns: Topic %q is not a valid header value", cfg.Topic)
		}
		s.topic = []string{cfg.Topic}
	}
	tc := &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12}
	if tokenAuth {
		switch {
		case len(cfg.KeyPEM) == 0:
			return nil, errors.New("apns: KeyPEM is required with KeyID and TeamID")
		case cfg.KeyID == "" || !validHeaderValue(cfg.KeyID):
			return nil, fmt.Errorf("apns: KeyID %q: want the key's 10-character identifier", cfg.KeyID)
		case cfg.TeamID == "" || !validHeaderValue(cfg.TeamID):
			return nil, fmt.Errorf("apns: TeamID %q: want the 10-character team identifier", cfg.TeamID)
		case cfg.Topic == "":
			return nil, errors.New("apns: Topic (the app's bundle ID) is required with a provider token")
		}
		switch {
		case cfg.TokenTTL == 0:
			cfg.TokenTTL = DefaultTokenTTL
		case cfg.TokenTTL < MinTokenTTL || cfg.TokenTTL > MaxTokenTTL:
			return nil, fmt.Errorf("apns: TokenTTL %s is outside [%s, %s], the reuse window APNs requires", cfg.TokenTTL, MinTokenTTL, MaxTokenTTL)
		}
		if s.signer, err = newSigner(cfg.KeyPEM, cfg.KeyID, cfg.TeamID, cfg.TokenTTL, cfg.Now); err != nil {
			return nil, err
		}
	} else {
		if len(cfg.Certificate.Certificate) == 0 || cfg.Certificate.PrivateKey == nil {
			return nil, errors.New("apns: Certificate has no certificate chain or no private key")
		}
		tc.Certificates = []tls.Certificate{*cfg.Certificate}
	}
	s.host = u.Host
	if u.Port() == "" {
		s.host = net.JoinHostPort(u.Hostname(), "443")
	}
	var protos http.Protocols
	protos.SetHTTP2(true)
	s.dialer = &http.Transport{
		Proxy:               nil, // APNs directly, never an environment proxy
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     tc,
		TLSHandshakeTimeout: 10 * time.Second,
		Protocols:           &protos,
		DisableCompression:  true,
		HTTP2: &http.HTTP2Config{
			// APNs drops idle connections quietly; pings find out.
			SendPingTimeout: time.Minute,
			PingTimeout:     15 * time.Second,
		},
	}
	for range cfg.Conns {
		s.conns = append(s.conns, newConn())
	}
	return s, nil
}

// Close closes the connections, interrupting requests in flight; Send
// fails with ErrClosed afterwards.
func (s *Sender) Close() error {
	s.closed.Store(true)
	for _, c := range s.conns {
		c.close()
	}
	return nil
}

// Send posts d to APNs. It returns nil when APNs accepted it, a
// *hubcore.PushError when APNs refused it, ctx.Err() when ctx ended, and
// another error when no answer arrived (connection lost, timeout).
func (s *Sender) Send(ctx context.Context, d *hubcore.Delivery) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if !isHex(d.Channel.Handle) {
		// Not a device token at all (the hub checks handles, so this is a
		// stored handle gone bad): APNs would say BadDeviceToken, and the
		// string may not even fit in a request path.
		return &hubcore.PushError{Outcome: hubcore.OutcomeBadChannel, Reason: "BadDeviceToken", ExpireHandle: true}
	}
	h, err := s.headers(d)
	if err != nil {
		return err
	}
	var tok *providerToken
	if s.signer != nil {
		if tok, err = s.signer.get(); err != nil {
			return err
		}
		h["authorization"] = tok.auth
	}
	status, reason, retryAfter, err := s.post(ctx, d, h)
	if err == nil && status == http.StatusForbidden && reason == "ExpiredProviderToken" && s.signer != nil {
		// APNs wants a fresh token: replace it once (unless a concurrent
		// request already did) and try this delivery once more.
		if tok, err = s.signer.replace(tok); err != nil {
			return err
		}
		h["authorization"] = tok.auth
		status, reason, retryAfter, err = s.post(ctx, d, h)
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	if status == http.StatusOK {
		return nil
	}
	return classify(status, reason, retryAfter)
}

// post makes one request; err is set only when no answer arrived.
func (s *Sender) post(ctx context.Context, d *hubcore.Delivery, h http.Header) (status int, reason string, retryAfter time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var resp *http.Response
	for attempt := 1; ; attempt++ {
		resp, err = s.roundTrip(ctx, d, h)
		// A refused stream was never processed (RFC 9113 §8.7), nor was a
		// request the client would not put on a connection that had
		// failed meanwhile: sending again is safe.
		if err == nil || !pnshttp.Unprocessed(err) || attempt == maxRefused || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			return 0, "", 0, fmt.Errorf("apns: no answer within %s: %w", s.timeout, err)
		}
		return 0, "", 0, fmt.Errorf("apns: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return http.StatusOK, "", 0, nil
	}
	// Error bodies are a few dozen bytes; read a bounded prefix. The
	// status arrived: an unreadable body only loses the reason.
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	reason, _ = parseErrorBody(b)
	return resp.StatusCode, reason, parseRetryAfter(resp.Header.Get("Retry-After"), s.now()), nil
}

// maxRefused bounds the resends of a request the server never saw.
const maxRefused = 5

func (s *Sender) roundTrip(ctx context.Context, d *hubcore.Delivery, h http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.base+d.Channel.Handle, bytes.NewReader(d.Body))
	if err != nil {
		return nil, err
	}
	req.Header = h
	cc, err := s.conns[int(s.next.Add(1)%uint32(len(s.conns)))].get(ctx, s)
	if err != nil {
		return nil, err
	}
	return cc.RoundTrip(req)
}

// headers builds the request headers from the delivery: the hub's rendered
// priority and expiration (which win over apns-priority and
// apns-expiration headers: a registration template sets them explicitly),
// the caller's apns-* headers, and the defaults APNs needs (topic, push
// type, priority). Other headers mean nothing to APNs and are not sent.
func (s *Sender) headers(d *hubcore.Delivery) (http.Header, error) {
	h := make(http.Header, 8)
	h["content-type"] = hvJSON
	if s.topic != nil {
		h["apns-topic"] = s.topic
	}
	var pushType, prio, exp string
	for _, hd := range d.Headers {
		n := hd.Name
		if len(n) < 5 || !strings.EqualFold(n[:5], "apns-") {
			continue // only apns-* headers mean anything to APNs
		}
		if !validHeaderValue(hd.Value) {
			return nil, &hubcore.PushError{Outcome: hubcore.OutcomeInvalidPayload, Reason: fmt.Sprintf("header %s has a value no HTTP request can carry", n)}
		}
		switch {
		case strings.EqualFold(n, "apns-push-type"):
			pushType = hd.Value
		case strings.EqualFold(n, "apns-priority"):
			prio = hd.Value
		case strings.EqualFold(n, "apns-expiration"):
			exp = hd.Value
		default:
			// apns-topic, apns-collapse-id, apns-id and any other apns-*
			// pass through; lower-cased so that a name given twice in
			// different cases is sent once.
			h[strings.ToLower(n)] = []string{hd.Value}
		}
	}
	if pushType == "" {
		if backgroundOnly(d.Body) {
			h["apns-push-type"] = hvBackground
			pushType = "background"
		} else {
			h["apns-push-type"] = hvAlert
			pushType = "alert"
		}
	} else {
		h["apns-push-type"] = []string{pushType}
	}
	if d.Priority != "" {
		prio = d.Priority
	}
	switch {
	case prio == "10":
		h["apns-priority"] = hvPrio10
	case prio == "5":
		h["apns-priority"] = hvPrio5
	case prio != "":
		h["apns-priority"] = []string{prio}
	case pushType == "alert":
		h["apns-priority"] = hvPrio10
	case pushType == "background":
		// APNs refuses priority 10 (its default) for background pushes.
		h["apns-priority"] = hvPrio5
	}
	if d.Expiration != "" {
		exp = d.Expiration
	}
	if exp != "" {
		h["apns-expiration"] = []string{exp}
	}
	return h, nil
}

// backgroundOnly reports whether body's aps dictionary holds nothing but
// content-available: 1, the shape of a silent background push. Most
// bodies lack the key and are decided without parsing.
func backgroundOnly(body []byte) bool {
	if !bytes.Contains(body, []byte(`"content-available"`)) {
		return false
	}
	var p struct {
		APS map[string]json.RawMessage `json:"aps"`
	}
	if json.Unmarshal(body, &p) != nil || len(p.APS) != 1 {
		return false
	}
	v, ok := p.APS["content-available"]
	return ok && string(bytes.TrimSpace(v)) == "1"
}

func isHex(t string) bool {
	if t == "" {
		return false
	}
	for i := 0; i < len(t); i++ {
		if c := t[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// validHeaderValue: no control characters, which an HTTP/2 header field
// cannot carry (the transport would refuse the request).
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
