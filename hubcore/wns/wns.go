// Package wns sends notifications through the Windows Push Notification
// Services: one POST per device to its channel URI, with an OAuth 2.0
// access token obtained with the app's package SID and secret (client
// credentials) and shared by every request.
//
// WNS is HTTP/1.1 in practice, so the sender keeps a pool of keep-alive
// connections per WNS host, sized by Config.Conns. The sender only reports
// what WNS answered, classified as a *hubcore.PushError; retrying, pacing
// and expiring handles are the fan-out engine's business.
package wns

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/internal/pnshttp"
)

// Defaults.
const (
	// DefaultTokenURL is WNS's access token endpoint.
	DefaultTokenURL = "https://login.live.com/accesstoken.srf"
	// Scope is the scope WNS access tokens are requested with.
	Scope = "notify.windows.com"
	// DefaultHostSuffix is the domain every WNS channel URI is on.
	DefaultHostSuffix = ".notify.windows.com"

	defaultConnsHTTP1    = 64
	defaultConnsHTTP2    = 2
	defaultTimeout       = 30 * time.Second
	defaultRefreshBefore = 5 * time.Minute
	maxErrorBody         = 64 << 10
)

// Config configures a Sender. ClientID and ClientSecret are required;
// everything else has a default.
type Config struct {
	// ClientID is the app's package SID (ms-app://s-1-15-2-…).
	ClientID string
	// ClientSecret is the app's secret key.
	ClientSecret string
	// TokenURL is where access tokens are obtained (default
	// DefaultTokenURL). Tests point it at the fake.
	TokenURL string
	// EndpointOverride, when set, replaces the scheme and host of every
	// channel URI (keeping its path and query), so that tests can send
	// real-looking channels to the fake, e.g. "https://127.0.0.1:4443".
	EndpointOverride string
	// AllowedHosts are the host suffixes a channel URI may point at
	// (default DefaultHostSuffix); an entry without a leading dot is one
	// exact host. The access token goes to the channel's host, so a
	// channel elsewhere is refused as a bad channel rather than sent to.
	AllowedHosts []string
	// RootCAs replaces the system's roots when set (tests: the fake's
	// CertPool).
	RootCAs *x509.CertPool
	// HTTP2 sends over HTTP/2 instead of HTTP/1.1.
	HTTP2 bool
	// Conns bounds the connections per WNS host. Over HTTP/1.1 (default
	// 64) each carries one request at a time, so Conns bounds the
	// requests in flight per host; over HTTP/2 (default 2) it bounds the
	// connections being dialed at once.
	Conns int
	// Timeout bounds one request to WNS or to the token endpoint
	// (default 30s). A request that times out is reported as a transport
	// error, which the engine retries.
	Timeout time.Duration
	// RefreshBefore is how long before an access token expires a new one
	// is obtained in the background (default 5m, and at most a tenth of
	// the token's lifetime).
	RefreshBefore time.Duration
}

// Sender delivers notifications to WNS. It is safe for concurrent use.
type Sender struct {
	override string // scheme://host to send to instead of the channel's
	allowed  []string
	timeout  time.Duration

	tr          *http.Transport
	tokenTr     *http.Transport
	tokenClient *http.Client
	cc          *clientcredentials.Config
	tokens      *pnshttp.Cache
	base        context.Context
	cancel      context.CancelFunc
}

// New checks cfg and builds a Sender. It does not contact WNS: the first
// Send obtains the access token.
func New(cfg Config) (*Sender, error) {
	if cfg.ClientID == "" || cfg.ClientSecret == "" {
		return nil, errors.New("wns: ClientID (the package SID) and ClientSecret are required")
	}
	if cfg.TokenURL == "" {
		cfg.TokenURL = DefaultTokenURL
	}
	if err := checkBaseURL("TokenURL", cfg.TokenURL, false); err != nil {
		return nil, err
	}
	if cfg.EndpointOverride != "" {
		if err := checkBaseURL("EndpointOverride", cfg.EndpointOverride, true); err != nil {
			return nil, err
		}
	}
	if cfg.Conns < 0 || cfg.Timeout < 0 || cfg.RefreshBefore < 0 {
		return nil, errors.New("wns: Conns, Timeout and RefreshBefore must not be negative")
	}
	if cfg.Conns == 0 {
		cfg.Conns = defaultConnsHTTP1
		if cfg.HTTP2 {
			cfg.Conns = defaultConnsHTTP2
		}
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = defaultTimeout
	}
	if cfg.RefreshBefore == 0 {
		cfg.RefreshBefore = defaultRefreshBefore
	}
	allowed := cfg.AllowedHosts
	if len(allowed) == 0 {
		allowed = []string{DefaultHostSuffix}
	}
	for i, h := range allowed {
		if h == "" || h == "." || strings.ContainsAny(h, "/:@ ") {
			return nil, fmt.Errorf("wns: AllowedHosts[%d] %q is not a host name or .suffix", i, h)
		}
		allowed[i] = strings.ToLower(h)
	}

	s := &Sender{
		override: strings.TrimRight(cfg.EndpointOverride, "/"),
		allowed:  allowed,
		timeout:  cfg.Timeout,
		cc: &clientcredentials.Config{
			ClientID:     cfg.ClientID,
			ClientSecret: cfg.ClientSecret,
			TokenURL:     cfg.TokenURL,
			Scopes:       []string{Scope},
			// WNS documents the credentials as form parameters.
			AuthStyle: oauth2.AuthStyleInParams,
		},
	}
	tlsConf := &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12}
	var protos http.Protocols
	if cfg.HTTP2 {
		protos.SetHTTP2(true)
	} else {
		protos.SetHTTP1(true)
	}
	s.tr = &http.Transport{
		TLSClientConfig:     tlsConf,
		Protocols:           &protos,
		MaxConnsPerHost:     cfg.Conns,
		MaxIdleConnsPerHost: cfg.Conns,
		MaxIdleConns:        0, // no global cap: the per-host caps apply
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
		DisableCompression:  true, // WNS answers have no bodies worth it
		HTTP2: &http.HTTP2Config{
			SendPingTimeout: 30 * time.Second,
			PingTimeout:     15 * time.Second,
		},
	}
	s.tokenTr = &http.Transport{
		TLSClientConfig:     tlsConf.Clone(),
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
	}
	s.tokenClient = &http.Client{Transport: s.tokenTr, Timeout: cfg.Timeout}
	s.base, s.cancel = context.WithCancel(context.Background())
	s.tokens = pnshttp.New(s.mint, cfg.RefreshBefore)
	return s, nil
}

func checkBaseURL(field, s string, bare bool) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("wns: %s: %v", field, err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("wns: %s %q is not an absolute https URL", field, s)
	}
	if bare && (strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.User != nil) {
		return fmt.Errorf("wns: %s %q must be just https://host[:port]", field, s)
	}
	return nil
}

var errClosed = errors.New("the sender is closed")

// Close releases the sender's connections; later sends fail.
func (s *Sender) Close() error {
	s.cancel()
	s.tr.CloseIdleConnections()
	s.tokenTr.CloseIdleConnections()
	return nil
}

// mint obtains a new access token with the client-credentials grant.
func (s *Sender) mint() (*oauth2.Token, error) {
	if err := s.base.Err(); err != nil {
		return nil, errClosed
	}
	ctx, cancel := context.WithTimeout(s.base, s.timeout)
	defer cancel()
	ctx = context.WithValue(ctx, oauth2.HTTPClient, s.tokenClient)
	// A fresh source each time: the sender does its own caching.
	return s.cc.TokenSource(ctx).Token()
}

// Send delivers d to its channel URI, d.Channel.Handle. It returns nil when
// WNS accepted the notification, a *hubcore.PushError when WNS (or its
// token endpoint) refused it, ctx.Err() when ctx ended first, and any other
// error for a transport failure or timeout.
func (s *Sender) Send(ctx context.Context, d *hubcore.Delivery) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.base.Err() != nil {
		return errClosed
	}
	uri, pe := s.target(d.Channel.Handle)
	if pe != nil {
		return pe
	}
	hdr, pe := requestHeaders(d.Headers)
	if pe != nil {
		return pe
	}
	for attempt := 0; ; attempt++ {
		tok, err := s.tokens.Get(ctx)
		if err != nil {
			return tokenError(ctx, err)
		}
		h := hdr
		if attempt > 0 {
			// The first request may still be reading its headers.
			h = hdr.Clone()
		}
		h["Authorization"] = tok.Header
		pe, err := s.post(ctx, uri, h, d.Body)
		if err != nil || pe == nil {
			return err
		}
		if pe.Outcome == outcomeStaleToken {
			// WNS refused the access token itself (expired,
			// revoked): obtain a new one and try once more.
			if attempt == 0 {
				s.tokens.Invalidate(tok)
				continue
			}
			pe.Outcome = hubcore.OutcomeInvalidCredentials
		}
		return pe
	}
}

// target checks a channel URI and applies EndpointOverride.
func (s *Sender) target(uri string) (string, *hubcore.PushError) {
	host, rest, ok := splitHTTPS(uri)
	if !ok {
		return "", badChannel("the channel URI is not an absolute https URL")
	}
	h := strings.ToLower(host)
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.HasSuffix(h, "]") {
		h = h[:i]
	}
	allowed := false
	for _, a := range s.allowed {
		if a[0] == '.' && strings.HasSuffix(h, a) && len(h) > len(a) || h == a {
			allowed = true
			break
		}
	}
	if !allowed {
		return "", badChannel("the channel URI's host " + host + " is not a WNS host")
	}
	if s.override == "" {
		return uri, nil
	}
	return s.override + rest, nil
}

// splitHTTPS splits https://host/rest into host and /rest.
func splitHTTPS(uri string) (host, rest string, ok bool) {
	if len(uri) < 8 || !strings.EqualFold(uri[:8], "https://") {
		return "", "", false
	}
	after := uri[8:]
	end := strings.IndexAny(after, "/?#")
	if end < 0 {
		end = len(after)
	}
	host, rest = after[:end], after[end:]
	if host == "" || strings.ContainsAny(host, "@ \t\r\n\\") || strings.ContainsAny(rest, " \t\r\n#") {
		return "", "", false
	}
	if rest == "" || rest[0] != '/' {
		rest = "/" + rest
	}
	return host, rest, true
}

func badChannel(reason string) *hubcore.PushError {
	return &hubcore.PushError{Outcome: hubcore.OutcomeBadChannel, Reason: reason, ExpireHandle: true}
}

// wnsHeaders are the request headers WNS documents, by lower-case name,
// with the spelling they are sent in.
var wnsHeaders = map[string]string{
	"x-wns-type":             "X-WNS-Type",
	"x-wns-cache-policy":     "X-WNS-Cache-Policy",
	"x-wns-requestforstatus": "X-WNS-RequestForStatus",
	"x-wns-tag":              "X-WNS-Tag",
	"x-wns-ttl":              "X-WNS-TTL",
	"x-wns-suppresspopup":    "X-WNS-SuppressPopup",
	"x-wns-group":            "X-WNS-Group",
	"x-wns-match":            "X-WNS-Match",
}

var (
	ctXML = []string{"text/xml"}
	ctRaw = []string{"application/octet-stream"}
)

// requestHeaders builds the WNS headers of a delivery: X-WNS-Type is
// required and sets the Content-Type; other X-WNS-* headers pass through;
// anything else is not WNS's and is left out.
func requestHeaders(in []hubcore.Header) (http.Header, *hubcore.PushError) {
	h := make(http.Header, len(in)+2)
	typ := ""
	for _, x := range in {
		ln := strings.ToLower(x.Name)
		if !strings.HasPrefix(ln, "x-wns-") {
			continue
		}
		name, known := wnsHeaders[ln]
		if !known {
			name = x.Name
		}
		v := x.Value
		if ln == "x-wns-type" {
			v = strings.ToLower(strings.TrimSpace(v))
			typ = v
		}
		h[name] = []string{v}
	}
	switch typ {
	case "wns/toast", "wns/tile", "wns/badge":
		h["Content-Type"] = ctXML
	case "wns/raw":
		h["Content-Type"] = ctRaw
	case "":
		return nil, &hubcore.PushError{Outcome: hubcore.OutcomeInvalidPayload, Reason: "no X-WNS-Type header (wns/toast, wns/tile, wns/badge or wns/raw)"}
	default:
		return nil, &hubcore.PushError{Outcome: hubcore.OutcomeInvalidPayload, Reason: fmt.Sprintf("X-WNS-Type %q is not wns/toast, wns/tile, wns/badge or wns/raw", typ)}
	}
	return h, nil
}

// post makes one request. A nil *PushError and nil error mean success.
func (s *Sender) post(ctx context.Context, uri string, hdr http.Header, body []byte) (*hubcore.PushError, error) {
	rctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, uri, bytes.NewReader(body))
	if err != nil {
		return badChannel("the channel URI does not parse: " + err.Error()), nil
	}
	req.Header = hdr
	resp, err := s.tr.RoundTrip(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("wns: %w", err)
	}
	defer resp.Body.Close()
	// WNS answers carry their meaning in headers; the body is drained so
	// that the connection can be reused.
	_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	if err != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return classify(resp.StatusCode, resp.Header, time.Now()), nil
}

// tokenError turns a failure to get an access token into Send's result.
func tokenError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var pe *hubcore.PushError
	if errors.As(err, &pe) {
		c := *pe // callers may keep or change it; the cache keeps its own
		return &c
	}
	return fmt.Errorf("wns: access token: %w", err)
}
