package caddymodule

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/internal/redistest"
	"github.com/pushgate/pushgate/redisstore"
)

// TestFsck checks a consistent hub, then one whose index lost an entry, and
// refuses a hub that does not exist (without creating it).
func TestFsck(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	defer srv.Stop()
	ctx := context.Background()
	ro := redis.UniversalOptions{Addrs: []string{srv.Addr}}
	st, err := redisstore.New(ctx, redisstore.Options{Redis: ro, Hub: "fsck", Shards: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	h := hubcore.NewHub(st, hubcore.HubOptions{})
	for _, id := range []string{"a", "b", "c"} {
		in := &hubcore.Installation{InstallationID: id, Platform: hubcore.FCMV1, PushChannel: hubcore.PushChannel{Handle: "tok-" + id}, Tags: []string{"news"}}
		if _, err := h.PutInstallation(ctx, in, hubcore.Always); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	if err := fsckHub(ctx, ro, "fsck", &out); err != nil || !strings.Contains(out.String(), "hub fsck: consistent (2 shards)") {
		t.Fatalf("consistent hub: %v, %q", err, out.String())
	}
	// Lose the tag index of every shard behind the store's back.
	keys, err := st.Client().Keys(ctx, "{pg:fsck:*}:s:*").Result()
	if err != nil || len(keys) == 0 {
		t.Fatalf("index keys: %v, %v", keys, err)
	}
	if err := st.Client().Del(ctx, keys...).Err(); err != nil {
		t.Fatal(err)
	}
	if err := fsckHub(ctx, ro, "fsck", &out); err == nil || !strings.Contains(err.Error(), "inconsistencies") {
		t.Fatalf("corrupted hub: %v", err)
	}
	if err := fsckHub(ctx, ro, "nosuchhub", &out); err == nil || !strings.Contains(err.Error(), `no hub "nosuchhub"`) {
		t.Fatalf("unknown hub: %v", err)
	}
	if n, _ := st.Client().Exists(ctx, "{pg:nosuchhub}:cfg").Result(); n != 0 {
		t.Fatal("fsck created the hub it was asked to check")
	}
}
