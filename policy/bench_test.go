package policy

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushgate/pushgate/hubcore"
)

// benchInput is a realistic per_user request: an FCM installation with a
// template, five requested tags, replacing the user's own stored record.
func benchInput() Input {
	req := withTemplate(inst("event:comment", "event:mention", "lang:en", "topic:news", "vip"), "Greeting Template")
	req.PushVariables = map[string]string{"name": "Alice"}
	stored := inst("event:comment")
	stored.UserID = "alice"
	in, err := InputFor(OpReplace, req, stored, nil, alice(map[string]any{"email": "alice@example.com", "roles": []any{"beta"}}))
	if err != nil || len(in.RequestedTags) != 5 {
		panic(fmt.Sprintf("bench input: %v, %d requested tags", err, len(in.RequestedTags)))
	}
	return in
}

// decideGo is examples/per_user/policy.rego written in plain Go: the floor
// any policy engine is measured against.
func decideGo(in *Input) Decision {
	uid := in.User.UserID
	if uid == "" {
		return Decision{Reasons: []string{"no user id: the token did not identify a user"}, Keep: []string{}, Inject: []string{}}
	}
	userTag := "userId:" + uid
	d := Decision{UserID: uid, Inject: []string{userTag}, Keep: make([]string, 0, len(in.RequestedTags))}
	for _, t := range in.RequestedTags {
		lt := strings.ToLower(t)
		if strings.HasPrefix(lt, "event:") || strings.HasPrefix(lt, "lang:") {
			d.Keep = append(d.Keep, t)
		}
		if strings.HasPrefix(lt, "userid:") && lt != strings.ToLower(userTag) {
			d.Reasons = append(d.Reasons, fmt.Sprintf("tag %s names another user", t))
		}
	}
	if s, ok := in.Stored.(map[string]any); ok {
		if owner, ok := s["userId"].(string); ok && owner != "" && !strings.EqualFold(owner, uid) {
			d.Reasons = append(d.Reasons, "the installation belongs to another user")
		}
	}
	// Rego returns sets sorted; so must the floor, to do the same work.
	slices.Sort(d.Keep)
	slices.Sort(d.Reasons)
	if d.Reasons == nil {
		d.Reasons = []string{}
	}
	d.Allow = len(d.Reasons) == 0
	return d
}

// goFloor times decideGo by hand: testing.Benchmark cannot run inside a
// benchmark (they share a lock), and the rego cases want the ratio beside
// their own figures.
var goFloor = sync.OnceValue(func() float64 {
	in := benchInput()
	n := 0
	start := time.Now()
	for time.Since(start) < 200*time.Millisecond {
		for range 100 {
			decideGo(&in)
		}
		n += 100
	}
	return float64(time.Since(start).Nanoseconds()) / float64(n)
})

func benchmarkGo(b *testing.B) {
	in := benchInput()
	b.ReportAllocs()
	for b.Loop() {
		if d := decideGo(&in); !d.Allow || len(d.Keep) != 3 {
			b.Fatal(d)
		}
	}
}

// BenchmarkDecide measures one decision of the per_user example: with the
// input converted by Input.Value (what Decide does), with OPA converting the
// Input struct itself (rego.EvalInput, a JSON round trip), and the same
// decision in plain Go. The rego cases report x_go, their cost as a
// multiple of the Go floor.
func BenchmarkDecide(b *testing.B) {
	// Evaluated every time: the cache is off.
	e, err := Load(context.Background(), Options{Dir: filepath.Join("examples", "per_user"), DecisionCacheSize: -1})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	check := func(b *testing.B, d Decision, err error) {
		if err != nil || !d.Allow || len(d.Keep) != 3 {
			b.Fatal(d, err)
		}
	}
	b.Run("rego/EvalParsedInput", func(b *testing.B) {
		in := benchInput()
		b.ReportAllocs()
		for b.Loop() {
			d, err := e.Decide(ctx, in)
			check(b, d, err)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/goFloor(), "x_go")
	})
	b.Run("rego/EvalInput", func(b *testing.B) {
		in := benchInput()
		b.ReportAllocs()
		for b.Loop() {
			d, err := e.decideRaw(ctx, in)
			check(b, d, err)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/goFloor(), "x_go")
	})
	// The same request again and again: the decision comes from the cache,
	// which still builds the input and digests the paths the policy reads.
	b.Run("cached", func(b *testing.B) {
		c := loadExample(b, "per_user")
		in := benchInput()
		b.ReportAllocs()
		for b.Loop() {
			d, err := c.Decide(ctx, in)
			check(b, d, err)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/goFloor(), "x_go")
	})
	b.Run("go", benchmarkGo)
}

// BenchmarkInputFor measures building the input from hubcore values (done
// once per request, before Decide).
func BenchmarkInputFor(b *testing.B) {
	req := withTemplate(inst("event:comment", "event:mention", "lang:en", "topic:news", "vip"), "Greeting Template")
	stored := inst("event:comment")
	stored.UserID = "alice"
	user := alice(map[string]any{"email": "alice@example.com"})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := InputFor(OpReplace, req, stored, nil, user); err != nil {
			b.Fatal(err)
		}
	}
}

// TestDecideGoMatchesPolicy keeps the Go floor honest: it must decide as
// the Rego policy does, or the ratio compares different work.
func TestDecideGoMatchesPolicy(t *testing.T) {
	e := loadExample(t, "per_user")
	bob := &hubcore.Installation{InstallationID: "i-1", Platform: hubcore.FCMV1, UserID: "bob"}
	for _, tc := range []struct {
		req, stored *hubcore.Installation
		user        User
	}{
		{req: inst("event:a", "Lang:x", "vip"), user: alice(nil)},
		{req: inst("event:a", "userId:bob", "USERID:carol"), user: alice(nil)},
		{req: inst("event:a"), stored: bob, user: alice(nil)},
		{req: inst("event:a"), user: User{Subject: "s"}},
	} {
		in, err := InputFor(OpReplace, tc.req, tc.stored, nil, tc.user)
		if err != nil {
			t.Fatal(err)
		}
		got, err := e.Decide(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		want := decideGo(&in)
		got.Revision = 0
		if got.String() != want.String() {
			t.Errorf("rego %s\n  go %s", got, want)
		}
	}
}

// BenchmarkInputValue measures Decide's conversion of the input to a Rego
// value, the part EvalParsedInput saves over OPA's own conversion.
func BenchmarkInputValue(b *testing.B) {
	in := benchInput()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := in.Value(); err != nil {
			b.Fatal(err)
		}
	}
}
