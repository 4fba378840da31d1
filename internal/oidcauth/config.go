package oidcauth

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Config says which tokens a Verifier accepts.
type Config struct {
	// Issuer is the OpenID issuer identifier; its discovery document is
	// at {Issuer}/.well-known/openid-configuration and must name the same
	// issuer. It must be https, except on a loopback host.
	Issuer string
	// ClientIDs enables ID tokens: one is accepted when its aud contains
	// one of these. Empty: ID tokens are refused.
	ClientIDs []string
	// Audiences enables RFC 9068 JWT access tokens (typ "at+jwt"): one is
	// accepted when its aud contains one of these. Empty: access tokens
	// are refused.
	Audiences []string
	// UserClaim names the top-level claim holding the user id; it must be
	// a non-empty string. Default "sub".
	UserClaim string
	// Algorithms is the allow-list of JWS algorithms, checked before the
	// signature. Default: RS256, RS384, RS512, PS256, PS384, PS512, ES256,
	// ES384, ES512, EdDSA. "none" and the HMAC algorithms are refused: a
	// verifier holding only public keys has no business with a shared
	// secret, and allowing HS256 invites the public-key-as-secret forgery.
	Algorithms []string
	// ClockSkew is the leeway for exp, nbf and iat. Default 1 minute; at
	// most 5 minutes (go-oidc applies a fixed 5-minute nbf leeway of its
	// own, which a larger skew would make the stricter of the two).
	ClockSkew time.Duration
	// MinRefetchInterval is the least time between two JWKS fetches caused
	// by tokens with an unknown kid. Default 30 s. Rotation still works: a
	// new kid is picked up by the first fetch the limit allows.
	MinRefetchInterval time.Duration
	// HTTPClient is used for discovery and JWKS fetches. Default: a client
	// with a 10 s timeout.
	HTTPClient *http.Client
	// CacheTTL is how long a verified token is remembered, so a device
	// that sends the same token with every request pays for one signature
	// check per TTL (never past the token's own expiry). Default 1 minute;
	// negative disables the cache. The price: a token signed by a key the
	// issuer withdraws stays accepted for at most this long.
	CacheTTL time.Duration
	// CacheSize bounds the cached tokens (default 10,000).
	CacheSize int
}

const (
	// DefaultUserClaim is the claim used when Config.UserClaim is empty.
	DefaultUserClaim = "sub"
	// DefaultClockSkew is the leeway used when Config.ClockSkew is zero.
	DefaultClockSkew = time.Minute
	// DefaultMinRefetchInterval is used when Config.MinRefetchInterval is
	// zero.
	DefaultMinRefetchInterval = 30 * time.Second
	// DefaultCacheTTL and DefaultCacheSize are used when the Config fields
	// are zero.
	DefaultCacheTTL  = time.Minute
	DefaultCacheSize = 10000

	maxClockSkew = 5 * time.Minute
)

// DefaultAlgorithms is the allow-list used when Config.Algorithms is empty:
// every asymmetric JWS algorithm go-oidc verifies.
var DefaultAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// withDefaults validates c and returns a copy with defaults filled in.
func (c Config) withDefaults() (Config, error) {
	var errs []error
	u, err := url.Parse(c.Issuer)
	switch {
	case c.Issuer == "":
		errs = append(errs, errors.New("issuer is required"))
	case err != nil:
		errs = append(errs, fmt.Errorf("issuer: %w", err))
	case u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		// OpenID Connect Discovery §2: a URL with no query or fragment.
		errs = append(errs, fmt.Errorf("issuer %q: want a scheme://host[/path] URL without query, fragment or user info", c.Issuer))
	case u.Scheme != "https" && !(u.Scheme == "http" && isLoopbackHost(u.Hostname())):
		// Keys fetched over plain HTTP could be swapped by anyone on the
		// path; a loopback IdP (tests, the dev issuer) has no path.
		errs = append(errs, fmt.Errorf("issuer %q: must use https (http is allowed only for loopback hosts)", c.Issuer))
	}
	if len(c.ClientIDs) == 0 && len(c.Audiences) == 0 {
		errs = append(errs, errors.New("no token is acceptable: set client IDs (ID tokens), audiences (access tokens) or both"))
	}
	if slices.Contains(c.ClientIDs, "") {
		errs = append(errs, errors.New("client IDs: empty value"))
	}
	if slices.Contains(c.Audiences, "") {
		errs = append(errs, errors.New("audiences: empty value"))
	}
	if c.UserClaim == "" {
		c.UserClaim = DefaultUserClaim
	}
	if len(c.Algorithms) == 0 {
		c.Algorithms = DefaultAlgorithms
	}
	c.Algorithms = slices.Clone(c.Algorithms)
	for _, a := range c.Algorithms {
		switch {
		case strings.EqualFold(a, "none"):
			errs = append(errs, errors.New(`algorithms: "none" is never allowed`))
		case strings.HasPrefix(strings.ToUpper(a), "HS"):
			errs = append(errs, fmt.Errorf("algorithms: %q is an HMAC algorithm; only asymmetric algorithms are allowed", a))
		case !slices.Contains(DefaultAlgorithms, a):
			errs = append(errs, fmt.Errorf("algorithms: unknown algorithm %q (known: %s)", a, strings.Join(DefaultAlgorithms, ", ")))
		}
	}
	switch {
	case c.ClockSkew < 0:
		errs = append(errs, errors.New("clock skew must not be negative"))
	case c.ClockSkew == 0:
		c.ClockSkew = DefaultClockSkew
	case c.ClockSkew > maxClockSkew:
		errs = append(errs, fmt.Errorf("clock skew %s is more than the maximum %s", c.ClockSkew, maxClockSkew))
	}
	switch {
	case c.MinRefetchInterval < 0:
		errs = append(errs, errors.New("minimum refetch interval must not be negative"))
	case c.MinRefetchInterval == 0:
		c.MinRefetchInterval = DefaultMinRefetchInterval
	}
	if c.CacheTTL == 0 {
		c.CacheTTL = DefaultCacheTTL
	}
	if c.CacheSize <= 0 {
		c.CacheSize = DefaultCacheSize
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	c.ClientIDs = slices.Clone(c.ClientIDs)
	c.Audiences = slices.Clone(c.Audiences)
	if len(errs) > 0 {
		return c, fmt.Errorf("oidcauth: invalid configuration: %w", errors.Join(errs...))
	}
	return c, nil
}

func isLoopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") || strings.HasSuffix(strings.ToLower(h), ".localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
