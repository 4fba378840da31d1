package policy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pushgate/pushgate/hubcore"
)

// cacheOf returns the loaded policy's cache, nil when it has none.
func cacheOf(e *Engine) *decisionCache { return e.cur.Load().cache }

func pathStrings(c *decisionCache) []string {
	var out []string
	for _, p := range c.paths {
		parts := make([]string, len(p))
		for i, t := range p {
			parts[i] = strings.Trim(t.String(), `"`)
		}
		out = append(out, strings.Join(parts, "."))
	}
	return out
}

// TestInputPaths: the key is made of what the rules read, and a policy
// whose answer may change between two identical requests is not cached.
func TestInputPaths(t *testing.T) {
	const allow = `"allow": true, "reasons": [], "keep": [], "inject": [], "user_id": "x"`
	cases := []struct {
		name   string
		rego   string
		paths  []string // nil: no cache
		cached bool
	}{
		{"constant", `decision := {` + allow + `}`, nil, true},
		{"user id and tags", `decision := {"allow": count(input.requested_tags) < 3, "reasons": [], "keep": [], "inject": [input.user.user_id], "user_id": "x"}`,
			[]string{"requested_tags", "user.user_id"}, true},
		{"a computed key reads the whole object", `decision := {"allow": input.user.claims[k] == "x", "reasons": [k], "keep": [], "inject": [], "user_id": "x"} if some k, _ in input.user.claims`,
			[]string{"user.claims"}, true},
		{"a path under another is implied", `decision := {"allow": input.stored.userId == input.stored.userId, "reasons": [], "keep": [], "inject": [], "user_id": "x"} if input.stored`,
			[]string{"stored"}, true},
		{"bare input is the whole document", `decision := {"allow": object.get(input, "operation", "") == "create", "reasons": [], "keep": [], "inject": [], "user_id": "x"}`,
			[]string{""}, true},
		{"clock", `decision := {"allow": time.now_ns() > 0, "reasons": [], "keep": [], "inject": [], "user_id": "x"}`, nil, false},
		{"random", `decision := {"allow": rand.intn("x", 2) == 0, "reasons": [], "keep": [], "inject": [], "user_id": "x"}`, nil, false},
		{"print", "decision := {" + allow + "} if {\n\tprint(input.operation)\n}", nil, false},
		{"clock in a helper", "ok if time.now_ns() > 0\ndecision := {" + allow + "} if ok", nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, err := Load(context.Background(), Options{Dir: policyDir(t, map[string]string{"p.rego": "package pushgate\n\n" + tc.rego + "\n"})})
			if err != nil {
				t.Fatal(err)
			}
			c := cacheOf(e)
			if (c != nil) != tc.cached {
				t.Fatalf("cache %v; want cached=%v", c, tc.cached)
			}
			if c != nil && !slices.Equal(pathStrings(c), tc.paths) {
				t.Fatalf("paths %q; want %q", pathStrings(c), tc.paths)
			}
		})
	}
	e, err := Load(context.Background(), Options{Dir: filepath.Join("examples", "per_user")})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := pathStrings(cacheOf(e)), []string{"requested_tags", "stored.userId", "user.user_id"}; !slices.Equal(got, want) {
		t.Fatalf("per_user reads %q; want %q", got, want)
	}
	if e, err := Load(context.Background(), Options{Dir: filepath.Join("examples", "per_user"), DecisionCacheSize: -1}); err != nil || cacheOf(e) != nil {
		t.Fatalf("DecisionCacheSize -1: %v, cache %v", err, cacheOf(e))
	}
}

// TestDecisionCacheReuse: a request that differs only where the policy
// does not look gets the cached answer; one that differs where it looks
// is evaluated.
func TestDecisionCacheReuse(t *testing.T) {
	ctx := context.Background()
	e := loadExample(t, "per_user")
	stored := func(owner, handle string) *hubcore.Installation {
		in := inst("event:old")
		in.UserID, in.PushChannel.Handle, in.Version = owner, handle, int64(len(handle))
		in.LastUpdate = time.Unix(int64(len(handle)), 0)
		return in
	}
	decide := func(req, st *hubcore.Installation, u User) Decision {
		t.Helper()
		in, err := InputFor(OpReplace, req, st, nil, u)
		if err != nil {
			t.Fatal(err)
		}
		d, err := e.Decide(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	first := decide(inst("event:a", "lang:en"), stored("alice", "h1"), alice(nil))
	if first.Cached || !first.Allow {
		t.Fatalf("first decision %+v", first)
	}
	other := inst("event:a", "lang:en")
	other.InstallationID, other.PushChannel.Handle = "i-2", "another-token"
	again := decide(other, stored("alice", "handle-two"), alice(map[string]any{"email": "a@example.com"}))
	if !again.Cached {
		t.Fatal("a request equal on every path the policy reads was evaluated again")
	}
	first.Cached = true
	if !reflect.DeepEqual(first, again) {
		t.Fatalf("cached %+v; evaluated %+v", again, first)
	}
	again.Keep[0] = "changed"
	if d := decide(other, stored("alice", "h3"), alice(nil)); slices.Contains(d.Keep, "changed") {
		t.Fatal("changing a returned decision changed the cache")
	}
	for name, d := range map[string]Decision{
		"other tags":   decide(inst("event:a", "lang:de"), stored("alice", "h1"), alice(nil)),
		"other owner":  decide(inst("event:a", "lang:en"), stored("bob", "h1"), alice(nil)),
		"not stored":   decide(inst("event:a", "lang:en"), nil, alice(nil)),
		"another user": decide(inst("event:a", "lang:en"), stored("alice", "h1"), User{Subject: "s-bob", UserID: "bob"}),
	} {
		if d.Cached {
			t.Errorf("%s: a request that differs where the policy reads got a cached decision", name)
		}
	}
}

// TestDecisionCacheMatchesEvaluation: over many random requests, every
// example policy answers the same with and without its cache, and the
// cache is used.
func TestDecisionCacheMatchesEvaluation(t *testing.T) {
	ctx := context.Background()
	rnd := rand.New(rand.NewPCG(7, 11))
	pick := func(xs []string) string { return xs[rnd.IntN(len(xs))] }
	tagPool := []string{"event:a", "Event:A", "lang:en", "userId:alice", "userId:bob", "UserId:Alice", "topic:news", "Topic:secret",
		"role:beta", "role:staff", "tenant:acme", "tenant:acme:event:x", "tenant:globex:x", "vip"}
	claimPool := []map[string]any{nil, {"roles": []any{"beta"}}, {"roles": "staff ops"}, {"tenant": "acme"}, {"tenant": "globex", "roles": []any{"staff"}}}
	users := []string{"alice", "bob", ""}
	randomInst := func() *hubcore.Installation {
		in := inst()
		for range rnd.IntN(4) {
			in.Tags = append(in.Tags, pick(tagPool))
		}
		in.Tags = slices.Compact(in.Tags)
		if rnd.IntN(4) == 0 {
			withTemplate(in, pick([]string{"t1", "topic:news", "userId:bob"}), pick(tagPool))
		}
		in.PushChannel.Handle = fmt.Sprintf("h%d", rnd.IntN(1000)) // never read by the examples
		in.Version = int64(rnd.IntN(1000))
		return in
	}
	for _, name := range []string{"per_user", "roles", "tenants", "topics"} {
		t.Run(name, func(t *testing.T) {
			cached := loadExample(t, name)
			plain, err := Load(ctx, Options{Dir: filepath.Join("examples", name), DecisionCacheSize: -1})
			if err != nil {
				t.Fatal(err)
			}
			if cacheOf(cached) == nil {
				t.Fatal("the example is not cached")
			}
			hits := 0
			for i := range 3000 {
				op := pick([]string{OpCreate, OpReplace, OpDelete})
				var req, stored *hubcore.Installation
				if op != OpDelete {
					req = randomInst()
				}
				if op != OpCreate {
					stored = randomInst()
					stored.UserID = pick(users)
				}
				u := User{Subject: "s", UserID: pick(users), Claims: claimPool[rnd.IntN(len(claimPool))]}
				in, err := InputFor(op, req, stored, nil, u)
				if err != nil {
					t.Fatal(err)
				}
				got, gerr := cached.Decide(ctx, in)
				want, werr := plain.Decide(ctx, in)
				if got.Cached {
					hits++
				}
				got.Cached = false
				if !reflect.DeepEqual(got, want) || (gerr == nil) != (werr == nil) {
					t.Fatalf("request %d (%s by %q): cached %+v, %v; evaluated %+v, %v", i, op, u.UserID, got, gerr, want, werr)
				}
			}
			if hits < 100 {
				t.Fatalf("%d of 3000 decisions came from the cache; the test does not exercise it", hits)
			}
			t.Logf("%d of 3000 decisions from the cache", hits)
		})
	}
}

func TestDecisionCacheBounded(t *testing.T) {
	c := newDecisionCache(nil, 8)
	for i := range 100 {
		c.put([32]byte{byte(i)}, Decision{Reasons: []string{fmt.Sprint(i)}})
		if n := len(c.cur) + len(c.old); n > 8 {
			t.Fatalf("%d entries held after %d puts; the bound is 8", n, i+1)
		}
	}
	// The newest entries are kept; one read from the old generation
	// survives the next turnover.
	if _, ok := c.get([32]byte{99}); !ok {
		t.Fatal("the newest entry is gone")
	}
	if _, ok := c.get([32]byte{92}); !ok {
		t.Fatal("an entry of the old generation is gone")
	}
	for i := 100; i < 104; i++ {
		c.put([32]byte{byte(i)}, Decision{})
	}
	if _, ok := c.get([32]byte{92}); !ok {
		t.Fatal("an entry read from the old generation did not survive the turnover")
	}
	if _, ok := c.get([32]byte{0}); ok {
		t.Fatal("the oldest entry is still held")
	}
}
