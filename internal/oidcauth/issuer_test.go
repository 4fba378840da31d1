package oidcauth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// testIssuer is a hand-made OpenID issuer over TLS whose key set a test can
// swap, and which counts JWKS requests. It exists for the attack tests: the
// real IdP (idptest) will not sign what an attacker would.
type testIssuer struct {
	srv       *httptest.Server
	jwksHits  atomic.Int64
	discovery atomic.Int64

	mu     sync.Mutex
	public []jose.JSONWebKey
	down   bool
}

func newTestIssuer(t testing.TB) *testIssuer {
	t.Helper()
	ti := &testIssuer{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		ti.discovery.Add(1)
		if ti.isDown() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer":                                ti.srv.URL,
			"jwks_uri":                              ti.srv.URL + "/jwks",
			"response_types_supported":              []string{"code"},
			"subject_types_supported":               []string{"public"},
			"id_token_signing_alg_values_supported": []string{"RS256", "ES256"},
		})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		ti.jwksHits.Add(1)
		if ti.isDown() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		ti.mu.Lock()
		set := jose.JSONWebKeySet{Keys: ti.public}
		ti.mu.Unlock()
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_ = json.NewEncoder(w).Encode(set)
	})
	ti.srv = httptest.NewTLSServer(mux)
	t.Cleanup(ti.srv.Close)
	return ti
}

func (ti *testIssuer) URL() string { return ti.srv.URL }

func (ti *testIssuer) isDown() bool {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	return ti.down
}

func (ti *testIssuer) setDown(d bool) {
	ti.mu.Lock()
	ti.down = d
	ti.mu.Unlock()
}

// publish replaces the published key set.
func (ti *testIssuer) publish(keys ...*testKey) {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	ti.public = nil
	for _, k := range keys {
		ti.public = append(ti.public, jose.JSONWebKey{Key: k.pub, KeyID: k.kid, Algorithm: k.alg, Use: "sig"})
	}
}

type testKey struct {
	kid  string
	alg  string
	priv crypto.Signer
	pub  crypto.PublicKey
}

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
)

// newKey makes a signing key. ECDSA keys are fresh each call; the RSA key
// is generated once per test binary (2048-bit generation is slow on shared
// CI cores), so tests that need two distinct keys use ES256.
func newKey(t testing.TB, kid, alg string) *testKey {
	t.Helper()
	switch alg {
	case "ES256":
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return &testKey{kid: kid, alg: alg, priv: priv, pub: &priv.PublicKey}
	case "RS256":
		rsaOnce.Do(func() {
			var err error
			if rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
				panic(err)
			}
		})
		return &testKey{kid: kid, alg: alg, priv: rsaKey, pub: &rsaKey.PublicKey}
	}
	t.Fatalf("newKey: unsupported alg %s", alg)
	return nil
}

// sign makes a compact JWS of claims with k, with typ in the header when
// non-empty.
func (k *testKey) sign(t testing.TB, typ string, claims map[string]any) string {
	t.Helper()
	opts := &jose.SignerOptions{}
	if typ != "" {
		opts = opts.WithType(jose.ContentType(typ))
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(k.alg), Key: jose.JSONWebKey{Key: k.priv, KeyID: k.kid}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// fakeClock is a settable clock shared by a Verifier and its KeySet.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// newTestVerifier returns a verifier for ti on clk, with discovery done.
func newTestVerifier(t testing.TB, ti *testIssuer, clk *fakeClock, cfg Config) *Verifier {
	t.Helper()
	cfg.Issuer = ti.URL()
	cfg.HTTPClient = ti.srv.Client()
	if cfg.ClientIDs == nil && cfg.Audiences == nil {
		cfg.ClientIDs = []string{"app"}
		cfg.Audiences = []string{"https://push.example.test"}
	}
	v, err := newVerifier(context.Background(), cfg, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
	return v
}

// claimsFor returns valid claims for ti on clk, overridden by extra; a nil
// value in extra deletes the claim.
func claimsFor(ti *testIssuer, clk *fakeClock, aud string, extra map[string]any) map[string]any {
	now := clk.Now()
	c := map[string]any{
		"iss": ti.URL(),
		"sub": "alice",
		"aud": aud,
		"iat": now.Unix(),
		"exp": now.Add(10 * time.Minute).Unix(),
	}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}
