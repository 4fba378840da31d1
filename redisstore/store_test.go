package redisstore

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/storetest"
	"github.com/pushgate/pushgate/hubcore/tagexpr"
	"github.com/pushgate/pushgate/internal/redistest"
)

func openTest(t *testing.T, shards int, clock *storetest.Clock) *Store {
	t.Helper()
	srv := redistest.Shared(t)
	opts := Options{Redis: redis.UniversalOptions{Addrs: []string{srv.Addr}}, Hub: newHub("unit"), Shards: shards}
	if clock != nil {
		opts.Now = clock.Now
	}
	s, err := New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func put(t *testing.T, s *Store, in *hubcore.Installation) *hubcore.Installation {
	t.Helper()
	if err := in.Validate(hubcore.Limits{MaxTags: 200}); err != nil {
		t.Fatal(err)
	}
	in.Stamp(s.now(), hubcore.Limits{})
	got, err := s.PutInstallation(context.Background(), in, hubcore.Always)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func inst(id string, tags ...string) *hubcore.Installation {
	return &hubcore.Installation{InstallationID: id, Platform: hubcore.FCMV1, PushChannel: hubcore.PushChannel{Handle: "tok-" + id}, Tags: tags}
}

func count(t *testing.T, s *Store, expr string) int64 {
	t.Helper()
	e, err := tagexpr.Parse(expr, tagexpr.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	n, err := s.Count(context.Background(), hubcore.AudienceQuery{Expr: e, Platform: hubcore.FCMV1})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func mustCheck(t *testing.T, s *Store) {
	t.Helper()
	if err := s.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// tierOf reports where a tag's entries are in a shard: 1, 2, 3 or 0.
func tierOf(t *testing.T, s *Store, sh int, tg string) int {
	t.Helper()
	ctx := context.Background()
	k := s.l.tagKeys(sh, tg)
	if n, _ := s.rdb.Exists(ctx, k.bitmap).Result(); n == 1 {
		return 3
	}
	if n, _ := s.rdb.Exists(ctx, k.set).Result(); n == 1 {
		return 2
	}
	if n, _ := s.rdb.HExists(ctx, k.small, k.f6).Result(); n {
		return 1
	}
	return 0
}

// TestTiers grows one tag through all three tiers and shrinks it back,
// checking the index and the audience at every threshold.
func TestTiers(t *testing.T) {
	s := openTest(t, 1, nil)
	ctx := context.Background()
	const n = tier2Max + 40
	steps := map[int]int{1: 1, tier1Max: 1, tier1Max + 1: 2, tier2Max: 2, tier2Max + 1: 3, n: 3}
	for i := 1; i <= n; i++ {
		put(t, s, inst(fmt.Sprintf("i%d", i), "grow", fmt.Sprintf("own%d", i)))
		if want, ok := steps[i]; ok {
			if got := tierOf(t, s, 0, "grow"); got != want {
				t.Fatalf("after %d members: tier %d; want %d", i, got, want)
			}
			if c := count(t, s, "grow"); c != int64(i) {
				t.Fatalf("after %d members: count %d", i, c)
			}
			mustCheck(t, s)
		}
	}
	down := map[int]int{tier2Min + 1: 3, tier2Min: 2, tier1Min + 1: 2, tier1Min: 1, 0: 0}
	for i := n; i >= 1; i-- {
		if err := s.DeleteInstallation(ctx, fmt.Sprintf("i%d", i), hubcore.Always); err != nil {
			t.Fatal(err)
		}
		left := i - 1
		if want, ok := down[left]; ok {
			if got := tierOf(t, s, 0, "grow"); got != want {
				t.Fatalf("down to %d members: tier %d; want %d", left, got, want)
			}
			if c := count(t, s, "grow && !own1"); c != int64(max(left-1, 0)) {
				t.Fatalf("down to %d members: count %d", left, c)
			}
			mustCheck(t, s)
		}
	}
}

// TestSpill stores a record too large for a bucket and shrinks it again.
func TestSpill(t *testing.T) {
	s := openTest(t, 2, nil)
	ctx := context.Background()
	var tags []string
	for i := 0; i < 100; i++ {
		tags = append(tags, fmt.Sprintf("a-rather-long-tag-name-number-%03d", i))
	}
	put(t, s, inst("small-1", "x"))
	big := put(t, s, inst("big", tags...))
	if len(big.Tags) != 100 {
		t.Fatalf("stored %d tags", len(big.Tags))
	}
	got, err := s.GetInstallation(ctx, "BIG")
	if err != nil || len(got.Tags) != 100 || got.Tags[99] != tags[99] {
		t.Fatalf("get: %v, %v", got, err)
	}
	if c := count(t, s, tags[42]); c != 1 {
		t.Fatalf("count of a spilled record's tag: %d", c)
	}
	page, err := s.ListInstallations(ctx, hubcore.ListQuery{}, hubcore.PageRequest{})
	if err != nil || len(page.Items) != 2 {
		t.Fatalf("list: %d, %v", len(page.Items), err)
	}
	mustCheck(t, s)
	put(t, s, inst("big", "x"))
	if c := count(t, s, "x"); c != 2 {
		t.Fatalf("after shrinking: %d", c)
	}
	mustCheck(t, s)
}

// TestCheckFindsInconsistencies corrupts a consistent hub in several ways
// and expects Check to name each.
func TestCheckFindsInconsistencies(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name   string
		break_ func(t *testing.T, s *Store)
		want   string
	}{
		{"index entry removed", func(t *testing.T, s *Store) {
			sh := hashOf(hInstallation, "i1").shard(s.l.shards)
			k := s.l.tagKeys(sh, "rare")
			if err := s.rdb.HDel(ctx, k.small, k.f6).Err(); err != nil {
				t.Fatal(err)
			}
		}, `tag "rare"`},
		{"stray set member", func(t *testing.T, s *Store) {
			for sh := 0; sh < s.l.shards; sh++ {
				if tierOf(t, s, sh, "common") == 2 {
					if err := s.rdb.SAdd(ctx, s.l.tagKeys(sh, "common").set, 99999).Err(); err != nil {
						t.Fatal(err)
					}
					return
				}
			}
			t.Fatal("no shard holds common in tier 2")
		}, `tag "common" (tiers 2/3)`},
		{"universe bit cleared", func(t *testing.T, s *Store) {
			sh := hashOf(hInstallation, "i1").shard(s.l.shards)
			sl, err := s.locate(ctx, hInstallation, "i1")
			if err != nil {
				t.Fatal(err)
			}
			if err := s.rdb.SetBit(ctx, s.l.universe(sh), sl.iid, 0).Err(); err != nil {
				t.Fatal(err)
			}
		}, "universe bitmap"},
		{"id map entry lost", func(t *testing.T, s *Store) {
			h := hashOf(hInstallation, "i2")
			sh := h.shard(s.l.shards)
			if err := s.rdb.HDel(ctx, s.l.idBucket(sh, h.bucket(s.l.buckets)), h.field()).Err(); err != nil {
				t.Fatal(err)
			}
		}, "id map"},
		{"record deleted behind the index's back", func(t *testing.T, s *Store) {
			sl, err := s.locate(ctx, hInstallation, "i3")
			if err != nil {
				t.Fatal(err)
			}
			if err := s.rdb.HDel(ctx, s.l.recBucket(sl.sh, bucketOf(sl.iid)), fmt.Sprint(slotOf(sl.iid))).Err(); err != nil {
				t.Fatal(err)
			}
		}, "count n="},
		{"two records for one id", func(t *testing.T, s *Store) {
			one, err := s.locate(ctx, hInstallation, "i1")
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; ; i++ {
				other, err := s.locate(ctx, hInstallation, fmt.Sprintf("c%d", i))
				if err != nil {
					t.Fatal(err)
				}
				if other.sh == one.sh {
					// c<i>'s record now holds i1 too, as a lost
					// compare-and-set would leave it.
					if err := s.rdb.HSet(ctx, s.l.recBucket(other.sh, bucketOf(other.iid)), fmt.Sprint(slotOf(other.iid)), one.raw).Err(); err != nil {
						t.Fatal(err)
					}
					return
				}
			}
		}, "both hold i1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := openTest(t, 3, nil)
			put(t, s, inst("i1", "rare", "common"))
			put(t, s, inst("i2", "common"))
			put(t, s, inst("i3", "common"))
			for i := 0; i < 3*(tier1Max+1)*3; i++ {
				put(t, s, inst(fmt.Sprintf("c%d", i), "common"))
			}
			mustCheck(t, s)
			c.break_(t, s)
			err := s.Check(ctx)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Check after %s: %v; want an error mentioning %q", c.name, err, c.want)
			}
		})
	}
}

// TestSweep deletes expired entries, leaves tombstones for registrations
// and keeps the index consistent.
func TestSweep(t *testing.T) {
	clock := storetest.NewClock(storetest.Epoch)
	s := openTest(t, 2, clock)
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		in := inst(fmt.Sprintf("e%d", i), "t")
		if i%2 == 0 {
			in.ExpirationTime = clock.Now().Add(time.Hour)
		}
		put(t, s, in)
	}
	r := &hubcore.Registration{RegistrationID: "7-7-7", Platform: hubcore.FCMV1, PushChannel: hubcore.PushChannel{Handle: "r"}, Tags: []string{"t"}, ExpirationTime: clock.Now().Add(time.Hour)}
	if _, err := s.PutRegistration(ctx, r, hubcore.Always); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("early sweep: %d, %v", n, err)
	}
	clock.Advance(2 * time.Hour)
	if n, err := s.Sweep(ctx); err != nil || n != 11 {
		t.Fatalf("sweep: %d, %v; want 11", n, err)
	}
	mustCheck(t, s)
	if c := count(t, s, "t"); c != 10 {
		t.Fatalf("audience after sweep: %d", c)
	}
	if _, err := s.PutRegistration(ctx, r, hubcore.Always); hubcore.CodeOf(err) != hubcore.CodeGone {
		t.Fatalf("put at a swept registration's id: %v; want gone", err)
	}
	clock.Advance(hubcore.RegistrationIDTTL)
	if _, err := s.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.rdb.HLen(ctx, s.l.regIDs(hashOf(hRegistration, "7-7-7").shard(2))).Result(); n != 0 {
		t.Fatalf("%d markers left after the TTL", n)
	}
}

// TestTemplateCollision plants other content under a template's hash: the
// write must notice and store the template inline.
func TestTemplateCollision(t *testing.T) {
	s := openTest(t, 1, nil)
	ctx := context.Background()
	in := inst("c1")
	in.Templates = map[string]*hubcore.Template{"alert": {Body: `{"data":{"m":"$(m)"}}`}}
	content, h := contentOf("alert", in.Templates["alert"])
	other := encodeTemplate("alert", &hubcore.Template{Body: `{"data":{"other":"1"}}`})
	if other == content {
		t.Fatal("bad fixture")
	}
	if err := s.rdb.HSet(ctx, s.l.tpl(0), hashed(h).full(), other).Err(); err != nil {
		t.Fatal(err)
	}
	put(t, s, in)
	got, err := s.GetInstallation(ctx, "c1")
	if err != nil || got.Templates["alert"].Body != `{"data":{"m":"$(m)"}}` {
		t.Fatalf("get: %+v, %v", got, err)
	}
}

func TestShardsFixedAtCreation(t *testing.T) {
	srv := redistest.Shared(t)
	ctx := context.Background()
	hub := newHub("cfg")
	open := func(shards int) (*Store, error) {
		return New(ctx, Options{Redis: redis.UniversalOptions{Addrs: []string{srv.Addr}}, Hub: hub, Shards: shards})
	}
	s, err := open(4)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := open(8); err == nil {
		t.Fatal("reopening with another shard count succeeded")
	}
	s, err = open(0)
	if err != nil || s.Shards() != 4 {
		t.Fatalf("reopening with Shards 0: %v (shards %d)", err, s.Shards())
	}
	s.Close()
	if _, err := New(ctx, Options{Redis: redis.UniversalOptions{Addrs: []string{srv.Addr}}, Hub: "a{b}"}); err == nil {
		t.Fatal("a hub name with braces was accepted")
	}
}

// TestBitmapScans resolves conjunctions over tags held as bitmaps (tier 3),
// which standalone servers scan without the script, and over a mix of
// tiers, which falls back to it, and compares each with the expected ids.
func TestBitmapScans(t *testing.T) {
	s := openTest(t, 1, nil)
	const n = 3*tier2Max + 200 // a (every 2nd) and b (every 3rd) above the bitmap threshold
	want := map[string]map[string]bool{}
	for i := 0; i < n; i++ {
		var tags []string
		if i%2 == 0 {
			tags = append(tags, "a")
		}
		if i%3 == 0 {
			tags = append(tags, "b")
		}
		if i%50 == 0 {
			tags = append(tags, "c") // tier 2
		}
		id := fmt.Sprintf("i%d", i)
		put(t, s, inst(id, tags...))
		has := map[string]bool{}
		for _, tg := range tags {
			has[tg] = true
		}
		for expr, ok := range map[string]bool{
			"a && b": has["a"] && has["b"], "a && !b": has["a"] && !has["b"], "b && c": has["b"] && has["c"], "a || b": has["a"] || has["b"],
		} {
			if want[expr] == nil {
				want[expr] = map[string]bool{}
			}
			if ok {
				want[expr]["tok-"+id] = true
			}
		}
	}
	if tierOf(t, s, 0, "a") != 3 || tierOf(t, s, 0, "b") != 3 || tierOf(t, s, 0, "c") != 2 {
		t.Fatalf("tiers a=%d b=%d c=%d; want 3, 3, 2", tierOf(t, s, 0, "a"), tierOf(t, s, 0, "b"), tierOf(t, s, 0, "c"))
	}
	before := bitmapScans.Load()
	for expr, w := range want {
		e, err := tagexpr.Parse(expr, tagexpr.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		err = s.Resolve(context.Background(), hubcore.AudienceQuery{Expr: e, Platform: hubcore.FCMV1}, 100, func(ts []hubcore.Target) error {
			for _, tg := range ts {
				if got[tg.Channel.Handle] {
					return fmt.Errorf("%s twice", tg.Channel.Handle)
				}
				got[tg.Channel.Handle] = true
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		if len(got) != len(w) {
			t.Fatalf("%s: %d targets; want %d", expr, len(got), len(w))
		}
		for h := range w {
			if !got[h] {
				t.Fatalf("%s: %s missing", expr, h)
			}
		}
	}
	if bitmapScans.Load() == before {
		t.Fatal("no scan took the bitmap path")
	}
	mustCheck(t, s)
}
