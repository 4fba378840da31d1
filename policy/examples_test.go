package policy

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pushgate/pushgate/hubcore"
)

func loadExample(t testing.TB, name string) *Engine {
	t.Helper()
	e, err := Load(context.Background(), Options{Dir: filepath.Join("examples", name)})
	if err != nil {
		t.Fatalf("loading example %s: %v", name, err)
	}
	return e
}

func inst(tags ...string) *hubcore.Installation {
	return &hubcore.Installation{
		InstallationID: "i-1",
		Platform:       hubcore.FCMV1,
		PushChannel:    hubcore.PushChannel{Handle: "fcm-token"},
		Tags:           tags,
	}
}

func withTemplate(in *hubcore.Installation, name string, tags ...string) *hubcore.Installation {
	if in.Templates == nil {
		in.Templates = map[string]*hubcore.Template{}
	}
	in.Templates[name] = &hubcore.Template{Body: `{"message":{"notification":{"body":"$(m)"}}}`, Tags: tags}
	return in
}

func alice(claims map[string]any) User {
	return User{Subject: "s-alice", UserID: "alice", Issuer: "https://id.example", Claims: claims}
}

// exampleCase is one request to an example policy and what must come back.
type exampleCase struct {
	name   string
	op     string
	user   User
	req    *hubcore.Installation
	stored *hubcore.Installation

	allow     bool
	keep      []string // exact, sorted as OPA returns sets
	inject    []string
	userID    string
	reasonHas string // a substring of some reason
}

func TestExamplePolicies(t *testing.T) {
	tests := map[string][]exampleCase{
		"per_user": {
			{name: "allowed prefixes kept, others dropped, userId injected", op: OpCreate, user: alice(nil),
				req:   inst("event:comment", "Lang:en", "topic:news", "vip"),
				allow: true, keep: []string{"Lang:en", "event:comment"}, inject: []string{"userId:alice"}, userID: "alice"},
			{name: "own userId tag is fine", op: OpCreate, user: alice(nil), req: inst("UserId:ALICE"),
				allow: true, keep: []string{}, inject: []string{"userId:alice"}, userID: "alice"},
			{name: "another user's tag denied", op: OpCreate, user: alice(nil), req: inst("event:x", "userId:bob"),
				allow: false, reasonHas: "userId:bob"},
			{name: "another user's tag in a template denied", op: OpCreate, user: alice(nil),
				req:   withTemplate(inst("event:x"), "t1", "USERID:bob"),
				allow: false, reasonHas: "USERID:bob"},
			{name: "template named as another user's tag denied", op: OpCreate, user: alice(nil),
				req:   withTemplate(inst(), "userId:bob"),
				allow: false, reasonHas: "userId:bob"},
			{name: "someone else's installation cannot be replaced", op: OpReplace, user: alice(nil),
				req: inst("event:x"), stored: &hubcore.Installation{InstallationID: "i-1", Platform: hubcore.FCMV1, UserID: "bob"},
				allow: false, reasonHas: "another user"},
			{name: "someone else's installation cannot be deleted", op: OpDelete, user: alice(nil),
				stored: &hubcore.Installation{InstallationID: "i-1", Platform: hubcore.FCMV1, UserID: "bob"},
				allow:  false, reasonHas: "another user"},
			{name: "own installation can be deleted", op: OpDelete, user: alice(nil),
				stored: &hubcore.Installation{InstallationID: "i-1", Platform: hubcore.FCMV1, UserID: "alice"},
				allow:  true, keep: []string{}, inject: []string{"userId:alice"}, userID: "alice"},
			{name: "no user id denied", op: OpCreate, user: User{Subject: "s"}, req: inst("event:x"),
				allow: false, reasonHas: "no user id"},
		},
		"topics": {
			{name: "catalog topics kept", op: OpCreate, user: alice(nil), req: inst("topic:news", "Topic:Sports"),
				allow: true, keep: []string{"Topic:Sports", "topic:news"}, inject: []string{"userId:alice"}, userID: "alice"},
			{name: "everything else dropped, not denied", op: OpCreate, user: alice(nil),
				req:   inst("topic:news", "topic:secret", "userId:bob", "event:x"),
				allow: true, keep: []string{"topic:news"}, inject: []string{"userId:alice"}, userID: "alice"},
			{name: "template named as a topic kept", op: OpCreate, user: alice(nil), req: withTemplate(inst(), "topic:weather"),
				allow: true, keep: []string{"topic:weather"}, inject: []string{"userId:alice"}, userID: "alice"},
		},
		"roles": {
			{name: "held roles kept", op: OpCreate, user: alice(map[string]any{"roles": []any{"beta", "staff"}}),
				req:   inst("role:beta", "role:staff", "event:x", "topic:y"),
				allow: true, keep: []string{"event:x", "role:beta", "role:staff"}, inject: []string{"userId:alice"}, userID: "alice"},
			{name: "non-holder asking for staff denied", op: OpCreate, user: alice(map[string]any{"roles": []any{"beta"}}),
				req:   inst("role:beta", "role:staff"),
				allow: false, reasonHas: "role:staff"},
			{name: "no roles claim, role tag denied", op: OpCreate, user: alice(nil), req: inst("role:beta"),
				allow: false, reasonHas: "needs role beta"},
			{name: "string claim", op: OpCreate, user: alice(map[string]any{"roles": "staff ops"}), req: inst("role:ops"),
				allow: true, keep: []string{"role:ops"}, inject: []string{"userId:alice"}, userID: "alice"},
		},
		"tenants": {
			{name: "own tenant tags kept, tenant tags injected", op: OpCreate, user: alice(map[string]any{"tenant": "acme"}),
				req:   inst("tenant:acme:event:x", "event:y", "tenant:acme"),
				allow: true, keep: []string{"tenant:acme:event:x"}, inject: []string{"tenant:acme", "tenant:acme:userId:alice"}, userID: "alice"},
			{name: "cross-tenant tag denied", op: OpCreate, user: alice(map[string]any{"tenant": "acme"}),
				req:   inst("tenant:globex:event:x"),
				allow: false, reasonHas: "another tenant"},
			{name: "look-alike tenant denied", op: OpCreate, user: alice(map[string]any{"tenant": "acme"}),
				req:   inst("tenant:acme2:event:x"),
				allow: false, reasonHas: "tenant:acme2:event:x"},
			{name: "other tenant's installation", op: OpReplace, user: alice(map[string]any{"tenant": "acme"}),
				req: inst(), stored: inst("tenant:globex"),
				allow: false, reasonHas: "another tenant"},
			{name: "no tenant claim", op: OpCreate, user: alice(nil), req: inst("tenant:acme:x"),
				allow: false, reasonHas: "no tenant"},
		},
	}
	ctx := context.Background()
	for name, cases := range tests {
		e := loadExample(t, name)
		for _, tc := range cases {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				in, err := InputFor(tc.op, tc.req, tc.stored, nil, tc.user)
				if err != nil {
					t.Fatal(err)
				}
				d, err := e.Decide(ctx, in)
				if err != nil {
					t.Fatalf("Decide: %v", err)
				}
				if d.Allow != tc.allow {
					t.Fatalf("allow = %v, want %v (%s)", d.Allow, tc.allow, d)
				}
				if tc.reasonHas != "" && !slices.ContainsFunc(d.Reasons, func(r string) bool { return strings.Contains(r, tc.reasonHas) }) {
					t.Errorf("reasons %q do not mention %q", d.Reasons, tc.reasonHas)
				}
				if !tc.allow {
					return
				}
				if !slices.Equal(d.Keep, tc.keep) {
					t.Errorf("keep = %q, want %q", d.Keep, tc.keep)
				}
				if !slices.Equal(d.Inject, tc.inject) {
					t.Errorf("inject = %q, want %q", d.Inject, tc.inject)
				}
				if d.UserID != tc.userID {
					t.Errorf("user_id = %q, want %q", d.UserID, tc.userID)
				}
				if d.Revision != 1 {
					t.Errorf("revision = %d, want 1", d.Revision)
				}
			})
		}
	}
}

// TestExamplePatch checks that a patch is judged on its result: adding
// another user's tag through /tags is denied like a PUT.
func TestExamplePatch(t *testing.T) {
	e := loadExample(t, "per_user")
	stored := inst("event:a")
	stored.UserID = "alice"
	ops, err := hubcore.ParsePatch([]byte(`[{"op":"add","path":"/tags","value":["event:b","userId:bob"]}]`))
	if err != nil {
		t.Fatal(err)
	}
	patched, err := hubcore.ApplyPatch(stored, ops, hubcore.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	in, err := InputFor(OpPatch, patched, stored, ops, alice(nil))
	if err != nil {
		t.Fatal(err)
	}
	d, err := e.Decide(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if d.Allow || !slices.Contains(d.Reasons, "tag userId:bob names another user") {
		t.Fatalf("patch adding userId:bob: %s", d)
	}
}

// TestApplyInstallation checks the decision as the gate applies it.
func TestApplyInstallation(t *testing.T) {
	e := loadExample(t, "topics")
	req := withTemplate(withTemplate(inst("topic:news", "vip", "TOPIC:NEWS"), "topic:secret"), "Main Template", "topic:sports", "userId:bob")
	req.UserID = "bob" // chosen by the device: must not survive
	in, err := InputFor(OpCreate, req, nil, nil, alice(nil))
	if err != nil {
		t.Fatal(err)
	}
	d, err := e.Decide(context.Background(), in)
	if err != nil || !d.Allow {
		t.Fatalf("Decide: %s, %v", d, err)
	}
	removed := d.ApplyInstallation(req)
	if want := []string{"topic:news", "userId:alice"}; !slices.Equal(req.Tags, want) {
		t.Errorf("tags = %q, want %q", req.Tags, want)
	}
	if !slices.Equal(removed, []string{"topic:secret"}) || req.Templates["topic:secret"] != nil {
		t.Errorf("removed templates %q; templates %v", removed, req.Templates)
	}
	if got := req.Templates["Main Template"].Tags; !slices.Equal(got, []string{"topic:sports"}) {
		t.Errorf("template tags = %q", got)
	}
	if req.UserID != "alice" {
		t.Errorf("userId = %q, want alice", req.UserID)
	}
	if err := req.Validate(hubcore.Limits{}); err != nil {
		t.Errorf("applied installation does not validate: %v", err)
	}
}
