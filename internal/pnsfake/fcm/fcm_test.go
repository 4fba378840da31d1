package fcm

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
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

const testProject = "fake-project"

// testKey is one key file for the test binary (RSA generation is slow).
var testKey = sync.OnceValues(func() ([]byte, error) {
	return NewServiceAccount(testProject, "https://unused.invalid/token")
})

type keyInfo struct {
	email, kid string
	key        *rsa.PrivateKey
}

func parseTestKey(t testing.TB, keyJSON []byte) keyInfo {
	t.Helper()
	var kf keyFile
	if err := json.Unmarshal(keyJSON, &kf); err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(kf.PrivateKey))
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return keyInfo{email: kf.ClientEmail, kid: kf.PrivateKeyID, key: k.(*rsa.PrivateKey)}
}

// fixture is a running fake with a trusted account and an HTTP/2 client.
type fixture struct {
	srv *Server
	c   *http.Client
	ki  keyInfo
}

func start(t testing.TB, opts Options) *fixture {
	t.Helper()
	srv := New(opts)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	key, err := testKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.AddServiceAccount(key); err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: srv.CertPool()}, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &fixture{srv: srv, c: &http.Client{Transport: tr, Timeout: 10 * time.Second}, ki: parseTestKey(t, key)}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// assertion signs claims with key; hdr overrides the header.
func sign(t testing.TB, key *rsa.PrivateKey, hdr, claims map[string]any) string {
	t.Helper()
	h, _ := json.Marshal(hdr)
	c, _ := json.Marshal(claims)
	in := b64(h) + "." + b64(c)
	sum := sha256.Sum256([]byte(in))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return in + "." + b64(sig)
}

func (f *fixture) claims() map[string]any {
	now := time.Now().Unix()
	return map[string]any{"iss": f.ki.email, "aud": f.srv.TokenURL(), "scope": MessagingScope, "iat": now - 10, "exp": now + 3590}
}

func (f *fixture) header() map[string]any {
	return map[string]any{"alg": "RS256", "typ": "JWT", "kid": f.ki.kid}
}

// postToken posts a form to the token endpoint and decodes the answer.
func (f *fixture) postToken(t testing.TB, form url.Values) (int, map[string]any) {
	t.Helper()
	resp, err := f.c.PostForm(f.srv.TokenURL(), form)
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

func grantForm(assertion string) url.Values {
	return url.Values{"grant_type": {jwtBearerGrant}, "assertion": {assertion}}
}

// token gets an access token for the fixture's account.
func (f *fixture) token(t testing.TB) string {
	t.Helper()
	code, m := f.postToken(t, grantForm(sign(t, f.ki.key, f.header(), f.claims())))
	if code != 200 {
		t.Fatalf("token endpoint: %d %v", code, m)
	}
	return m["access_token"].(string)
}

type googleErr struct {
	Error struct {
		Code    int
		Message string
		Status  string
		Details []struct {
			Type            string `json:"@type"`
			ErrorCode       string
			FieldViolations []struct{ Field, Description string }
		}
	}
}

func (g *googleErr) fcmCode() string {
	for _, d := range g.Error.Details {
		if d.Type == "type.googleapis.com/google.firebase.fcm.v1.FcmError" {
			return d.ErrorCode
		}
	}
	return ""
}

// send posts body to project's send endpoint with the given token.
func (f *fixture) send(t testing.TB, project, token, body string, edit func(*http.Request)) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.srv.URL()+"/v1/projects/"+project+"/messages:send", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if edit != nil {
		edit(req)
	}
	resp, err := f.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestTokenEndpointGrants(t *testing.T) {
	f := start(t, Options{TokenTTL: 90 * time.Second})
	code, m := f.postToken(t, grantForm(sign(t, f.ki.key, f.header(), f.claims())))
	if code != 200 || m["token_type"] != "Bearer" || m["expires_in"] != float64(90) || !strings.HasPrefix(m["access_token"].(string), "ya29.") {
		t.Fatalf("token answer %d %v", code, m)
	}
	if f.srv.TokensIssued() != 1 {
		t.Errorf("TokensIssued = %d", f.srv.TokensIssued())
	}
	// No kid is fine (the account is found by iss); cloud-platform also
	// allows sending.
	hdr := f.header()
	delete(hdr, "kid")
	cl := f.claims()
	cl["scope"] = CloudPlatformScope + " openid"
	if code, m := f.postToken(t, grantForm(sign(t, f.ki.key, hdr, cl))); code != 200 {
		t.Fatalf("no kid, cloud-platform: %d %v", code, m)
	}
}

func TestTokenEndpointRefuses(t *testing.T) {
	f := start(t, Options{})
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Unix()
	with := func(k string, v any) map[string]any {
		c := f.claims()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	hdrWith := func(k string, v any) map[string]any {
		h := f.header()
		h[k] = v
		return h
	}
	good := sign(t, f.ki.key, f.header(), f.claims())
	parts := strings.Split(good, ".")
	cases := []struct {
		name  string
		form  url.Values
		code  int
		error string
	}{
		{"wrong grant", url.Values{"grant_type": {"client_credentials"}, "assertion": {good}}, 400, "unsupported_grant_type"},
		{"no assertion", url.Values{"grant_type": {jwtBearerGrant}}, 400, "invalid_request"},
		{"not a JWT", grantForm("abc"), 400, "invalid_grant"},
		{"four parts", grantForm(good + ".x"), 400, "invalid_grant"},
		{"bad signature", grantForm(sign(t, other, f.header(), f.claims())), 400, "invalid_grant"},
		{"tampered claims", grantForm(parts[0] + "." + b64([]byte(`{"iss":"x"}`)) + "." + parts[2]), 400, "invalid_grant"},
		{"alg none", grantForm(sign(t, f.ki.key, hdrWith("alg", "none"), f.claims())), 400, "invalid_grant"},
		{"alg HS256", grantForm(sign(t, f.ki.key, hdrWith("alg", "HS256"), f.claims())), 400, "invalid_grant"},
		{"unknown kid", grantForm(sign(t, f.ki.key, hdrWith("kid", "nope"), f.claims())), 400, "invalid_grant"},
		{"unknown iss", grantForm(sign(t, f.ki.key, f.header(), with("iss", "nobody@x.iam.gserviceaccount.com"))), 400, "invalid_grant"},
		{"wrong aud", grantForm(sign(t, f.ki.key, f.header(), with("aud", "https://oauth2.googleapis.com/token"))), 400, "invalid_grant"},
		{"no iat", grantForm(sign(t, f.ki.key, f.header(), with("iat", nil))), 400, "invalid_grant"},
		{"no exp", grantForm(sign(t, f.ki.key, f.header(), with("exp", nil))), 400, "invalid_grant"},
		{"too long", grantForm(sign(t, f.ki.key, f.header(), with("exp", now+3600))), 400, "invalid_grant"},
		{"expired", grantForm(sign(t, f.ki.key, f.header(), map[string]any{"iss": f.ki.email, "aud": f.srv.TokenURL(), "scope": MessagingScope, "iat": now - 4000, "exp": now - 400})), 400, "invalid_grant"},
		{"from the future", grantForm(sign(t, f.ki.key, f.header(), map[string]any{"iss": f.ki.email, "aud": f.srv.TokenURL(), "scope": MessagingScope, "iat": now + 1000, "exp": now + 2000})), 400, "invalid_grant"},
		{"string iat", grantForm(sign(t, f.ki.key, f.header(), with("iat", "now"))), 400, "invalid_grant"},
		{"no scope", grantForm(sign(t, f.ki.key, f.header(), with("scope", ""))), 400, "invalid_scope"},
		{"other subject", grantForm(sign(t, f.ki.key, f.header(), with("sub", "user@example.com"))), 401, "unauthorized_client"},
	}
	for _, c := range cases {
		code, m := f.postToken(t, c.form)
		if code != c.code || m["error"] != c.error || m["error_description"] == "" {
			t.Errorf("%s: %d %v, want %d %s", c.name, code, m, c.code, c.error)
		}
	}
	// Not a form, not POST.
	resp, err := f.c.Post(f.srv.TokenURL(), "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("JSON body: %d, want 400", resp.StatusCode)
	}
	resp, err = f.c.Get(f.srv.TokenURL())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Errorf("GET: %d, want 405", resp.StatusCode)
	}
	if f.srv.TokensIssued() != 0 {
		t.Errorf("TokensIssued = %d after refusals", f.srv.TokensIssued())
	}
}

func TestSendAccepts(t *testing.T) {
	f := start(t, Options{})
	f.srv.Log.Keep = true
	tok := f.token(t)
	dev := Token("acc")
	body := `{"message":{"token":"` + dev + `","notification":{"title":"t","body":"b","image":"https://x/i.png"},` +
		`"data":{"a":"1"},"android":{"priority":"HIGH","ttl":"3.5s","collapseKey":"c","restricted_package_name":"p","data":{"x":"y"},"notification":{"channel_id":"c"},"fcm_options":{"analytics_label":"l"},"direct_boot_ok":true},` +
		`"apns":{"headers":{"apns-priority":"10"},"payload":{"aps":{"alert":"x"}},"fcmOptions":{"image":"i"}},` +
		`"webpush":{"headers":{"TTL":"10"},"data":{"w":"v"},"notification":{"title":"w"},"fcm_options":{"link":"https://x"}},` +
		`"fcm_options":{"analyticsLabel":"m"},"name":""}}`
	resp, b := f.send(t, testProject, tok, body, nil)
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("send: %s %s %s", resp.Proto, resp.Status, b)
	}
	var ok struct{ Name string }
	if err := json.Unmarshal(b, &ok); err != nil || !strings.HasPrefix(ok.Name, "projects/"+testProject+"/messages/") {
		t.Errorf("answer %s", b)
	}
	got := f.srv.Log.For(dev)
	if len(got) != 1 || !strings.Contains(string(got[0].Body), `"collapseKey":"c"`) || !strings.HasPrefix(string(got[0].Body), `{"token"`) {
		t.Fatalf("logged %+v", got)
	}
	// A dry run is answered but not delivered.
	resp, b = f.send(t, testProject, tok, `{"validate_only":true,"message":{"token":"`+dev+`"}}`, nil)
	if resp.StatusCode != 200 || !strings.Contains(string(b), "fake_message_id") || f.srv.Log.Accepted() != 1 {
		t.Errorf("validate_only: %s %s (accepted %d)", resp.Status, b, f.srv.Log.Accepted())
	}
	// Topic and condition messages.
	for _, target := range []string{`"topic":"news"`, `"topic":"/topics/a-b_c.d~e%f"`, `"condition":"'a' in topics && 'b' in topics"`} {
		if resp, b := f.send(t, testProject, tok, `{"message":{`+target+`,"data":{"k":"v"}}}`, nil); resp.StatusCode != 200 {
			t.Errorf("%s: %s %s", target, resp.Status, b)
		}
	}
	// HTTP/1.1 works too.
	c1 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.srv.CertPool()}}}
	req, _ := http.NewRequest("POST", f.srv.URL()+"/v1/projects/"+testProject+"/messages:send", strings.NewReader(`{"message":{"token":"`+dev+`"}}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json; charset=UTF-8")
	r1, err := c1.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r1.Body.Close()
	if r1.StatusCode != 200 || r1.ProtoMajor != 1 {
		t.Errorf("HTTP/1.1 send: %s %s", r1.Proto, r1.Status)
	}
}

// TestSendRefuses drives every check of the send endpoint.
func TestSendRefuses(t *testing.T) {
	f := start(t, Options{})
	tok := f.token(t)
	dev := Token("ref")
	msg := func(inner string) string { return `{"message":{"token":"` + dev + `"` + inner + `}}` }
	gone, foreign := Token("gone"), Token("foreign")
	f.srv.Unregister(gone)
	f.srv.BindToken(foreign, "other-project")

	// A token whose scope does not allow sending.
	cl := f.claims()
	cl["scope"] = "https://www.googleapis.com/auth/userinfo.email"
	_, m := f.postToken(t, grantForm(sign(t, f.ki.key, f.header(), cl)))
	unscoped := m["access_token"].(string)

	big := msg(`,"data":{"k":"` + strings.Repeat("x", 4096) + `"}`)
	cases := []struct {
		name, project, token, body string
		edit                       func(*http.Request)
		code                       int
		status, fcmCode, msgPart   string
	}{
		{"no credentials", testProject, "", msg(""), nil, 401, "UNAUTHENTICATED", "", "missing"},
		{"basic auth", testProject, "", msg(""), func(r *http.Request) { r.SetBasicAuth("a", "b") }, 401, "UNAUTHENTICATED", "", "missing"},
		{"unknown token", testProject, "ya29.nope", msg(""), nil, 401, "UNAUTHENTICATED", "", "unknown"},
		{"other project", "other-project", tok, msg(""), nil, 403, "PERMISSION_DENIED", "", "denied"},
		{"no messaging scope", testProject, unscoped, msg(""), nil, 403, "PERMISSION_DENIED", "", "scopes"},
		{"text body", testProject, tok, msg(""), func(r *http.Request) { r.Header.Set("Content-Type", "text/plain") }, 400, "INVALID_ARGUMENT", "", "Content-Type"},
		{"GET", testProject, tok, "", func(r *http.Request) { r.Method = "GET" }, 404, "NOT_FOUND", "", "POST"},
		{"not JSON", testProject, tok, `{"message":`, nil, 400, "INVALID_ARGUMENT", "", "not valid JSON"},
		{"array", testProject, tok, `[]`, nil, 400, "INVALID_ARGUMENT", "", "Expected an object"},
		{"unknown top-level", testProject, tok, `{"msg":{}}`, nil, 400, "INVALID_ARGUMENT", "", `Unknown name "msg"`},
		{"no message", testProject, tok, `{"validate_only":false}`, nil, 400, "INVALID_ARGUMENT", "", "message is required"},
		{"message not object", testProject, tok, `{"message":"x"}`, nil, 400, "INVALID_ARGUMENT", "", "Invalid value at 'message'"},
		{"validate_only not bool", testProject, tok, `{"message":{"token":"` + dev + `"},"validate_only":"yes"}`, nil, 400, "INVALID_ARGUMENT", "", "validate_only"},
		{"no target", testProject, tok, `{"message":{"data":{"a":"b"}}}`, nil, 400, "INVALID_ARGUMENT", "", "Exactly one"},
		{"two targets", testProject, tok, msg(`,"topic":"news"`), nil, 400, "INVALID_ARGUMENT", "", "Exactly one"},
		{"unknown message field", testProject, tok, msg(`,"priority":"high"`), nil, 400, "INVALID_ARGUMENT", "", `Unknown name "priority" at 'message'`},
		{"token not string", testProject, tok, `{"message":{"token":5}}`, nil, 400, "INVALID_ARGUMENT", "", "message.token"},
		{"data number", testProject, tok, msg(`,"data":{"a":"x","n":12}`), nil, 400, "INVALID_ARGUMENT", "", "Invalid value at 'message.data[1].value' (TYPE_STRING), 12"},
		{"data not object", testProject, tok, msg(`,"data":[]`), nil, 400, "INVALID_ARGUMENT", "", "message.data"},
		{"reserved data key from", testProject, tok, msg(`,"data":{"from":"x"}`), nil, 400, "INVALID_ARGUMENT", "", "reserved"},
		{"reserved data key google", testProject, tok, msg(`,"data":{"google.c.a":"x"}`), nil, 400, "INVALID_ARGUMENT", "", "reserved"},
		{"notification unknown", testProject, tok, msg(`,"notification":{"titel":"x"}`), nil, 400, "INVALID_ARGUMENT", "", `Unknown name "titel" at 'message.notification'`},
		{"notification title number", testProject, tok, msg(`,"notification":{"title":1}`), nil, 400, "INVALID_ARGUMENT", "", "message.notification.title"},
		{"android unknown", testProject, tok, msg(`,"android":{"prio":"HIGH"}`), nil, 400, "INVALID_ARGUMENT", "", "message.android"},
		{"android priority", testProject, tok, msg(`,"android":{"priority":"high"}`), nil, 400, "INVALID_ARGUMENT", "", "message.android.priority"},
		{"android ttl format", testProject, tok, msg(`,"android":{"ttl":"3600"}`), nil, 400, "INVALID_ARGUMENT", "", "message.android.ttl"},
		{"android ttl too long", testProject, tok, msg(`,"android":{"ttl":"2419201s"}`), nil, 400, "INVALID_ARGUMENT", "", "Invalid TTL"},
		{"android data number", testProject, tok, msg(`,"android":{"data":{"a":true}}`), nil, 400, "INVALID_ARGUMENT", "", "message.android.data[0].value"},
		{"android bool", testProject, tok, msg(`,"android":{"direct_boot_ok":"yes"}`), nil, 400, "INVALID_ARGUMENT", "", "direct_boot_ok"},
		{"apns headers number", testProject, tok, msg(`,"apns":{"headers":{"apns-priority":10}}`), nil, 400, "INVALID_ARGUMENT", "", "message.apns.headers[0].value"},
		{"apns payload string", testProject, tok, msg(`,"apns":{"payload":"x"}`), nil, 400, "INVALID_ARGUMENT", "", "message.apns.payload"},
		{"webpush unknown", testProject, tok, msg(`,"webpush":{"ttl":"1"}`), nil, 400, "INVALID_ARGUMENT", "", "message.webpush"},
		{"fcm_options unknown", testProject, tok, msg(`,"fcm_options":{"label":"x"}`), nil, 400, "INVALID_ARGUMENT", "", "message.fcm_options"},
		{"too big", testProject, tok, big, nil, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "too big"},
		{"topic data too big", testProject, tok, `{"message":{"topic":"t","data":{"k":"` + strings.Repeat("x", 2100) + `"}}}`, nil, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "too big"},
		{"bad topic", testProject, tok, `{"message":{"topic":"a b"}}`, nil, 400, "INVALID_ARGUMENT", "", "topic"},
		{"too many condition topics", testProject, tok, `{"message":{"condition":"'a' in topics || 'b' in topics || 'c' in topics || 'd' in topics || 'e' in topics || 'f' in topics"}}`, nil, 400, "INVALID_ARGUMENT", "", "condition"},
		{"short token", testProject, tok, `{"message":{"token":"abc"}}`, nil, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token"},
		{"token with space", testProject, tok, `{"message":{"token":"` + strings.Repeat("a", 70) + ` b"}}`, nil, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "not a valid FCM registration token"},
		{"unregistered", testProject, tok, `{"message":{"token":"` + gone + `"}}`, nil, 404, "NOT_FOUND", "UNREGISTERED", "not found"},
		{"sender mismatch", testProject, tok, `{"message":{"token":"` + foreign + `"}}`, nil, 403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH", "SenderId mismatch"},
	}
	for _, c := range cases {
		resp, b := f.send(t, c.project, c.token, c.body, c.edit)
		var g googleErr
		if err := json.Unmarshal(b, &g); err != nil {
			t.Errorf("%s: answer is not JSON: %s", c.name, b)
			continue
		}
		if resp.StatusCode != c.code || g.Error.Code != c.code || g.Error.Status != c.status || g.fcmCode() != c.fcmCode || !strings.Contains(g.Error.Message, c.msgPart) {
			t.Errorf("%s: %d %s\nwant %d %s %s %q", c.name, resp.StatusCode, b, c.code, c.status, c.fcmCode, c.msgPart)
		}
		if c.code == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s: no WWW-Authenticate", c.name)
		}
	}
	if f.srv.Log.Accepted() != 0 {
		t.Errorf("accepted %d refused requests", f.srv.Log.Accepted())
	}
	if got, want := f.srv.Log.Refused(), int64(len(cases)); got != want {
		t.Errorf("Refused = %d, want %d", got, want)
	}
	// Unknown paths.
	for _, p := range []string{"/", "/v1/projects/x/messages:sen", "/v1/projects//messages:send", "/v1/projects/a/b/messages:send"} {
		resp, err := f.c.Post(f.srv.URL()+p, "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Errorf("%s: %d, want 404", p, resp.StatusCode)
		}
	}
}

func TestExpiredToken(t *testing.T) {
	now := time.Now()
	var mu sync.Mutex
	f := start(t, Options{TokenTTL: time.Minute, Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now }})
	tok := f.token(t)
	body := `{"message":{"token":"` + Token("e") + `"}}`
	if resp, b := f.send(t, testProject, tok, body, nil); resp.StatusCode != 200 {
		t.Fatalf("%s %s", resp.Status, b)
	}
	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	resp, b := f.send(t, testProject, tok, body, nil)
	if resp.StatusCode != 401 || !strings.Contains(string(b), "expired") {
		t.Errorf("after expiry: %s %s", resp.Status, b)
	}
	mu.Lock()
	now = time.Now()
	mu.Unlock()
	tok = f.token(t)
	f.srv.ExpireTokens()
	if resp, _ := f.send(t, testProject, tok, body, nil); resp.StatusCode != 401 {
		t.Errorf("after ExpireTokens: %s", resp.Status)
	}
	// Tokens for load tools, without an assertion.
	lt := f.srv.AccessToken("load-project")
	if resp, b := f.send(t, "load-project", lt, body, nil); resp.StatusCode != 200 {
		t.Errorf("AccessToken token: %s %s", resp.Status, b)
	}
	if resp, _ := f.send(t, testProject, lt, body, nil); resp.StatusCode != 403 {
		t.Errorf("AccessToken token for another project: %s", resp.Status)
	}
}

func TestScripts(t *testing.T) {
	f := start(t, Options{})
	tok := f.token(t)
	dev := Token("script")
	body := `{"message":{"token":"` + dev + `"}}`
	cases := []struct {
		action          pnsfake.Action
		code            int
		status, fcmCode string
	}{
		{pnsfake.Action{Kind: pnsfake.Fail, Status: 404, Reason: "UNREGISTERED"}, 404, "NOT_FOUND", "UNREGISTERED"},
		{pnsfake.Action{Kind: pnsfake.Fail, Status: 404}, 404, "NOT_FOUND", "UNREGISTERED"},
		{pnsfake.Action{Kind: pnsfake.Fail, Reason: "QUOTA_EXCEEDED"}, 429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"},
		{pnsfake.Action{Kind: pnsfake.Fail, Status: 503}, 503, "UNAVAILABLE", "UNAVAILABLE"},
		{pnsfake.Action{Kind: pnsfake.Fail, Status: 500, Reason: "INTERNAL"}, 500, "INTERNAL", "INTERNAL"},
		{pnsfake.Action{Kind: pnsfake.Fail, Status: 401, Reason: "THIRD_PARTY_AUTH_ERROR"}, 401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR"},
		{pnsfake.Action{Kind: pnsfake.Fail, Status: 401, Reason: "UNAUTHENTICATED"}, 401, "UNAUTHENTICATED", ""},
		{pnsfake.Action{Kind: pnsfake.Fail, Status: 403, Reason: "SENDER_ID_MISMATCH"}, 403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH"},
		{pnsfake.Action{Kind: pnsfake.Fail, Status: 400, Reason: "INVALID_ARGUMENT: custom text"}, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"},
		{pnsfake.Action{Kind: pnsfake.Throttle, RetryAfter: 1500 * time.Millisecond}, 429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"},
	}
	for _, c := range cases {
		f.srv.Script.Push(dev, c.action)
		resp, b := f.send(t, testProject, tok, body, nil)
		var g googleErr
		_ = json.Unmarshal(b, &g)
		if resp.StatusCode != c.code || g.Error.Status != c.status || g.fcmCode() != c.fcmCode {
			t.Errorf("%+v: %d %s", c.action, resp.StatusCode, b)
		}
		if c.action.Kind == pnsfake.Throttle && resp.Header.Get("Retry-After") != "2" {
			t.Errorf("Throttle: Retry-After %q, want 2", resp.Header.Get("Retry-After"))
		}
		if strings.HasSuffix(c.action.Reason, "custom text") && g.Error.Message != "custom text" {
			t.Errorf("message %q", g.Error.Message)
		}
	}
	// Drop closes the connection without an answer.
	f.srv.Script.Push(dev, pnsfake.Action{Kind: pnsfake.Drop})
	req, _ := http.NewRequest("POST", f.srv.URL()+"/v1/projects/"+testProject+"/messages:send", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	if resp, err := f.c.Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("Drop: got %s", resp.Status)
	}
	// Slow answers after the delay.
	f.srv.Script.Push(dev, pnsfake.Action{Kind: pnsfake.Slow, Delay: 50 * time.Millisecond})
	t0 := time.Now()
	if resp, _ := f.send(t, testProject, tok, body, nil); resp.StatusCode != 200 || time.Since(t0) < 50*time.Millisecond {
		t.Errorf("Slow: %s after %v", resp.Status, time.Since(t0))
	}
}

func TestConnsAndArrive(t *testing.T) {
	f := start(t, Options{})
	var mu sync.Mutex
	var arrived []string
	f.srv.Log.OnArrive = func(token string, _ time.Time) { mu.Lock(); arrived = append(arrived, token); mu.Unlock() }
	tok := f.token(t)
	for i := range 20 {
		f.send(t, testProject, tok, `{"message":{"token":"`+Token(fmt.Sprint("c", i))+`"}}`, nil)
	}
	f.send(t, testProject, "", `{"message":{"token":"`+Token("noauth")+`"}}`, nil)
	if got := f.srv.Conns(); got != 1 {
		t.Errorf("Conns = %d, want 1 (one HTTP/2 connection)", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(arrived) != 21 || arrived[0] != Token("c0") || arrived[20] != Token("noauth") {
		t.Errorf("arrivals %d: %v…", len(arrived), arrived[:1])
	}
}

func TestKeyFiles(t *testing.T) {
	key, err := testKey()
	if err != nil {
		t.Fatal(err)
	}
	var kf map[string]string
	if err := json.Unmarshal(key, &kf); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"type", "project_id", "private_key_id", "private_key", "client_email", "client_id", "token_uri"} {
		if kf[k] == "" {
			t.Errorf("key file has no %s", k)
		}
	}
	if !strings.HasSuffix(kf["client_email"], "@"+testProject+".iam.gserviceaccount.com") || len(kf["private_key_id"]) != 40 {
		t.Errorf("key file %v", kf)
	}
	srv := New(Options{})
	for _, bad := range []string{`{}`, `nope`, `{"type":"service_account","client_email":"a","project_id":"p","private_key_id":"k","private_key":"x"}`} {
		if srv.AddServiceAccount([]byte(bad)) == nil {
			t.Errorf("AddServiceAccount(%s) succeeded", bad)
		}
	}
	if _, err := NewServiceAccount("", "u"); err == nil {
		t.Error("NewServiceAccount without a project succeeded")
	}
	if a, b := Token("x"), Token("y"); a == b || !validToken(a) || len(a) < 140 || Token("x") != a {
		t.Errorf("Token: %q %q", a, b)
	}
}
