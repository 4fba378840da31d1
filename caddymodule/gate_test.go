package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/internal/oidcauth"
	"github.com/pushgate/pushgate/internal/redistest"
	"github.com/pushgate/pushgate/memstore"
	"github.com/pushgate/pushgate/policy"
	"github.com/pushgate/pushgate/redisstore"
)

const apnsToken = "0F9A3C5E7B2D4F6A8C1E3B5D7F9A2C4E6B8D0F1A3C5E7B9D2F4A6C8E0B1D3F5A"

// fakeVerifier accepts "Bearer <user>" for a fixed set of users: the gate's
// logic is tested here; token verification has its own tests with a real
// OpenID provider.
type fakeVerifier struct{}

func (fakeVerifier) Verify(_ context.Context, h string) (*oidcauth.Identity, error) {
	u, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || (u != "alice" && u != "bob") {
		return nil, &oidcauth.Error{Status: 401, Code: "invalid_token", Description: "unknown test token", Reason: "bad_signature"}
	}
	return &oidcauth.Identity{Issuer: "https://idp.test", Subject: "sub-" + u, UserID: u, TokenType: "access_token"}, nil
}

type nextRecorder struct {
	called bool
	header http.Header
}

func (n *nextRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	n.called, n.header = true, r.Header.Clone()
	w.WriteHeader(http.StatusTeapot)
	return nil
}

func newTestGate(t *testing.T) (*Gate, hubcore.Store) {
	t.Helper()
	st, err := memstore.Open(memstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	eng, err := policy.Load(context.Background(), policy.Options{Dir: "../policy/examples/per_user"})
	if err != nil {
		t.Fatal(err)
	}
	m, _ := registerMetrics(nil)
	g := &Gate{Hub: "demo", Prefix: "/push", MaxBodyBytes: 64 << 10,
		hub: hubcore.NewHub(st, hubcore.HubOptions{}), verifier: fakeVerifier{}, decider: eng,
		regIDs: &registerIDs{key: []byte(strings.Repeat("k", 32))}, metrics: m, logger: zap.NewNop()}
	return g, st
}

type result struct {
	status int
	body   map[string]any
	header http.Header
}

func do(t *testing.T, g *Gate, method, path, user, body string) result {
	t.Helper()
	r := httptest.NewRequest(method, "https://localhost"+path, strings.NewReader(body))
	if user != "" {
		r.Header.Set("Authorization", "Bearer "+user)
	}
	w := httptest.NewRecorder()
	if err := g.ServeHTTP(w, r, &nextRecorder{}); err != nil {
		t.Fatal(err)
	}
	res := result{status: w.Code, header: w.Header()}
	if w.Body.Len() > 0 {
		if err := json.Unmarshal(w.Body.Bytes(), &res.body); err != nil {
			t.Fatalf("%s %s: non-JSON body %q", method, path, w.Body.String())
		}
	}
	return res
}

func installation(tags ...string) string {
	b, _ := json.Marshal(map[string]any{"installationId": "dev1", "platform": "apns", "pushChannel": apnsToken, "tags": tags})
	return string(b)
}

func TestGateRegistersWithPolicy(t *testing.T) {
	g, st := newTestGate(t)
	ctx := context.Background()

	res := do(t, g, "PUT", "/push/installations/dev1", "alice", installation("event:comment", "sports", "lang:en"))
	if res.status != 200 {
		t.Fatalf("create: %d %v", res.status, res.body)
	}
	in, err := st.GetInstallation(ctx, "dev1")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(in.Tags, ","); got != "event:comment,lang:en,userId:alice" || in.UserID != "alice" {
		t.Fatalf("stored tags %q user %q: the policy keeps event:/lang:, drops the rest and injects userId", got, in.UserID)
	}
	if dropped, _ := res.body["droppedTags"].([]any); len(dropped) != 1 || dropped[0] != "sports" {
		t.Fatalf("the response must name the dropped tags: %v", res.body)
	}

	// Another user's tag is refused outright, and nothing changes.
	res = do(t, g, "PUT", "/push/installations/dev1", "alice", installation("userId:bob"))
	if res.status != 403 || !strings.Contains(res.body["message"].(string), "userId:bob") {
		t.Fatalf("foreign userId tag: %d %v", res.status, res.body)
	}
	if again, _ := st.GetInstallation(ctx, "dev1"); again.Version != in.Version {
		t.Fatal("a refused request changed the installation")
	}

	// Installation-id takeover: bob can neither read, replace, patch nor delete it.
	for _, c := range []struct{ method, body string }{
		{"GET", ""}, {"PUT", installation("event:x")}, {"PATCH", `[{"op":"add","path":"/tags","value":"event:y"}]`}, {"DELETE", ""},
	} {
		res = do(t, g, c.method, "/push/installations/dev1", "bob", c.body)
		if res.status != 403 {
			t.Errorf("bob %s alice's installation: %d %v", c.method, res.status, res.body)
		}
	}
	if again, _ := st.GetInstallation(ctx, "dev1"); again.Version != in.Version || again.PushChannelExpired {
		t.Fatal("a takeover attempt changed the installation")
	}

	// A patch can neither remove the injected tag nor add a system tag.
	res = do(t, g, "PATCH", "/push/installations/dev1", "alice", `[{"op":"remove","path":"/tags/userId:alice"},{"op":"add","path":"/tags","value":"event:like"}]`)
	if res.status != 200 {
		t.Fatalf("patch: %d %v", res.status, res.body)
	}
	in, _ = st.GetInstallation(ctx, "dev1")
	if got := strings.Join(in.Tags, ","); got != "event:comment,lang:en,event:like,userId:alice" {
		t.Fatalf("after patch: %q (the injected tag must survive)", got)
	}
	res = do(t, g, "PATCH", "/push/installations/dev1", "alice", `[{"op":"add","path":"/tags","value":"$UserId:{bob}"}]`)
	if res.status != 400 {
		t.Fatalf("system tag by patch: %d %v", res.status, res.body)
	}

	// Unauthenticated requests get 401 with a WWW-Authenticate header.
	res = do(t, g, "GET", "/push/installations/dev1", "", "")
	if res.status != 401 || !strings.HasPrefix(res.header.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("no token: %d %v", res.status, res.header)
	}
	res = do(t, g, "GET", "/push/installations/dev1", "mallory", "")
	if res.status != 401 || !strings.Contains(res.header.Get("WWW-Authenticate"), "invalid_token") {
		t.Fatalf("bad token: %d %v", res.status, res.header)
	}
}

func TestGateSignOffRestores(t *testing.T) {
	g, st := newTestGate(t)
	ctx := context.Background()
	if res := do(t, g, "PUT", "/push/installations/dev1", "alice", installation("event:comment")); res.status != 200 {
		t.Fatal(res)
	}
	if res := do(t, g, "DELETE", "/push/installations/dev1", "alice", ""); res.status != 204 {
		t.Fatal(res)
	}
	in, _ := st.GetInstallation(ctx, "dev1")
	if !in.PushChannelExpired || len(in.Tags) != 2 {
		t.Fatalf("signed off: %+v", in)
	}
	n, _ := st.Count(ctx, hubcore.AudienceQuery{Platform: hubcore.APNS})
	if n != 0 {
		t.Fatal("a signed-off device must leave every audience")
	}
	// A tag patch is not a sign-in: the handle stays dead. Only a new
	// pushChannel (below) or a PUT brings it back.
	if res := do(t, g, "PATCH", "/push/installations/dev1", "alice", `[{"op":"add","path":"/tags","value":"event:like"}]`); res.status != 200 {
		t.Fatal(res)
	}
	if in, _ = st.GetInstallation(ctx, "dev1"); !in.PushChannelExpired {
		t.Fatalf("a tag patch revived a signed-off device: %+v", in)
	}
	// Signing in again with a new handle and no tags restores the grants.
	body := strings.Replace(installation(), apnsToken, strings.Repeat("AB", 32), 1)
	if res := do(t, g, "PUT", "/push/installations/dev1", "alice", body); res.status != 200 {
		t.Fatal(res)
	}
	in, _ = st.GetInstallation(ctx, "dev1")
	if in.PushChannelExpired || strings.Join(slices.Sorted(slices.Values(in.Tags)), ",") != "event:comment,event:like,userId:alice" {
		t.Fatalf("after signing in again: %+v", in)
	}
	if res := do(t, g, "DELETE", "/push/installations/dev1?forget=true", "alice", ""); res.status != 204 {
		t.Fatal(res)
	}
	if _, err := st.GetInstallation(ctx, "dev1"); hubcore.CodeOf(err) != hubcore.CodeNotFound {
		t.Fatalf("forget must delete: %v", err)
	}
}

func TestGateRegisterFlow(t *testing.T) {
	g, st := newTestGate(t)
	res := do(t, g, "POST", "/push/register", "alice", "")
	id, _ := res.body["id"].(string)
	if res.status != 200 || id == "" {
		t.Fatalf("new id: %d %v", res.status, res.body)
	}
	body := `{"platform":"fcmv1","handle":"tok:abc","tags":["event:comment","userId:alice"]}`
	if res := do(t, g, "PUT", "/push/register/"+id, "alice", body); res.status != 200 {
		t.Fatalf("register: %d %v", res.status, res.body)
	}
	in, err := st.GetInstallation(context.Background(), id)
	if err != nil || in.UserID != "alice" || in.PushChannel.Handle != "tok:abc" {
		t.Fatalf("%+v %v", in, err)
	}
	// An id this hub never issued, or a forged one, is gone: the device restarts.
	for _, bad := range []string{"123-456-1", id[:len(id)-2] + "00"} {
		if res := do(t, g, "PUT", "/push/register/"+bad, "alice", body); res.status != 410 {
			t.Errorf("PUT /register/%s: %d %v", bad, res.status, res.body)
		}
	}
	// An id issued more than a day ago and never used is gone too.
	old := g.regIDs.issue(time.Now().Add(-25 * time.Hour))
	if res := do(t, g, "PUT", "/push/register/"+old, "alice", body); res.status != 410 {
		t.Errorf("expired id: %d", res.status)
	}
	if res := do(t, g, "PUT", "/push/register/"+id, "bob", body); res.status != 403 {
		t.Errorf("bob over alice's registration: %d", res.status)
	}
	if res := do(t, g, "DELETE", "/push/register/"+id+"?forget=true", "alice", ""); res.status != 204 {
		t.Errorf("delete: %d", res.status)
	}
}

func TestGatePassThroughStripsIdentity(t *testing.T) {
	g, _ := newTestGate(t)
	r := httptest.NewRequest("GET", "https://localhost/api/feed", nil)
	r.Header.Set("X-Pushgate-User", "admin")
	r.Header.Set("Authorization", "Bearer alice")
	next := &nextRecorder{}
	if err := g.ServeHTTP(httptest.NewRecorder(), r, next); err != nil {
		t.Fatal(err)
	}
	if !next.called || next.header.Get("X-Pushgate-User") != "" {
		t.Fatalf("identity header forwarded: %v", next.header)
	}
	g.IdentityHeaders = true
	r.Header.Set("X-Pushgate-User", "admin")
	if err := g.ServeHTTP(httptest.NewRecorder(), r, next); err != nil {
		t.Fatal(err)
	}
	if next.header.Get("X-Pushgate-User") != "alice" {
		t.Fatalf("verified identity not passed: %v", next.header)
	}
	// A path that merely starts with the prefix is not the gate's.
	r = httptest.NewRequest("GET", "https://localhost/pushy", nil)
	next = &nextRecorder{}
	_ = g.ServeHTTP(httptest.NewRecorder(), r, next)
	if !next.called {
		t.Fatal("/pushy must pass through")
	}
}

func TestGateBadInput(t *testing.T) {
	g, _ := newTestGate(t)
	cases := []struct {
		method, path, body string
		status             int
	}{
		{"PUT", "/push/installations/dev1", `{"installationId":`, 400},
		{"PUT", "/push/installations/dev1", `{"installationId":"other","platform":"apns","pushChannel":"` + apnsToken + `"}`, 400},
		{"PUT", "/push/installations/dev1", `{"platform":"apns","pushChannel":"xyz"}`, 400},
		{"PUT", "/push/installations/dev1", strings.Repeat(" ", 70<<10), 413},
		{"PATCH", "/push/installations/dev1", `[{"op":"add","path":"/platform","value":"wns"}]`, 400},
		{"PATCH", "/push/installations/nope", `[{"op":"add","path":"/tags","value":"event:x"}]`, 404},
		{"POST", "/push/installations/dev1", ``, 405},
		{"GET", "/push/unknown", ``, 404},
		{"PUT", "/push/register/x", `not json`, 400},
	}
	for _, c := range cases {
		if res := do(t, g, c.method, c.path, "alice", c.body); res.status != c.status {
			t.Errorf("%s %s: %d %v; want %d", c.method, c.path, res.status, res.body, c.status)
		}
	}
}

// slowDecider times out like a policy engine starved of CPU.
type slowDecider struct{}

func (slowDecider) Decide(context.Context, policy.Input) (policy.Decision, error) {
	return policy.Decision{}, fmt.Errorf("%w: eval_cancel_error: context deadline exceeded", policy.ErrTimeout)
}

// TestGatePolicyTimeout: a policy that cannot decide in time still lets
// nothing through, but says "retry" (503 + Retry-After), not "forbidden".
func TestGatePolicyTimeout(t *testing.T) {
	g, st := newTestGate(t)
	g.decider = slowDecider{}
	res := do(t, g, "PUT", "/push/installations/dev1", "alice", installation("event:comment"))
	if res.status != 503 || res.header.Get("Retry-After") == "" {
		t.Fatalf("PUT with a timed-out policy: %+v", res)
	}
	if _, err := st.GetInstallation(context.Background(), "dev1"); hubcore.CodeOf(err) != hubcore.CodeNotFound {
		t.Fatalf("a timed-out decision stored something: %v", err)
	}
}

// TestGateStaleCopyDecidesNothing: the gate decides a write on its store's
// remembered copy of the installation, which may be stale after another
// process wrote. Here process A remembers alice's device at version 1;
// process B deletes it for good and bob registers the same id, again at
// version 1. Alice's next PUT or PATCH through A is decided on A's memory,
// which says the device is hers: the write must still fail its
// precondition and be decided again on bob's record (403).
func TestGateStaleCopyDecidesNothing(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := context.Background()
	open := func() hubcore.Store {
		st, err := redisstore.New(ctx, redisstore.Options{Redis: redis.UniversalOptions{Addrs: []string{srv.Addr}}, Hub: "stale"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	gateOn := func(st hubcore.Store) *Gate {
		g, _ := newTestGate(t)
		g.hub = hubcore.NewHub(st, hubcore.HubOptions{})
		return g
	}
	a, b := gateOn(open()), gateOn(open())
	rr, ok := a.hub.Store().(recentReader)
	if !ok {
		t.Fatal("the Redis store offers no remembered copies: this test tests nothing")
	}
	for _, method := range []string{"PUT", "PATCH"} {
		if r := do(t, a, "PUT", "/push/installations/dev1", "alice", installation("event:a")); r.status != 200 {
			t.Fatalf("alice's PUT through A: %d %v", r.status, r.body)
		}
		if r := do(t, b, "DELETE", "/push/installations/dev1?forget=true", "alice", ""); r.status != 204 {
			t.Fatalf("alice's delete through B: %d %v", r.status, r.body)
		}
		if r := do(t, b, "PUT", "/push/installations/dev1", "bob", installation("event:b")); r.status != 200 {
			t.Fatalf("bob's PUT through B: %d %v", r.status, r.body)
		}
		bobs, err := b.hub.Store().GetInstallation(ctx, "dev1")
		if err != nil {
			t.Fatal(err)
		}
		// A still remembers alice's record, at the version bob's has now.
		if in, found := rr.RecentInstallation(ctx, "dev1"); !found || in.UserID != "alice" || in.Version != bobs.Version {
			t.Fatalf("A's remembered copy %+v, %v, bob's record %+v; the test needs alice's at the same version", in, found, bobs)
		}
		body := installation("event:a")
		if method == "PATCH" {
			body = `[{"op":"add","path":"/tags","value":"event:c"}]`
		}
		if r := do(t, a, method, "/push/installations/dev1", "alice", body); r.status != http.StatusForbidden {
			t.Fatalf("alice's %s through A over bob's device: %d %v", method, r.status, r.body)
		}
		in, err := b.hub.Store().GetInstallation(ctx, "dev1")
		if err != nil || in.UserID != "bob" || in.Version != bobs.Version || slices.Contains(in.Tags, "event:a") || slices.Contains(in.Tags, "event:c") {
			t.Fatalf("stored after alice's %s: %+v, %v", method, in, err)
		}
		if r := do(t, b, "DELETE", "/push/installations/dev1?forget=true", "bob", ""); r.status != 204 {
			t.Fatalf("bob's delete through B: %d %v", r.status, r.body)
		}
	}
}
