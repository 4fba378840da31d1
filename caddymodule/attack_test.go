package caddymodule

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/pushgate/pushgate/internal/nhwire"
	"github.com/pushgate/pushgate/internal/redistest"
)

const (
	atkHub       = "atk"
	atkFullKey   = "YXR0YWNrLXRhYmxlLWZ1bGwta2V5LTAxMjM0NTY3ODk="
	atkListenKey = "YXR0YWNrLXRhYmxlLWxpc3Rlbi1rZXktMDEyMzQ1Njc="
	atkFull      = "DefaultFullSharedAccessSignature"
	atkListen    = "DefaultListenSharedAccessSignature"
	atkV         = "?api-version=2020-06"
	// kidFlood is how many tokens with random unknown key ids the flood
	// row sends.
	kidFlood = 200
)

// TestAttacks is the attack table (issue #7, docs/SECURITY.md). Every row
// is an attack on a real running Caddy — the device gate (pushgate_gate,
// the per-user policy, tokens from an issuer the test controls) in front of
// an upstream that records what reaches it, and the Notification Hubs API
// (pushgate_nh) with a Full and a Listen rule — and the status it must get.
// Around each row the hub's store is exported: a refused request must leave
// it byte for byte as it was. The table runs on the embedded store and on
// Redis.
func TestAttacks(t *testing.T) {
	idp := newAttackIdP(t)
	up := newEchoUpstream(t)
	policyDir, err := filepath.Abs("../policy/examples/per_user")
	if err != nil {
		t.Fatal(err)
	}
	stores := []struct {
		name string
		conf func(t *testing.T) string
	}{
		{"memory", func(t *testing.T) string { return "data_dir " + t.TempDir() }},
		{"redis", func(t *testing.T) string { return "redis " + redistest.Start(t, redistest.Options{}).Addr }},
	}
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) {
			e := startAttackEnv(t, idp, up, policyDir, s.conf(t))
			for _, row := range attackRows(e) {
				t.Run(row.name, func(t *testing.T) { e.run(t, row) })
			}
		})
	}
}

// attackRow is one attack and what it must get.
type attackRow struct {
	name string
	// what the row proves, for docs/SECURITY.md.
	proves string
	run    func(t *testing.T) atkResp
	status int
	// detail is a substring of the answer's message (the JSON message of
	// the gate, the Detail of the API's XML error).
	detail string
	// changes marks the few rows that are answered 2xx by design (a patch
	// the gate rewrites); check then says what must hold of the store.
	changes bool
	check   func(t *testing.T, r atkResp, before, after map[string]string)
}

type atkResp struct {
	status int
	header http.Header
	body   string
	msg    string
}

// atkEnv is the running server and the fixtures the rows attack.
type atkEnv struct {
	tc  *testCaddy
	idp *attackIdP
	up  *echoUpstream

	alice, bob string // valid ID tokens
	bobRegID   string // a register-flow id bob has stored his device under
	// config is the Caddyfile, with extra options for the servers block.
	config func(serverOpts string) string
}

func startAttackEnv(t *testing.T, idp *attackIdP, up *echoUpstream, policyDir, store string) *atkEnv {
	t.Helper()
	e := &atkEnv{idp: idp, up: up, alice: idp.token("alice"), bob: idp.token("bob")}
	e.config = func(serverOpts string) string {
		return fmt.Sprintf(`{
	servers {
		max_header_size 64KiB%s
	}
	pushgate {
		hub %s {
			%s
			delivery {
				log_only
			}
		}
	}
}
localhost:HTTPS_PORT {
	bind 127.0.0.1
	tls internal
	pushgate_gate {
		hub %s
		policy %s
		oidc {
			issuer %s
			client_id %s
			audience %s
		}
		identity_headers
	}
	pushgate_nh /%s/* {
		hub %s
		rule %s %s Listen Send Manage
		rule %s %s Listen
	}
	reverse_proxy %s
}`, serverOpts, atkHub, store, atkHub, policyDir, idp.Issuer(), attackClientID, attackAudience,
			atkHub, atkHub, atkFull, atkFullKey, atkListen, atkListenKey, up.srv.Listener.Addr())
	}
	e.tc = startCaddy(t, e.config(""))
	e.ready(t, false)
	e.fixtures(t)
	return e
}

// atkTemplate is named "new comment": a name that is not a valid tag, so
// the policy has no reason to drop it.
const (
	atkTemplateName = "new comment"
	atkTemplate     = `{"body":"{\"aps\":{\"alert\":\"$(msg)\"}}"}`
)

func deviceInstallation(id string, tags ...string) string {
	b, _ := json.Marshal(map[string]any{"installationId": id, "platform": "apns", "pushChannel": apnsToken, "tags": tags,
		"templates": map[string]json.RawMessage{atkTemplateName: json.RawMessage(atkTemplate)}})
	return string(b)
}

// fixtures stores what the rows attack: bob's installation, bob's signed-off
// one, bob's device in the register flow, alice's own installation, and
// three installations with an output-bomb template written by the backend.
func (e *atkEnv) fixtures(t *testing.T) {
	t.Helper()
	must := func(r atkResp, want int, what string) atkResp {
		t.Helper()
		if r.status != want {
			t.Fatalf("fixture %s: %d %s", what, r.status, r.body)
		}
		return r
	}
	must(e.gate(t, "PUT", "/push/installations/bob-phone", e.bob, deviceInstallation("bob-phone", "event:comment")), 200, "bob-phone")
	must(e.gate(t, "PUT", "/push/installations/bob-old", e.bob, deviceInstallation("bob-old", "event:like")), 200, "bob-old")
	must(e.gate(t, "DELETE", "/push/installations/bob-old", e.bob, ""), 204, "bob-old sign-off")
	must(e.gate(t, "PUT", "/push/installations/alice-phone", e.alice, deviceInstallation("alice-phone", "event:comment")), 200, "alice-phone")
	r := must(e.gate(t, "POST", "/push/register", e.bob, ""), 200, "register id")
	var id struct{ ID string }
	if err := json.Unmarshal([]byte(r.body), &id); err != nil || id.ID == "" {
		t.Fatalf("register id: %s", r.body)
	}
	e.bobRegID = id.ID
	must(e.gate(t, "PUT", "/push/register/"+id.ID, e.bob, `{"platform":"fcmv1","handle":"fcm-bob-1","tags":["event:comment"]}`), 200, "bob register")

	// 1,000 expressions (the compile limit) each expanding a property.
	bomb := `{"aps":{"alert":"{` + strings.Repeat("$(m) + ", 999) + `$(m)}"}}`
	for i := range 3 {
		inst, _ := json.Marshal(map[string]any{"installationId": fmt.Sprintf("bomb-%d", i), "platform": "apns",
			"pushChannel": fmt.Sprintf("%064X", i+1), "tags": []string{"bomb"},
			"templates": map[string]any{"bomb": map[string]any{"body": bomb}}})
		must(e.nh(t, "PUT", fmt.Sprintf("/installations/bomb-%d", i), e.full(), string(inst)), 200, "bomb installation")
	}
}

// run runs one row: the attack, its status and message, and the store
// compared before and after.
func (e *atkEnv) run(t *testing.T, row attackRow) {
	before := e.export(t)
	r := row.run(t)
	if r.status >= 500 {
		t.Fatalf("a 5xx is a bug: %d %s", r.status, r.body)
	}
	t.Logf("answer: %d %s", r.status, abbrev(r.msg))
	if r.status != row.status {
		t.Errorf("status %d, want %d; body %s", r.status, row.status, abbrev(r.body))
	}
	if row.detail != "" && !strings.Contains(r.msg, row.detail) {
		t.Errorf("message %q does not contain %q", abbrev(r.msg), row.detail)
	}
	if r.status == http.StatusUnauthorized && strings.HasPrefix(r.header.Get("Content-Type"), "application/json") &&
		!strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer realm=") {
		t.Errorf("a 401 of the gate without a Bearer challenge: %q", r.header.Get("WWW-Authenticate"))
	}
	after := e.export(t)
	if !row.changes && !mapsEqual(before, after) {
		t.Errorf("the store changed:\n%s", storeDiff(before, after))
	}
	if row.check != nil {
		row.check(t, r, before, after)
	}
}

// --- requests ---

func (e *atkEnv) do(t *testing.T, req *http.Request) atkResp {
	t.Helper()
	res, err := e.tc.Client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer res.Body.Close()
	return readResp(t, res)
}

func readResp(t *testing.T, res *http.Response) atkResp {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	r := atkResp{status: res.StatusCode, header: res.Header, body: string(b), msg: string(b)}
	var je struct{ Message string }
	switch {
	case strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") && json.Unmarshal(b, &je) == nil && je.Message != "":
		r.msg = je.Message
	case strings.HasPrefix(r.body, "<Error>"):
		if m := nhDetail.FindStringSubmatch(r.body); m != nil {
			r.msg = m[1]
		}
	}
	return r
}

var nhDetail = regexp.MustCompile(`<Detail>(.*)</Detail>`)

// gate sends a device request; hdr are name, value pairs.
func (e *atkEnv) gate(t *testing.T, method, path, token, body string, hdr ...string) atkResp {
	t.Helper()
	req, err := http.NewRequest(method, e.tc.Base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	return e.do(t, req)
}

// nh sends an API request below the hub; path includes no api-version.
func (e *atkEnv) nh(t *testing.T, method, path, auth, body string, hdr ...string) atkResp {
	t.Helper()
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	req, err := http.NewRequest(method, e.tc.Base+"/"+atkHub+path+sep+atkV[1:], strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	return e.do(t, req)
}

// sas signs for resource with a rule's key, valid for an hour.
func (e *atkEnv) sas(resource, rule, key string) string {
	return nhwire.Sign(resource, rule, []byte(key), time.Now().Add(time.Hour))
}

// root is the namespace URL the SDKs sign for.
func (e *atkEnv) root() string { return fmt.Sprintf("https://localhost:%d/", e.tc.HTTPS) }

func (e *atkEnv) full() string   { return e.sas(e.root(), atkFull, atkFullKey) }
func (e *atkEnv) listen() string { return e.sas(e.root(), atkListen, atkListenKey) }

// raw sends bytes as they are over HTTP/1.1, for what a client library
// would normalize away (header case, duplicates, trailers).
func (e *atkEnv) raw(t *testing.T, request string) atkResp {
	t.Helper()
	r, err := e.tryRaw(t, request)
	if err != nil {
		t.Fatalf("raw request: %v", err)
	}
	return r
}

func (e *atkEnv) tryRaw(t *testing.T, request string) (atkResp, error) {
	t.Helper()
	tr := e.tc.Client.Transport.(*http.Transport)
	conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", e.tc.HTTPS), &tls.Config{
		RootCAs: tr.TLSClientConfig.RootCAs, ServerName: "localhost", NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12})
	if err != nil {
		return atkResp{}, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	request = strings.ReplaceAll(request, "HOST", fmt.Sprintf("localhost:%d", e.tc.HTTPS))
	if _, err := io.WriteString(conn, strings.ReplaceAll(request, "\n", "\r\n")); err != nil {
		return atkResp{}, err
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return atkResp{}, fmt.Errorf("reading the answer: %w", err)
	}
	defer res.Body.Close()
	return readResp(t, res), nil
}

// ready waits until the server answers with the config wanted: a probe
// header x_pushgate_probe reaches the upstream exactly when the server lets
// underscore names through. It also waits out the first moments of a
// start, when the internal certificate may not be served yet.
func (e *atkEnv) ready(t *testing.T, underscores bool) {
	t.Helper()
	e.tc.Client.Transport.(*http.Transport).CloseIdleConnections()
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		row := fmt.Sprintf("probe-%d-%d", time.Now().UnixNano(), i)
		r, err := e.tryRaw(t, "GET /app/probe HTTP/1.1\nHost: HOST\nAttack-Row: "+row+"\nX_Pushgate_Probe: 1\nConnection: close\n\n")
		if err == nil && r.status == 200 {
			if h, ok := e.up.get(row); ok && (h.Get("X_pushgate_probe") != "") == underscores {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server did not come up with the expected config: %v %d", err, r.status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// reload switches to the config with serverOpts and waits for it.
func (e *atkEnv) reload(t *testing.T, serverOpts string, underscores bool) {
	t.Helper()
	e.tc.Reload(e.config(serverOpts))
	e.ready(t, underscores)
}

// --- the store ---

// export is the hub's store as Export writes it, one record per key
// (installation or registration id).
func (e *atkEnv) export(t *testing.T) map[string]string {
	t.Helper()
	app, err := caddy.ActiveContext().App("pushgate")
	if err != nil {
		t.Fatal(err)
	}
	h, ok := app.(*App).Hub(atkHub)
	if !ok {
		t.Fatal("no hub atk")
	}
	var b strings.Builder
	if err := h.Core.Store().Export(context.Background(), &b); err != nil {
		t.Fatalf("export: %v", err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if line == "" {
			continue
		}
		var rec struct {
			Installation *struct{ InstallationID string } `json:"installation"`
			Registration *struct{ RegistrationID string } `json:"registration"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("export line %q: %v", line, err)
		}
		key := ""
		switch {
		case rec.Installation != nil:
			key = "installation " + rec.Installation.InstallationID
		case rec.Registration != nil:
			key = "registration " + rec.Registration.RegistrationID
		}
		if _, dup := out[key]; dup || key == "" {
			t.Fatalf("export: unkeyed or duplicate line %q", line)
		}
		out[key] = line
	}
	return out
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func storeDiff(before, after map[string]string) string {
	var out []string
	for k, v := range before {
		switch w, ok := after[k]; {
		case !ok:
			out = append(out, "- "+v)
		case w != v:
			out = append(out, "- "+v, "+ "+w)
		}
	}
	for k, v := range after {
		if _, ok := before[k]; !ok {
			out = append(out, "+ "+v)
		}
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}

// stored decodes one installation of an export.
func stored(t *testing.T, exp map[string]string, id string) (userID string, tags []string) {
	t.Helper()
	line, ok := exp["installation "+id]
	if !ok {
		t.Fatalf("installation %s is not stored", id)
	}
	var rec struct {
		Installation struct {
			UserID string   `json:"userId"`
			Tags   []string `json:"tags"`
		} `json:"installation"`
	}
	if err := json.Unmarshal([]byte(line), &rec); err != nil {
		t.Fatal(err)
	}
	return rec.Installation.UserID, rec.Installation.Tags
}

// onlyChanged checks that no record but id's changed.
func onlyChanged(t *testing.T, before, after map[string]string, id string) {
	t.Helper()
	b, a := copyMap(before), copyMap(after)
	delete(b, "installation "+id)
	delete(a, "installation "+id)
	if !mapsEqual(a, b) {
		t.Errorf("records other than %s changed:\n%s", id, storeDiff(b, a))
	}
}

func copyMap(m map[string]string) map[string]string {
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// noForeignTag checks that no installation of alice's carries bob's tag
// (in any case, in its tags or a template's).
func noForeignTag(t *testing.T, exp map[string]string) {
	t.Helper()
	for k, line := range exp {
		if strings.Contains(line, `"userId":"alice"`) && strings.Contains(strings.ToLower(line), "userid:bob") {
			t.Errorf("%s of alice carries userId:bob: %s", k, line)
		}
	}
}

func abbrev(s string) string {
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}

// --- the upstream ---

// echoUpstream stands for the app's backend: it records the headers and
// trailers of every request, keyed by the Attack-Row header.
type echoUpstream struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen map[string]http.Header
}

func newEchoUpstream(t *testing.T) *echoUpstream {
	t.Helper()
	u := &echoUpstream{seen: map[string]http.Header{}}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // trailers arrive after the body
		h := r.Header.Clone()
		for k, v := range r.Trailer {
			h["Trailer:"+k] = v
		}
		u.mu.Lock()
		u.seen[r.Header.Get("Attack-Row")] = h
		u.mu.Unlock()
		_, _ = io.WriteString(w, "upstream")
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *echoUpstream) get(row string) (http.Header, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	h, ok := u.seen[row]
	return h, ok
}

// saw returns what the upstream received for a row, failing if nothing.
func (u *echoUpstream) saw(t *testing.T, row string) http.Header {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	h, ok := u.seen[row]
	if !ok {
		t.Fatalf("the upstream received no request for row %s", row)
	}
	return h
}

// identityIn lists the header (and trailer) fields the upstream received
// that an application could read as an identity header: any whose name,
// with '_' read as '-' (as CGI, PHP, WSGI and Rack do) and case ignored,
// is X-Pushgate-User, -Subject or -Issuer.
func identityIn(h http.Header) map[string][]string {
	out := map[string][]string{}
	for k, v := range h {
		n := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(k, "Trailer:"), "_", "-"))
		for _, id := range identityHeaders {
			if n == strings.ToLower(id) {
				out[k] = v
			}
		}
	}
	return out
}

// --- the rows ---

func attackRows(e *atkEnv) []attackRow {
	var rows []attackRow
	rows = append(rows, tokenRows(e)...)
	rows = append(rows, policyRows(e)...)
	rows = append(rows, patchRows(e)...)
	rows = append(rows, headerRows(e)...)
	rows = append(rows, gateInputRows(e)...)
	rows = append(rows, sasRows(e)...)
	rows = append(rows, nhInputRows(e)...)
	return rows
}

// evil is an installation an attacker tries to create.
var evil = deviceInstallation("evil-1", "event:comment")

func tokenRows(e *atkEnv) []attackRow {
	put := func(tok string) func(t *testing.T) atkResp {
		return func(t *testing.T) atkResp { return e.gate(t, "PUT", "/push/installations/evil-1", tok, evil) }
	}
	hdr := map[string]any{"alg": "RS256", "typ": "JWT", "kid": attackKID}
	with := func(k string, v any) map[string]any {
		h := copyClaims(hdr)
		h[k] = v
		return h
	}
	claims := e.idp.claims("alice")
	other := e.idp.other
	otherIssuer := "http://127.0.0.1:1/untrusted"
	var fetches int64
	noFetch := func(t *testing.T, _ atkResp, _, _ map[string]string) {
		if n := e.idp.JWKSFetches() - fetches; n != 0 {
			t.Errorf("the issuer saw %d JWKS fetches; want none", n)
		}
	}
	counting := func(tok string) func(t *testing.T) atkResp {
		return func(t *testing.T) atkResp {
			fetches = e.idp.JWKSFetches()
			return put(tok)(t)
		}
	}
	var floodStart time.Time
	var floodTook time.Duration
	return []attackRow{
		{name: "token/alg-none", proves: "an unsigned token is refused before any key is used",
			run: put(signJWT(map[string]any{"alg": "none", "typ": "JWT"}, claims, nil)), status: 401, detail: `algorithm "none" is not allowed`},
		{name: "token/alg-None-with-kid", proves: "the alg check is exact, not case-folded into acceptance",
			run: put(signJWT(with("alg", "None"), claims, nil)), status: 401, detail: `algorithm "None" is not allowed`},
		{name: "token/hs256-keyed-with-public-pem", proves: "HMAC with the issuer's public key (PEM) as secret is refused",
			run: counting(signJWT(with("alg", "HS256"), claims, hs256(e.idp.pubPE))), status: 401, detail: `algorithm "HS256" is not allowed`, check: noFetch},
		{name: "token/hs256-keyed-with-public-jwk", proves: "HMAC with the issuer's published JWK as secret is refused",
			run: put(signJWT(with("alg", "HS256"), claims, hs256(e.idp.pubJW))), status: 401, detail: `algorithm "HS256" is not allowed`},
		{name: "token/ps256-on-rs256-key", proves: "a key published for RS256 does not verify another algorithm (RFC 7517 §4.4)",
			run: counting(signJWT(with("alg", "PS256"), claims, ps256(e.idp.key))), status: 401, detail: `does not verify with key "k1"`, check: noFetch},
		{name: "token/expired", proves: "exp is enforced (beyond the 1 min leeway)",
			run: put(e.idp.tokenWith("alice", func(c map[string]any) { c["exp"] = time.Now().Add(-5 * time.Minute).Unix() })), status: 401, detail: "token expired at"},
		{name: "token/no-exp", proves: "a token without exp is refused",
			run: put(e.idp.tokenWith("alice", func(c map[string]any) { delete(c, "exp") })), status: 401, detail: "no exp claim"},
		{name: "token/nbf-in-future", proves: "nbf is enforced",
			run: put(e.idp.tokenWith("alice", func(c map[string]any) { c["nbf"] = time.Now().Add(10 * time.Minute).Unix() })), status: 401, detail: "not valid before"},
		{name: "token/iat-in-future", proves: "a token issued in the future is refused",
			run: put(e.idp.tokenWith("alice", func(c map[string]any) { c["iat"] = time.Now().Add(10 * time.Minute).Unix() })), status: 401, detail: "issued in the future"},
		{name: "token/wrong-issuer", proves: "iss must be the configured issuer, even when the signature is good",
			run: counting(e.idp.tokenWith("alice", func(c map[string]any) { c["iss"] = otherIssuer })), status: 401, detail: "is not the configured issuer", check: noFetch},
		{name: "token/wrong-audience", proves: "an ID token for another client is refused",
			run: put(e.idp.tokenWith("alice", func(c map[string]any) { c["aud"] = "another-client" })), status: 401, detail: `audience ["another-client"] is not one of the configured client IDs`},
		{name: "token/access-token-wrong-audience", proves: "an RFC 9068 access token for another API is refused",
			run: put(signJWT(with("typ", "at+jwt"), merge(claims, "aud", "api://elsewhere"), rs256(e.idp.key))), status: 401, detail: "is not one of the configured audiences"},
		{name: "token/id-token-for-api-audience", proves: "token kinds stay apart: an ID token typed JWT for the API audience is refused",
			run: put(e.idp.tokenWith("alice", func(c map[string]any) { c["aud"] = attackAudience })), status: 401, detail: "typed \"JWT\", not at+jwt"},
		{name: "token/untrusted-issuer-same-kid", proves: "a token signed by another key under the trusted kid fails the signature and costs no JWKS fetch",
			run: counting(signJWT(hdr, claims, rs256(other))), status: 401, detail: `does not verify with key "k1"`, check: noFetch},
		{name: "token/untrusted-issuer-own-iss-same-kid", proves: "a second issuer's own token (its iss, same kid) is refused unread",
			run: counting(signJWT(hdr, merge(claims, "iss", otherIssuer), rs256(other))), status: 401, detail: "is not the configured issuer", check: noFetch},
		{name: "token/no-user-claim", proves: "a token without the user claim identifies nobody",
			run: put(e.idp.tokenWith("alice", func(c map[string]any) { delete(c, "sub") })), status: 401, detail: `user claim "sub" is missing`},
		{name: "token/oversize", proves: "a token over 16 KiB is refused before parsing",
			run: put(strings.Repeat("a", 17<<10)), status: 400, detail: "longer than 16 KiB"},
		{name: "token/two-authorization-headers", proves: "two Authorization headers are refused, not resolved in the attacker's favour",
			run: func(t *testing.T) atkResp {
				return e.gate(t, "PUT", "/push/installations/evil-1", "", evil, "Authorization", "Bearer "+e.alice, "Authorization", "Bearer "+e.bob)
			}, status: 400, detail: "more than one Authorization header"},
		{name: "token/kid-flood", proves: fmt.Sprintf("%d tokens with random unknown kids all get 401 and the issuer sees at most one JWKS fetch per 30 s", kidFlood),
			run: func(t *testing.T) atkResp {
				fetches = e.idp.JWKSFetches()
				floodStart = time.Now()
				var (
					wg     sync.WaitGroup
					next   atomic.Int64
					mu     sync.Mutex
					bad    *atkResp
					n401   atomic.Int64
					sample atkResp
				)
				for range 8 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := next.Add(1); i <= kidFlood; i = next.Add(1) {
							tok := signJWT(with("kid", fmt.Sprintf("flood-%d-%d", i, time.Now().UnixNano())), claims, rs256(other))
							r := e.gate(t, "PUT", "/push/installations/evil-1", tok, evil)
							mu.Lock()
							if r.status == 401 && strings.Contains(r.msg, "is not in the issuer's key set") {
								n401.Add(1)
								sample = r
							} else if bad == nil {
								bad = &r
							}
							mu.Unlock()
						}
					}()
				}
				wg.Wait()
				floodTook = time.Since(floodStart)
				if bad != nil {
					return *bad
				}
				if n401.Load() != kidFlood {
					t.Errorf("%d of %d flood tokens were refused as unknown keys", n401.Load(), kidFlood)
				}
				return sample
			}, status: 401, detail: "is not in the issuer's key set",
			check: func(t *testing.T, _ atkResp, _, _ map[string]string) {
				n := e.idp.JWKSFetches() - fetches
				// KeySet: a fetch for an unknown kid starts only if none
				// started within MinRefetchInterval (30 s by default).
				bound := 1 + int64(floodTook/(30*time.Second))
				t.Logf("kid flood: %d tokens in %s, %d JWKS fetches (bound %d)", kidFlood, floodTook.Round(time.Millisecond), n, bound)
				if n > bound {
					t.Errorf("the issuer saw %d JWKS fetches during the flood; the key set promises at most %d", n, bound)
				}
			}},
	}
}

func copyClaims(m map[string]any) map[string]any {
	c := make(map[string]any, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func merge(m map[string]any, k string, v any) map[string]any {
	c := copyClaims(m)
	c[k] = v
	return c
}

// policyRows: a valid user asks for what is not theirs.
func policyRows(e *atkEnv) []attackRow {
	put := func(id, body string) func(t *testing.T) atkResp {
		return func(t *testing.T) atkResp { return e.gate(t, "PUT", "/push/installations/"+id, e.alice, body) }
	}
	as := func(method, path, body string) func(t *testing.T) atkResp {
		return func(t *testing.T) atkResp { return e.gate(t, method, path, e.alice, body) }
	}
	withTemplate := func(name, tmpl string) string {
		b, _ := json.Marshal(map[string]any{"installationId": "alice-2", "platform": "apns", "pushChannel": apnsToken,
			"templates": map[string]json.RawMessage{name: json.RawMessage(tmpl)}})
		return string(b)
	}
	bobTagAbsent := func(t *testing.T, _ atkResp, _, after map[string]string) { noForeignTag(t, after) }
	bobPhone := deviceInstallation("bob-phone", "event:comment")
	register := func(tags string) func(t *testing.T) atkResp {
		return func(t *testing.T) atkResp {
			r := e.gate(t, "POST", "/push/register", e.alice, "")
			var id struct{ ID string }
			if r.status != 200 || json.Unmarshal([]byte(r.body), &id) != nil {
				t.Fatalf("new register id: %d %s", r.status, r.body)
			}
			return e.gate(t, "PUT", "/push/register/"+id.ID, e.alice, `{"platform":"fcmv1","handle":"fcm-alice-9","tags":`+tags+`}`)
		}
	}
	forged := func(t *testing.T) atkResp {
		// A well-formed id whose MAC is not the hub's.
		i := strings.LastIndexByte(e.bobRegID, '-')
		id := e.bobRegID[:i+1] + strings.Repeat("0", len(e.bobRegID)-i-1)
		return e.gate(t, "PUT", "/push/register/"+id, e.alice, `{"platform":"fcmv1","handle":"fcm-alice-9","tags":[]}`)
	}
	backdated := func(t *testing.T) atkResp {
		// The hub's own id with its issue time moved an hour back (never
		// the second it was issued in): the MAC no longer fits.
		parts := strings.Split(e.bobRegID, "-")
		parts[1] = fmt.Sprint(time.Now().Add(-time.Hour).Unix())
		return e.gate(t, "PUT", "/push/register/"+strings.Join(parts, "-"), e.alice, `{"platform":"fcmv1","handle":"fcm-alice-9","tags":[]}`)
	}
	return []attackRow{
		{name: "policy/foreign-userId-tag", proves: "a device cannot subscribe to another user's userId tag: 403, not stored",
			run: put("alice-2", deviceInstallation("alice-2", "event:comment", "userId:bob")), status: 403, detail: "tag userId:bob names another user", check: bobTagAbsent},
		{name: "policy/foreign-userId-tag-other-case", proves: "tags compare case-insensitively, so USERID:Bob is bob's tag too",
			run: put("alice-2", deviceInstallation("alice-2", "USERID:Bob")), status: 403, detail: "tag USERID:Bob names another user", check: bobTagAbsent},
		{name: "policy/foreign-userId-tag-in-template", proves: "template tags are requested tags",
			run: put("alice-2", withTemplate(atkTemplateName, `{"body":"{\"aps\":{}}","tags":["userId:bob"]}`)), status: 403, detail: "tag userId:bob names another user", check: bobTagAbsent},
		{name: "policy/template-named-as-foreign-tag", proves: "a template named userId:bob (a name that becomes a tag) is a requested tag",
			run: put("alice-2", withTemplate("userId:bob", `{"body":"{\"aps\":{}}"}`)), status: 403, detail: "tag userId:bob names another user", check: bobTagAbsent},
		{name: "policy/system-tag-InstallationId", proves: "a device cannot write a $InstallationId tag",
			run: put("alice-2", deviceInstallation("alice-2", "$InstallationId:{bob-phone}")), status: 400, detail: "reserved for the system"},
		{name: "policy/system-tag-UserId", proves: "a device cannot write a $UserId tag",
			run: put("alice-2", deviceInstallation("alice-2", "$UserId:{bob}")), status: 400, detail: "reserved for the system"},
		{name: "policy/system-tag-in-template", proves: "nor through a template's tags",
			run: put("alice-2", withTemplate(atkTemplateName, `{"body":"{\"aps\":{}}","tags":["$UserId:{bob}"]}`)), status: 400, detail: "reserved for the system"},
		{name: "policy/system-name-template", proves: "nor by naming a template $UserId:{bob}",
			run: put("alice-2", withTemplate("$UserId:{bob}", `{"body":"{\"aps\":{}}"}`)), status: 400, detail: "reserved"},
		{name: "policy/register-flow-foreign-tag", proves: "the seeds' register flow goes through the same policy",
			run: register(`["userId:bob"]`), status: 403, detail: "tag userId:bob names another user", check: bobTagAbsent},
		{name: "policy/register-flow-system-tag", proves: "and the same validation",
			run: register(`["$UserId:{bob}"]`), status: 400, detail: "reserved for the system"},

		{name: "takeover/installation-get", proves: "another user's installation cannot be read",
			run: as("GET", "/push/installations/bob-phone", ""), status: 403, detail: "belongs to another user"},
		{name: "takeover/installation-put", proves: "nor replaced",
			run: put("bob-phone", bobPhone), status: 403, detail: "belongs to another user"},
		{name: "takeover/installation-put-case-variant-id", proves: "nor replaced under a case variant of its id",
			run: put("BOB-PHONE", strings.Replace(bobPhone, "bob-phone", "BOB-PHONE", 1)), status: 403, detail: "belongs to another user"},
		{name: "takeover/installation-id-mismatch", proves: "a body naming bob's id under alice's URL is refused",
			run: put("alice-3", bobPhone), status: 400, detail: "installationId must match the URL"},
		{name: "takeover/installation-patch", proves: "nor patched",
			run: as("PATCH", "/push/installations/bob-phone", `[{"op":"add","path":"/tags","value":"event:like"}]`), status: 403, detail: "belongs to another user"},
		{name: "takeover/installation-delete", proves: "nor signed off",
			run: as("DELETE", "/push/installations/bob-phone", ""), status: 403, detail: "belongs to another user"},
		{name: "takeover/installation-delete-forget", proves: "nor deleted",
			run: as("DELETE", "/push/installations/bob-phone?forget=true", ""), status: 403, detail: "belongs to another user"},
		{name: "takeover/signed-off-installation-put", proves: "the per-user policy refuses taking over a signed-off device of another user",
			run: put("bob-old", deviceInstallation("bob-old", "event:comment")), status: 403, detail: "belongs to another user"},
		{name: "takeover/signed-off-installation-get", proves: "nor reading it",
			run: as("GET", "/push/installations/bob-old", ""), status: 403, detail: "belongs to another user"},
		{name: "takeover/registration-put", proves: "a register-flow id another user stored cannot be re-registered",
			run: func(t *testing.T) atkResp {
				return e.gate(t, "PUT", "/push/register/"+e.bobRegID, e.alice, `{"platform":"fcmv1","handle":"fcm-alice-9","tags":["event:comment"]}`)
			}, status: 403, detail: "belongs to another user"},
		{name: "takeover/registration-delete", proves: "nor deleted",
			run: func(t *testing.T) atkResp { return e.gate(t, "DELETE", "/push/register/"+e.bobRegID, e.alice, "") }, status: 403, detail: "belongs to another user"},
		{name: "takeover/registration-read-as-installation", proves: "nor read through the installation route",
			run: func(t *testing.T) atkResp { return e.gate(t, "GET", "/push/installations/"+e.bobRegID, e.alice, "") }, status: 403, detail: "belongs to another user"},
		{name: "takeover/registration-patch-as-installation", proves: "nor patched through the installation route",
			run: func(t *testing.T) atkResp {
				return e.gate(t, "PATCH", "/push/installations/"+e.bobRegID, e.alice, `[{"op":"replace","path":"/pushChannel","value":"fcm-alice-9"}]`)
			}, status: 403, detail: "belongs to another user"},
		{name: "takeover/registration-forged-id", proves: "an id the hub never issued is gone (410), nothing stored",
			run: forged, status: 410, detail: "unknown or expired"},
		{name: "takeover/registration-backdated-id", proves: "an issued id with its time changed is gone (410)",
			run: backdated, status: 410, detail: "unknown or expired"},
	}
}

// patchRows: alice patches her own installation, trying to reach tags
// around the policy.
func patchRows(e *atkEnv) []attackRow {
	patch := func(ops string) func(t *testing.T) atkResp {
		return func(t *testing.T) atkResp { return e.gate(t, "PATCH", "/push/installations/alice-phone", e.alice, ops) }
	}
	bobTagAbsent := func(t *testing.T, _ atkResp, _, after map[string]string) { noForeignTag(t, after) }
	tooMany := "[" + strings.Repeat(`{"op":"add","path":"/tags","value":"event:x"},`, 100) + `{"op":"add","path":"/tags","value":"event:y"}]`
	return []attackRow{
		{name: "patch/add-tags-foreign", proves: "the policy sees the patched result: adding userId:bob through /tags is refused",
			run: patch(`[{"op":"add","path":"/tags","value":"userId:bob"}]`), status: 403, detail: "tag userId:bob names another user", check: bobTagAbsent},
		{name: "patch/add-tags-dash", proves: "the JSON-Patch array append /tags/- is not a second route to tags",
			run: patch(`[{"op":"add","path":"/tags/-","value":"userId:bob"}]`), status: 400, detail: "a single tag can only be removed"},
		{name: "patch/replace-tags-foreign", proves: "replacing the tag list is seen by the policy",
			run: patch(`[{"op":"replace","path":"/tags","value":["event:comment","userId:bob"]}]`), status: 403, detail: "tag userId:bob names another user", check: bobTagAbsent},
		{name: "patch/uppercase-path", proves: "paths compare case-insensitively, so /TAGS is /tags and is checked",
			run: patch(`[{"op":"add","path":"/TAGS","value":"userId:bob"}]`), status: 403, detail: "tag userId:bob names another user", check: bobTagAbsent},
		{name: "patch/escaped-slash-tags", proves: "~1 (an escaped '/') does not smuggle /tags/- past the parser",
			run: patch(`[{"op":"add","path":"/tags~1-","value":"userId:bob"}]`), status: 400, detail: "is not supported"},
		{name: "patch/escaped-slash-template-tags", proves: "~1 in a template name (\"new comment/tags\") only names a template; its foreign tags are still checked",
			run: patch(`[{"op":"add","path":"/templates/new comment~1tags","value":{"body":"{\"aps\":{}}","tags":["userId:bob"]}}]`), status: 403, detail: "tag userId:bob names another user", check: bobTagAbsent},
		{name: "patch/template-tags", proves: "/templates/{name}/tags is seen by the policy",
			run: patch(`[{"op":"add","path":"/templates/new comment/tags","value":["userId:bob"]}]`), status: 403, detail: "tag userId:bob names another user", check: bobTagAbsent},
		{name: "patch/template-named-as-tag", proves: "adding a template named userId:bob is adding that tag",
			run: patch(`[{"op":"add","path":"/templates/userId:bob","value":{"body":"{\"aps\":{}}"}}]`), status: 403, detail: "tag userId:bob names another user", check: bobTagAbsent},
		{name: "patch/system-tag", proves: "a patch cannot add a $ tag",
			run: patch(`[{"op":"add","path":"/tags","value":"$UserId:{bob}"}]`), status: 400, detail: "reserved for the system"},
		{name: "patch/installationId", proves: "the installation's id cannot be patched",
			run: patch(`[{"op":"replace","path":"/installationId","value":"bob-phone"}]`), status: 400, detail: "it identifies the installation"},
		{name: "patch/move-op", proves: "move/copy (which could copy a tag list from elsewhere) are refused",
			run: patch(`[{"op":"copy","from":"/tags","path":"/templates/new comment/tags"}]`), status: 400, detail: "not supported"},
		{name: "patch/too-many-ops", proves: "a patch has at most 100 operations",
			run: patch(tooMany), status: 400, detail: "at most 100"},
		{name: "patch/replace-userId", proves: "the device never chooses its userId: /userId is overwritten with the verified user",
			run: patch(`[{"op":"replace","path":"/userId","value":"bob"}]`), status: 200, changes: true,
			check: func(t *testing.T, _ atkResp, before, after map[string]string) {
				_, was := stored(t, before, "alice-phone")
				if uid, tags := stored(t, after, "alice-phone"); uid != "alice" || !slices.Equal(tags, was) {
					t.Errorf("after the patch: userId %q tags %v; want alice and %v", uid, tags, was)
				}
				onlyChanged(t, before, after, "alice-phone")
				bobTagAbsent(t, atkResp{}, nil, after)
			}},
		{name: "patch/remove-injected-tag", proves: "the injected userId tag survives a patch removing it",
			run: patch(`[{"op":"remove","path":"/tags/userId:alice"}]`), status: 200, changes: true,
			check: func(t *testing.T, _ atkResp, before, after map[string]string) {
				_, was := stored(t, before, "alice-phone")
				if uid, tags := stored(t, after, "alice-phone"); uid != "alice" || !slices.Contains(tags, "userId:alice") || !slices.Equal(tags, was) {
					t.Errorf("after the patch: userId %q tags %v; want alice and %v", uid, tags, was)
				}
				onlyChanged(t, before, after, "alice-phone")
			}},
	}
}

// headerRows: identity headers a client sends must never reach the app.
func headerRows(e *atkEnv) []attackRow {
	none := func(row string) func(t *testing.T, _ atkResp, _, _ map[string]string) {
		return func(t *testing.T, _ atkResp, _, _ map[string]string) {
			if got := identityIn(e.up.saw(t, row)); len(got) != 0 {
				t.Errorf("identity headers reached the upstream: %v", got)
			}
		}
	}
	get := func(row, token string, hdr ...string) func(t *testing.T) atkResp {
		return func(t *testing.T) atkResp {
			return e.gate(t, "GET", "/app/feed", token, "", append([]string{"Attack-Row", row}, hdr...)...)
		}
	}
	raw := func(row, head string) func(t *testing.T) atkResp {
		return func(t *testing.T) atkResp {
			return e.raw(t, "GET /app/feed HTTP/1.1\nHost: HOST\nAttack-Row: "+row+"\n"+head+"Connection: close\n\n")
		}
	}
	spoof := []string{"X-Pushgate-User", "bob", "X-Pushgate-Subject", "bob", "X-Pushgate-Issuer", "https://evil.example"}
	return []attackRow{
		{name: "headers/spoofed-without-token", proves: "client X-Pushgate-User/-Subject/-Issuer are stripped on pass-through",
			run: get("h1", "", spoof...), status: 200, check: none("h1")},
		{name: "headers/spoofed-with-bad-token", proves: "and with a token that does not verify",
			run: get("h2", "not.a.jwt", spoof...), status: 200, check: none("h2")},
		{name: "headers/spoofed-with-valid-token", proves: "with a valid token the upstream sees only the verified identity, once",
			run: get("h3", e.alice, spoof...), status: 200,
			check: func(t *testing.T, _ atkResp, _, _ map[string]string) {
				got := identityIn(e.up.saw(t, "h3"))
				if !slices.Equal(got["X-Pushgate-User"], []string{"alice"}) || !slices.Equal(got["X-Pushgate-Subject"], []string{"alice"}) ||
					!slices.Equal(got["X-Pushgate-Issuer"], []string{e.idp.Issuer()}) || len(got) != 3 {
					t.Errorf("upstream identity %v", got)
				}
			}},
		{name: "headers/spoofed-on-device-endpoint", proves: "on device endpoints the identity comes from the token only: alice claiming X-Pushgate-User: bob cannot read bob's installation",
			run: func(t *testing.T) atkResp {
				return e.gate(t, "GET", "/push/installations/bob-phone", e.alice, "", spoof...)
			}, status: 403, detail: "belongs to another user"},
		{name: "headers/lower-case-and-duplicated", proves: "header names in any case, repeated, are all stripped (HTTP/1.1, as sent)",
			run: raw("h4", "x-pushgate-user: bob\nX-PUSHGATE-USER: eve\nx-PushGate-Subject: bob\nx-pushgate-user: mallory\n"), status: 200, check: none("h4")},
		{name: "headers/underscore-variant", proves: "X_Pushgate_User (read as X-Pushgate-User by CGI, PHP, WSGI, Rack) does not reach the upstream (Caddy drops underscore names by default)",
			run: raw("h5", "X_Pushgate_User: bob\nx_pushgate_issuer: https://evil.example\n"), status: 200, check: none("h5")},
		{name: "headers/underscore-variant-allowed-by-server", proves: "the gate strips X_Pushgate_User itself, also where the operator lets such names through (expected_underscore_headers)",
			run: func(t *testing.T) atkResp {
				e.reload(t, "\n\t\texpected_underscore_headers x_pushgate_*", true)
				defer e.reload(t, "", false)
				return raw("h5b", "X_Pushgate_User: bob\nx_pushgate_issuer: https://evil.example\n")(t)
			}, status: 200, check: none("h5b")},
		{name: "headers/in-trailer", proves: "an identity header sent as a chunked-body trailer does not reach the upstream",
			run: func(t *testing.T) atkResp {
				return e.raw(t, "POST /app/feed HTTP/1.1\nHost: HOST\nAttack-Row: h6\nTransfer-Encoding: chunked\nTrailer: X-Pushgate-User\nConnection: close\n\n"+
					"5\nhello\n0\nX-Pushgate-User: bob\n\n")
			}, status: 200, check: none("h6")},
		{name: "headers/http2", proves: "the same over HTTP/2 (lower-case on the wire)",
			run: get("h7", "", "x-pushgate-user", "bob", "X_Pushgate_User", "bob"), status: 200, check: none("h7")},
	}
}

// gateInputRows: oversize, deep and costly input on the device endpoints.
func gateInputRows(e *atkEnv) []attackRow {
	put := func(body string) func(t *testing.T) atkResp {
		return func(t *testing.T) atkResp { return e.gate(t, "PUT", "/push/installations/alice-2", e.alice, body) }
	}
	tmpl := func(body string) string {
		b, _ := json.Marshal(map[string]any{"installationId": "alice-2", "platform": "apns", "pushChannel": apnsToken,
			"templates": map[string]any{atkTemplateName: map[string]any{"body": body}}})
		return string(b)
	}
	return []attackRow{
		{name: "gate-input/oversize-body", proves: "a device body over max_body (256 KiB) gets 413",
			run: put(`{"installationId":"alice-2","tags":["` + strings.Repeat("a", 300<<10) + `"]}`), status: 413, detail: "the body exceeds 262144 bytes"},
		{name: "gate-input/oversize-chunked", proves: "also without a Content-Length (chunked, HTTP/1.1)",
			run: func(t *testing.T) atkResp {
				chunk := strings.Repeat("a", 64<<10)
				var b strings.Builder
				b.WriteString("PUT /push/installations/alice-2 HTTP/1.1\nHost: HOST\nAuthorization: Bearer " + e.alice + "\nTransfer-Encoding: chunked\nConnection: close\n\n")
				for range 5 {
					fmt.Fprintf(&b, "%x\n%s\n", len(chunk), chunk)
				}
				b.WriteString("0\n\n")
				return e.raw(t, b.String())
			}, status: 413, detail: "the body exceeds 262144 bytes"},
		{name: "gate-input/header-over-server-limit", proves: "a header over the server's max_header_size (64 KiB here) is refused by Caddy before any handler",
			run: func(t *testing.T) atkResp {
				return e.raw(t, "GET /push/installations/alice-phone HTTP/1.1\nHost: HOST\nX-Filler: "+strings.Repeat("a", 70<<10)+"\nConnection: close\n\n")
			}, status: 431},
		{name: "gate-input/deep-json", proves: "100,000 nested arrays are a 400, not a stack overflow",
			run: put(strings.Repeat("[", 100000)), status: 400},
		{name: "gate-input/deep-json-in-tags", proves: "deep nesting inside a field is a 400 too",
			run: put(`{"installationId":"alice-2","platform":"apns","pushChannel":"` + apnsToken + `","tags":` + strings.Repeat("[", 100000) + `}`), status: 400},
		{name: "gate-input/deep-json-patch", proves: "and in a JSON-Patch",
			run: func(t *testing.T) atkResp {
				return e.gate(t, "PATCH", "/push/installations/alice-phone", e.alice, `[{"op":"add","path":"/tags","value":`+strings.Repeat("[", 100000)+`}]`)
			}, status: 400},
		{name: "gate-input/template-too-many-expressions", proves: "a template with 1,001 expressions is refused when stored",
			run: put(tmpl(`{"aps":{"alert":"{` + strings.Repeat("$(m) + ", 1000) + `$(m)}"}}`)), status: 400, detail: "1000"},
		{name: "gate-input/template-too-long", proves: "a template body over 64 KiB is refused when stored",
			run: put(tmpl(`{"aps":{"alert":"` + strings.Repeat("a", 65<<10) + `"}}`)), status: 400, detail: "65536"},
	}
}

// sasRows: the backend API's shared access signatures and rights.
func sasRows(e *atkEnv) []attackRow {
	get := func(auth string) func(t *testing.T) atkResp {
		return func(t *testing.T) atkResp { return e.nh(t, "GET", "/installations/bob-phone", auth, "") }
	}
	expired := nhwire.Sign(e.root(), atkFull, []byte(atkFullKey), time.Now().Add(-time.Hour))
	sig := regexp.MustCompile(`sig=[^&]+`)
	return []attackRow{
		{name: "sas/none", proves: "no Authorization: 401 before any lookup",
			run: get(""), status: 401, detail: "MissingToken"},
		{name: "sas/forged-signature", proves: "a token signed with a wrong key is refused",
			run: get(e.sas(e.root(), atkFull, "bm90LXRoZS1rZXk=")), status: 401, detail: "InvalidSignature"},
		{name: "sas/tampered-expiry", proves: "extending se without re-signing breaks the signature",
			run: get(strings.Replace(expired, "se="+strings.Split(strings.Split(expired, "se=")[1], "&")[0], fmt.Sprintf("se=%d", time.Now().Add(time.Hour).Unix()), 1)), status: 401, detail: "InvalidSignature"},
		{name: "sas/signature-stripped", proves: "an empty signature is refused",
			run: get(sig.ReplaceAllString(e.full(), "sig=")), status: 401},
		{name: "sas/expired", proves: "an expired token is refused",
			run: get(expired), status: 401, detail: "ExpiredToken"},
		{name: "sas/other-hub", proves: "a token scoped to another hub's URL is refused",
			run: get(e.sas(e.root()+"otherhub", atkFull, atkFullKey)), status: 401, detail: "40104"},
		{name: "sas/other-hub-prefix", proves: "scope is a path prefix at a segment boundary: a token for /at does not cover /atk",
			run: get(e.sas(e.root()+"at", atkFull, atkFullKey)), status: 401, detail: "40104"},
		{name: "sas/other-entity", proves: "a token for one installation does not cover another",
			run: get(e.sas(e.root()+atkHub+"/installations/alice-phone", atkFull, atkFullKey)), status: 401, detail: "40104"},
		{name: "sas/other-host", proves: "a token for another namespace is refused",
			run: get(e.sas("https://other.servicebus.windows.net/", atkFull, atkFullKey)), status: 401, detail: "40104"},
		{name: "sas/unknown-rule", proves: "a rule name the hub does not have is refused",
			run: get(e.sas(e.root(), "RootManageSharedAccessKey", atkFullKey)), status: 401, detail: "InvalidSignature"},
		{name: "sas/listen-key-under-full-name", proves: "a Listen key presented under the Full rule's name does not verify",
			run: get(e.sas(e.root(), atkFull, atkListenKey)), status: 401, detail: "InvalidSignature"},
		{name: "sas/two-authorization-headers", proves: "a second Authorization header is refused",
			run: func(t *testing.T) atkResp {
				return e.nh(t, "GET", "/installations/bob-phone", "", "", "Authorization", e.full(), "Authorization", e.listen())
			}, status: 401, detail: "MissingToken"},
		{name: "sas/bearer-token-on-api", proves: "a device's OIDC token is no key to the backend API",
			run: get("Bearer " + e.alice), status: 401},
		{name: "sas/listen-system-tag", proves: "what a Listen key may write is still validated: no $ tags",
			run: func(t *testing.T) atkResp {
				return e.nh(t, "PUT", "/installations/evil-1", e.listen(), deviceInstallation("evil-1", "$UserId:{bob}"))
			}, status: 400, detail: "reserved for the system"},
		{name: "sas/listen-sends", proves: "a Listen key cannot send (403), nothing is queued",
			run: func(t *testing.T) atkResp {
				return e.nh(t, "POST", "/messages", e.listen(), `{"msg":"x"}`, "ServiceBusNotification-Tags", "userId:bob")
			}, status: 403, detail: "Send claim is required", check: noLocationCheck},
		{name: "sas/listen-sends-direct", proves: "nor send directly to a handle",
			run: func(t *testing.T) atkResp {
				return e.nh(t, "POST", "/messages?direct", e.listen(), `{"aps":{}}`, "ServiceBusNotification-Format", "apple", "ServiceBusNotification-DeviceHandle", apnsToken)
			}, status: 403, detail: "Send claim is required", check: noLocationCheck},
		{name: "sas/listen-schedules", proves: "nor schedule a send",
			run: func(t *testing.T) atkResp {
				return e.nh(t, "POST", "/schedulednotifications", e.listen(), `{"msg":"x"}`, "ServiceBusNotification-ScheduleTime", time.Now().UTC().Add(time.Hour).Format(time.RFC3339))
			}, status: 403, detail: "Send claim is required", check: noLocationCheck},
		{name: "sas/listen-lists-registrations", proves: "a Listen key cannot list every registration",
			run: func(t *testing.T) atkResp { return e.nh(t, "GET", "/registrations", e.listen(), "") }, status: 403, detail: "Manage claim is required"},
		{name: "sas/listen-lists-by-tag", proves: "nor list a user's registrations by tag",
			run: func(t *testing.T) atkResp { return e.nh(t, "GET", "/tags/userId:bob/registrations", e.listen(), "") }, status: 403, detail: "Manage claim is required"},
		{name: "sas/listen-reads-outcome", proves: "nor read notification outcomes",
			run: func(t *testing.T) atkResp { return e.nh(t, "GET", "/messages/abc", e.listen(), "") }, status: 403, detail: "Send claim is required"},
	}
}

// nhInputRows: oversize, deep and costly input on the backend API.
func nhInputRows(e *atkEnv) []attackRow {
	send := func(body string, hdr ...string) func(t *testing.T) atkResp {
		return func(t *testing.T) atkResp { return e.nh(t, "POST", "/messages", e.full(), body, hdr...) }
	}
	exprOf := func(n int, tagLen int) string {
		tags := make([]string, n)
		for i := range tags {
			tags[i] = fmt.Sprintf("t%0*d", tagLen-1, i)
		}
		return strings.Join(tags, " || ")
	}
	deep := strings.Repeat("(", 40) + "a" + strings.Repeat(")", 40)
	var alloc uint64
	return []attackRow{
		{name: "api-input/oversize-send", proves: "a send body over 64 KiB gets 413",
			run: send(`{"msg":"` + strings.Repeat("x", 64<<10) + `"}`), status: 413, detail: "message size cannot be over 64 Kb"},
		{name: "api-input/oversize-installation", proves: "an installation body over 1 MB gets 413, nothing stored",
			run: func(t *testing.T) atkResp {
				return e.nh(t, "PUT", "/installations/evil-1", e.full(), `{"installationId":"evil-1","tags":["`+strings.Repeat("a", 1<<20)+`"]}`)
			}, status: 413, detail: "larger than 1 MB"},
		{name: "api-input/oversize-batch", proves: "a direct batch over 1 MB gets 413",
			run: func(t *testing.T) atkResp {
				body := "--b\r\nContent-Type: application/json\r\nContent-Disposition: inline; name=notification\r\n\r\n{}\r\n--b\r\nContent-Type: application/json\r\nContent-Disposition: inline; name=devices\r\n\r\n['" +
					strings.Repeat("a", 1<<20) + "']\r\n--b--\r\n"
				return e.nh(t, "POST", "/messages/$batch?direct", e.full(), body, "ServiceBusNotification-Format", "fcmv1", "Content-Type", `multipart/mixed; boundary="b"`)
			}, status: 413},
		{name: "api-input/deep-json-installation", proves: "deep JSON in an installation is a 400",
			run: func(t *testing.T) atkResp {
				return e.nh(t, "PUT", "/installations/evil-1", e.full(), strings.Repeat("[", 100000))
			}, status: 400},
		{name: "api-input/deep-json-patch", proves: "deep JSON in a patch is a 400",
			run: func(t *testing.T) atkResp {
				return e.nh(t, "PATCH", "/installations/bob-phone", e.full(), `[{"op":"add","path":"/tags","value":`+strings.Repeat("[", 100000)+`}]`)
			}, status: 400},
		{name: "api-input/deep-xml-registration", proves: "100,000 nested XML elements in a registration are a 400",
			run: func(t *testing.T) atkResp {
				return e.nh(t, "POST", "/registrations", e.full(), `<?xml version="1.0"?><entry xmlns="http://www.w3.org/2005/Atom"><content type="application/xml">`+
					strings.Repeat("<a>", 100000)+strings.Repeat("</a>", 100000)+`</content></entry>`)
			}, status: 400},
		{name: "api-input/deep-json-template-send", proves: "60,000 nested arrays as a template send's property are a 400 at the first '[' (properties are flat strings)",
			run: send(`{"m":` + strings.Repeat("[", 60000) + `]}`), status: 400, detail: `property "m" is an array; template properties must be strings`},
		{name: "api-input/tag-expression-too-many-tags", proves: "a tag expression with 201 tags is refused (limit 200)",
			run: send(`{"msg":"x"}`, "ServiceBusNotification-Tags", exprOf(201, 4)), status: 400, detail: "200", check: noLocationCheck},
		{name: "api-input/tag-expression-too-long", proves: "a tag expression over 16 KiB is refused",
			run: send(`{"msg":"x"}`, "ServiceBusNotification-Tags", exprOf(140, 120)), status: 400, detail: "16384", check: noLocationCheck},
		{name: "api-input/tag-expression-too-deep", proves: "a tag expression nested 40 deep is refused (limit 32)",
			run: send(`{"msg":"x"}`, "ServiceBusNotification-Tags", deep), status: 400, detail: "32", check: noLocationCheck},
		{name: "api-input/tag-expression-at-limit", proves: "the limit is where it says: 200 tags are accepted",
			run: send(`{"msg":"x"}`, "ServiceBusNotification-Tags", exprOf(200, 4)), status: 201},
		{name: "api-input/template-bomb-test-send", proves: "1,000 expansions of a 60 KB property stop at the 64 KiB output limit: each target is InvalidNotificationSize, memory stays small",
			run: func(t *testing.T) atkResp {
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				alloc = ms.TotalAlloc
				r := e.nh(t, "POST", "/messages?test", e.full(), `{"m":"`+strings.Repeat("x", 60000)+`"}`, "ServiceBusNotification-Tags", "bomb")
				runtime.ReadMemStats(&ms)
				alloc = ms.TotalAlloc - alloc
				return r
			}, status: 201,
			check: func(t *testing.T, r atkResp, _, _ map[string]string) {
				if !strings.Contains(r.body, "<Success>0</Success><Failure>3</Failure>") || strings.Count(r.body, "<Outcome>InvalidNotificationSize") != 3 {
					t.Errorf("outcome: %s", abbrev(r.body))
				}
				// Unbounded, three renders would allocate 3 × 1,000 × 60 KB.
				t.Logf("template bomb: the process allocated %d KiB during the test send", alloc>>10)
				if alloc > 64<<20 {
					t.Errorf("the test send allocated %d MiB; a bounded render needs far less than 64 MiB", alloc>>20)
				}
			}},
		{name: "api-input/template-bomb-registration", proves: "a template registration with 1,001 expressions is refused when stored",
			run: func(t *testing.T) atkResp {
				body := `<?xml version="1.0" encoding="utf-8"?><entry xmlns="http://www.w3.org/2005/Atom"><content type="application/xml">` +
					`<AppleTemplateRegistrationDescription xmlns:i="http://www.w3.org/2001/XMLSchema-instance" xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect">` +
					`<Tags>bomb</Tags><DeviceToken>` + apnsToken + `</DeviceToken><BodyTemplate><![CDATA[{"aps":{"alert":"{` + strings.Repeat("$(m) + ", 1000) + `$(m)}"}}]]></BodyTemplate>` +
					`</AppleTemplateRegistrationDescription></content></entry>`
				return e.nh(t, "POST", "/registrations", e.full(), body)
			}, status: 400, detail: "1000"},
	}
}

func noLocationCheck(t *testing.T, r atkResp, _, _ map[string]string) {
	if l := r.header.Get("Location"); l != "" {
		t.Errorf("a refused send has a Location: %s", l)
	}
}
