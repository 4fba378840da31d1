// Package oidcauth verifies the OIDC bearer tokens devices present to
// pushgate: OpenID Connect ID tokens and RFC 9068 JWT access tokens from one
// issuer.
//
// Signature, issuer and expiry are checked by go-oidc
// (github.com/coreos/go-oidc/v3); around it this package adds what go-oidc
// leaves to the caller:
//
//   - the alg header is checked against an allow-list before any key is
//     touched, so "none" and HMAC tokens (including HS256 keyed with the
//     issuer's public key) never reach a verifier;
//   - the typ header keeps token kinds apart: an ID token is accepted only
//     where client IDs are configured and an access token (typ at+jwt) only
//     where audiences are, each against its own audience list;
//   - exp, nbf and iat get a configurable leeway;
//   - the JWKS is cached by a KeySet that refetches on an unknown kid at
//     most once per MinRefetchInterval, where go-oidc's RemoteKeySet
//     refetches on every one;
//   - every refusal is an *Error with an HTTP status, an RFC 6750 code, a
//     precise description and a short reason label for metrics.
//
// # Discovery
//
// New does no network I/O on the caller's goroutine, so a server can start
// while its identity provider is briefly down. It starts discovery in the
// background; Verify waits for an attempt in flight, and after a failure
// answers 503 (reason idp_unavailable) without touching the network until a
// backoff (1 s doubling to 1 min) has passed, then tries again. A successful
// discovery is kept for the Verifier's lifetime; keys are refreshed by the
// KeySet.
package oidcauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// Token kinds, as reported in Identity.TokenType.
const (
	TokenTypeID     = "id_token"
	TokenTypeAccess = "access_token"
)

// Identity is a verified token's holder.
type Identity struct {
	Issuer  string
	Subject string
	// UserID is the value of the configured user claim.
	UserID string
	// TokenType is TokenTypeID or TokenTypeAccess.
	TokenType string
	// Claims is the whole verified payload, numbers as float64.
	Claims map[string]any
	Expiry time.Time
}

// Verifier checks bearer tokens against one issuer. It is safe for
// concurrent use and meant to live as long as its configuration.
type Verifier struct {
	cfg Config
	ctx context.Context // values only; see New
	now func() time.Time

	state atomic.Pointer[discovered]
	cache *tokenCache

	mu      sync.Mutex
	disc    *discoveryCall
	lastErr error
	retryAt time.Time
	backoff time.Duration
}

type discovered struct {
	keys *KeySet
	oidc *oidc.IDTokenVerifier
}

type discoveryCall struct {
	done chan struct{}
	err  error
}

const (
	discoveryTimeout = 10 * time.Second
	minBackoff       = time.Second
	maxBackoff       = time.Minute
)

// New validates cfg and returns a Verifier. It does not block on the
// network: discovery starts in the background (see the package doc). ctx is
// used for its values only, like go-oidc's key sets; its cancellation does
// not stop a discovery other requests may be waiting for.
func New(ctx context.Context, cfg Config) (*Verifier, error) {
	return newVerifier(ctx, cfg, time.Now)
}

// newVerifier is New with a clock, for tests.
func newVerifier(ctx context.Context, cfg Config, now func() time.Time) (*Verifier, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	v := &Verifier{cfg: c, ctx: context.WithoutCancel(ctx), now: now, cache: newTokenCache(c.CacheTTL, c.CacheSize)}
	v.mu.Lock()
	v.startDiscoveryLocked()
	v.mu.Unlock()
	return v, nil
}

// Ready reports whether discovery has succeeded, waiting for an attempt in
// flight and starting one if the backoff allows. It suits a readiness check.
func (v *Verifier) Ready(ctx context.Context) error {
	if _, e := v.discovered(ctx); e != nil {
		return e
	}
	return nil
}

// JWKSFetches returns how many JWKS fetches have been started, for metrics.
func (v *Verifier) JWKSFetches() uint64 {
	if d := v.state.Load(); d != nil {
		return d.keys.Fetches()
	}
	return 0
}

func (v *Verifier) discovered(ctx context.Context) (*discovered, *Error) {
	if d := v.state.Load(); d != nil {
		return d, nil
	}
	v.mu.Lock()
	if d := v.state.Load(); d != nil {
		v.mu.Unlock()
		return d, nil
	}
	call := v.disc
	if call == nil {
		if now := v.now(); now.Before(v.retryAt) {
			e := errUnavailable("discovery of %s failed: %v; next attempt in %s", v.cfg.Issuer, v.lastErr, v.retryAt.Sub(now).Round(time.Millisecond))
			v.mu.Unlock()
			return nil, e
		}
		call = v.startDiscoveryLocked()
	}
	v.mu.Unlock()
	select {
	case <-call.done:
	case <-ctx.Done():
		return nil, errUnavailable("gave up waiting for discovery of %s: %v", v.cfg.Issuer, ctx.Err())
	}
	if call.err != nil {
		return nil, errUnavailable("discovery of %s failed: %v", v.cfg.Issuer, call.err)
	}
	return v.state.Load(), nil
}

// startDiscoveryLocked starts one discovery attempt; v.mu must be held.
func (v *Verifier) startDiscoveryLocked() *discoveryCall {
	call := &discoveryCall{done: make(chan struct{})}
	v.disc = call
	go func() {
		d, err := v.discover()
		v.mu.Lock()
		if err == nil {
			v.state.Store(d)
			v.backoff = 0
		} else {
			v.backoff = min(max(2*v.backoff, minBackoff), maxBackoff)
			v.retryAt = v.now().Add(v.backoff)
			v.lastErr = err
		}
		v.disc = nil
		v.mu.Unlock()
		call.err = err
		close(call.done)
	}()
	return call
}

func (v *Verifier) discover() (*discovered, error) {
	ctx, cancel := context.WithTimeout(v.ctx, discoveryTimeout)
	defer cancel()
	p, err := oidc.NewProvider(oidc.ClientContext(ctx, v.cfg.HTTPClient), v.cfg.Issuer)
	if err != nil {
		return nil, err
	}
	var meta struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := p.Claims(&meta); err != nil {
		return nil, err
	}
	u, err := url.Parse(meta.JWKSURI)
	if err != nil || u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && isLoopbackHost(u.Hostname()))) {
		return nil, fmt.Errorf("discovery document: jwks_uri %q is not an https URL", meta.JWKSURI)
	}
	ks := NewKeySet(meta.JWKSURI, v.cfg.HTTPClient, v.cfg.MinRefetchInterval, v.cfg.Algorithms)
	ks.now = v.now
	ov := oidc.NewVerifier(v.cfg.Issuer, ks, &oidc.Config{
		// Audiences are checked per token kind below, against lists;
		// go-oidc's check takes one client ID.
		SkipClientIDCheck:    true,
		SupportedSigningAlgs: v.cfg.Algorithms,
		// go-oidc gives exp no leeway; running its clock ClockSkew
		// behind gives exactly that leeway. nbf and iat are checked
		// below against the true clock.
		Now: func() time.Time { return v.now().Add(-v.cfg.ClockSkew) },
	})
	return &discovered{keys: ks, oidc: ov}, nil
}

// Verify checks the token in an Authorization header value and returns
// its holder, or an *Error saying why not. Only one header value is
// expected: a request with several Authorization headers is the caller's
// to refuse.
func (v *Verifier) Verify(ctx context.Context, authorizationHeader string) (*Identity, error) {
	id, e := v.verify(ctx, authorizationHeader)
	if e != nil {
		return nil, e
	}
	return id, nil
}

func (v *Verifier) verify(ctx context.Context, header string) (*Identity, *Error) {
	tok, e := parseAuthorization(header)
	if e != nil {
		return nil, e
	}
	if id, ok := v.cache.get(tok, v.now()); ok {
		return id, nil
	}
	hdr, iss, e := splitJWT(tok)
	if e != nil {
		return nil, e
	}
	// Before any key is looked at: refuse "none", HMAC and anything else
	// not on the list.
	if !slices.Contains(v.cfg.Algorithms, hdr.Alg) {
		return nil, errToken(ReasonAlgNotAllowed, "algorithm %s is not allowed (allowed: %s)", quote(hdr.Alg), strings.Join(v.cfg.Algorithms, ", "))
	}
	kind, ok := tokenKind(hdr.Typ)
	switch {
	case !ok:
		return nil, errToken(ReasonWrongType, "token type %s is neither an ID token (JWT) nor an access token (at+jwt)", quote(hdr.Typ))
	case kind == TokenTypeID && len(v.cfg.ClientIDs) == 0:
		return nil, errToken(ReasonWrongType, "ID tokens are not accepted here (no client IDs are configured); send an access token (typ at+jwt)")
	case kind == TokenTypeAccess && len(v.cfg.Audiences) == 0:
		return nil, errToken(ReasonWrongType, "access tokens are not accepted here (no audiences are configured); send an ID token")
	}
	if iss != v.cfg.Issuer {
		return nil, errToken(ReasonWrongIssuer, "issuer %s is not the configured issuer %s", quote(iss), quote(v.cfg.Issuer))
	}

	d, e := v.discovered(ctx)
	if e != nil {
		return nil, e
	}
	out := &sigOutcome{}
	t, err := d.oidc.Verify(context.WithValue(ctx, outcomeKey{}, out), tok)
	if err != nil {
		return nil, v.classify(err, out)
	}
	var claims map[string]any
	if err := t.Claims(&claims); err != nil {
		return nil, errToken(ReasonMalformed, "the token's claims are not a JSON object")
	}
	if e := v.checkNotBefore(claims); e != nil {
		return nil, e
	}
	if e := v.checkAudience(kind, t.Audience, hdr.Typ); e != nil {
		return nil, e
	}
	user, _ := claims[v.cfg.UserClaim].(string)
	if strings.TrimSpace(user) == "" {
		what := "is missing"
		if val, present := claims[v.cfg.UserClaim]; present {
			what = "is empty"
			if _, isString := val.(string); !isString {
				what = fmt.Sprintf("is a %T, not a string", val)
			}
		}
		return nil, errToken(ReasonNoUserClaim, "the user claim %s %s", quote(v.cfg.UserClaim), what)
	}
	id := &Identity{
		Issuer:    t.Issuer,
		Subject:   t.Subject,
		UserID:    user,
		TokenType: kind,
		Claims:    claims,
		Expiry:    t.Expiry,
	}
	v.cache.put(tok, id, v.now())
	return id, nil
}

// classify turns a go-oidc error into an *Error. go-oidc wraps KeySet
// errors with %v, so the KeySet's precise error comes from out instead.
func (v *Verifier) classify(err error, out *sigOutcome) *Error {
	if out.err != nil {
		return out.err
	}
	if out.payload != nil {
		// The signature verified and go-oidc refused a claim. Its own
		// nbf check (a fixed 5-minute leeway) fails with a plain error;
		// name it precisely when that is what happened.
		var claims map[string]any
		if json.Unmarshal(out.payload, &claims) == nil {
			if e := v.checkNotBefore(claims); e != nil {
				return e
			}
		}
	}
	var exp *oidc.TokenExpiredError
	if errors.As(err, &exp) {
		if exp.Expiry.IsZero() {
			return errToken(ReasonMalformed, "the token has no exp claim")
		}
		return errToken(ReasonExpired, "token expired at %s", exp.Expiry.UTC().Format(time.RFC3339))
	}
	// What remains are claim shape errors (exp not a number, aud neither
	// string nor array) and malformed JWS structure. go-oidc's messages
	// name fields and types, never the token.
	msg := strings.TrimPrefix(err.Error(), "oidc: ")
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	return errToken(ReasonMalformed, "the token is malformed: %s", msg)
}

// checkNotBefore refuses tokens whose nbf or iat is later than now plus the
// clock skew.
func (v *Verifier) checkNotBefore(claims map[string]any) *Error {
	now := v.now()
	for _, c := range []struct{ name, what string }{{"nbf", "not valid before"}, {"iat", "issued in the future, at"}} {
		at, present, ok := numericDate(claims[c.name])
		if !ok {
			return errToken(ReasonMalformed, "the %s claim is not a number", c.name)
		}
		if present && at.After(now.Add(v.cfg.ClockSkew)) {
			return errToken(ReasonNotYetValid, "token %s %s", c.what, at.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

func (v *Verifier) checkAudience(kind string, aud []string, typ string) *Error {
	allowed, what := v.cfg.ClientIDs, "client IDs"
	if kind == TokenTypeAccess {
		allowed, what = v.cfg.Audiences, "audiences"
	}
	for _, a := range aud {
		if slices.Contains(allowed, a) {
			return nil
		}
	}
	if kind == TokenTypeID {
		for _, a := range aud {
			if slices.Contains(v.cfg.Audiences, a) {
				// The most common gateway misconfiguration: an IdP
				// issuing JWT access tokens typed plain "JWT".
				return errToken(ReasonWrongType, "the token is for audience %s but typed %s, not at+jwt: RFC 9068 access tokens must carry typ at+jwt", quote(a), quote(typ))
			}
		}
	}
	return errToken(ReasonWrongAudience, "audience %s is not one of the configured %s %s", quoteList(aud), what, quoteList(allowed))
}

// numericDate reads a JWT NumericDate (RFC 7519 §2): seconds since the
// epoch, possibly fractional. present is false for an absent claim.
func numericDate(v any) (t time.Time, present, ok bool) {
	if v == nil {
		return time.Time{}, false, true
	}
	var f float64
	switch n := v.(type) {
	case float64:
		f = n
	case json.Number:
		var err error
		if f, err = n.Float64(); err != nil {
			return time.Time{}, true, false
		}
	default:
		return time.Time{}, true, false
	}
	if math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f) > 1e15 {
		return time.Time{}, true, false
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true, true
}
