package caddymodule

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

// testCaddy is Caddy running in this test process on free loopback ports,
// with the admin endpoint off. Unlike caddytest, whose ports are fixed, it
// lets several test processes run side by side; like caddytest, one test
// at a time per process (Caddy's running config is process-global).
type testCaddy struct {
	t      *testing.T
	HTTPS  int
	HTTP   int
	Base   string       // https://localhost:{HTTPS}
	Client *http.Client // trusts Caddy's internal CA; HTTP/2
}

// startCaddy adapts caddyfile, in which HTTPS_PORT and HTTP_PORT stand for
// the chosen ports (a global options block is prepended: admin off, the
// ports, no trust-store installation), and runs it until the test ends.
// Sites should use `tls internal` and `bind 127.0.0.1`.
func startCaddy(t *testing.T, caddyfile string) *testCaddy {
	t.Helper()
	tc := &testCaddy{t: t, HTTPS: freePort(t), HTTP: freePort(t)}
	tc.Base = fmt.Sprintf("https://localhost:%d", tc.HTTPS)
	tc.load(caddyfile)
	t.Cleanup(func() { _ = caddy.Stop() })
	pool := x509.NewCertPool()
	root, err := os.ReadFile(filepath.Join(caddy.AppDataDir(), "pki", "authorities", "local", "root.crt"))
	if err != nil {
		t.Fatalf("reading Caddy's internal CA root: %v", err)
	}
	pool.AppendCertsFromPEM(root)
	// Caddy obtains the site's certificate from its internal CA in the
	// background; until it has, handshakes fail with an internal error.
	tlsConf := &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", tc.HTTPS), tlsConf)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Caddy's TLS listener did not become ready: %v", err)
		}
	}
	tc.Client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2: true,
		Proxy:             nil, // loopback only, never through a proxy
	}}
	return tc
}

// Reload replaces the running config with caddyfile (same ports), as a
// config reload through the admin API does.
func (tc *testCaddy) Reload(caddyfile string) {
	tc.t.Helper()
	tc.load(caddyfile)
}

func (tc *testCaddy) load(caddyfile string) {
	tc.t.Helper()
	global := fmt.Sprintf("{\n\tadmin off\n\tpersist_config off\n\thttp_port %d\n\thttps_port %d\n\tgrace_period 1s\n\tskip_install_trust\n", tc.HTTP, tc.HTTPS)
	src := strings.NewReplacer("HTTPS_PORT", fmt.Sprint(tc.HTTPS), "HTTP_PORT", fmt.Sprint(tc.HTTP)).Replace(caddyfile)
	// A leading global options block in caddyfile is merged into ours.
	if rest, ok := strings.CutPrefix(strings.TrimSpace(src), "{"); ok {
		src = global + rest
	} else {
		src = global + "}\n" + src
	}
	src = strings.TrimRight(src, "\n") + "\n" // as caddy fmt writes it
	adapter := caddyconfig.GetAdapter("caddyfile")
	cfg, warnings, err := adapter.Adapt([]byte(src), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		tc.t.Fatalf("adapting the test Caddyfile: %v\n%s", err, src)
	}
	for _, w := range warnings {
		tc.t.Logf("caddyfile warning: %s", w.String())
	}
	if err := caddy.Load(cfg, true); err != nil {
		tc.t.Fatalf("loading the test config: %v", err)
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
