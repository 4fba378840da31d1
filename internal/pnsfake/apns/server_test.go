package apns

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushgate/pushgate/internal/pnsfake"
)

const (
	teamA  = "TEAMAAAAAA"
	teamB  = "TEAMBBBBBB"
	keyA   = "KEYAAAAAAA"
	keyB   = "KEYBBBBBBB"
	topicA = "com.example.a"
	topicB = "com.example.b"
	devTok = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	okBody = `{"aps":{"alert":"hi"}}`
)

// clock is a settable clock shared by the fake and the test.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Now().UnixNano())
	return c
}
func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

type env struct {
	t     *testing.T
	s     *Server
	clk   *clock
	privA *ecdsa.PrivateKey
	privB *ecdsa.PrivateKey
	jwtA  string // a valid token of team A, iat now
}

func mustKey(t testing.TB) (*ecdsa.PrivateKey, *ecdsa.PublicKey) {
	t.Helper()
	p8, pub, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := parseP8(p8)
	if err != nil {
		t.Fatal(err)
	}
	return k, pub
}

func parseP8(p8 []byte) (*ecdsa.PrivateKey, error) {
	der := p8[bytes.IndexByte(p8, '\n')+1:]
	der = der[:bytes.Index(der, []byte("-----END"))]
	raw, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(string(der), "\n", ""))
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(raw)
	if err != nil {
		return nil, err
	}
	return k.(*ecdsa.PrivateKey), nil
}

func newEnv(t *testing.T, mod func(*Options)) *env {
	t.Helper()
	privA, pubA := mustKey(t)
	privB, pubB := mustKey(t)
	clk := newClock()
	opts := Options{
		Keys:   map[string]Key{keyA: {TeamID: teamA, Public: pubA}, keyB: {TeamID: teamB, Public: pubB}},
		Topics: map[string][]string{teamA: {topicA, topicA + ".voip"}, teamB: {topicB}},
		Now:    clk.Now,
	}
	if mod != nil {
		mod(&opts)
	}
	s := New(opts)
	s.Log.Keep = true
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	e := &env{t: t, s: s, clk: clk, privA: privA, privB: privB}
	e.jwtA = signJWT(t, privA, "ES256", keyA, teamA, clk.Now().Unix())
	return e
}

// signJWT mints a provider token by hand, so that tests can make bad ones.
func signJWT(t testing.TB, k *ecdsa.PrivateKey, alg, kid, iss string, iat int64) string {
	t.Helper()
	h, _ := json.Marshal(map[string]string{"alg": alg, "kid": kid})
	c, _ := json.Marshal(map[string]any{"iss": iss, "iat": iat})
	enc := base64.RawURLEncoding
	in := enc.EncodeToString(h) + "." + enc.EncodeToString(c)
	sum := sha256.Sum256([]byte(in))
	r, s, err := ecdsa.Sign(rand.Reader, k, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	var sig [64]byte
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return in + "." + enc.EncodeToString(sig[:])
}

func (e *env) client() *http.Client {
	var p http.Protocols
	p.SetHTTP2(true)
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: e.s.CertPool()},
		Protocols:       &p,
		MaxConnsPerHost: 1,
	}}
}

type req struct {
	method string
	path   string
	h      http.Header
	body   string
}

type answer struct {
	status    int
	reason    string
	timestamp int64
	header    http.Header
}

// good is a request that passes every check.
func (e *env) good() req {
	return req{method: "POST", path: "/3/device/" + devTok, body: okBody, h: http.Header{
		"Authorization":  {"bearer " + e.jwtA},
		"Apns-Topic":     {topicA},
		"Apns-Push-Type": {"alert"},
	}}
}

func (e *env) do(c *http.Client, r req) answer {
	e.t.Helper()
	hr, err := http.NewRequest(r.method, e.s.URL()+r.path, strings.NewReader(r.body))
	if err != nil {
		e.t.Fatal(err)
	}
	hr.Header = r.h
	resp, err := c.Do(hr)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header}
	if len(b) > 0 {
		var eb errBody
		if err := json.Unmarshal(b, &eb); err != nil {
			e.t.Fatalf("error body %q: %v", b, err)
		}
		a.reason, a.timestamp = eb.Reason, eb.Timestamp
	}
	if resp.StatusCode == http.StatusOK && len(b) != 0 {
		e.t.Fatalf("200 with a body %q", b)
	}
	if !isUUID(resp.Header.Get("Apns-Id")) {
		e.t.Fatalf("answer without a UUID apns-id: %q", resp.Header.Get("Apns-Id"))
	}
	return a
}

func TestStrictness(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client()
	now := e.clk.Now().Unix()
	privOther, _ := mustKey(t)
	asn1Sig := func() string {
		good := e.jwtA
		i := strings.LastIndexByte(good, '.')
		sum := sha256.Sum256([]byte(good[:i]))
		sig, _ := ecdsa.SignASN1(rand.Reader, e.privA, sum[:])
		return good[:i+1] + base64.RawURLEncoding.EncodeToString(sig)
	}
	with := func(mod func(r *req)) req {
		r := e.good()
		mod(&r)
		return r
	}
	set := func(k, v string) req { return with(func(r *req) { r.h[k] = []string{v} }) }
	del := func(k string) req { return with(func(r *req) { delete(r.h, k) }) }
	bearer := func(jwt string) req { return set("Authorization", "bearer "+jwt) }
	sized := func(n int) string {
		const pre, post = `{"aps":{"alert":"`, `"}}`
		return pre + strings.Repeat("x", n-len(pre)-len(post)) + post
	}
	cases := []struct {
		name   string
		r      req
		status int
		reason string
	}{
		{"good", e.good(), 200, ""},
		{"upper-case token", with(func(r *req) { r.path = "/3/device/" + strings.ToUpper(devTok) }), 200, ""},
		{"GET", with(func(r *req) { r.method = "GET"; r.body = "" }), 405, "MethodNotAllowed"},
		{"PUT", with(func(r *req) { r.method = "PUT" }), 405, "MethodNotAllowed"},
		{"wrong path", with(func(r *req) { r.path = "/3/devices/" + devTok }), 404, "BadPath"},
		{"path under token", with(func(r *req) { r.path = "/3/device/" + devTok + "/x" }), 404, "BadPath"},
		{"no token", with(func(r *req) { r.path = "/3/device/" }), 400, "MissingDeviceToken"},
		{"non-hex token", with(func(r *req) { r.path = "/3/device/" + strings.Repeat("zz", 32) }), 400, "BadDeviceToken"},
		{"short token", with(func(r *req) { r.path = "/3/device/" + devTok[:62] }), 400, "BadDeviceToken"},
		{"odd token", with(func(r *req) { r.path = "/3/device/" + devTok + "a" }), 400, "BadDeviceToken"},
		{"long token", with(func(r *req) { r.path = "/3/device/" + strings.Repeat("ab", 101) }), 400, "BadDeviceToken"},
		{"duplicate topic", with(func(r *req) { r.h["Apns-Topic"] = []string{topicA, topicA} }), 400, "DuplicateHeaders"},
		{"no authorization", del("Authorization"), 403, "MissingProviderToken"},
		{"basic auth", set("Authorization", "Basic eDp5"), 403, "MissingProviderToken"},
		{"empty bearer", set("Authorization", "bearer "), 403, "MissingProviderToken"},
		{"garbage token", bearer("abc.def.ghi"), 403, "InvalidProviderToken"},
		{"two segments", bearer("abc.def"), 403, "InvalidProviderToken"},
		{"HS256", bearer(signJWT(t, e.privA, "HS256", keyA, teamA, now)), 403, "InvalidProviderToken"},
		{"unknown kid", bearer(signJWT(t, e.privA, "ES256", "KEYZZZZZZZ", teamA, now)), 403, "InvalidProviderToken"},
		{"iss not the key's team", bearer(signJWT(t, e.privA, "ES256", keyA, teamB, now)), 403, "InvalidProviderToken"},
		{"signed by another key", bearer(signJWT(t, privOther, "ES256", keyA, teamA, now)), 403, "InvalidProviderToken"},
		{"ASN.1 signature", bearer(asn1Sig()), 403, "InvalidProviderToken"},
		{"iat two hours old", bearer(signJWT(t, e.privA, "ES256", keyA, teamA, now-7200)), 403, "ExpiredProviderToken"},
		{"iat in the future", bearer(signJWT(t, e.privA, "ES256", keyA, teamA, now+600)), 403, "InvalidProviderToken"},
		{"no topic", del("Apns-Topic"), 400, "MissingTopic"},
		{"unknown topic", set("Apns-Topic", "com.example.zzz"), 400, "BadTopic"},
		{"unlisted suffix", set("Apns-Topic", topicA+".complication"), 400, "BadTopic"},
		{"other team's topic", set("Apns-Topic", topicB), 400, "TopicDisallowed"},
		{"bad push type", set("Apns-Push-Type", "toast"), 400, "InvalidPushType"},
		{"empty push type", set("Apns-Push-Type", ""), 400, "InvalidPushType"},
		{"no push type", del("Apns-Push-Type"), 200, ""},
		{"priority 7", set("Apns-Priority", "7"), 400, "BadPriority"},
		{"priority 1", set("Apns-Priority", "1"), 200, ""},
		{"background at 10", with(func(r *req) {
			r.h["Apns-Push-Type"] = []string{"background"}
			r.h["Apns-Priority"] = []string{"10"}
		}), 400, "BadPriority"},
		{"background at 5", with(func(r *req) {
			r.h["Apns-Push-Type"] = []string{"background"}
			r.h["Apns-Priority"] = []string{"5"}
		}), 200, ""},
		{"expiration text", set("Apns-Expiration", "tomorrow"), 400, "BadExpirationDate"},
		{"expiration negative", set("Apns-Expiration", "-1"), 400, "BadExpirationDate"},
		{"expiration 0", set("Apns-Expiration", "0"), 200, ""},
		{"collapse id 65", set("Apns-Collapse-Id", strings.Repeat("c", 65)), 400, "BadCollapseId"},
		{"collapse id 64", set("Apns-Collapse-Id", strings.Repeat("c", 64)), 200, ""},
		{"apns-id not a UUID", set("Apns-Id", "1234"), 400, "BadMessageId"},
		{"empty body", with(func(r *req) { r.body = "" }), 400, "PayloadEmpty"},
		{"4096 bytes", with(func(r *req) { r.body = sized(4096) }), 200, ""},
		{"4097 bytes", with(func(r *req) { r.body = sized(4097) }), 413, "PayloadTooLarge"},
		{"voip 5120 bytes", with(func(r *req) {
			r.body = sized(5120)
			r.h["Apns-Push-Type"] = []string{"voip"}
			r.h["Apns-Topic"] = []string{topicA + ".voip"}
		}), 200, ""},
		{"voip 5121 bytes", with(func(r *req) {
			r.body = sized(5121)
			r.h["Apns-Push-Type"] = []string{"voip"}
			r.h["Apns-Topic"] = []string{topicA + ".voip"}
		}), 413, "PayloadTooLarge"},
		{"not JSON", with(func(r *req) { r.body = `{"aps":` }), 400, ReasonBadPayload},
		{"array", with(func(r *req) { r.body = `[{"aps":{}}]` }), 400, ReasonBadPayload},
		{"no aps", with(func(r *req) { r.body = `{"alert":"x"}` }), 400, ReasonBadPayload},
		{"aps not a dictionary", with(func(r *req) { r.body = `{"aps":"x"}` }), 400, ReasonBadPayload},
		{"nested aps only", with(func(r *req) { r.body = `{"x":{"aps":{}}}` }), 400, ReasonBadPayload},
		{"escaped aps key", with(func(r *req) { r.body = `{"\u0061ps":{}}` }), 200, ""},
		{"mdm without aps", with(func(r *req) { r.body = `{"mdm":"magic"}`; r.h["Apns-Push-Type"] = []string{"mdm"} }), 200, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e.t = t
			a := e.do(c, tc.r)
			if a.status != tc.status || a.reason != tc.reason {
				t.Fatalf("got %d %q, want %d %q", a.status, a.reason, tc.status, tc.reason)
			}
		})
	}
}

func TestMessageIDEchoed(t *testing.T) {
	e := newEnv(t, nil)
	r := e.good()
	const id = "123e4567-e89b-12d3-a456-426614174000"
	r.h["Apns-Id"] = []string{id}
	if a := e.do(e.client(), r); a.status != 200 || a.header.Get("Apns-Id") != id {
		t.Fatalf("got %d apns-id %q", a.status, a.header.Get("Apns-Id"))
	}
	r.h["Apns-Topic"] = []string{"nope"}
	if a := e.do(e.client(), r); a.status != 400 || a.header.Get("Apns-Id") != id {
		t.Fatalf("refusal: got %d apns-id %q", a.status, a.header.Get("Apns-Id"))
	}
}

func TestRegistrations(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client()
	other := strings.Repeat("ab", 32)
	e.s.Register(strings.ToUpper(other), topicA+".voip")
	r := e.good()
	r.path = "/3/device/" + other
	if a := e.do(c, r); a.status != 400 || a.reason != "DeviceTokenNotForTopic" {
		t.Fatalf("got %d %q", a.status, a.reason)
	}
	e.s.Unregister(devTok)
	want := e.clk.Now().UnixMilli()
	e.clk.Advance(time.Second)
	if a := e.do(c, e.good()); a.status != 410 || a.reason != "Unregistered" || a.timestamp != want {
		t.Fatalf("got %d %q %d, want 410 Unregistered %d", a.status, a.reason, a.timestamp, want)
	}
}

func TestHTTP1Refused(t *testing.T) {
	e := newEnv(t, nil)
	c := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: e.s.CertPool()},
		TLSNextProto:    map[string]func(string, *tls.Conn) http.RoundTripper{}, // no h2
	}}
	r := e.good()
	hr, _ := http.NewRequest("POST", e.s.URL()+r.path, strings.NewReader(r.body))
	hr.Header = r.h
	resp, err := c.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusHTTPVersionNotSupported || resp.ProtoMajor != 1 {
		t.Fatalf("HTTP/%d.%d got %d, want 505", resp.ProtoMajor, resp.ProtoMinor, resp.StatusCode)
	}
	if e.s.Log.Accepted() != 0 {
		t.Fatal("an HTTP/1.1 request was accepted")
	}
}

func TestTokenUpdates(t *testing.T) {
	e := newEnv(t, nil)
	now := e.clk.Now().Unix()
	c := e.client() // one connection throughout
	old := signJWT(t, e.privA, "ES256", keyA, teamA, now-30*60)
	send := func(jwt string) answer {
		r := e.good()
		r.h["Authorization"] = []string{"bearer " + jwt}
		return e.do(c, r)
	}
	if a := send(old); a.status != 200 {
		t.Fatalf("first token: %d %q", a.status, a.reason)
	}
	// 30 minutes newer: a legitimate refresh.
	if a := send(e.jwtA); a.status != 200 {
		t.Fatalf("refresh after 30 min: %d %q", a.status, a.reason)
	}
	// The old token, from a request that raced the refresh: still fine.
	if a := send(old); a.status != 200 {
		t.Fatalf("stale token: %d %q", a.status, a.reason)
	}
	// A second new token within 20 minutes of the last change.
	churn := signJWT(t, e.privA, "ES256", keyA, teamA, now)
	if a := send(churn); a.status != 429 || a.reason != "TooManyProviderTokenUpdates" {
		t.Fatalf("churn: got %d %q, want 429 TooManyProviderTokenUpdates", a.status, a.reason)
	}
	if a := send(e.jwtA); a.status != 200 {
		t.Fatalf("current token after a refused change: %d %q", a.status, a.reason)
	}
	// Per connection: a fresh connection may start with any valid token.
	if a := e.do(e.client(), func() req { r := e.good(); r.h["Authorization"] = []string{"bearer " + churn}; return r }()); a.status != 200 {
		t.Fatalf("fresh connection: %d %q", a.status, a.reason)
	}
	// Once the current token expired, any newer one may replace it.
	e.clk.Advance(61 * time.Minute)
	later := signJWT(t, e.privA, "ES256", keyA, teamA, e.clk.Now().Unix())
	if a := send(later); a.status != 200 {
		t.Fatalf("replacing an expired token: %d %q", a.status, a.reason)
	}
	if got := e.s.Tokens(); got != 4 {
		t.Fatalf("Tokens() = %d, want 4", got)
	}
}

func TestTokenUpdatesAllowed(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.AllowFrequentTokenUpdates = true })
	c := e.client()
	for range 3 {
		r := e.good()
		r.h["Authorization"] = []string{"bearer " + signJWT(t, e.privA, "ES256", keyA, teamA, e.clk.Now().Unix())}
		if a := e.do(c, r); a.status != 200 {
			t.Fatalf("got %d %q", a.status, a.reason)
		}
	}
}

func TestExpireTokens(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client()
	if a := e.do(c, e.good()); a.status != 200 {
		t.Fatal(a.status, a.reason)
	}
	e.s.ExpireTokens()
	if a := e.do(c, e.good()); a.status != 403 || a.reason != "ExpiredProviderToken" {
		t.Fatalf("after ExpireTokens: %d %q", a.status, a.reason)
	}
	// A new token minted in the same second replaces the expired one.
	r := e.good()
	r.h["Authorization"] = []string{"bearer " + signJWT(t, e.privA, "ES256", keyA, teamA, e.clk.Now().Unix())}
	if a := e.do(c, r); a.status != 200 {
		t.Fatalf("new token: %d %q", a.status, a.reason)
	}
}

func TestTokenAges(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client()
	e.clk.Advance(59 * time.Minute)
	if a := e.do(c, e.good()); a.status != 200 {
		t.Fatalf("59 min old: %d %q", a.status, a.reason)
	}
	e.clk.Advance(2 * time.Minute)
	if a := e.do(c, e.good()); a.status != 403 || a.reason != "ExpiredProviderToken" {
		t.Fatalf("61 min old: %d %q", a.status, a.reason)
	}
}

func TestScriptedAnswers(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client()
	e.s.Script.Push(devTok,
		pnsfake.Action{Kind: pnsfake.Fail, Status: 500, Reason: "InternalServerError"},
		pnsfake.Action{Kind: pnsfake.Fail, Status: 410, Reason: "ExpiredToken"},
		pnsfake.Action{Kind: pnsfake.Throttle, RetryAfter: 2500 * time.Millisecond},
		pnsfake.Action{Kind: pnsfake.Slow, Delay: time.Millisecond},
	)
	if a := e.do(c, e.good()); a.status != 500 || a.reason != "InternalServerError" {
		t.Fatalf("fail: %d %q", a.status, a.reason)
	}
	if a := e.do(c, e.good()); a.status != 410 || a.reason != "ExpiredToken" || a.timestamp == 0 {
		t.Fatalf("410: %d %q %d", a.status, a.reason, a.timestamp)
	}
	if a := e.do(c, e.good()); a.status != 429 || a.reason != "TooManyRequests" || a.header.Get("Retry-After") != "3" {
		t.Fatalf("throttle: %d %q Retry-After %q", a.status, a.reason, a.header.Get("Retry-After"))
	}
	if a := e.do(c, e.good()); a.status != 200 {
		t.Fatalf("slow: %d %q", a.status, a.reason)
	}
	// A script applies only after the checks.
	e.s.Script.Push(devTok, pnsfake.Action{Kind: pnsfake.Fail, Status: 500})
	bad := e.good()
	bad.body = ""
	if a := e.do(c, bad); a.reason != "PayloadEmpty" {
		t.Fatalf("bad request with a script: %d %q", a.status, a.reason)
	}
	if a := e.do(c, e.good()); a.status != 500 {
		t.Fatalf("script not consumed by the refused request: %d %q", a.status, a.reason)
	}
	e.s.Script.Push(devTok, pnsfake.Action{Kind: pnsfake.Drop})
	r := e.good()
	hr, _ := http.NewRequest(r.method, e.s.URL()+r.path, strings.NewReader(r.body))
	hr.Header = r.h
	if resp, err := c.Do(hr); err == nil {
		resp.Body.Close()
		t.Fatalf("drop answered %d", resp.StatusCode)
	}
	if got, want := e.s.Log.Accepted(), int64(1); got != want {
		t.Fatalf("Accepted = %d, want %d", got, want)
	}
	items := e.s.Log.For(devTok)
	if len(items) != 1 || string(items[0].Body) != okBody || items[0].Header.Get("Apns-Topic") != topicA {
		t.Fatalf("log: %+v", items)
	}
}

func TestArriveAndRefuse(t *testing.T) {
	e := newEnv(t, nil)
	var mu sync.Mutex
	var seen []string
	e.s.Log.OnArrive = func(tok string, _ time.Time) {
		mu.Lock()
		seen = append(seen, tok)
		mu.Unlock()
	}
	c := e.client()
	e.do(c, e.good())
	bad := e.good()
	bad.method = "GET"
	bad.body = ""
	e.do(c, bad)
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || seen[0] != devTok || seen[1] != devTok {
		t.Fatalf("arrivals %q", seen)
	}
	if e.s.Log.Refused() != 1 || e.s.Log.Accepted() != 1 {
		t.Fatalf("accepted %d refused %d", e.s.Log.Accepted(), e.s.Log.Refused())
	}
}

func TestCertificateMode(t *testing.T) {
	ca, err := NewCA()
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(o *Options) { o.ClientCAs = ca.Pool() })
	clientFor := func(certs ...tls.Certificate) *http.Client {
		var p http.Protocols
		p.SetHTTP2(true)
		return &http.Client{Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: e.s.CertPool(), Certificates: certs},
			Protocols:       &p,
		}}
	}
	single, err := ca.Issue(topicA)
	if err != nil {
		t.Fatal(err)
	}
	multi, err := ca.Issue(topicA, topicA+".voip")
	if err != nil {
		t.Fatal(err)
	}
	noTopic := func() req { r := e.good(); delete(r.h, "Apns-Topic"); delete(r.h, "Authorization"); return r }
	if a := e.do(clientFor(single), noTopic()); a.status != 200 {
		t.Fatalf("single-topic cert, no apns-topic: %d %q", a.status, a.reason)
	}
	if a := e.do(clientFor(multi), noTopic()); a.status != 400 || a.reason != "MissingTopic" {
		t.Fatalf("multi-topic cert, no apns-topic: %d %q", a.status, a.reason)
	}
	r := noTopic()
	r.h["Apns-Topic"] = []string{topicB}
	if a := e.do(clientFor(single), r); a.status != 400 || a.reason != "TopicDisallowed" {
		t.Fatalf("topic outside the cert: %d %q", a.status, a.reason)
	}
	r.h["Apns-Topic"] = []string{"com.example.zzz"}
	if a := e.do(clientFor(single), r); a.status != 400 || a.reason != "BadTopic" {
		t.Fatalf("unknown topic: %d %q", a.status, a.reason)
	}
	r.h["Apns-Topic"] = []string{topicA + ".voip"}
	if a := e.do(clientFor(multi), r); a.status != 200 {
		t.Fatalf("listed topic: %d %q", a.status, a.reason)
	}
	hr, _ := http.NewRequest("POST", e.s.URL()+"/3/device/"+devTok, strings.NewReader(okBody))
	if resp, err := clientFor().Do(hr); err == nil {
		resp.Body.Close()
		t.Fatalf("no client certificate: answered %d", resp.StatusCode)
	}
}

func TestConnsCounted(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client()
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			r := e.good()
			hr, _ := http.NewRequestWithContext(context.Background(), r.method, e.s.URL()+r.path, strings.NewReader(r.body))
			hr.Header = r.h
			resp, err := c.Do(hr)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
		})
	}
	wg.Wait()
	if n := e.s.Conns(); n != 1 {
		t.Fatalf("Conns() = %d after 50 concurrent requests on one client", n)
	}
	if e.s.Tokens() != 1 {
		t.Fatalf("Tokens() = %d", e.s.Tokens())
	}
}

// TestScriptedExpiredProviderToken: a scripted ExpiredProviderToken expires
// the token for good, so that the sender's fresh token is a legitimate
// change and not TooManyProviderTokenUpdates.
func TestScriptedExpiredProviderToken(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client()
	e.s.Script.Push(devTok, pnsfake.Action{Kind: pnsfake.Fail, Status: 403, Reason: "ExpiredProviderToken"})
	if a := e.do(c, e.good()); a.status != 403 || a.reason != "ExpiredProviderToken" {
		t.Fatalf("scripted: %d %q", a.status, a.reason)
	}
	if a := e.do(c, e.good()); a.status != 403 || a.reason != "ExpiredProviderToken" {
		t.Fatalf("same token again: %d %q", a.status, a.reason)
	}
	r := e.good()
	r.h["Authorization"] = []string{"bearer " + signJWT(t, e.privA, "ES256", keyA, teamA, e.clk.Now().Unix())}
	if a := e.do(c, r); a.status != 200 {
		t.Fatalf("new token: %d %q", a.status, a.reason)
	}
}

// TestSignToken: the helper for load tools mints what the fake accepts.
func TestSignToken(t *testing.T) {
	p8, pub, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(o *Options) { o.Keys["KEYLOADGEN"] = Key{TeamID: teamA, Public: pub} })
	jwt, err := SignToken(p8, "KEYLOADGEN", teamA, e.clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	r := e.good()
	r.h["Authorization"] = []string{"bearer " + jwt}
	if a := e.do(e.client(), r); a.status != 200 {
		t.Fatalf("got %d %q", a.status, a.reason)
	}
}
