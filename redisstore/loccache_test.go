package redisstore

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/internal/redistest"
)

// roundTrips counts the commands and pipelines a client sends.
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { r.n.Add(1); return next(ctx, cmd) }
}
func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { r.n.Add(1); return next(ctx, cmds) }
}

// TestLocationGuess checks that a remembered id-map value saves a round
// trip on reads and writes, and that a wrong guess — another process
// moved, deleted or recreated the installation — costs a round trip and
// nothing else: every answer matches what that other process wrote.
func TestLocationGuess(t *testing.T) {
	srv := redistest.Shared(t)
	ctx := context.Background()
	hub := newHub("loc")
	open := func() *Store {
		s, err := New(ctx, Options{Redis: redis.UniversalOptions{Addrs: []string{srv.Addr}}, Hub: hub, Shards: 2})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := open(), open()
	rt := &roundTrips{}
	a.rdb.AddHook(rt)

	put(t, a, inst("x", "t1"))
	rt.n.Store(0)
	got, err := a.GetInstallation(ctx, "x")
	if err != nil || got.Tags[0] != "t1" {
		t.Fatalf("get: %v %v", got, err)
	}
	if n := rt.n.Load(); n != 1 {
		t.Errorf("a GET with a remembered location took %d round trips, want 1", n)
	}

	// b deletes x and fills its iid with another installation, then
	// recreates x elsewhere: a's guess now names y's record.
	if err := b.DeleteInstallation(ctx, "x", hubcore.Always); err != nil {
		t.Fatal(err)
	}
	put(t, b, inst("y", "ty"))
	if _, err := a.GetInstallation(ctx, "x"); hubcore.CodeOf(err) != hubcore.CodeNotFound {
		t.Fatalf("get after another process deleted it: %v", err)
	}
	put(t, b, inst("x", "t2"))
	rt.n.Store(0)
	got, err = a.GetInstallation(ctx, "x")
	if err != nil || got.Tags[0] != "t2" {
		t.Fatalf("get after another process recreated it: %v %v", got, err)
	}
	if n := rt.n.Load(); n != 2 {
		t.Errorf("a GET with a wrong guess took %d round trips, want 2", n)
	}

	// A stale guess on a conditional write: b updates x, a writes with the
	// version it last saw and must get a conflict carrying b's version.
	seen := got.Version
	up := inst("x", "t3")
	up.Stamp(b.now(), hubcore.Limits{})
	cur, err := b.PutInstallation(ctx, up, hubcore.Always)
	if err != nil {
		t.Fatal(err)
	}
	stale := inst("x", "t4")
	stale.Stamp(a.now(), hubcore.Limits{})
	_, err = a.PutInstallation(ctx, stale, hubcore.Cond{Version: seen})
	var he *hubcore.Error
	if !errors.As(err, &he) || he.Code != hubcore.CodeConflict || he.Current != cur.Version {
		t.Fatalf("stale conditional write: %v", err)
	}
	// After that fresh read, a's snapshot is current: a replacing write is
	// the write script alone.
	rt.n.Store(0)
	again := inst("x", "t5")
	again.Stamp(a.now(), hubcore.Limits{})
	if _, err := a.PutInstallation(ctx, again, hubcore.Always); err != nil {
		t.Fatal(err)
	}
	if n := rt.n.Load(); n != 1 {
		t.Errorf("a PUT from a current snapshot took %d round trips, want 1", n)
	}
	// b writes behind a's back; a's next write starts from its stale
	// snapshot, is refused by the script and succeeds on a fresh read,
	// without losing b's write's effects on the index.
	put(t, b, inst("x", "t6"))
	last := inst("x", "t7")
	last.Stamp(a.now(), hubcore.Limits{})
	if _, err := a.PutInstallation(ctx, last, hubcore.Always); err != nil {
		t.Fatal(err)
	}
	if got, err := b.GetInstallation(ctx, "x"); err != nil || strings.Join(got.Tags, ",") != "t7" {
		t.Fatalf("after a write from a stale snapshot: %v %v", got, err)
	}
	if n := count(t, a, "t6"); n != 0 {
		t.Fatalf("t6 still indexed %d times", n)
	}
	mustCheck(t, a)
}
