package wns

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushgate/pushgate/internal/pnsfake"
)

const (
	appID     = "ms-app://s-1-15-2-1"
	appSecret = "s3cret"
)

type fixture struct {
	srv    *Server
	c1, c2 *http.Client // HTTP/1.1 and HTTP/2
}

func start(t testing.TB, opts Options) *fixture {
	t.Helper()
	opts.ClientID, opts.ClientSecret = appID, appSecret
	srv := New(opts)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	var p1, p2 http.Protocols
	p1.SetHTTP1(true)
	p2.SetHTTP2(true)
	t1 := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: srv.CertPool()}, Protocols: &p1}
	t2 := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: srv.CertPool()}, Protocols: &p2}
	t.Cleanup(t1.CloseIdleConnections)
	t.Cleanup(t2.CloseIdleConnections)
	return &fixture{srv: srv, c1: &http.Client{Transport: t1, Timeout: 10 * time.Second}, c2: &http.Client{Transport: t2, Timeout: 10 * time.Second}}
}

func (f *fixture) postToken(t testing.TB, form url.Values) (int, map[string]any) {
	t.Helper()
	resp, err := f.c1.PostForm(f.srv.TokenURL(), form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatalf("token answer is not JSON: %v", err)
	}
	return resp.StatusCode, m
}

func goodForm() url.Values {
	return url.Values{"grant_type": {"client_credentials"}, "client_id": {appID}, "client_secret": {appSecret}, "scope": {TokenScope}}
}

func (f *fixture) token(t testing.TB) string {
	t.Helper()
	code, m := f.postToken(t, goodForm())
	if code != 200 {
		t.Fatalf("token: %d %v", code, m)
	}
	return m["access_token"].(string)
}

// notify posts a notification; headers are name, value pairs.
func (f *fixture) notify(t testing.TB, c *http.Client, channel, token, body string, headers ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.srv.URL()+"/w/?token="+url.QueryEscape(channel), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i < len(headers); i += 2 {
		if headers[i] == "-" {
			req.Header.Del(headers[i+1])
			continue
		}
		req.Header[headers[i]] = append(req.Header[headers[i]], headers[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

const toast = `<?xml version="1.0" encoding="utf-8"?><toast launch="x"><visual><binding template="ToastGeneric"><text>Hi</text></binding></visual></toast>`

func TestTokenEndpoint(t *testing.T) {
	f := start(t, Options{TokenTTL: 2 * time.Hour})
	code, m := f.postToken(t, goodForm())
	if code != 200 || m["token_type"] != "bearer" || m["expires_in"] != float64(7200) || m["access_token"] == "" {
		t.Fatalf("token: %d %v", code, m)
	}
	with := func(k, v string) url.Values {
		f := goodForm()
		if v == "" {
			f.Del(k)
		} else {
			f.Set(k, v)
		}
		return f
	}
	for _, c := range []struct {
		name  string
		form  url.Values
		error string
	}{
		{"password grant", with("grant_type", "password"), "unsupported_grant_type"},
		{"no grant", with("grant_type", ""), "unsupported_grant_type"},
		{"no id", with("client_id", ""), "invalid_request"},
		{"no secret", with("client_secret", ""), "invalid_request"},
		{"unknown id", with("client_id", "ms-app://other"), "invalid_client"},
		{"wrong secret", with("client_secret", "guess"), "invalid_client"},
		{"no scope", with("scope", ""), "invalid_scope"},
		{"other scope", with("scope", "s.notify.live.net"), "invalid_scope"},
	} {
		code, m := f.postToken(t, c.form)
		if code != 400 || m["error"] != c.error {
			t.Errorf("%s: %d %v, want 400 %s", c.name, code, m, c.error)
		}
	}
	resp, err := f.c1.Post(f.srv.TokenURL(), "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("JSON body: %d", resp.StatusCode)
	}
	resp, err = f.c1.Get(f.srv.TokenURL())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Errorf("GET: %d", resp.StatusCode)
	}
	if f.srv.TokensIssued() != 1 {
		t.Errorf("TokensIssued = %d", f.srv.TokensIssued())
	}
}

func TestNotifyAccepts(t *testing.T) {
	f := start(t, Options{})
	f.srv.Log.Keep = true
	tok := f.token(t)
	ch := Channel("ok")
	for _, c := range []struct {
		client *http.Client
		proto  int
	}{{f.c1, 1}, {f.c2, 2}} {
		resp := f.notify(t, c.client, ch, tok, toast, "X-WNS-Type", "wns/toast", "Content-Type", "text/xml; charset=utf-8",
			"X-WNS-RequestForStatus", "true", "X-WNS-Cache-Policy", "no-cache", "X-WNS-TTL", "0", "X-WNS-Tag", "t", "X-WNS-Group", "g",
			"X-WNS-SuppressPopup", "false", "X-WNS-Match", "type:wns/toast;all")
		if resp.StatusCode != 200 || resp.ProtoMajor != c.proto {
			t.Fatalf("HTTP/%d: %s %v", c.proto, resp.Status, resp.Header)
		}
		if resp.Header.Get("X-WNS-NotificationStatus") != "received" || resp.Header.Get("X-WNS-Msg-ID") == "" ||
			resp.Header.Get("X-WNS-Debug-Trace") == "" || resp.Header.Get("X-WNS-DeviceConnectionStatus") != "connected" {
			t.Errorf("HTTP/%d: headers %v", c.proto, resp.Header)
		}
	}
	for _, c := range []struct{ typ, ct, body string }{
		{"wns/tile", "text/xml", `<tile><visual/></tile>`},
		{"wns/badge", "text/xml", "\uFEFF<badge value=\"alert\"/>\n"},
		{"wns/raw", "application/octet-stream", "\x00\xff raw"},
		{"wns/raw", "application/octet-stream", ""},
	} {
		if resp := f.notify(t, f.c1, ch, tok, c.body, "X-WNS-Type", c.typ, "Content-Type", c.ct); resp.StatusCode != 200 {
			t.Errorf("%s %q: %s %s", c.typ, c.body, resp.Status, resp.Header.Get("X-WNS-Error-Description"))
		}
	}
	got := f.srv.Log.For(ch)
	if len(got) != 6 || string(got[0].Body) != toast || string(got[4].Body) != "\x00\xff raw" {
		t.Errorf("logged %d: %+v", len(got), got)
	}
	// Connection reuse: one HTTP/1.1 connection (token and sends), one HTTP/2.
	if f.srv.Conns() != 2 {
		t.Errorf("Conns = %d, want 2", f.srv.Conns())
	}
}

// TestNotifyRefuses drives every check with a raw client.
func TestNotifyRefuses(t *testing.T) {
	f := start(t, Options{})
	tok := f.token(t)
	other := "ms-app://other"
	f.srv.AddApp(other, "x")
	gone, foreign := Channel("gone"), Channel("foreign")
	f.srv.Unregister(gone)
	f.srv.BindChannel(foreign, other)
	ch := Channel("refuse")
	xmlH := []string{"X-WNS-Type", "wns/toast", "Content-Type", "text/xml"}
	h := func(extra ...string) []string { return append(append([]string(nil), xmlH...), extra...) }
	cases := []struct {
		name, channel, token, body string
		headers                    []string
		code                       int
		desc                       string
	}{
		{"no token", ch, "", toast, xmlH, 401, "no bearer"},
		{"unknown token", ch, "EgAnope", toast, xmlH, 401, "Invalid access token"},
		{"malformed channel", "a b!", tok, toast, xmlH, 404, "not valid"},
		{"empty channel", "", tok, toast, xmlH, 404, "not valid"},
		{"expired channel", gone, tok, toast, xmlH, 410, "expired"},
		{"other app's channel", foreign, tok, toast, xmlH, 403, "not authorized"},
		{"no type", ch, tok, toast, []string{"Content-Type", "text/xml"}, 400, "X-WNS-Type"},
		{"two types", ch, tok, toast, h("X-WNS-Type", "wns/toast"), 400, "X-WNS-Type"},
		{"bad type", ch, tok, toast, []string{"X-WNS-Type", "wns/Toast", "Content-Type", "text/xml"}, 400, "X-WNS-Type"},
		{"xml as octets", ch, tok, toast, []string{"X-WNS-Type", "wns/toast", "Content-Type", "application/octet-stream"}, 400, "Content-Type"},
		{"raw as xml", ch, tok, "x", []string{"X-WNS-Type", "wns/raw", "Content-Type", "text/xml"}, 400, "Content-Type"},
		{"no content type", ch, tok, toast, []string{"X-WNS-Type", "wns/toast"}, 400, "Content-Type"},
		{"cache policy", ch, tok, toast, h("X-WNS-Cache-Policy", "sometimes"), 400, "X-WNS-Cache-Policy"},
		{"request for status", ch, tok, toast, h("X-WNS-RequestForStatus", "yes"), 400, "X-WNS-RequestForStatus"},
		{"ttl", ch, tok, toast, h("X-WNS-TTL", "-1"), 400, "X-WNS-TTL"},
		{"ttl text", ch, tok, toast, h("X-WNS-TTL", "1h"), 400, "X-WNS-TTL"},
		{"long tag", ch, tok, toast, h("X-WNS-Tag", strings.Repeat("t", 17)), 400, "X-WNS-Tag"},
		{"empty group", ch, tok, toast, h("X-WNS-Group", ""), 400, "X-WNS-Group"},
		{"suppress popup", ch, tok, toast, h("X-WNS-SuppressPopup", "1"), 400, "X-WNS-SuppressPopup"},
		{"tag on badge", ch, tok, `<badge value="1"/>`, []string{"X-WNS-Type", "wns/badge", "Content-Type", "text/xml", "X-WNS-Tag", "t"}, 400, "toast and tile"},
		{"group on tile", ch, tok, `<tile/>`, []string{"X-WNS-Type", "wns/tile", "Content-Type", "text/xml", "X-WNS-Group", "g"}, 400, "toast notifications only"},
		{"popup on raw", ch, tok, "x", []string{"X-WNS-Type", "wns/raw", "Content-Type", "application/octet-stream", "X-WNS-SuppressPopup", "true"}, 400, "toast notifications only"},
		{"bad match", ch, tok, toast, h("X-WNS-Match", "type:wns/tile;all"), 400, "X-WNS-Match"},
		{"match tag before group", ch, tok, toast, h("X-WNS-Match", "type:wns/toast;tag=a;group=b"), 400, "X-WNS-Match"},
		{"unknown header", ch, tok, toast, h("X-WNS-Priority", "high"), 400, "Unknown header"},
		{"duplicate header", ch, tok, toast, h("X-WNS-TTL", "1", "X-WNS-TTL", "2"), 400, "more than once"},
		{"too big", ch, tok, strings.Repeat("x", MaxPayload+1), []string{"X-WNS-Type", "wns/raw", "Content-Type", "application/octet-stream"}, 413, "5000"},
		{"not XML", ch, tok, "<toast>", xmlH, 400, "not well-formed"},
		{"not XML at all", ch, tok, "hello", xmlH, 400, "not well-formed"},
		{"empty XML", ch, tok, "", xmlH, 400, "not well-formed"},
		{"two roots", ch, tok, "<toast/><toast/>", xmlH, 400, "more than one root"},
		{"wrong root", ch, tok, "<tile/>", xmlH, 400, "root element is <tile>"},
	}
	for _, c := range cases {
		resp := f.notify(t, f.c1, c.channel, c.token, c.body, c.headers...)
		desc := resp.Header.Get("X-WNS-Error-Description")
		if resp.StatusCode != c.code || !strings.Contains(desc, c.desc) || resp.Header.Get("X-WNS-Debug-Trace") == "" {
			t.Errorf("%s: %d %q, want %d %q", c.name, resp.StatusCode, desc, c.code, c.desc)
		}
		if c.code == 401 && resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: no WWW-Authenticate", c.name)
		}
	}
	if f.srv.Log.Accepted() != 0 {
		t.Errorf("accepted %d", f.srv.Log.Accepted())
	}
	if f.srv.Log.Refused() != int64(len(cases)) {
		t.Errorf("Refused = %d, want %d", f.srv.Log.Refused(), len(cases))
	}
	// Methods and paths.
	for _, m := range []string{"GET", "PUT", "DELETE"} {
		req, _ := http.NewRequest(m, f.srv.URL()+"/w/?token="+ch, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := f.c1.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 405 {
			t.Errorf("%s: %d, want 405", m, resp.StatusCode)
		}
	}
	req, _ := http.NewRequest("POST", f.srv.URL()+"/x/?token="+ch, strings.NewReader(toast))
	resp, err := f.c1.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("unknown path: %d", resp.StatusCode)
	}
}

func TestChunkedBodyRefused(t *testing.T) {
	f := start(t, Options{})
	tok := f.token(t)
	req, _ := http.NewRequest("POST", f.srv.URL()+"/w/?token="+Channel("c"), io.MultiReader(strings.NewReader("x")))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("X-WNS-Type", "wns/raw")
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := f.c1.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(resp.Header.Get("X-WNS-Error-Description"), "Content-Length") {
		t.Errorf("chunked: %d %q", resp.StatusCode, resp.Header.Get("X-WNS-Error-Description"))
	}
}

func TestExpiredTokens(t *testing.T) {
	now := time.Now()
	var mu sync.Mutex
	f := start(t, Options{TokenTTL: time.Hour, Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now }})
	tok := f.token(t)
	ch := Channel("exp")
	send := func() *http.Response {
		return f.notify(t, f.c1, ch, tok, "x", "X-WNS-Type", "wns/raw", "Content-Type", "application/octet-stream")
	}
	if r := send(); r.StatusCode != 200 {
		t.Fatal(r.Status)
	}
	mu.Lock()
	now = now.Add(time.Hour)
	mu.Unlock()
	if r := send(); r.StatusCode != 401 || r.Header.Get("X-WNS-Error-Description") != "Token expired" {
		t.Errorf("after expiry: %s %v", r.Status, r.Header)
	}
	mu.Lock()
	now = time.Now()
	mu.Unlock()
	tok = f.token(t)
	f.srv.ExpireTokens()
	if r := send(); r.StatusCode != 401 {
		t.Errorf("after ExpireTokens: %s", r.Status)
	}
	if tok := f.srv.AccessToken("any-app"); tok == "" {
		t.Error("AccessToken returned nothing")
	} else if r := f.notify(t, f.c1, ch, tok, "x", "X-WNS-Type", "wns/raw", "Content-Type", "application/octet-stream"); r.StatusCode != 200 {
		t.Errorf("AccessToken token: %s", r.Status)
	}
}

func TestScripts(t *testing.T) {
	f := start(t, Options{})
	tok := f.token(t)
	ch := Channel("script")
	send := func() *http.Response {
		return f.notify(t, f.c2, ch, tok, toast, "X-WNS-Type", "wns/toast", "Content-Type", "text/xml")
	}
	for _, c := range []struct {
		action          pnsfake.Action
		code            int
		status, devConn string
	}{
		{pnsfake.Action{Kind: pnsfake.Fail, Status: 410}, 410, "", ""},
		{pnsfake.Action{Kind: pnsfake.Fail, Status: 500, Reason: "boom"}, 500, "", ""},
		{pnsfake.Action{Kind: pnsfake.Fail}, 500, "", ""},
		{pnsfake.Action{Kind: pnsfake.Fail, Status: 200, Reason: "dropped"}, 200, "dropped", ""},
		{pnsfake.Action{Kind: pnsfake.Fail, Status: 200, Reason: "channelthrottled"}, 200, "channelThrottled", ""},
		{pnsfake.Action{Kind: pnsfake.Fail, Status: 200, Reason: "disconnected"}, 200, "dropped", "disconnected"},
		{pnsfake.Action{Kind: pnsfake.Throttle, RetryAfter: 2 * time.Second}, 406, "", ""},
	} {
		f.srv.Script.Push(ch, c.action)
		r := send()
		if r.StatusCode != c.code || r.Header.Get("X-WNS-NotificationStatus") != c.status || r.Header.Get("X-WNS-DeviceConnectionStatus") != c.devConn {
			t.Errorf("%+v: %s %v", c.action, r.Status, r.Header)
		}
		if c.action.Kind == pnsfake.Throttle && r.Header.Get("Retry-After") != "2" {
			t.Errorf("Throttle: Retry-After %q", r.Header.Get("Retry-After"))
		}
		if c.action.Reason == "boom" && r.Header.Get("X-WNS-Error-Description") != "boom" {
			t.Errorf("Fail reason not in X-WNS-Error-Description: %v", r.Header)
		}
	}
	f.srv.Script.Push(ch, pnsfake.Action{Kind: pnsfake.Drop})
	req, _ := http.NewRequest("POST", f.srv.URL()+"/w/?token="+ch, strings.NewReader(toast))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("X-WNS-Type", "wns/toast")
	req.Header.Set("Content-Type", "text/xml")
	if resp, err := f.c1.Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("Drop: %s", resp.Status)
	}
	f.srv.Script.Push(ch, pnsfake.Action{Kind: pnsfake.Slow, Delay: 30 * time.Millisecond})
	t0 := time.Now()
	if r := send(); r.StatusCode != 200 || time.Since(t0) < 30*time.Millisecond {
		t.Errorf("Slow: %s after %v", r.Status, time.Since(t0))
	}
	if f.srv.Log.Accepted() != 1 {
		t.Errorf("accepted %d, want 1", f.srv.Log.Accepted())
	}
}

func TestHelpers(t *testing.T) {
	if a, b := Channel("a"), Channel("b"); a == b || !validChannel(a) {
		t.Errorf("Channel: %q %q", a, b)
	}
	u, err := url.Parse(ChannelURI(Channel("x/y")))
	if err != nil || u.Scheme != "https" || !strings.HasSuffix(u.Host, ".notify.windows.com") || u.Query().Get("token") != Channel("x/y") {
		t.Errorf("ChannelURI = %v (%v)", u, err)
	}
	srv := New(Options{})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if !strings.HasPrefix(srv.LocalChannelURI("c"), srv.URL()+"/w/?token=") {
		t.Errorf("LocalChannelURI = %q", srv.LocalChannelURI("c"))
	}
	for _, ok := range []string{"type:wns/toast;all", "type:wns/toast;group=g", "type:wns/toast;tag=t", "type:wns/toast;group=g;tag=t"} {
		if !validMatch(ok) {
			t.Errorf("validMatch(%q) = false", ok)
		}
	}
	for _, bad := range []string{"", "type:wns/toast;", "type:wns/toast;all;tag=t", "type:wns/toast;tag=", "type:wns/toast;tag=a;tag=b", "type:wns/toast;x=y", fmt.Sprintf("type:wns/toast;tag=%017d", 1)} {
		if validMatch(bad) {
			t.Errorf("validMatch(%q) = true", bad)
		}
	}
}
