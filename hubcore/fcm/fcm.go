// Package fcm sends notifications through Firebase Cloud Messaging's HTTP v1
// API: one POST per device to /v1/projects/{project}/messages:send, over a
// few long-lived HTTP/2 connections, with an OAuth 2.0 access token minted
// from a Google service-account key and shared by every request.
//
// The sender only reports what FCM answered, classified as a
// *hubcore.PushError; retrying, pacing and expiring handles are the fan-out
// engine's business.
package fcm

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/jwt"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/internal/pnshttp"
)

// Defaults.
const (
	// DefaultEndpoint is FCM's production API base URL.
	DefaultEndpoint = "https://fcm.googleapis.com"
	// DefaultTokenURL is Google's OAuth 2.0 token endpoint, used when the
	// key file names none.
	DefaultTokenURL = "https://oauth2.googleapis.com/token"
	// Scope is the OAuth scope FCM's send method requires.
	Scope = "https://www.googleapis.com/auth/firebase.messaging"

	defaultConns         = 2
	defaultTimeout       = 30 * time.Second
	defaultRefreshBefore = 5 * time.Minute
	// maxErrorBody bounds how much of an error answer is read: Google's
	// error bodies are a few hundred bytes.
	maxErrorBody = 64 << 10
)

// Config configures a Sender. CredentialsJSON is required; everything else
// has a default.
type Config struct {
	// CredentialsJSON is a Google service-account key file (the JSON the
	// Firebase console downloads): type "service_account", project_id,
	// private_key_id, private_key (PEM), client_email and token_uri.
	CredentialsJSON []byte
	// ProjectID overrides the key file's project_id: the project whose
	// apps the device tokens belong to.
	ProjectID string
	// Endpoint is FCM's base URL (default DefaultEndpoint). Tests point it
	// at the fake.
	Endpoint string
	// TokenURL overrides the key file's token_uri, where access tokens
	// are minted. Tests point it at the fake.
	TokenURL string
	// RootCAs replaces the system's roots when set (tests: the fake's
	// CertPool).
	RootCAs *x509.CertPool
	// Conns is how many HTTP/2 connections carry the requests (default
	// 2), used in turn. Each carries at most as many requests at once as
	// FCM's SETTINGS_MAX_CONCURRENT_STREAMS allows; more wait for a free
	// stream rather than open more connections.
	Conns int
	// Timeout bounds one request to FCM or to the token endpoint (default
	// 30s). A request that times out is reported as a transport error,
	// which the engine retries.
	Timeout time.Duration
	// RefreshBefore is how long before an access token expires a new one
	// is minted in the background (default 5m, and at most a tenth of the
	// token's lifetime), so that sends never wait for a refresh.
	RefreshBefore time.Duration
}

// serviceAccount is the part of a key file the sender reads.
type serviceAccount struct {
	Type         string `json:"type"`
	ProjectID    string `json:"project_id"`
	PrivateKeyID string `json:"private_key_id"`
	PrivateKey   string `json:"private_key"`
	ClientEmail  string `json:"client_email"`
	TokenURI     string `json:"token_uri"`
}

// Sender delivers notifications to FCM. It is safe for concurrent use.
type Sender struct {
	project string
	sendURL string
	timeout time.Duration

	pool    *connPool
	tokenTr *http.Transport

	tokens *pnshttp.Cache
	jwt    *jwt.Config
	// tokenClient carries token requests: the jwt package reads it from
	// the context it is given.
	tokenClient *http.Client
	base        context.Context
	cancel      context.CancelFunc
}

// New checks cfg and builds a Sender. It does not contact FCM: the first
// Send mints the access token.
func New(cfg Config) (*Sender, error) {
	if len(cfg.CredentialsJSON) == 0 {
		return nil, errors.New("fcm: CredentialsJSON is required (a service-account key file)")
	}
	var sa serviceAccount
	if err := json.Unmarshal(cfg.CredentialsJSON, &sa); err != nil {
		return nil, fmt.Errorf("fcm: CredentialsJSON is not a service-account key file: %v", err)
	}
	if sa.Type != "service_account" {
		return nil, fmt.Errorf("fcm: CredentialsJSON has type %q; a service-account key file has type \"service_account\"", sa.Type)
	}
	if sa.ClientEmail == "" {
		return nil, errors.New("fcm: CredentialsJSON has no client_email")
	}
	if err := checkPrivateKey(sa.PrivateKey); err != nil {
		return nil, err
	}
	project := cfg.ProjectID
	if project == "" {
		project = sa.ProjectID
	}
	if project == "" {
		return nil, errors.New("fcm: no project: the key file has no project_id and Config.ProjectID is empty")
	}
	if strings.ContainsAny(project, "/?#% ") {
		return nil, fmt.Errorf("fcm: project id %q contains characters not allowed in a URL segment", project)
	}
	tokenURL := cfg.TokenURL
	if tokenURL == "" {
		tokenURL = sa.TokenURI
	}
	if tokenURL == "" {
		tokenURL = DefaultTokenURL
	}
	if err := checkURL("TokenURL", tokenURL); err != nil {
		return nil, err
	}
	endpoint := cfg.Endpoint
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	if err := checkURL("Endpoint", endpoint); err != nil {
		return nil, err
	}
	base, _ := url.Parse(endpoint)
	if base.Scheme != "https" {
		return nil, fmt.Errorf("fcm: Endpoint %q is not https: FCM is reached over HTTP/2 with TLS", endpoint)
	}
	if cfg.Conns < 0 || cfg.Timeout < 0 || cfg.RefreshBefore < 0 {
		return nil, errors.New("fcm: Conns, Timeout and RefreshBefore must not be negative")
	}
	if cfg.Conns == 0 {
		cfg.Conns = defaultConns
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = defaultTimeout
	}
	if cfg.RefreshBefore == 0 {
		cfg.RefreshBefore = defaultRefreshBefore
	}

	s := &Sender{
		project: project,
		sendURL: strings.TrimRight(endpoint, "/") + "/v1/projects/" + project + "/messages:send",
		timeout: cfg.Timeout,
		jwt: &jwt.Config{
			Email:        sa.ClientEmail,
			PrivateKey:   []byte(sa.PrivateKey),
			PrivateKeyID: sa.PrivateKeyID,
			Scopes:       []string{Scope},
			TokenURL:     tokenURL,
		},
	}
	tlsConf := &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12}
	s.pool = newConnPool(newH2Transport(tlsConf), base, cfg.Conns)
	s.tokenTr = &http.Transport{
		TLSClientConfig:     tlsConf.Clone(),
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
	}
	s.tokenClient = &http.Client{Transport: s.tokenTr, Timeout: cfg.Timeout}
	s.base, s.cancel = context.WithCancel(context.Background())
	s.tokens = pnshttp.New(s.mint, cfg.RefreshBefore)
	return s, nil
}

// newH2Transport makes the transport the connection pool dials with:
// HTTP/2 only (FCM, like APNs, is meant to be used over few long-lived
// connections), with pings to notice a dead connection within a minute
// instead of waiting for every request on it to time out.
func newH2Transport(tlsConf *tls.Config) *http.Transport {
	var p http.Protocols
	p.SetHTTP2(true)
	return &http.Transport{
		TLSClientConfig:     tlsConf.Clone(),
		Protocols:           &p,
		TLSHandshakeTimeout: 10 * time.Second,
		HTTP2: &http.HTTP2Config{
			SendPingTimeout: 30 * time.Second,
			PingTimeout:     15 * time.Second,
		},
	}
}

func checkPrivateKey(key string) error {
	block, _ := pem.Decode([]byte(key))
	if block == nil {
		return errors.New("fcm: the key file's private_key is not PEM")
	}
	if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		return nil
	}
	if _, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return nil
	}
	return errors.New("fcm: the key file's private_key is not an RSA private key (PKCS #8 or PKCS #1)")
}

func checkURL(field, s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("fcm: %s: %v", field, err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("fcm: %s %q is not an absolute http(s) URL", field, s)
	}
	return nil
}

// Project is the project the sender sends for.
func (s *Sender) Project() string { return s.project }

// Close releases the sender's connections. Sends in flight fail.
func (s *Sender) Close() error {
	s.cancel()
	s.pool.close()
	s.tokenTr.CloseIdleConnections()
	return nil
}

// mint fetches a new access token: a JWT signed with the service account's
// key, exchanged at the token endpoint.
func (s *Sender) mint() (*oauth2.Token, error) {
	if err := s.base.Err(); err != nil {
		return nil, errPoolClosed
	}
	ctx := context.WithValue(s.base, oauth2.HTTPClient, s.tokenClient)
	// A fresh source each time: the sender does its own caching, and a
	// source from TokenSource caches the token it minted.
	return s.jwt.TokenSource(ctx).Token()
}

var (
	contentTypeJSON = []string{"application/json; charset=utf-8"}
)

// Send delivers d to the device token d.Channel.Handle. It returns nil when
// FCM accepted the message, a *hubcore.PushError when FCM (or its token
// endpoint) refused it, ctx.Err() when ctx ended first, and any other error
// for a transport failure or timeout.
func (s *Sender) Send(ctx context.Context, d *hubcore.Delivery) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	body, err := spliceToken(d.Body, d.Channel.Handle)
	if err != nil {
		return &hubcore.PushError{Outcome: hubcore.OutcomePnsInterfaceError, Reason: err.Error()}
	}
	for attempt := 0; ; attempt++ {
		tok, err := s.tokens.Get(ctx)
		if err != nil {
			return tokenError(ctx, err)
		}
		pe, err := s.post(ctx, tok, body)
		if err != nil || pe == nil {
			return err
		}
		if pe.Outcome == outcomeStaleToken {
			// FCM refused the access token itself (expired early,
			// revoked): mint a new one and try once more.
			if attempt == 0 {
				s.tokens.Invalidate(tok)
				continue
			}
			pe.Outcome = hubcore.OutcomeInvalidCredentials
		}
		return pe
	}
}

// post makes one request. A nil *PushError and nil error mean success.
func (s *Sender) post(ctx context.Context, tok *pnshttp.Token, body []byte) (*hubcore.PushError, error) {
	rctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	resp, err := s.pool.roundTrip(rctx, func() (*http.Request, error) {
		req, err := http.NewRequestWithContext(rctx, http.MethodPost, s.sendURL, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header["Authorization"] = tok.Header
		req.Header["Content-Type"] = contentTypeJSON
		return req, nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("fcm: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		// Reading to the end lets the stream close cleanly; the answer
		// ({"name": ...}) carries nothing the hub needs.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		return nil, nil
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	if err != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return classify(resp.StatusCode, resp.Header.Get("Retry-After"), b, time.Now()), nil
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
	return fmt.Errorf("fcm: access token: %w", err)
}
