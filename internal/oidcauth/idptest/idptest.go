// Package idptest runs a real OpenID provider, panva/oidc-provider under
// Node.js, for integration tests. The provider's code and configuration are
// in internal/oidcauth/testdata/idp (server.js documents its clients and its
// test-only parameters).
//
// Start needs node and npm on PATH. It installs the pinned packages with
// `npm ci` when node_modules is missing (the directory is git-ignored and
// kept between runs). Without node or npm the test is skipped, unless the
// environment variable CI is "true": there a missing runtime is a failure,
// so CI cannot go green by skipping.
package idptest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// Client IDs and endpoints configured in server.js.
const (
	// MobileClientID is the public client ID tokens are issued to.
	MobileClientID = "pushgate-mobile"
	// BackendClientID is the confidential client access tokens are
	// issued to (client_credentials).
	BackendClientID = "pushgate-backend"

	backendSecret = "backend-secret"
	redirectURI   = "http://127.0.0.1/callback"
)

// IdP is a running provider.
type IdP struct {
	// Issuer is the issuer identifier, http://127.0.0.1:PORT.
	Issuer string

	// client follows no redirects: the authorization-code flow walks
	// them one at a time.
	client *http.Client
}

// Dir returns the directory holding server.js and package.json.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "testdata", "idp")
}

var (
	installOnce sync.Once
	installErr  error
)

// unavailable fails the test under CI and skips it elsewhere.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("idptest: %s (CI=true, so this is a failure)", msg)
	}
	t.Skipf("idptest: %s; skipping the real-IdP test", msg)
}

// Start runs the provider on a free loopback port and stops it when the
// test ends.
func Start(t testing.TB) *IdP {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		unavailable(t, "node is not on PATH")
	}
	dir := Dir()
	installOnce.Do(func() { installErr = install(dir) })
	if installErr != nil {
		unavailable(t, "%v", installErr)
	}

	cmd := exec.Command(node, "server.js", "0")
	cmd.Dir = dir
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("idptest: starting node: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("idptest: provider stderr:\n%s", stderr.String())
		}
	})

	// server.js prints {"issuer":...} once it listens and the provider
	// is installed.
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	var first string
	select {
	case l, ok := <-line:
		if !ok {
			t.Fatalf("idptest: node exited before listening:\n%s", stderr.String())
		}
		first = l
	case <-time.After(120 * time.Second): // generous: CI runs packages side by side on two cores
		t.Fatalf("idptest: node did not start within 120 s:\n%s", stderr.String())
	}
	var hello struct {
		Issuer string `json:"issuer"`
	}
	if err := json.Unmarshal([]byte(first), &hello); err != nil || hello.Issuer == "" {
		t.Fatalf("idptest: unexpected first line %q", first)
	}
	p := &IdP{
		Issuer: hello.Issuer,
		client: &http.Client{
			Timeout:       10 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	p.waitForDiscovery(t)
	return p
}

func install(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "oidc-provider", "package.json")); err == nil {
		return nil
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return fmt.Errorf("node_modules is missing in %s and npm is not on PATH", dir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("npm ci in %s: %v\n%s", dir, err, out)
	}
	return nil
}

func (p *IdP) waitForDiscovery(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := p.client.Get(p.Issuer + "/.well-known/openid-configuration")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("idptest: discovery not served: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// AccessToken returns an ES256 RFC 9068 access token (typ at+jwt) with
// the given sub and aud, from the client_credentials grant.
func (p *IdP) AccessToken(t testing.TB, sub, aud string) string {
	t.Helper()
	return p.AccessTokenAlg(t, sub, aud, "ES256")
}

// AccessTokenAlg is AccessToken signed with alg ("ES256" or "RS256").
func (p *IdP) AccessTokenAlg(t testing.TB, sub, aud, alg string) string {
	t.Helper()
	form := url.Values{
		"grant_type":        {"client_credentials"},
		"resource":          {aud},
		"pushgate_test_sub": {sub},
		"pushgate_test_alg": {alg},
	}
	req, err := http.NewRequest(http.MethodPost, p.Issuer+"/token", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(BackendClientID, backendSecret)
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	p.doJSON(t, req, &tok)
	if tok.AccessToken == "" {
		t.Fatal("idptest: token response without access_token")
	}
	return tok.AccessToken
}

// IDToken returns an RS256 ID token for sub, issued to MobileClientID by a
// real authorization-code flow with PKCE: GET /auth, the devInteractions
// login form posted with login=sub, the redirects back to the client, and
// the code exchanged at the token endpoint.
func (p *IdP) IDToken(t testing.TB, sub string) string {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := *p.client
	c.Jar = jar

	verifier := randomString(t)
	sum := sha256.Sum256([]byte(verifier))
	state := randomString(t)
	q := url.Values{
		"client_id":             {MobileClientID},
		"response_type":         {"code"},
		"scope":                 {"openid"},
		"redirect_uri":          {redirectURI},
		"code_challenge":        {base64.RawURLEncoding.EncodeToString(sum[:])},
		"code_challenge_method": {"S256"},
		"state":                 {state},
		"nonce":                 {randomString(t)},
	}
	next := p.Issuer + "/auth?" + q.Encode()
	var code string
	interactions := 0
	for step := 0; code == ""; step++ {
		if step == 10 {
			t.Fatal("idptest: authorization flow did not reach the redirect_uri in 10 steps")
		}
		var resp *http.Response
		u, err := url.Parse(next)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(u.Path, "/interaction/") {
			// devInteractions: the first prompt is login; a consent
			// prompt would come next if the grant were not preloaded.
			form := url.Values{"prompt": {"login"}, "login": {sub}, "password": {"any"}}
			if interactions > 0 {
				form = url.Values{"prompt": {"consent"}}
			}
			interactions++
			resp, err = c.PostForm(next, form)
		} else {
			resp, err = c.Get(next)
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		loc := resp.Header.Get("Location")
		if resp.StatusCode/100 != 3 || loc == "" {
			t.Fatalf("idptest: %s answered %s without a redirect:\n%s", u.Path, resp.Status, body)
		}
		target, err := u.Parse(loc)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(target.String(), redirectURI) {
			if e := target.Query().Get("error"); e != "" {
				t.Fatalf("idptest: authorization failed: %s: %s", e, target.Query().Get("error_description"))
			}
			if target.Query().Get("state") != state {
				t.Fatal("idptest: state mismatch")
			}
			code = target.Query().Get("code")
			if code == "" {
				t.Fatalf("idptest: redirect without code: %s", target)
			}
			break
		}
		next = target.String()
	}

	form := url.Values{
		"grant_type":    {"authorization_code"},
		"code":          {code},
		"redirect_uri":  {redirectURI},
		"client_id":     {MobileClientID},
		"code_verifier": {verifier},
	}
	req, err := http.NewRequest(http.MethodPost, p.Issuer+"/token", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	var tok struct {
		IDToken string `json:"id_token"`
	}
	p.doJSON(t, req, &tok)
	if tok.IDToken == "" {
		t.Fatal("idptest: token response without id_token")
	}
	return tok.IDToken
}

// Rotate replaces the provider's signing keys with fresh ones; the old keys
// leave the JWKS at once. It returns the new key ids.
func (p *IdP) Rotate(t testing.TB) []string {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, p.Issuer+"/__test/rotate", nil)
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Kids []string `json:"kids"`
	}
	p.doJSON(t, req, &out)
	return out.Kids
}

func (p *IdP) doJSON(t testing.TB, req *http.Request, v any) {
	t.Helper()
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatalf("idptest: %s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("idptest: %s %s: %s\n%s", req.Method, req.URL.Path, resp.Status, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("idptest: %s %s: %v", req.Method, req.URL.Path, err)
	}
}

func randomString(t testing.TB) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// lockedBuffer collects the child's stderr, written by exec's copying
// goroutine and read by the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
