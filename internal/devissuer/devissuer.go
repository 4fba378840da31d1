// Package devissuer is a development OpenID issuer, so that someone trying
// pushgate can get tokens without an identity provider: it keeps an ES256
// signing key in a directory, serves the discovery document and JWKS that
// oidcauth needs, and mints ID and access tokens for any subject on request
// (`caddy pushgate dev-token --sub alice` uses the same key file).
//
// It authenticates nobody: whoever can call Mint or read the key file can
// be any user. So it exists only when configured, logs a warning when
// created, accepts only loopback issuer URLs, and its handler answers only
// requests whose remote address is loopback. The remote address is the
// TCP peer: behind a reverse proxy on the same host every client looks
// local, so never run it behind one.
package devissuer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// KeyFile is the name of the signing key file inside the issuer's
// directory: a PKCS #8 PEM ECDSA P-256 private key, mode 0600.
const KeyFile = "dev-issuer-es256.pem"

// ClientID is the client_id claim of minted access tokens.
const ClientID = "pushgate-dev"

// MaxTTL bounds a minted token's lifetime.
const MaxTTL = 24 * time.Hour

// Warning is logged when an Issuer is created; callers with their own
// logger (the Caddy module) should log it too.
const Warning = "DEVELOPMENT ISSUER ENABLED: anyone who can reach it from this machine can mint a token for any user. Never enable it in production."

// Kind is the kind of token Mint makes.
type Kind int

const (
	// IDToken is an OpenID Connect ID token (typ JWT; aud is a client ID).
	IDToken Kind = iota + 1
	// AccessToken is an RFC 9068 JWT access token (typ at+jwt; aud is the
	// resource).
	AccessToken
)

func (k Kind) String() string {
	switch k {
	case IDToken:
		return "id_token"
	case AccessToken:
		return "access_token"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Issuer is a development OpenID issuer. It is safe for concurrent use.
type Issuer struct {
	issuer string
	path   string // the issuer URL's path, without a trailing slash
	key    *ecdsa.PrivateKey
	kid    string
	now    func() time.Time
}

// New loads the signing key from dir, creating the directory (0700) and
// the key (0600) if needed, for an issuer identified by issuerURL, which
// must be an http(s) URL on a loopback host such as
// https://localhost:8443/.pushgate/dev-issuer.
func New(dir string, issuerURL string) (*Issuer, error) {
	u, err := url.Parse(issuerURL)
	if err != nil {
		return nil, fmt.Errorf("devissuer: issuer URL: %w", err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("devissuer: issuer URL %q: want http(s)://host[:port][/path]", issuerURL)
	}
	if !isLoopbackHost(u.Hostname()) {
		return nil, fmt.Errorf("devissuer: issuer URL %q: the development issuer only runs on a loopback host (localhost, 127.0.0.1, ::1)", issuerURL)
	}
	key, err := loadOrCreateKey(dir)
	if err != nil {
		return nil, err
	}
	kid, err := thumbprint(key)
	if err != nil {
		return nil, err
	}
	slog.Warn(Warning, "issuer", issuerURL, "key", filepath.Join(dir, KeyFile))
	return &Issuer{
		issuer: strings.TrimSuffix(issuerURL, "/"),
		path:   strings.TrimSuffix(u.EscapedPath(), "/"),
		key:    key,
		kid:    kid,
		now:    time.Now,
	}, nil
}

// Issuer returns the issuer identifier (the iss of minted tokens).
func (is *Issuer) Issuer() string { return is.issuer }

// KeyID returns the kid of the signing key: its RFC 7638 thumbprint, so it
// stays the same across restarts and tokens minted earlier still verify.
func (is *Issuer) KeyID() string { return is.kid }

func loadOrCreateKey(dir string) (*ecdsa.PrivateKey, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	path := filepath.Join(dir, KeyFile)
	key, err := loadKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("devissuer: generating a key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	// Write a temporary file and link it into place: a server and a
	// `dev-token` command starting together must not end up with two
	// keys, or one's tokens would not verify against the other's JWKS.
	tmp, err := os.CreateTemp(dir, ".dev-issuer-key-*")
	if err != nil {
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	if err := pem.Encode(tmp, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("devissuer: writing %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("devissuer: writing %s: %w", tmp.Name(), err)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	// Whoever won the race, use the key that is now in place.
	return loadKey(path)
}

func loadKey(path string) (*ecdsa.PrivateKey, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("devissuer: %s is accessible to other users (mode %#o); run chmod 600 on it", path, st.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("devissuer: %s holds no PEM PRIVATE KEY block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("devissuer: %s: %w", path, err)
	}
	ec, ok := k.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("devissuer: %s is not a P-256 ECDSA key", path)
	}
	return ec, nil
}

func thumbprint(key *ecdsa.PrivateKey) (string, error) {
	jwk := jose.JSONWebKey{Key: &key.PublicKey}
	sum, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("devissuer: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(sum), nil
}

// reserved claims are set by Mint; letting claims override them would make
// "mint for alice" mean something else.
var reserved = []string{"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id"}

// Mint returns a signed token of the given kind for sub, valid for ttl (at
// most MaxTTL), with aud set to audience (for an ID token, the client ID
// pushgate is configured with; for an access token, one of its
// audiences). claims adds further claims; the registered ones (iss, sub,
// aud, exp, iat, nbf, jti, client_id) cannot be overridden.
func (is *Issuer) Mint(sub string, claims map[string]any, ttl time.Duration, audience string, kind Kind) (string, error) {
	switch {
	case sub == "":
		return "", errors.New("devissuer: empty subject")
	case audience == "":
		return "", errors.New("devissuer: empty audience")
	case ttl <= 0 || ttl > MaxTTL:
		return "", fmt.Errorf("devissuer: lifetime %s is not in (0, %s]", ttl, MaxTTL)
	case kind != IDToken && kind != AccessToken:
		return "", fmt.Errorf("devissuer: unknown token kind %v", kind)
	}
	payload := make(map[string]any, len(claims)+8)
	for k, v := range claims {
		for _, r := range reserved {
			if k == r {
				return "", fmt.Errorf("devissuer: claim %q is set by the issuer", k)
			}
		}
		payload[k] = v
	}
	now := is.now()
	payload["iss"] = is.issuer
	payload["sub"] = sub
	payload["aud"] = audience
	payload["iat"] = now.Unix()
	payload["exp"] = now.Add(ttl).Unix()
	typ := jose.ContentType("JWT")
	if kind == AccessToken {
		typ = "at+jwt"
		payload["client_id"] = ClientID
		jti := make([]byte, 16)
		if _, err := rand.Read(jti); err != nil {
			return "", err
		}
		payload["jti"] = base64.RawURLEncoding.EncodeToString(jti)
	}
	body, err := json.Marshal(payload)
	if err != nil {
		return "", fmt.Errorf("devissuer: claims: %w", err)
	}
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: is.key, KeyID: is.kid}},
		(&jose.SignerOptions{}).WithType(typ),
	)
	if err != nil {
		return "", fmt.Errorf("devissuer: %w", err)
	}
	jws, err := signer.Sign(body)
	if err != nil {
		return "", fmt.Errorf("devissuer: signing: %w", err)
	}
	return jws.CompactSerialize()
}

// Handler serves {issuer path}/.well-known/openid-configuration and
// {issuer path}/jwks. It works whether or not the server strips the issuer
// URL's path before calling it. Requests from non-loopback addresses get
// 403.
func (is *Issuer) Handler() http.Handler {
	return http.HandlerFunc(is.serveHTTP)
}

func (is *Issuer) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if !remoteIsLoopback(r.RemoteAddr) {
		http.Error(w, "the development issuer answers only loopback clients", http.StatusForbidden)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.EscapedPath()
	if is.path != "" && strings.HasPrefix(p, is.path+"/") {
		p = strings.TrimPrefix(p, is.path)
	}
	var doc any
	contentType := "application/json"
	switch p {
	case "/.well-known/openid-configuration":
		doc = map[string]any{
			"issuer":                                is.issuer,
			"jwks_uri":                              is.issuer + "/jwks",
			"response_types_supported":              []string{"id_token"},
			"subject_types_supported":               []string{"public"},
			"id_token_signing_alg_values_supported": []string{"ES256"},
		}
	case "/jwks":
		doc = jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
			Key: &is.key.PublicKey, KeyID: is.kid, Algorithm: string(jose.ES256), Use: "sig",
		}}}
		contentType = "application/jwk-set+json"
	default:
		http.NotFound(w, r)
		return
	}
	body, err := json.Marshal(doc)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(body)
}

func remoteIsLoopback(remote string) bool {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		// Not host:port (a unix socket, a test's bare address): refuse.
		return false
	}
	return ap.Addr().Unmap().IsLoopback()
}

func isLoopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") || strings.HasSuffix(strings.ToLower(h), ".localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
