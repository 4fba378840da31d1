package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pushgate/pushgate/hubcore"
)

// writeFiles writes name→content under dir, creating directories.
// writeFiles writes each file whole: to a hidden temporary name (which the
// engine ignores), then renamed over the old one, as deployments swap
// files. A plain os.WriteFile truncates first, and a watching engine that
// polls between the truncation and the write sees, and rejects, a policy
// nobody wrote.
func writeFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(filepath.Dir(p), "."+filepath.Base(p)+".tmp")
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, p); err != nil {
			t.Fatal(err)
		}
	}
}

func policyDir(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	writeFiles(t, dir, files)
	return dir
}

// reasonPolicy allows with one reason, so a test can tell policies apart.
func reasonPolicy(reason string) string {
	return fmt.Sprintf("package pushgate\n\ndecision := {\"allow\": true, \"reasons\": [%q]}\n", reason)
}

func simpleInput() Input {
	in, err := InputFor(OpCreate, inst("event:a"), nil, nil, alice(nil))
	if err != nil {
		panic(err)
	}
	return in
}

func TestFailClosed(t *testing.T) {
	tests := []struct {
		name    string
		rego    string
		timeout time.Duration
		reason  string
		wantErr string // substring; "" means no error
		check   func(t *testing.T, err error)
	}{
		{name: "undefined decision", rego: `package pushgate
decision := {"allow": true} if input.user.user_id == "root"`,
			reason: ReasonUndefined},
		{name: "missing allow is false", rego: `package pushgate
decision := {"keep": ["event:a"]}`},
		{name: "explicit false", rego: `package pushgate
decision := {"allow": false, "reasons": ["no"]}`, reason: "no"},
		{name: "conflict", rego: `package pushgate
decision := {"allow": true} if input.operation == "create"
decision := {"allow": false} if input.resource == "installation"`,
			reason: ReasonError, wantErr: "conflict",
			check: func(t *testing.T, err error) {
				if !topdown.IsError(err) {
					t.Errorf("error %v is not a topdown error", err)
				}
			}},
		{name: "builtin error is an error, not undefined", rego: `package pushgate
decision := {"allow": to_number(input.user.user_id) > 0}`,
			reason: ReasonError, wantErr: "to_number",
			check: func(t *testing.T, err error) {
				if errors.Is(err, ErrTimeout) {
					t.Errorf("error %v claims a timeout", err)
				}
			}},
		{name: "timeout", timeout: 5 * time.Millisecond, rego: `package pushgate
decision := {"allow": n > 0} if {
	n := count([1 | some x in numbers.range(1, 4000); some y in numbers.range(1, 4000); x == y])
}`,
			reason: ReasonError, wantErr: "cancel",
			check: func(t *testing.T, err error) {
				if !topdown.IsCancel(err) {
					t.Errorf("error %v is not a cancellation", err)
				}
				if !errors.Is(err, ErrTimeout) {
					t.Errorf("error %v does not wrap ErrTimeout", err)
				}
			}},
		{name: "decision not an object", rego: `package pushgate
decision := true`, reason: ReasonError, wantErr: "want an object"},
		{name: "allow not a boolean", rego: `package pushgate
decision := {"allow": "yes"}`, reason: ReasonError, wantErr: "decision.allow"},
		{name: "keep not a list", rego: `package pushgate
decision := {"allow": true, "keep": "event:a"}`, reason: ReasonError, wantErr: "decision.keep"},
		{name: "inject element not a string", rego: `package pushgate
decision := {"allow": true, "inject": [1]}`, reason: ReasonError, wantErr: "decision.inject[0]"},
		{name: "user_id not a string", rego: `package pushgate
decision := {"allow": true, "user_id": null}`, reason: ReasonError, wantErr: "decision.user_id"},
		{name: "unknown key", rego: `package pushgate
decision := {"allow": true, "injct": ["userId:alice"]}`, reason: ReasonError, wantErr: "injct"},
		{name: "invalid injected tag", rego: `package pushgate
decision := {"allow": true, "inject": ["userId:john doe"]}`, reason: ReasonError, wantErr: "invalid tag"},
		{name: "injected system tag", rego: `package pushgate
decision := {"allow": true, "inject": ["$UserId:{bob}"]}`, reason: ReasonError, wantErr: "system tag"},
		{name: "invalid user id", rego: `package pushgate
decision := {"allow": true, "user_id": "a b"}`, reason: ReasonError, wantErr: "decision.user_id"},
		{name: "sets are accepted", rego: `package pushgate
decision := {"allow": true, "keep": {t | some t in input.requested_tags}, "reasons": set()}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := Load(context.Background(), Options{Dir: policyDir(t, map[string]string{"p.rego": tc.rego}), EvalTimeout: tc.timeout})
			if err != nil {
				t.Fatal(err)
			}
			d, err := e.Decide(context.Background(), simpleInput())
			if tc.wantErr == "" && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error = %v, want one mentioning %q", err, tc.wantErr)
			}
			if tc.check != nil {
				tc.check(t, err)
			}
			wantAllow := tc.name == "sets are accepted"
			if d.Allow != wantAllow {
				t.Fatalf("allow = %v, want %v", d.Allow, wantAllow)
			}
			if tc.reason != "" && !slices.Equal(d.Reasons, []string{tc.reason}) {
				t.Errorf("reasons = %q, want [%q]", d.Reasons, tc.reason)
			}
			if d.Revision != 1 {
				t.Errorf("revision = %d, want 1", d.Revision)
			}
		})
	}
}

func TestDecideCancelledContext(t *testing.T) {
	e, err := Load(context.Background(), Options{Dir: policyDir(t, map[string]string{"p.rego": reasonPolicy("ok")})})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d, err := e.Decide(ctx, simpleInput())
	if err == nil || d.Allow {
		t.Fatalf("cancelled context: %s, %v", d, err)
	}
}

func TestLoadRejects(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		query   string
		wantErr string
	}{
		{name: "http.send", wantErr: "http.send", files: map[string]string{"p.rego": `package pushgate
decision := {"allow": http.send({"method": "GET", "url": "http://example.invalid"}).status_code == 200}`}},
		{name: "net.lookup_ip_addr", wantErr: "net.lookup_ip_addr", files: map[string]string{"p.rego": `package pushgate
decision := {"allow": count(net.lookup_ip_addr("example.invalid")) > 0}`}},
		{name: "opa.runtime", wantErr: "opa.runtime", files: map[string]string{"p.rego": `package pushgate
decision := {"allow": opa.runtime().env.X == "1"}`}},
		{name: "syntax error", wantErr: "p.rego", files: map[string]string{"p.rego": "package pushgate\ndecision := {"}},
		{name: "v0 syntax", wantErr: "p.rego", files: map[string]string{"p.rego": "package pushgate\nallow { true }\ndecision := {}"}},
		{name: "unsafe rule", wantErr: "unsafe", files: map[string]string{"p.rego": `package pushgate
decision := {"allow": x == 1}`}},
		{name: "no rule for the query", wantErr: "no rule", files: map[string]string{"p.rego": "package pushgate.v2\ndecision := {}"}},
		{name: "query not a reference", query: "x := data.pushgate.decision", wantErr: "reference", files: map[string]string{"p.rego": reasonPolicy("ok")}},
		{name: "query not ground", query: "data.pushgate[x]", wantErr: "ground", files: map[string]string{"p.rego": reasonPolicy("ok")}},
		{name: "no rego files", wantErr: "no .rego", files: map[string]string{"data.json": "{}"}},
		{name: "only tests", wantErr: "no .rego", files: map[string]string{"p_test.rego": "package pushgate_test\ntest_x if true"}},
		{name: "bad data", wantErr: "data.json", files: map[string]string{"p.rego": reasonPolicy("ok"), "data.json": "{"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(context.Background(), Options{Dir: policyDir(t, tc.files), Query: tc.query})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Load error = %v, want one mentioning %q", err, tc.wantErr)
			}
		})
	}
	if _, err := Load(context.Background(), Options{Dir: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Error("Load of a missing directory succeeded")
	}
	file := filepath.Join(t.TempDir(), "p.rego")
	writeFiles(t, filepath.Dir(file), map[string]string{"p.rego": reasonPolicy("ok")})
	if _, err := Load(context.Background(), Options{Dir: file}); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("Load of a file: %v", err)
	}
	if _, err := Load(context.Background(), Options{}); err == nil {
		t.Error("Load without a directory succeeded")
	}
}

// TestLoadServedFiles checks which files make up the policy: data under its
// directory path, tests, sample inputs and hidden files left out.
func TestLoadServedFiles(t *testing.T) {
	dir := policyDir(t, map[string]string{
		"policy.rego": `package pushgate
decision := {"allow": true, "keep": data.lists.tags, "reasons": [data.note]}`,
		"data.yaml":          "note: from yaml\n",
		"lists/data.json":    `{"tags": ["event:a"]}`,
		"policy_test.rego":   "package pushgate_test\nthis does not parse",
		"input.json":         `{"note": "must not be data"}`,
		"case1.input.json":   `not json`,
		".policy.rego.swp":   "garbage",
		".hidden/x.rego":     "garbage",
		"README.md":          "# notes",
		"lists/ignored.txt":  "text",
		"nested/extra.rego":  "package pushgate.extra\nx := 1",
		"nested/x_test.rego": "garbage",
	})
	e, err := Load(context.Background(), Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"data.yaml", "lists/data.json", "nested/extra.rego", "policy.rego"}
	if got := e.Files(); !slices.Equal(got, want) {
		t.Errorf("files = %q, want %q", got, want)
	}
	d, err := e.Decide(context.Background(), simpleInput())
	if err != nil {
		t.Fatal(err)
	}
	if !d.Allow || !slices.Equal(d.Keep, []string{"event:a"}) || !slices.Equal(d.Reasons, []string{"from yaml"}) {
		t.Errorf("decision %s", d)
	}
	if !strings.HasPrefix(e.Digest(), "sha256:") {
		t.Errorf("digest %q", e.Digest())
	}
}

func TestReload(t *testing.T) {
	ctx := context.Background()
	dir := policyDir(t, map[string]string{"p.rego": reasonPolicy("v1")})
	core, logs := observer.New(zapcore.InfoLevel)
	e, err := Load(ctx, Options{Dir: dir, Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	decide := func() Decision {
		t.Helper()
		d, err := e.Decide(ctx, simpleInput())
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if d := decide(); d.Reasons[0] != "v1" || d.Revision != 1 || e.Revision() != 1 {
		t.Fatalf("initial: %s, revision %d", d, e.Revision())
	}
	digest1 := e.Digest()

	writeFiles(t, dir, map[string]string{"p.rego": reasonPolicy("v2")})
	if err := e.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if d := decide(); d.Reasons[0] != "v2" || d.Revision != 2 || e.Revision() != 2 {
		t.Fatalf("after reload: %s, revision %d", d, e.Revision())
	}
	if e.Digest() == digest1 {
		t.Error("digest unchanged by a new policy")
	}

	for name, broken := range map[string]string{
		"syntax":            "package pushgate\ndecision := {",
		"forbidden builtin": "package pushgate\ndecision := {\"allow\": opa.runtime().env.X == \"1\"}",
		"rule renamed":      "package pushgate\ndecisions := {\"allow\": true}",
	} {
		writeFiles(t, dir, map[string]string{"p.rego": broken})
		if err := e.Reload(ctx); err == nil {
			t.Fatalf("%s: Reload of a broken policy succeeded", name)
		}
		if d := decide(); d.Reasons[0] != "v2" || d.Revision != 2 || e.Revision() != 2 {
			t.Fatalf("%s: after a rejected reload: %s, revision %d", name, d, e.Revision())
		}
	}
	if n := logs.FilterMessageSnippet("policy rejected").Len(); n != 3 {
		t.Errorf("%d rejections logged, want 3", n)
	}
	for _, entry := range logs.FilterMessageSnippet("policy rejected").All() {
		if entry.Level != zapcore.ErrorLevel || entry.ContextMap()["serving_revision"] != uint64(2) {
			t.Errorf("rejection logged as %v with %v", entry.Level, entry.ContextMap())
		}
	}
}

// waitFor polls cond until it holds or a generous deadline passes; the
// deadline is a hang guard, not a speed assertion.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWatch(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := policyDir(t, map[string]string{"p.rego": reasonPolicy("v1")})
	core, logs := observer.New(zapcore.InfoLevel)
	e, err := Load(ctx, Options{Dir: dir, Logger: zap.New(core), PollInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); e.Watch(ctx) }()

	reason := func() string {
		d, err := e.Decide(ctx, simpleInput())
		if err != nil {
			t.Fatal(err)
		}
		return d.Reasons[0]
	}

	writeFiles(t, dir, map[string]string{"p.rego": reasonPolicy("version two")})
	waitFor(t, "the new policy", func() bool { return reason() == "version two" })
	if e.Revision() < 2 {
		t.Errorf("revision %d after a watched change", e.Revision())
	}

	// A new data file is a change too.
	writeFiles(t, dir, map[string]string{"p.rego": `package pushgate
decision := {"allow": true, "reasons": [data.note]}`, "data.json": `{"note": "from data"}`})
	waitFor(t, "the data file", func() bool { return reason() == "from data" })
	rev := e.Revision()

	writeFiles(t, dir, map[string]string{"p.rego": "package pushgate\ndecision := {"})
	waitFor(t, "the rejection", func() bool { return logs.FilterMessageSnippet("policy rejected").Len() > 0 })
	if got := reason(); got != "from data" || e.Revision() != rev {
		t.Fatalf("after a broken write: %q, revision %d (want %d)", got, e.Revision(), rev)
	}
	// The broken policy is reported once, not on every poll.
	time.Sleep(100 * time.Millisecond)
	if n := logs.FilterMessageSnippet("policy rejected").Len(); n != 1 {
		t.Errorf("rejection logged %d times, want 1", n)
	}

	// Deleting a file is a change.
	if err := os.Remove(filepath.Join(dir, "data.json")); err != nil {
		t.Fatal(err)
	}
	writeFiles(t, dir, map[string]string{"p.rego": reasonPolicy("fixed")})
	waitFor(t, "the fixed policy", func() bool { return reason() == "fixed" })
	if e.Revision() <= rev {
		t.Errorf("revision %d did not advance past %d", e.Revision(), rev)
	}

	cancel()
	<-done
}

// TestConcurrentDecideAndReload runs decisions while the policy is swapped
// underneath; under -race it checks the swap is safe, and every decision
// must come whole from the revision it names.
func TestConcurrentDecideAndReload(t *testing.T) {
	ctx := context.Background()
	dir := policyDir(t, map[string]string{"p.rego": reasonPolicy("content-0")})
	// Reloads compete with the deciders for two shared cores (and -race
	// slows both); the test is about consistency, not latency.
	e, err := Load(ctx, Options{Dir: dir, EvalTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	const reloads = 15
	var stop atomic.Bool
	var wg sync.WaitGroup
	var decided atomic.Int64
	for range 8 {
		wg.Go(func() {
			in := simpleInput()
			for !stop.Load() {
				d, err := e.Decide(ctx, in)
				if err != nil {
					t.Error(err)
					return
				}
				// Content i was loaded as revision i+1.
				if want := fmt.Sprintf("content-%d", d.Revision-1); !d.Allow || d.Reasons[0] != want {
					t.Errorf("revision %d decided %s, want reason %q", d.Revision, d, want)
					return
				}
				decided.Add(1)
			}
		})
	}
	for i := 1; i <= reloads; i++ {
		writeFiles(t, dir, map[string]string{"p.rego": reasonPolicy(fmt.Sprintf("content-%d", i))})
		if err := e.Reload(ctx); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if e.Revision() != reloads+1 {
		t.Errorf("revision %d, want %d", e.Revision(), reloads+1)
	}
	t.Logf("%d decisions during %d reloads", decided.Load(), reloads)
}

// TestInputValue checks the hand-built Rego value against what OPA builds
// from the input's JSON, so Decide and EvalFile see the same document.
func TestInputValue(t *testing.T) {
	stored := withTemplate(inst("event:a", "Event:A"), "Greeting", "lang:en")
	stored.UserID = "alice"
	stored.PushVariables = map[string]string{"name": "Alice"}
	ops, err := hubcore.ParsePatch([]byte(`[
		{"op":"add","path":"/tags","value":["event:b"]},
		{"op":"remove","path":"/tags/event:a"},
		{"op":"replace","path":"/templates/Greeting/tags","value":"[\"lang:fr\"]"},
		{"op":"replace","path":"/pushVariables/name","value":"A"}]`))
	if err != nil {
		t.Fatal(err)
	}
	patched, err := hubcore.ApplyPatch(stored, ops, hubcore.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	user := alice(map[string]any{"roles": []any{"beta"}, "n": json.Number("3"), "f": 1.5, "nested": map[string]any{"a": nil}})
	cases := map[string]Input{}
	if cases["patch"], err = InputFor(OpPatch, patched, stored, ops, user); err != nil {
		t.Fatal(err)
	}
	if cases["delete"], err = InputFor(OpDelete, nil, stored, nil, User{Subject: "s"}); err != nil {
		t.Fatal(err)
	}
	reg := &hubcore.Registration{RegistrationID: "1-2-3", Platform: hubcore.APNS, PushChannel: hubcore.PushChannel{Handle: "AB"}, Tags: []string{"x", "X", "y"}}
	if cases["registration"], err = RegistrationInputFor(OpCreate, reg, nil, user); err != nil {
		t.Fatal(err)
	}
	cases["zero"] = Input{}
	cases["struct request"] = Input{Request: stored, RequestedTags: []string{"a"}}

	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := in.Value()
			if err != nil {
				t.Fatal(err)
			}
			data, err := json.Marshal(in)
			if err != nil {
				t.Fatal(err)
			}
			want, err := ast.ValueFromReader(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			if got.Compare(want) != 0 {
				t.Errorf("Value() =\n%v\nJSON gives\n%v", got, want)
			}
		})
	}

	p := cases["patch"]
	// The result's tags: hubcore removes /tags/event:a case-insensitively;
	// the template name is a valid tag, so it is requested too.
	if want := []string{"event:b", "lang:fr", "Greeting"}; !slices.Equal(p.RequestedTags, want) {
		t.Errorf("requested tags %q, want %q", p.RequestedTags, want)
	}
	if got := []string{p.Patch[0].Target, p.Patch[1].Target, p.Patch[2].Target, p.Patch[3].Target}; !slices.Equal(got, []string{"tags", "tag", "template_tags", "push_variable"}) {
		t.Errorf("targets %q", got)
	}
	if !p.Patch[0].TouchesTags || p.Patch[3].TouchesTags || p.Patch[1].Tag != "event:a" || p.Patch[2].Template != "Greeting" || p.Patch[3].Variable != "name" {
		t.Errorf("patch ops %+v", p.Patch)
	}
	if r := cases["registration"].RequestedTags; !slices.Equal(r, []string{"x", "y"}) {
		t.Errorf("registration requested tags %q", r)
	}
	if d := cases["delete"]; d.Request != nil || d.RequestedTags == nil || len(d.RequestedTags) != 0 || d.User.Claims == nil {
		t.Errorf("delete input %+v", d)
	}
}

func TestInputRequestedTagsIncludeTemplateNames(t *testing.T) {
	in := withTemplate(withTemplate(withTemplate(inst("a", "B"), "b"), "Not A Tag", "c", "A"), "$UserId:{x}")
	got := installationTags(in)
	// Templates in name order: "$UserId:{x}" (a system name, not a tag), "Not A Tag", "b".
	if want := []string{"a", "B", "c"}; !slices.Equal(got, want) {
		t.Errorf("requested tags %q, want %q", got, want)
	}
}

func TestEvalFileAndPrint(t *testing.T) {
	ctx := context.Background()
	d, err := EvalFile(ctx, filepath.Join("examples", "per_user"), filepath.Join("examples", "per_user", "input.json"))
	if err != nil {
		t.Fatal(err)
	}
	if d.Allow || !slices.Contains(d.Reasons, "tag userId:bob names another user") {
		t.Fatalf("sample input: %s", d)
	}
	var buf bytes.Buffer
	if err := PrintDecision(&buf, d); err != nil {
		t.Fatal(err)
	}
	want := `{
  "allow": false,
  "reasons": [
    "tag userId:bob names another user"
  ],
  "keep": [
    "event:comment",
    "event:mention",
    "lang:en"
  ],
  "inject": [
    "userId:alice"
  ],
  "user_id": "alice"
}
`
	if buf.String() != want {
		t.Errorf("printed\n%s\nwant\n%s", buf.String(), want)
	}

	buf.Reset()
	if err := PrintDecision(&buf, Decision{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `"keep": []`) {
		t.Errorf("empty lists print as %s", buf.String())
	}

	bad := filepath.Join(t.TempDir(), "in.json")
	writeFiles(t, filepath.Dir(bad), map[string]string{"in.json": `{"requested_tag": []}`})
	if _, err := EvalFile(ctx, filepath.Join("examples", "per_user"), bad); err == nil || !strings.Contains(err.Error(), "requested_tag") {
		t.Errorf("misspelt input key: %v", err)
	}
	if _, err := EvalFile(ctx, filepath.Join("examples", "per_user"), filepath.Join(t.TempDir(), "none.json")); err == nil {
		t.Error("missing input file accepted")
	}
}

func TestDecisionFilterTags(t *testing.T) {
	d := Decision{Keep: []string{"EVENT:A", "lang:en"}, Inject: []string{"userId:alice"}}
	got := d.FilterTags([]string{"event:a", "x", "Event:A", "userid:ALICE", "lang:en"})
	if want := []string{"event:a", "userid:ALICE", "lang:en"}; !slices.Equal(got, want) {
		t.Errorf("FilterTags = %q, want %q", got, want)
	}
	r := &hubcore.Registration{Tags: []string{"x", "lang:en"}}
	d.ApplyRegistration(r)
	if want := []string{"lang:en", "userId:alice"}; !slices.Equal(r.Tags, want) {
		t.Errorf("ApplyRegistration tags = %q, want %q", r.Tags, want)
	}
}
