package apns

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/internal/pnsfake"
	fake "github.com/pushgate/pushgate/internal/pnsfake/apns"
)

const (
	team   = "TEAM123456"
	keyID  = "KEY1234567"
	topic  = "com.example.app"
	tok    = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00"
	alert  = `{"aps":{"alert":{"title":"t","body":"b"},"sound":"default"},"k":"v"}`
	silent = `{"aps":{"content-available":1},"k":"v"}`
)

// clock is a settable clock shared by a sender and the fake.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Now().UnixNano())
	return c
}
func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

type env struct {
	fake *fake.Server
	p8   []byte
	cfg  Config
}

// newEnv starts a fake that knows one key of one team with topic (and its
// .voip topic), and a sender config for it.
func newEnv(t testing.TB, mod func(*fake.Options)) *env {
	t.Helper()
	p8, pub, err := fake.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	opts := fake.Options{
		Keys:   map[string]fake.Key{keyID: {TeamID: team, Public: pub}},
		Topics: map[string][]string{team: {topic, topic + ".voip"}},
	}
	if mod != nil {
		mod(&opts)
	}
	f := fake.New(opts)
	if err := f.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &env{fake: f, p8: p8, cfg: Config{
		Endpoint: f.URL(), KeyPEM: p8, KeyID: keyID, TeamID: team, Topic: topic,
		RootCAs: f.CertPool(), Timeout: 10 * time.Second,
	}}
}

func (e *env) sender(t testing.TB, mod func(*Config)) *Sender {
	t.Helper()
	cfg := e.cfg
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func delivery(token, body string, headers ...hubcore.Header) *hubcore.Delivery {
	return &hubcore.Delivery{
		Platform: hubcore.APNS,
		Channel:  hubcore.PushChannel{Handle: token},
		Rendered: hubcore.Rendered{Body: []byte(body), Headers: headers},
	}
}

func pushErr(t *testing.T, err error) *hubcore.PushError {
	t.Helper()
	var pe *hubcore.PushError
	if !errors.As(err, &pe) {
		t.Fatalf("want a *hubcore.PushError, got %T %v", err, err)
	}
	return pe
}

func TestSendMapsFieldsAndHeaders(t *testing.T) {
	e := newEnv(t, nil)
	e.fake.Log.Keep = true
	s := e.sender(t, nil)
	const id = "8f7e1a52-3b1c-4c1e-9d2a-0a1b2c3d4e5f"
	d := delivery(strings.ToUpper(tok), alert,
		hubcore.Header{Name: "APNS-Collapse-Id", Value: "news"},
		hubcore.Header{Name: "apns-id", Value: id},
		hubcore.Header{Name: "apns-expiration", Value: "1"}, // d.Expiration wins
		hubcore.Header{Name: "apns-priority", Value: "10"},  // d.Priority wins
		hubcore.Header{Name: "apns-push-type", Value: "alert"},
		hubcore.Header{Name: "apns-unknown-extension", Value: "x"},
		hubcore.Header{Name: "X-WNS-Type", Value: "wns/raw"},
		hubcore.Header{Name: "ServiceBusNotification-Format", Value: "apple"},
	)
	d.Priority = "5"
	d.Expiration = "1893456000"
	if err := s.Send(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	got := e.fake.Log.For(strings.ToUpper(tok))
	if len(got) != 1 {
		t.Fatalf("fake logged %d notifications", len(got))
	}
	h := got[0].Header
	want := map[string]string{
		"Apns-Topic":             topic,
		"Apns-Push-Type":         "alert",
		"Apns-Priority":          "5",
		"Apns-Expiration":        "1893456000",
		"Apns-Collapse-Id":       "news",
		"Apns-Id":                id,
		"Apns-Unknown-Extension": "x",
		"Content-Type":           "application/json",
	}
	for k, v := range want {
		if vs := h[k]; len(vs) != 1 || vs[0] != v {
			t.Errorf("%s = %q, want %q", k, vs, v)
		}
	}
	for _, k := range []string{"X-Wns-Type", "Servicebusnotification-Format", "Accept-Encoding"} {
		if _, ok := h[k]; ok {
			t.Errorf("%s was sent", k)
		}
	}
	if a := h.Get("Authorization"); !strings.HasPrefix(a, "bearer ey") {
		t.Errorf("authorization %q", a)
	}
	if string(got[0].Body) != alert {
		t.Errorf("body %q", got[0].Body)
	}
}

func TestSendDefaults(t *testing.T) {
	e := newEnv(t, nil)
	e.fake.Log.Keep = true
	s := e.sender(t, nil)
	cases := []struct {
		name        string
		token, body string
		headers     []hubcore.Header
		pushType    string
		prio        string
		topic       string
	}{
		{"alert", tok, alert, nil, "alert", "10", topic},
		{"silent", strings.Repeat("1a", 32), silent, nil, "background", "5", topic},
		{"silent with a badge is an alert", strings.Repeat("2b", 32), `{"aps":{"content-available":1,"badge":1}}`, nil, "alert", "10", topic},
		{"content-available 0", strings.Repeat("3c", 32), `{"aps":{"content-available":0}}`, nil, "alert", "10", topic},
		{"voip to its topic", strings.Repeat("4d", 32), alert, []hubcore.Header{{Name: "apns-push-type", Value: "voip"}, {Name: "apns-topic", Value: topic + ".voip"}}, "voip", "", topic + ".voip"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := s.Send(context.Background(), delivery(tc.token, tc.body, tc.headers...)); err != nil {
				t.Fatal(err)
			}
			got := e.fake.Log.For(tc.token)
			if len(got) != 1 {
				t.Fatalf("fake logged %d", len(got))
			}
			h := got[0].Header
			if h.Get("Apns-Push-Type") != tc.pushType || h.Get("Apns-Priority") != tc.prio || h.Get("Apns-Topic") != tc.topic {
				t.Fatalf("push type %q priority %q topic %q", h.Get("Apns-Push-Type"), h.Get("Apns-Priority"), h.Get("Apns-Topic"))
			}
			if _, ok := h["Apns-Expiration"]; ok {
				t.Fatal("apns-expiration sent without one being set")
			}
		})
	}
}

// TestRefusalsMapped: every answer of APNs becomes the right PushError.
func TestRefusalsMapped(t *testing.T) {
	e := newEnv(t, nil)
	fail := func(status int, reason string) []pnsfake.Action {
		return []pnsfake.Action{{Kind: pnsfake.Fail, Status: status, Reason: reason}}
	}
	cases := []struct {
		reason    string
		status    int
		script    []pnsfake.Action
		outcome   hubcore.OutcomeName
		retry     bool
		expire    bool
		after     time.Duration
		wantCalls int64 // requests the fake sees
	}{
		{"BadDeviceToken", 400, nil, hubcore.OutcomeBadChannel, false, true, 0, 1},
		{"DeviceTokenNotForTopic", 400, nil, hubcore.OutcomeWrongToken, false, true, 0, 1},
		{"Unregistered", 410, nil, hubcore.OutcomeExpiredChannel, false, true, 0, 1},
		{"ExpiredToken", 410, nil, hubcore.OutcomeExpiredChannel, false, true, 0, 1},
		{"PayloadTooLarge", 413, nil, hubcore.OutcomeInvalidNotificationSize, false, false, 0, 1},
		{"InvalidProviderToken", 403, nil, hubcore.OutcomeInvalidCredentials, false, false, 0, 1},
		{"MissingProviderToken", 403, nil, hubcore.OutcomeInvalidCredentials, false, false, 0, 1},
		{"BadCertificate", 403, nil, hubcore.OutcomeInvalidCredentials, false, false, 0, 1},
		{"BadCertificateEnvironment", 403, nil, hubcore.OutcomeInvalidCredentials, false, false, 0, 1},
		{"Forbidden", 403, nil, hubcore.OutcomeInvalidCredentials, false, false, 0, 1},
		{"ExpiredProviderToken", 403, append(fail(403, "ExpiredProviderToken"), fail(403, "ExpiredProviderToken")...), hubcore.OutcomeInvalidCredentials, false, false, 0, 2},
		{"TooManyProviderTokenUpdates", 429, nil, hubcore.OutcomeInvalidCredentials, true, false, 0, 1},
		{"TooManyRequests", 429, []pnsfake.Action{{Kind: pnsfake.Throttle, RetryAfter: 7 * time.Second}}, hubcore.OutcomeThrottled, true, false, 7 * time.Second, 1},
		{"InternalServerError", 500, nil, hubcore.OutcomePnsServerError, true, false, 0, 1},
		{"ServiceUnavailable", 503, nil, hubcore.OutcomePnsUnavailable, true, false, 0, 1},
		{"Shutdown", 503, nil, hubcore.OutcomePnsUnavailable, true, false, 0, 1},
		{"IdleTimeout", 400, nil, hubcore.OutcomePnsUnavailable, true, false, 0, 1},
		{"BadTopic", 400, nil, hubcore.OutcomePnsInterfaceError, false, false, 0, 1},
		{"BadPriority", 400, nil, hubcore.OutcomePnsInterfaceError, false, false, 0, 1},
		{"BadExpirationDate", 400, nil, hubcore.OutcomePnsInterfaceError, false, false, 0, 1},
		{"BadCollapseId", 400, nil, hubcore.OutcomePnsInterfaceError, false, false, 0, 1},
		{"BadMessageId", 400, nil, hubcore.OutcomePnsInterfaceError, false, false, 0, 1},
		{"PayloadEmpty", 400, nil, hubcore.OutcomePnsInterfaceError, false, false, 0, 1},
		{"TopicDisallowed", 400, nil, hubcore.OutcomePnsInterfaceError, false, false, 0, 1},
		{"InvalidPushType", 400, nil, hubcore.OutcomePnsInterfaceError, false, false, 0, 1},
		{"MethodNotAllowed", 405, nil, hubcore.OutcomePnsInterfaceError, false, false, 0, 1},
	}
	for i, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			token := strings.Repeat(string("0123456789abcdef"[i%16])+string("0123456789abcdef"[i/16]), 32)
			script := tc.script
			if script == nil {
				script = fail(tc.status, tc.reason)
			}
			e.fake.Script.Push(token, script...)
			s := e.sender(t, nil) // fresh: no token state from the cases before
			var calls atomic.Int64
			before, conns := e.fake.Log.Refused(), e.fake.Conns()
			err := s.Send(context.Background(), delivery(token, alert))
			// Each new connection's settings probe is refused too.
			calls.Store(e.fake.Log.Refused() - before - (e.fake.Conns() - conns))
			pe := pushErr(t, err)
			if pe.Outcome != tc.outcome || pe.Retry != tc.retry || pe.ExpireHandle != tc.expire || pe.RetryAfter != tc.after || pe.Status != tc.status || pe.Reason != tc.reason {
				t.Fatalf("got %+v", pe)
			}
			if calls.Load() != tc.wantCalls {
				t.Fatalf("%d requests, want %d", calls.Load(), tc.wantCalls)
			}
		})
	}
}

// TestFakeRefusalsMapped: refusals the fake decides itself, not scripted.
func TestFakeRefusalsMapped(t *testing.T) {
	e := newEnv(t, nil)
	s := e.sender(t, nil)
	gone := strings.Repeat("a1", 32)
	e.fake.Unregister(gone)
	other := strings.Repeat("b2", 32)
	e.fake.Register(other, topic+".voip")
	cases := []struct {
		name    string
		d       *hubcore.Delivery
		outcome hubcore.OutcomeName
		reason  string
		expire  bool
	}{
		{"unregistered", delivery(gone, alert), hubcore.OutcomeExpiredChannel, "Unregistered", true},
		{"other app's token", delivery(other, alert), hubcore.OutcomeWrongToken, "DeviceTokenNotForTopic", true},
		{"short token", delivery(tok[:40], alert), hubcore.OutcomeBadChannel, "BadDeviceToken", true},
		{"too large", delivery(tok, `{"aps":{"alert":"`+strings.Repeat("x", 4100)+`"}}`), hubcore.OutcomeInvalidNotificationSize, "PayloadTooLarge", false},
		{"bad priority", delivery(tok, alert, hubcore.Header{Name: "apns-priority", Value: "3"}), hubcore.OutcomePnsInterfaceError, "BadPriority", false},
		{"foreign topic", delivery(tok, alert, hubcore.Header{Name: "apns-topic", Value: "com.other"}), hubcore.OutcomePnsInterfaceError, "BadTopic", false},
		{"no aps", delivery(tok, `{"a":1}`), hubcore.OutcomePnsInterfaceError, fake.ReasonBadPayload, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pe := pushErr(t, s.Send(context.Background(), tc.d))
			if pe.Outcome != tc.outcome || pe.Reason != tc.reason || pe.ExpireHandle != tc.expire || pe.Retry {
				t.Fatalf("got %+v", pe)
			}
		})
	}
}

func TestNotAToken(t *testing.T) {
	e := newEnv(t, nil)
	s := e.sender(t, nil)
	for _, h := range []string{"", "not hex", tok + "/../x"} {
		pe := pushErr(t, s.Send(context.Background(), delivery(h, alert)))
		if pe.Outcome != hubcore.OutcomeBadChannel || !pe.ExpireHandle {
			t.Fatalf("%q: %+v", h, pe)
		}
	}
	if n := e.fake.Conns(); n != 0 {
		t.Fatalf("sent anyway: %d connections", n)
	}
}

// TestConcurrentSendsShareTokenAndConns: a thousand concurrent sends mint
// one token and use Conns connections.
func TestConcurrentSendsShareTokenAndConns(t *testing.T) {
	e := newEnv(t, func(o *fake.Options) { o.MaxConcurrentStreams = 100 })
	s := e.sender(t, func(c *Config) { c.Conns = 2 })
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range 1000 {
		wg.Go(func() {
			token := strings.Repeat("ab", 28) + strings.Repeat(string("0123456789abcdef"[i%16]), 8)
			if err := s.Send(context.Background(), delivery(token, alert)); err != nil {
				failed.Add(1)
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.FailNow()
	}
	if got := e.fake.Log.Accepted(); got != 1000 {
		t.Fatalf("accepted %d", got)
	}
	if got := e.fake.Tokens(); got != 1 {
		t.Fatalf("%d provider tokens minted, want 1", got)
	}
	if got := e.fake.Conns(); got != 2 {
		t.Fatalf("%d connections, want 2", got)
	}
}

func TestExpiredProviderTokenRefreshed(t *testing.T) {
	e := newEnv(t, nil)
	s := e.sender(t, nil)
	if err := s.Send(context.Background(), delivery(tok, alert)); err != nil {
		t.Fatal(err)
	}
	e.fake.ExpireTokens()
	// Many requests see the expiry at once; one new token serves them all.
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if err := s.Send(context.Background(), delivery(tok, alert)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := e.fake.Tokens(); got != 2 {
		t.Fatalf("%d tokens, want 2", got)
	}
	if got := e.fake.Log.Accepted(); got != 51 {
		t.Fatalf("accepted %d", got)
	}
}

// TestClockBehind: a token minted by a clock two hours slow is expired at
// APNs; the sender re-mints once and succeeds.
func TestClockBehind(t *testing.T) {
	e := newEnv(t, nil)
	s := e.sender(t, func(c *Config) {
		c.Now = func() time.Time {
			if e.fake.Log.Refused() == int64(e.fake.Conns()) { // only the probes so far
				return time.Now().Add(-2 * time.Hour)
			}
			return time.Now()
		}
	})
	if err := s.Send(context.Background(), delivery(tok, alert)); err != nil {
		t.Fatal(err)
	}
	if e.fake.Tokens() != 2 || e.fake.Log.Refused() != 1+int64(e.fake.Conns()) {
		t.Fatalf("tokens %d refused %d on %d connections", e.fake.Tokens(), e.fake.Log.Refused(), e.fake.Conns())
	}
}

func TestTokenRefreshedAfterTTL(t *testing.T) {
	clk := newClock()
	e := newEnv(t, func(o *fake.Options) { o.Now = clk.Now })
	s := e.sender(t, func(c *Config) { c.Now = clk.Now; c.TokenTTL = 40 * time.Minute })
	send := func(n int) {
		t.Helper()
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				if err := s.Send(context.Background(), delivery(tok, alert)); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	send(1)
	clk.Advance(39 * time.Minute)
	send(20)
	if got := e.fake.Tokens(); got != 1 {
		t.Fatalf("refreshed before TokenTTL: %d tokens", got)
	}
	clk.Advance(2 * time.Minute)
	send(100) // the fake refuses a second change within 20 min: one mint only
	if got := e.fake.Tokens(); got != 2 {
		t.Fatalf("after TokenTTL: %d tokens, want 2", got)
	}
	clk.Advance(41 * time.Minute)
	send(1)
	if got := e.fake.Tokens(); got != 3 {
		t.Fatalf("after 2×TokenTTL: %d tokens, want 3", got)
	}
}

func TestCertificateAuth(t *testing.T) {
	ca, err := fake.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue(topic)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(o *fake.Options) { o.ClientCAs = ca.Pool() })
	e.fake.Log.Keep = true
	s, err := New(Config{Endpoint: e.fake.URL(), Certificate: &cert, RootCAs: e.fake.CertPool()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Send(context.Background(), delivery(tok, alert)); err != nil {
		t.Fatal(err)
	}
	got := e.fake.Log.For(tok)
	if len(got) != 1 {
		t.Fatalf("logged %d", len(got))
	}
	if _, ok := got[0].Header["Authorization"]; ok {
		t.Fatal("authorization sent with certificate auth")
	}
	if _, ok := got[0].Header["Apns-Topic"]; ok {
		t.Fatal("apns-topic sent though no Topic was configured")
	}
	// A certificate from another authority does not even connect.
	otherCA, err := fake.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	otherCert, err := otherCA.Issue(topic)
	if err != nil {
		t.Fatal(err)
	}
	bare, err := New(Config{Endpoint: e.fake.URL(), Certificate: &otherCert, RootCAs: e.fake.CertPool()})
	if err != nil {
		t.Fatal(err)
	}
	defer bare.Close()
	err = bare.Send(context.Background(), delivery(tok, alert))
	var pe *hubcore.PushError
	if err == nil || errors.As(err, &pe) {
		t.Fatalf("want a transport error, got %v", err)
	}
}

func TestDropIsTransportError(t *testing.T) {
	e := newEnv(t, nil)
	s := e.sender(t, nil)
	e.fake.Script.Push(tok, pnsfake.Action{Kind: pnsfake.Drop})
	err := s.Send(context.Background(), delivery(tok, alert))
	var pe *hubcore.PushError
	if err == nil || errors.As(err, &pe) {
		t.Fatalf("want a transport error, got %v", err)
	}
	// The sender recovers on a new connection.
	if err := s.Send(context.Background(), delivery(tok, alert)); err != nil {
		t.Fatal(err)
	}
}

func TestSlowIsTimeout(t *testing.T) {
	e := newEnv(t, nil)
	s := e.sender(t, func(c *Config) { c.Timeout = 50 * time.Millisecond })
	e.fake.Script.Push(tok, pnsfake.Action{Kind: pnsfake.Slow, Delay: time.Minute})
	err := s.Send(context.Background(), delivery(tok, alert))
	var pe *hubcore.PushError
	if err == nil || errors.As(err, &pe) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want a timeout, got %v", err)
	}
	if e.fake.Log.Accepted() != 0 {
		t.Fatal("the slow request was accepted")
	}
}

func TestContextCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := newEnv(t, nil)
	e.fake.Log.OnArrive = func(string, time.Time) { cancel() }
	s := e.sender(t, nil)
	e.fake.Script.Push(tok, pnsfake.Action{Kind: pnsfake.Slow, Delay: time.Minute})
	if err := s.Send(ctx, delivery(tok, alert)); err != context.Canceled {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if err := s.Send(ctx, delivery(tok, alert)); err != context.Canceled {
		t.Fatalf("already canceled: got %v", err)
	}
}

func TestClosed(t *testing.T) {
	e := newEnv(t, nil)
	s := e.sender(t, nil)
	s.Close()
	if err := s.Send(context.Background(), delivery(tok, alert)); err != ErrClosed {
		t.Fatalf("got %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	p8, _, err := fake.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cert := &tls.Certificate{Certificate: [][]byte{{1}}, PrivateKey: struct{}{}}
	good := Config{KeyPEM: p8, KeyID: keyID, TeamID: team, Topic: topic}
	cases := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no credentials", func(c *Config) { *c = Config{Topic: topic} }, "no credentials"},
		{"both credentials", func(c *Config) { c.Certificate = cert }, "not both"},
		{"no key", func(c *Config) { c.KeyPEM = nil }, "KeyPEM is required"},
		{"no key id", func(c *Config) { c.KeyID = "" }, "KeyID"},
		{"no team", func(c *Config) { c.TeamID = "" }, "TeamID"},
		{"no topic", func(c *Config) { c.Topic = "" }, "Topic"},
		{"key not PEM", func(c *Config) { c.KeyPEM = []byte("MIGTAgEAMBMGByqGSM49AgEGCCqGSM49") }, "not PEM"},
		{"RSA block", func(c *Config) {
			c.KeyPEM = []byte("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n")
		}, "RSA PRIVATE KEY"},
		{"TTL short", func(c *Config) { c.TokenTTL = 10 * time.Minute }, "TokenTTL"},
		{"TTL long", func(c *Config) { c.TokenTTL = 61 * time.Minute }, "TokenTTL"},
		{"http endpoint", func(c *Config) { c.Endpoint = "http://127.0.0.1:1" }, "https"},
		{"endpoint query", func(c *Config) { c.Endpoint = "https://127.0.0.1:1/?x=1" }, "https"},
		{"negative conns", func(c *Config) { c.Conns = -1 }, "Conns"},
		{"negative timeout", func(c *Config) { c.Timeout = -time.Second }, "Timeout"},
		{"cert without key", func(c *Config) { *c = Config{Certificate: &tls.Certificate{}} }, "private key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.mod(&cfg)
			_, err := New(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error about %q", err, tc.want)
			}
		})
	}
	for _, ttl := range []time.Duration{0, MinTokenTTL, MaxTokenTTL} {
		cfg := good
		cfg.TokenTTL = ttl
		if _, err := New(cfg); err != nil {
			t.Fatalf("TokenTTL %s: %v", ttl, err)
		}
	}
	if s, err := New(Config{Certificate: &tls.Certificate{Certificate: [][]byte{{1}}, PrivateKey: struct{}{}}}); err != nil || s.host != "api.push.apple.com:443" || s.base != Production+"/3/device/" {
		t.Fatalf("certificate without topic, default endpoint: %v", err)
	}
}

// TestStreamsBounded: with a server that allows few streams, the sender
// queues instead of opening more connections.
func TestStreamsBounded(t *testing.T) {
	e := newEnv(t, func(o *fake.Options) { o.MaxConcurrentStreams = 4 })
	s := e.sender(t, func(c *Config) { c.Conns = 1 })
	var wg sync.WaitGroup
	for range 200 {
		wg.Go(func() {
			if err := s.Send(context.Background(), delivery(tok, alert)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := e.fake.Conns(); got != 1 {
		t.Fatalf("%d connections, want 1", got)
	}
}

func TestHeaderValueRefused(t *testing.T) {
	e := newEnv(t, nil)
	s := e.sender(t, nil)
	pe := pushErr(t, s.Send(context.Background(), delivery(tok, alert, hubcore.Header{Name: "apns-collapse-id", Value: "a\nb"})))
	if pe.Outcome != hubcore.OutcomeInvalidPayload || pe.Retry {
		t.Fatalf("got %+v", pe)
	}
	_ = http.StatusOK
}
