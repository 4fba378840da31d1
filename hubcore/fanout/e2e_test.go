package fanout_test

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"testing"
	"time"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/apns"
	"github.com/pushgate/pushgate/hubcore/fanout"
	"github.com/pushgate/pushgate/hubcore/fcm"
	"github.com/pushgate/pushgate/hubcore/webpush"
	"github.com/pushgate/pushgate/hubcore/wns"
	"github.com/pushgate/pushgate/internal/pnsfake"
	apnsfake "github.com/pushgate/pushgate/internal/pnsfake/apns"
	fcmfake "github.com/pushgate/pushgate/internal/pnsfake/fcm"
	webpushfake "github.com/pushgate/pushgate/internal/pnsfake/webpush"
	wnsfake "github.com/pushgate/pushgate/internal/pnsfake/wns"
)

// TestEndToEndAllPlatforms sends one template send to installations on
// the four platforms through the real senders and the strict fakes: each
// device gets its own rendering (the Web Push fake decrypts it), a handle
// the service reports gone is expired and listed as feedback, and a
// throttled delivery is retried after the service's Retry-After.
func TestEndToEndAllPlatforms(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		// APNs
		p8, pub, err := apnsfake.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		af := apnsfake.New(apnsfake.Options{Keys: map[string]apnsfake.Key{"E2EKEY0001": {TeamID: "E2ETEAM001", Public: pub}},
			Topics: map[string][]string{"E2ETEAM001": {"com.example.e2e"}}})
		// FCM
		ff := fcmfake.New(fcmfake.Options{})
		// WNS
		wf := wnsfake.New(wnsfake.Options{ClientID: "ms-app://s-1-15-2-e2e", ClientSecret: "secret"})
		// Web Push
		vk, err := ecdh.P256().GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		vapidPub := base64.RawURLEncoding.EncodeToString(vk.PublicKey().Bytes())
		pf := webpushfake.New(webpushfake.Options{VAPIDPublicKey: vapidPub})
		for _, s := range []interface{ Start() error }{af, ff, wf, pf} {
			if err := s.Start(); err != nil {
				t.Fatal(err)
			}
		}
		defer af.Close()
		defer ff.Close()
		defer wf.Close()
		defer pf.Close()
		for _, l := range []*pnsfake.Log{&af.Log, &ff.Log, &wf.Log, &pf.Log} {
			l.Keep = true
		}
		sa, err := ff.ServiceAccount("e2e-project")
		if err != nil {
			t.Fatal(err)
		}

		as, err := apns.New(apns.Config{Endpoint: af.URL(), KeyPEM: p8, KeyID: "E2EKEY0001", TeamID: "E2ETEAM001", Topic: "com.example.e2e", RootCAs: af.CertPool()})
		if err != nil {
			t.Fatal(err)
		}
		defer as.Close()
		fs, err := fcm.New(fcm.Config{CredentialsJSON: sa, Endpoint: ff.URL(), RootCAs: ff.CertPool()})
		if err != nil {
			t.Fatal(err)
		}
		defer fs.Close()
		ws, err := wns.New(wns.Config{ClientID: "ms-app://s-1-15-2-e2e", ClientSecret: "secret", TokenURL: wf.TokenURL(), EndpointOverride: wf.URL(), RootCAs: wf.CertPool()})
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		ps, err := webpush.New(webpush.Config{VAPIDPrivateKey: base64.RawURLEncoding.EncodeToString(vk.Bytes()), Subject: "mailto:ops@example.com", RootCAs: pf.CertPool()})
		if err != nil {
			t.Fatal(err)
		}
		defer ps.Close()

		put := func(id string, p hubcore.Platform, ch hubcore.PushChannel, body string, hdr map[string]string) {
			t.Helper()
			in := &hubcore.Installation{InstallationID: id, Platform: p, PushChannel: ch, Tags: []string{"news"},
				Templates: map[string]*hubcore.Template{"t": {Body: body, Headers: hdr}}}
			if _, err := e.hub.PutInstallation(ctx, in, hubcore.Always); err != nil {
				t.Fatalf("put %s: %v", id, err)
			}
		}
		apnsTok, goneTok := fmt.Sprintf("%064x", 0xa11ce), fmt.Sprintf("%064x", 0xdead)
		fcmTok, slowTok := fcmfake.Token("e2e-android"), fcmfake.Token("e2e-throttled")
		wnsCh := wnsfake.Channel("e2e-windows")
		sub, err := pf.Subscribe()
		if err != nil {
			t.Fatal(err)
		}
		put("ios", hubcore.APNS, hubcore.PushChannel{Handle: apnsTok}, `{"aps":{"alert":"{$(msg) + ' for iOS'}"}}`, nil)
		put("ios-gone", hubcore.APNS, hubcore.PushChannel{Handle: goneTok}, `{"aps":{"alert":"$(msg)"}}`, nil)
		put("android", hubcore.FCMV1, hubcore.PushChannel{Handle: fcmTok}, `{"message":{"notification":{"title":"{$(msg) + ' for Android'}"}}}`, nil)
		put("android-busy", hubcore.FCMV1, hubcore.PushChannel{Handle: slowTok}, `{"message":{"data":{"t":"$(msg)"}}}`, nil)
		put("windows", hubcore.WNS, hubcore.PushChannel{Handle: wnsfake.ChannelURI(wnsCh)},
			`<toast><visual><binding template="ToastText01"><text id="1">{$(msg) + ' for Windows'}</text></binding></visual></toast>`, map[string]string{"X-WNS-Type": "wns/toast"})
		put("browser", hubcore.Browser, sub, `{"title":"{$(msg) + ' for the web'}"}`, map[string]string{"Urgency": "high"})

		af.Unregister(goneTok)
		ff.Script.Push(slowTok, pnsfake.Action{Kind: pnsfake.Throttle, RetryAfter: time.Second})

		en := newEngine(t, e, e.broker(), map[hubcore.Platform]hubcore.Sender{hubcore.APNS: as, hubcore.FCMV1: fs, hubcore.WNS: ws, hubcore.Browser: ps}, func(c *fanout.Config) {
			c.RetryBase, c.RetryMax = 10*time.Millisecond, 20*time.Millisecond // so the service's Retry-After decides
		})
		run(t, en)
		id, err := en.Submit(ctx, templateSend(e, t, "news", "Hello"))
		if err != nil {
			t.Fatal(err)
		}
		o := wait(t, en, id)
		want := fanout.Counts{}
		want.Add(hubcore.APNS, hubcore.OutcomeSuccess, 1)
		want.Add(hubcore.APNS, hubcore.OutcomeExpiredChannel, 1)
		want.Add(hubcore.FCMV1, hubcore.OutcomeSuccess, 2)
		want.Add(hubcore.WNS, hubcore.OutcomeSuccess, 1)
		want.Add(hubcore.Browser, hubcore.OutcomeSuccess, 1)
		if o.State != fanout.Completed || fmt.Sprint(o.Counts) != fmt.Sprint(want) {
			t.Fatalf("outcome %s %v; want Completed %v", o.State, o.Counts, want)
		}
		check := func(what string, got []pnsfake.Delivered, body string) {
			t.Helper()
			if len(got) != 1 || string(got[0].Body) != body {
				t.Fatalf("%s received %d notifications: %+v", what, len(got), got)
			}
		}
		check("the iPhone", af.Log.For(apnsTok), `{"aps":{"alert":"Hello for iOS"}}`)
		check("the Windows PC", wf.Log.For(wnsCh), `<toast><visual><binding template="ToastText01"><text id="1">Hello for Windows</text></binding></visual></toast>`)
		check("the browser", pf.Log.For(webpushfake.ID(sub.Endpoint)), `{"title":"Hello for the web"}`)
		if got := ff.Log.For(fcmTok); len(got) != 1 {
			t.Fatalf("the Android phone received %d notifications", len(got))
		}
		busy := ff.Log.For(slowTok)
		if len(busy) != 1 {
			t.Fatalf("the throttled phone received %d notifications", len(busy))
		}
		if pf.Log.For(webpushfake.ID(sub.Endpoint))[0].Header.Get("Urgency") != "high" {
			t.Fatal("the browser's template header was not sent")
		}
		in, err := e.store.GetInstallation(ctx, "ios-gone")
		if err != nil || !in.PushChannelExpired {
			t.Fatalf("ios-gone after 410 Unregistered: %+v, %v", in, err)
		}
		evs, _, err := en.Feedback(ctx, "", 10)
		if err != nil || len(evs) != 1 || evs[0].Platform != hubcore.APNS || evs[0].Reason != "Unregistered" {
			t.Fatalf("feedback %+v, %v", evs, err)
		}
	})
}
