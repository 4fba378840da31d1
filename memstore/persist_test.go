package memstore_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/storetest"
	"github.com/pushgate/pushgate/memstore"
)

func populate(t *testing.T, s *memstore.Store, now time.Time) {
	t.Helper()
	ctx := context.Background()
	for i, p := range hubcore.Platforms {
		in := storetest.Installation("dev-"+string(p), p, i, "t1")
		in.UserID = "alice"
		in.Templates = map[string]*hubcore.Template{"alert": storetest.TemplateFor(p, "loud")}
		if err := in.Validate(hubcore.Limits{}); err != nil {
			t.Fatal(err)
		}
		in.Stamp(now, hubcore.Limits{})
		if _, err := s.PutInstallation(ctx, in, hubcore.Always); err != nil {
			t.Fatal(err)
		}
		r := storetest.Registration("1-1-"+string(p), p, 100+i, "t2")
		if err := r.Validate(hubcore.Limits{}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.PutRegistration(ctx, r, hubcore.Always); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.ExpireHandle(ctx, hubcore.APNS, storetest.APNSToken(0), now); err != nil || n != 1 {
		t.Fatalf("ExpireHandle: %d, %v", n, err)
	}
}

func export(t *testing.T, s *memstore.Store) string {
	t.Helper()
	var b bytes.Buffer
	if err := s.Export(context.Background(), &b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestSnapshotRoundTrip(t *testing.T) {
	clock := storetest.NewClock(storetest.Epoch)
	path := filepath.Join(t.TempDir(), "hub.ndjson")
	s, err := memstore.Open(memstore.Options{Path: path, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	populate(t, s, clock.Now())
	before := export(t, s)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := s.GetInstallation(context.Background(), "dev-apns"); hubcore.CodeOf(err) != hubcore.CodeUnavailable {
		t.Errorf("get after Close: %v; want CodeUnavailable", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	s2, err := memstore.Open(memstore.Options{Path: path, Now: clock.Now})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s2.Close()
	if after := export(t, s2); after != before {
		t.Errorf("reloaded store differs:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	in, err := s2.GetInstallation(context.Background(), "DEV-APNS")
	if err != nil || !in.PushChannelExpired || in.Templates["alert"].Compiled() == nil {
		t.Errorf("reloaded installation: %+v, %v", in, err)
	}
	if err := s2.Check(context.Background()); err != nil {
		t.Error(err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("snapshot directory holds %d files; want only the snapshot", len(entries))
	}
}

func TestCorruptSnapshot(t *testing.T) {
	clock := storetest.NewClock(storetest.Epoch)
	path := filepath.Join(t.TempDir(), "hub.ndjson")
	s, err := memstore.Open(memstore.Options{Path: path, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	populate(t, s, clock.Now())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(good), "\n")
	lines[2] = `{"installation":{"installationId":"x","platform":"apns","pushChannel":"not a token"}}` + "\n"
	corrupt := []byte(strings.Join(lines, ""))
	if err := os.WriteFile(path, corrupt, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = memstore.Open(memstore.Options{Path: path, Now: clock.Now})
	if err == nil || !strings.Contains(err.Error(), "line 3") || !strings.Contains(err.Error(), path) {
		t.Fatalf("Open of a corrupt snapshot: %v; want an error naming the file and line 3", err)
	}
	if now, _ := os.ReadFile(path); !bytes.Equal(now, corrupt) {
		t.Error("a failed Open changed the snapshot file")
	}
}

func TestSnapshotErrors(t *testing.T) {
	s, err := memstore.Open(memstore.Options{Path: filepath.Join(t.TempDir(), "missing-dir", "hub.ndjson")})
	if err != nil {
		t.Fatal(err)
	}
	populate(t, s, time.Now())
	if err := s.Close(); err == nil {
		t.Error("Close into a missing directory reported no error")
	}
}

// TestPeriodicSnapshot exercises the snapshot goroutine (under -race) and
// Snapshot itself; it does not depend on when the ticker fires.
func TestPeriodicSnapshot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub.ndjson")
	s, err := memstore.Open(memstore.Options{Path: path, SnapshotInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	populate(t, s, time.Now())
	if err := s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || len(bytes.Split(bytes.TrimSpace(b), []byte("\n"))) != 2*len(hubcore.Platforms) {
		t.Errorf("snapshot: %d bytes, %v", len(b), err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestResolveWithoutLock writes to the store from Resolve's callback, which
// would deadlock if Resolve held the lock while calling it.
func TestResolveWithoutLock(t *testing.T) {
	s, err := memstore.Open(memstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	populate(t, s, time.Now())
	ctx := context.Background()
	calls := 0
	err = s.Resolve(ctx, hubcore.AudienceQuery{Template: true}, 1, func(ts []hubcore.Target) error {
		calls++
		return s.DeleteInstallation(ctx, ts[0].InstallationID, hubcore.Always)
	})
	if err != nil || calls == 0 {
		t.Fatalf("Resolve: %v after %d calls", err, calls)
	}
	if err := s.Check(ctx); err != nil {
		t.Error(err)
	}
}
