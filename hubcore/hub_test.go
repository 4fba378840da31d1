package hubcore_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/memstore"
)

const token = "0F9A3C5E7B2D4F6A8C1E3B5D7F9A2C4E6B8D0F1A3C5E7B9D2F4A6C8E0B1D3F5A"

func newHub(t *testing.T) *hubcore.Hub {
	t.Helper()
	st, err := memstore.Open(memstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return hubcore.NewHub(st, hubcore.HubOptions{Now: func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }})
}

func TestHubPutValidatesAndStamps(t *testing.T) {
	h := newHub(t)
	ctx := context.Background()
	in := &hubcore.Installation{InstallationID: "i1", Platform: hubcore.APNS, PushChannel: hubcore.PushChannel{Handle: token},
		Tags: []string{"a"}, PushChannelExpired: true}
	got, err := h.PutInstallation(ctx, in, hubcore.Always)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != 1 || got.PushChannelExpired || got.LastUpdate.IsZero() {
		t.Fatalf("stored %+v", got)
	}
	if !in.PushChannelExpired {
		t.Fatal("PutInstallation modified its argument")
	}
	bad := in.Clone()
	bad.Tags = []string{"$UserId:{eve}"}
	if _, err := h.PutInstallation(ctx, bad, hubcore.Always); hubcore.CodeOf(err) != hubcore.CodeInvalid {
		t.Fatalf("system tag: %v", err)
	}
	if cur, _ := h.Store().GetInstallation(ctx, "i1"); cur.Version != 1 || cur.Tags[0] != "a" {
		t.Fatalf("a refused write changed the stored installation: %+v", cur)
	}
}

func TestHubPatchConcurrent(t *testing.T) {
	h := newHub(t)
	ctx := context.Background()
	in := &hubcore.Installation{InstallationID: "i1", Platform: hubcore.APNS, PushChannel: hubcore.PushChannel{Handle: token}}
	if _, err := h.PutInstallation(ctx, in, hubcore.Always); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ops, err := hubcore.ParsePatch([]byte(fmt.Sprintf(`[{"op":"add","path":"/tags","value":"t%d"}]`, i)))
			if err == nil {
				_, err = h.PatchInstallation(ctx, "i1", ops, hubcore.Always)
			}
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	got, _ := h.Store().GetInstallation(ctx, "i1")
	if len(got.Tags) != 40 || got.Version != 41 {
		t.Fatalf("%d tags at version %d; want 40 at 41", len(got.Tags), got.Version)
	}
	ops, _ := hubcore.ParsePatch([]byte(`[{"op":"add","path":"/tags","value":"x"}]`))
	if _, err := h.PatchInstallation(ctx, "i1", ops, hubcore.Cond{Version: 3}); hubcore.CodeOf(err) != hubcore.CodeConflict {
		t.Fatalf("stale version: %v", err)
	}
}

func TestHubExpressionsAndDryRun(t *testing.T) {
	h := newHub(t)
	ctx := context.Background()
	for i, tags := range [][]string{{"a", "b"}, {"a"}, {"b"}} {
		in := &hubcore.Installation{InstallationID: fmt.Sprint("i", i), Platform: hubcore.FCMV1, PushChannel: hubcore.PushChannel{Handle: fmt.Sprint("tok", i)}, Tags: tags}
		if _, err := h.PutInstallation(ctx, in, hubcore.Always); err != nil {
			t.Fatal(err)
		}
	}
	e, err := h.ParseExpression("a && !b")
	if err != nil {
		t.Fatal(err)
	}
	dr, err := h.DryRun(ctx, hubcore.AudienceQuery{Expr: e, Platform: hubcore.FCMV1})
	if err != nil || dr.Targets != 1 {
		t.Fatalf("dry run: %+v %v", dr, err)
	}
	if _, err := h.ParseExpression("a &&"); hubcore.CodeOf(err) != hubcore.CodeInvalid || !strings.Contains(err.Error(), "position") {
		t.Fatalf("syntax error: %v", err)
	}
	if _, err := h.ParseExpression(strings.Repeat("a || ", 300) + "a"); hubcore.CodeOf(err) != hubcore.CodeLimit {
		t.Fatalf("limit: %v", err)
	}
}
