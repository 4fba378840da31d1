package hubcore_test

import (
	"context"
	"encoding/json"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/payload"
)

type recorder struct {
	mu sync.Mutex
	d  []*hubcore.Delivery
}

func (r *recorder) Send(_ context.Context, d *hubcore.Delivery) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.d = append(r.d, d)
	return nil
}

func TestSendTemplateToUserAndEvent(t *testing.T) {
	h := newHub(t)
	ctx := context.Background()
	apnsTpl := map[string]*hubcore.Template{"alert": {Body: `{"aps":{"alert":"$(msg)","badge":"#(n)"}}`}}
	fcmTpl := map[string]*hubcore.Template{"alert": {Body: `{"message":{"notification":{"title":"$(msg)"},"data":{"city":"$(city)"}}}`}}
	put := func(id string, p hubcore.Platform, handle, user string, tags []string, tpl map[string]*hubcore.Template, vars map[string]string) {
		in := &hubcore.Installation{InstallationID: id, Platform: p, PushChannel: hubcore.PushChannel{Handle: handle}, UserID: user, Tags: tags, Templates: tpl, PushVariables: vars}
		if _, err := h.PutInstallation(ctx, in, hubcore.Always); err != nil {
			t.Fatal(err)
		}
	}
	put("phone", hubcore.APNS, token, "alice", []string{"userId:alice", "event:comment"}, apnsTpl, nil)
	put("tablet", hubcore.FCMV1, "tok:tablet", "alice", []string{"userId:alice", "event:comment"}, fcmTpl, map[string]string{"city": "Oslo"})
	// Same handle as "tablet": whichever the store yields second is skipped,
	// so both carry the same variables and the rendering does not depend on
	// the store's order.
	put("old-tablet", hubcore.FCMV1, "tok:tablet", "alice", []string{"userId:alice", "event:comment"}, fcmTpl, map[string]string{"city": "Oslo"})
	put("muted", hubcore.FCMV1, "tok:muted", "alice", []string{"userId:alice"}, fcmTpl, nil)
	put("bob", hubcore.APNS, strings.ToLower(token[:62])+"aa", "bob", []string{"userId:bob", "event:comment"}, apnsTpl, nil)

	e, err := h.ParseExpression("userId:alice && event:comment")
	if err != nil {
		t.Fatal(err)
	}
	var rec recorder
	out, err := h.Send(ctx, hubcore.Notification{Format: payload.Template, Body: []byte(`{"msg":"New comment","n":"2"}`), Expr: e}, &rec)
	if err != nil {
		t.Fatal(err)
	}
	if out.Targets != 3 || out.ByPlatform[hubcore.APNS].Success != 1 || out.ByPlatform[hubcore.FCMV1].Success != 1 || out.ByPlatform[hubcore.FCMV1].Skipped != 1 {
		t.Fatalf("outcome %+v apns %+v fcm %+v", out, out.ByPlatform[hubcore.APNS], out.ByPlatform[hubcore.FCMV1])
	}
	var bodies []string
	for _, d := range rec.d {
		if !json.Valid(d.Body) {
			t.Fatalf("invalid JSON %s", d.Body)
		}
		bodies = append(bodies, string(d.Body))
	}
	sort.Strings(bodies)
	want := []string{
		`{"aps":{"alert":"New comment","badge":2}}`,
		`{"message":{"notification":{"title":"New comment"},"data":{"city":"Oslo"}}}`,
	}
	if strings.Join(bodies, "\n") != strings.Join(want, "\n") {
		t.Fatalf("bodies:\n%s", strings.Join(bodies, "\n"))
	}
}

func TestSendNativeAndLimits(t *testing.T) {
	h := newHub(t)
	ctx := context.Background()
	in := &hubcore.Installation{InstallationID: "p", Platform: hubcore.APNS, PushChannel: hubcore.PushChannel{Handle: token}, Tags: []string{"news"},
		Templates: map[string]*hubcore.Template{"t": {Body: `{"aps":{"alert":"$(msg)"}}`}}}
	if _, err := h.PutInstallation(ctx, in, hubcore.Always); err != nil {
		t.Fatal(err)
	}
	var rec recorder
	out, err := h.Send(ctx, hubcore.Notification{Format: payload.Apple, Body: []byte(`{"aps":{"alert":"hi"}}`)}, &rec)
	if err != nil || out.ByPlatform[hubcore.APNS].Success != 1 || len(rec.d) != 1 || rec.d[0].InstallationID != "p" {
		t.Fatalf("native broadcast: %+v %v", out, err)
	}
	if _, err := h.Send(ctx, hubcore.Notification{Format: payload.Apple, Body: []byte(`{"aps":` + strings.Repeat(" ", 5000) + `{}}`)}, &rec); hubcore.CodeOf(err) != hubcore.CodeLimit {
		t.Fatalf("oversize native body: %v", err)
	}
	out, err = h.Send(ctx, hubcore.Notification{Format: payload.Template, Body: []byte(`{"msg":"` + strings.Repeat("x", 5000) + `"}`)}, &rec)
	if err != nil || out.ByPlatform[hubcore.APNS].Invalid != 1 {
		t.Fatalf("oversize render must count as invalid: %+v %v", out.ByPlatform[hubcore.APNS], err)
	}
	if _, err := h.Send(ctx, hubcore.Notification{Format: payload.Template, Body: []byte(`{"msg":{"nested":1}}`)}, &rec); hubcore.CodeOf(err) != hubcore.CodeInvalid {
		t.Fatalf("nested properties: %v", err)
	}
}
