package devissuer_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushgate/pushgate/internal/devissuer"
	"github.com/pushgate/pushgate/internal/oidcauth"
)

const mount = "/.pushgate/dev-issuer"

// serve mounts the issuer on a TLS test server the way the Caddy module
// will: at a path below the site, here without stripping the prefix.
func serve(t *testing.T, dir string) (*devissuer.Issuer, *httptest.Server) {
	t.Helper()
	mux := http.NewServeMux()
	srv := httptest.NewUnstartedServer(mux)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	is, err := devissuer.New(dir, srv.URL+mount)
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle(mount+"/", is.Handler())
	return is, srv
}

func TestTokensVerifyWithOIDCAuth(t *testing.T) {
	is, srv := serve(t, t.TempDir())
	v, err := oidcauth.New(context.Background(), oidcauth.Config{
		Issuer:     is.Issuer(),
		ClientIDs:  []string{"pushgate-app"},
		Audiences:  []string{"https://localhost:8443"},
		HTTPClient: srv.Client(),
	})
	if err != nil {
		t.Fatal(err)
	}
	idTok, err := is.Mint("alice", map[string]any{"email": "alice@example.test"}, time.Hour, "pushgate-app", devissuer.IDToken)
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Verify(context.Background(), "Bearer "+idTok)
	if err != nil {
		t.Fatal(err)
	}
	if id.UserID != "alice" || id.TokenType != oidcauth.TokenTypeID || id.Claims["email"] != "alice@example.test" {
		t.Errorf("identity %+v", id)
	}
	at, err := is.Mint("bob", nil, time.Hour, "https://localhost:8443", devissuer.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	id, err = v.Verify(context.Background(), "Bearer "+at)
	if err != nil {
		t.Fatal(err)
	}
	if id.UserID != "bob" || id.TokenType != oidcauth.TokenTypeAccess || id.Claims["client_id"] != devissuer.ClientID {
		t.Errorf("identity %+v", id)
	}
	// Kinds stay apart here too: the access token's audience is not a
	// client ID.
	var e *oidcauth.Error
	if _, err := v.Verify(context.Background(), "Bearer "+must(is.Mint("bob", nil, time.Hour, "https://localhost:8443", devissuer.IDToken))); !errors.As(err, &e) || e.Reason != oidcauth.ReasonWrongType {
		t.Errorf("ID token for the API audience: %v", err)
	}
}

func must(s string, err error) string {
	if err != nil {
		panic(err)
	}
	return s
}

func TestDiscoveryAndJWKS(t *testing.T) {
	is, srv := serve(t, t.TempDir())
	var disc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	getJSON(t, srv.Client(), is.Issuer()+"/.well-known/openid-configuration", &disc)
	if disc.Issuer != is.Issuer() || disc.JWKSURI != is.Issuer()+"/jwks" {
		t.Errorf("discovery %+v", disc)
	}
	var jwks struct {
		Keys []map[string]any `json:"keys"`
	}
	getJSON(t, srv.Client(), disc.JWKSURI, &jwks)
	if len(jwks.Keys) != 1 || jwks.Keys[0]["kid"] != is.KeyID() || jwks.Keys[0]["alg"] != "ES256" || jwks.Keys[0]["d"] != nil {
		t.Errorf("jwks %v", jwks)
	}
	resp, err := srv.Client().Get(is.Issuer() + "/other")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown path: %s", resp.Status)
	}
}

func getJSON(t *testing.T, c *http.Client, url string, v any) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func TestLoopbackOnly(t *testing.T) {
	is, err := devissuer.New(t.TempDir(), "https://localhost:8443"+mount)
	if err != nil {
		t.Fatal(err)
	}
	h := is.Handler()
	for remote, want := range map[string]int{
		"127.0.0.1:5000":        http.StatusOK,
		"127.8.9.10:5000":       http.StatusOK,
		"[::1]:5000":            http.StatusOK,
		"[::ffff:127.0.0.1]:80": http.StatusOK,
		"192.0.2.10:5000":       http.StatusForbidden,
		"[2001:db8::1]:5000":    http.StatusForbidden,
		"10.0.0.1:443":          http.StatusForbidden,
		"127.0.0.1":             http.StatusForbidden, // not host:port
		"":                      http.StatusForbidden,
	} {
		for _, path := range []string{mount + "/.well-known/openid-configuration", "/.well-known/openid-configuration", "/jwks"} {
			req := httptest.NewRequest(http.MethodGet, "https://localhost:8443"+path, nil)
			req.RemoteAddr = remote
			// Forwarding headers must not make a remote client local.
			req.Header.Set("X-Forwarded-For", "127.0.0.1")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != want {
				t.Errorf("%s %s: %d, want %d", remote, path, rec.Code, want)
			}
		}
	}
	req := httptest.NewRequest(http.MethodPost, "https://localhost:8443/jwks", nil)
	req.RemoteAddr = "127.0.0.1:1"
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", rec.Code)
	}
}

func TestKeyFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	a, err := devissuer.New(dir, "https://localhost:8443")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, devissuer.KeyFile)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %#o, want 0600", st.Mode().Perm())
	}
	// A second process (the dev-token command) loads the same key.
	b, err := devissuer.New(dir, "https://localhost:8443")
	if err != nil {
		t.Fatal(err)
	}
	if a.KeyID() != b.KeyID() {
		t.Errorf("kid changed across loads: %s, %s", a.KeyID(), b.KeyID())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the key", len(entries))
	}

	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := devissuer.New(dir, "https://localhost:8443"); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable key accepted: %v", err)
	}
	junk := t.TempDir()
	if err := os.WriteFile(filepath.Join(junk, devissuer.KeyFile), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := devissuer.New(junk, "https://localhost:8443"); err == nil {
		t.Error("junk key file accepted")
	}
}

func TestConcurrentCreate(t *testing.T) {
	dir := t.TempDir()
	kids := make([]string, 8)
	var wg sync.WaitGroup
	for i := range kids {
		wg.Go(func() {
			is, err := devissuer.New(dir, "http://127.0.0.1:8080")
			if err != nil {
				t.Error(err)
				return
			}
			kids[i] = is.KeyID()
		})
	}
	wg.Wait()
	for _, k := range kids[1:] {
		if k != kids[0] {
			t.Fatalf("concurrent creators ended up with different keys: %v", kids)
		}
	}
}

func TestRefusals(t *testing.T) {
	for _, u := range []string{"https://example.com", "https://192.0.2.1:8443", "ftp://localhost", "https://localhost/?q=1", "::"} {
		if _, err := devissuer.New(t.TempDir(), u); err == nil {
			t.Errorf("issuer URL %q accepted", u)
		}
	}
	is, err := devissuer.New(t.TempDir(), "https://localhost:8443")
	if err != nil {
		t.Fatal(err)
	}
	for name, mint := range map[string]func() (string, error){
		"empty sub": func() (string, error) { return is.Mint("", nil, time.Hour, "a", devissuer.IDToken) },
		"empty aud": func() (string, error) { return is.Mint("a", nil, time.Hour, "", devissuer.IDToken) },
		"zero ttl":  func() (string, error) { return is.Mint("a", nil, 0, "a", devissuer.IDToken) },
		"long ttl":  func() (string, error) { return is.Mint("a", nil, 48*time.Hour, "a", devissuer.IDToken) },
		"bad kind":  func() (string, error) { return is.Mint("a", nil, time.Hour, "a", 0) },
		"reserved sub": func() (string, error) {
			return is.Mint("a", map[string]any{"sub": "b"}, time.Hour, "a", devissuer.IDToken)
		},
		"reserved exp": func() (string, error) {
			return is.Mint("a", map[string]any{"exp": 1}, time.Hour, "a", devissuer.AccessToken)
		},
		"unmarshalable": func() (string, error) {
			return is.Mint("a", map[string]any{"x": func() {}}, time.Hour, "a", devissuer.IDToken)
		},
	} {
		if _, err := mint(); err == nil {
			t.Errorf("%s: minted", name)
		}
	}
}
