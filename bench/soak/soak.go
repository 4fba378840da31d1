package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/pushgate/pushgate/caddymodule"
	"github.com/pushgate/pushgate/internal/devissuer"
	apnsfake "github.com/pushgate/pushgate/internal/pnsfake/apns"
	fcmfake "github.com/pushgate/pushgate/internal/pnsfake/fcm"
	"github.com/pushgate/pushgate/internal/redistest"
)

// Config is one soak run.
type Config struct {
	// Duration is how long the load runs (the drain afterwards is extra).
	Duration time.Duration
	// Clients is the number of concurrent clients; each owns a disjoint
	// share of the users, so it knows what every answer must be.
	Clients int
	// Users and DevicesPerUser size the device population (fixed, so the
	// registry stops growing once every device has registered).
	Users, DevicesPerUser int
	// Rate bounds the requests per second over all clients (0: unpaced).
	Rate float64
	// Redis is a loopback address to use instead of starting a server; the
	// run then uses a hub name of its own and leaves its keys behind.
	Redis string
	// Policy is the gate's policy directory.
	Policy string
	// Dir holds the run's files (Caddy's storage, credentials, Redis); a
	// temporary directory when empty, removed afterwards.
	Dir string
	// Report is the interval of the progress lines; Sample that of the
	// memory and goroutine samples behind the verdict.
	Report, Sample time.Duration
	// Warmup is excluded from the growth checks; 0: a fifth of the run,
	// at least a minute (or half the run, if shorter).
	Warmup time.Duration
	// CheckGrowth turns the memory and goroutine checks on.
	CheckGrowth bool
	// Limits are the growth tolerances.
	Limits Limits
	// Out receives the progress lines and the summary; Verbose adds every
	// sample to the summary.
	Out     io.Writer
	Verbose bool
}

func (c *Config) defaults() {
	if c.Clients <= 0 {
		c.Clients = 32
	}
	if c.Users <= 0 {
		c.Users = 400
	}
	if c.Users < c.Clients {
		c.Users = c.Clients
	}
	if c.DevicesPerUser <= 0 {
		c.DevicesPerUser = 3
	}
	if c.Report <= 0 {
		c.Report = 30 * time.Second
	}
	if c.Sample <= 0 {
		c.Sample = 5 * time.Second
	}
	if c.Warmup <= 0 {
		c.Warmup = max(c.Duration/5, min(time.Minute, c.Duration/2))
	}
	if c.Limits == (Limits{}) {
		c.Limits = DefaultLimits
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
}

// hubName is the hub the soak registers in; a run against a given Redis
// gets a fresh one so that it never touches other data there.
const hubName = "soak"

// nhRule names the Full shared access rule the run's backend signs with.
const nhRule = "DefaultFullSharedAccessSignature"

// env is the running system under test and what the load needs to reach
// it.
type env struct {
	base    string // https://localhost:port
	hub     string
	nhKey   []byte
	tokens  *devissuer.Issuer
	roots   *x509.CertPool
	apns    *apnsfake.Server
	fcm     *fcmfake.Server
	cleanup []func()
}

func (e *env) close() {
	for i := len(e.cleanup) - 1; i >= 0; i-- {
		e.cleanup[i]()
	}
}

// setup starts Redis (unless given), the fakes and Caddy with pushgate.
func setup(cfg *Config) (_ *env, err error) {
	e := &env{hub: hubName}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	dir := cfg.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "pushgate-soak-"); err != nil {
			return nil, err
		}
		e.cleanup = append(e.cleanup, func() { os.RemoveAll(dir) })
	}

	// The development issuer keeps its key under Caddy's data directory,
	// which the server and this process must agree on; pointing it into
	// the run's directory also keeps the user's own data directory clean.
	prev, had := os.LookupEnv("XDG_DATA_HOME")
	if err := os.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data")); err != nil {
		return nil, err
	}
	e.cleanup = append(e.cleanup, func() {
		if had {
			os.Setenv("XDG_DATA_HOME", prev)
		} else {
			os.Unsetenv("XDG_DATA_HOME")
		}
	})

	redisAddr := cfg.Redis
	if redisAddr == "" {
		rdir := filepath.Join(dir, "redis")
		if err := os.MkdirAll(rdir, 0o700); err != nil {
			return nil, err
		}
		srv, err := redistest.StartServer(rdir, redistest.Options{})
		if err != nil {
			return nil, err
		}
		e.cleanup = append(e.cleanup, srv.Stop)
		redisAddr = srv.Addr
	} else {
		if err := requireLoopback(redisAddr); err != nil {
			return nil, fmt.Errorf("-redis: %v", err)
		}
		e.hub = fmt.Sprintf("soak%d", time.Now().UnixNano())
	}

	// The strict fakes, in this process: their refusals are sender bugs.
	p8, pub, err := apnsfake.GenerateKey()
	if err != nil {
		return nil, err
	}
	const apnsKeyID, apnsTeam, apnsTopic = "SOAKKEY001", "SOAKTEAM01", "com.example.soak"
	e.apns = apnsfake.New(apnsfake.Options{Keys: map[string]apnsfake.Key{apnsKeyID: {TeamID: apnsTeam, Public: pub}},
		Topics: map[string][]string{apnsTeam: {apnsTopic}}})
	if err := e.apns.Start(); err != nil {
		return nil, err
	}
	e.cleanup = append(e.cleanup, func() { e.apns.Close() })
	e.fcm = fcmfake.New(fcmfake.Options{})
	if err := e.fcm.Start(); err != nil {
		return nil, err
	}
	e.cleanup = append(e.cleanup, func() { e.fcm.Close() })
	sa, err := e.fcm.ServiceAccount("soak-project")
	if err != nil {
		return nil, err
	}
	files := filepath.Join(dir, "credentials")
	if err := os.MkdirAll(files, 0o700); err != nil {
		return nil, err
	}
	keyFile, saFile, caFile := filepath.Join(files, "apns.p8"), filepath.Join(files, "fcm.json"), filepath.Join(files, "fakes-ca.pem")
	for name, b := range map[string][]byte{keyFile: p8, saFile: sa, caFile: append(e.apns.CertPEM(), e.fcm.CertPEM()...)} {
		if err := os.WriteFile(name, b, 0o600); err != nil {
			return nil, err
		}
	}

	httpsPort, err := freePort()
	if err != nil {
		return nil, err
	}
	httpPort, err := freePort()
	if err != nil {
		return nil, err
	}
	devPort, err := freePort()
	if err != nil {
		return nil, err
	}
	e.nhKey = []byte(randomKey())
	storage := filepath.Join(dir, "caddy")
	caddyfile := fmt.Sprintf(`{
	admin off
	persist_config off
	skip_install_trust
	http_port %[1]d
	https_port %[2]d
	grace_period 2s
	storage file_system %[3]q
	log {
		level WARN
	}
	pushgate {
		dev_issuer 127.0.0.1:%[4]d
		hub %[5]s {
			redis %[6]s
			delivery {
				root_ca_file %[7]q
				apns {
					key_file %[8]q
					key_id %[9]s
					team_id %[10]s
					topic %[11]s
					endpoint %[12]s
				}
				fcm {
					credentials_file %[13]q
					endpoint %[14]s
				}
			}
		}
	}
}
localhost:%[2]d {
	bind 127.0.0.1
	tls internal
	pushgate_gate {
		hub %[5]s
		prefix /push
		policy %[15]q
		oidc {
			issuer http://127.0.0.1:%[4]d
			client_id %[16]s
		}
	}
	pushgate_nh /%[5]s/* {
		hub %[5]s
		rule %[17]s %[18]s Listen Send Manage
	}
	respond "the app's backend" 200
}
`, httpPort, httpsPort, storage, devPort, e.hub, redisAddr, caFile, keyFile, apnsKeyID, apnsTeam, apnsTopic, e.apns.URL(),
		saFile, e.fcm.URL(), cfg.Policy, devissuer.ClientID, nhRule, e.nhKey)
	adapted, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		return nil, fmt.Errorf("adapting the soak Caddyfile: %v", err)
	}
	for _, w := range warnings {
		fmt.Fprintf(cfg.Out, "caddyfile warning: %s\n", w.String())
	}
	if err := caddy.Load(adapted, true); err != nil {
		return nil, fmt.Errorf("loading the soak config: %v", err)
	}
	e.cleanup = append(e.cleanup, func() { _ = caddy.Stop() })
	e.base = fmt.Sprintf("https://localhost:%d", httpsPort)

	// Tokens are minted here with the key the server's issuer serves.
	if e.tokens, err = devissuer.New(caddymodule.DevIssuerDir(), fmt.Sprintf("http://127.0.0.1:%d", devPort)); err != nil {
		return nil, err
	}
	root, err := os.ReadFile(filepath.Join(storage, "pki", "authorities", "local", "root.crt"))
	if err != nil {
		return nil, fmt.Errorf("reading Caddy's internal CA root: %v", err)
	}
	e.roots = x509.NewCertPool()
	if !e.roots.AppendCertsFromPEM(root) {
		return nil, errors.New("caddy's internal CA root holds no certificate")
	}
	return e, e.ready(60 * time.Second)
}

// ready waits until a device request gets its proper answer. Right after
// the load, the site's certificate may still be in the making, and the
// gate's OIDC discovery, which starts when the gate is provisioned (before
// the development issuer listens), backs off for a second after its first
// refused connection.
func (e *env) ready(limit time.Duration) error {
	tok, err := e.tokens.Mint("soak-ready", nil, time.Hour, devissuer.ClientID, devissuer.IDToken)
	if err != nil {
		return err
	}
	hc := e.client()
	defer hc.CloseIdleConnections()
	var last string
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		req, _ := http.NewRequest(http.MethodGet, e.base+"/push/installations/soak-ready", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := hc.Do(req)
		if err != nil {
			last = err.Error()
			continue
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode == http.StatusNotFound {
			return nil
		}
		last = fmt.Sprintf("%d %s", res.StatusCode, b)
	}
	return fmt.Errorf("pushgate did not become ready within %s: %s", limit, last)
}

// client is an HTTP/2 client of its own (its own connection), trusting
// Caddy's internal CA, never going through a proxy.
func (e *env) client() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: e.roots, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2: true,
		Proxy:             nil,
	}}
}

func requireLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address; the soak only talks to this machine", addr)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// run starts everything, drives the load for cfg.Duration, drains the
// deliveries and returns what happened; the verdict is Result.Failures.
func run(ctx context.Context, cfg Config) (*Result, error) {
	cfg.defaults()
	e, err := setup(&cfg)
	if err != nil {
		return nil, err
	}
	defer e.close()
	return drive(ctx, &cfg, e)
}

// randomKey is a fresh shared access key: only this process signs with it.
func randomKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return base64.StdEncoding.EncodeToString(b)
}
