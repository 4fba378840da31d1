package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/pushgate/pushgate/hubcore"
	apnsfake "github.com/pushgate/pushgate/internal/pnsfake/apns"
)

// TestDeliveryThroughCaddy configures a hub's APNs credential in the
// Caddyfile (pointed at the strict fake), sends through the admin API and
// reads the outcome back; a reload that keeps the delivery config keeps
// the engine, one that changes it replaces it.
func TestDeliveryThroughCaddy(t *testing.T) {
	p8, pub, err := apnsfake.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	fake := apnsfake.New(apnsfake.Options{Keys: map[string]apnsfake.Key{"CADDYKEY01": {TeamID: "CADDYTEAM1", Public: pub}},
		Topics: map[string][]string{"CADDYTEAM1": {"com.example.caddy"}}})
	fake.Log.Keep = true
	if err := fake.Start(); err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	dir := t.TempDir()
	keyFile, caFile := filepath.Join(dir, "apns.p8"), filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(keyFile, p8, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caFile, fake.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	config := func(extra string) string {
		return fmt.Sprintf(`{
	admin localhost:2999
	http_port 9080
	https_port 9443
	grace_period 1ns
	skip_install_trust
	pushgate {
		hub dtest {
			data_dir %s
			delivery {
				root_ca_file %s
				%s
				apns {
					key_file %s
					key_id CADDYKEY01
					team_id CADDYTEAM1
					topic com.example.caddy
					endpoint %s
				}
			}
		}
	}
}
localhost:9443 {
	tls internal
	respond "upstream" 200
}`, filepath.Join(dir, "data"), caFile, extra, keyFile, fake.URL())
	}
	tester := caddytest.NewTester(t)
	starts := engineStarts.Load()
	tester.InitServer(config(""), "caddyfile")
	if engineStarts.Load() != starts+1 {
		t.Fatalf("%d engines started; want 1", engineStarts.Load()-starts)
	}

	app, err := caddy.ActiveContext().App("pushgate")
	if err != nil {
		t.Fatal(err)
	}
	hub, _ := app.(*App).Hub("dtest")
	const token = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	for i, p := range []hubcore.Platform{hubcore.APNS, hubcore.FCMV1} {
		in := &hubcore.Installation{InstallationID: fmt.Sprintf("d%d", i), Platform: p, Tags: []string{"news"},
			Templates: map[string]*hubcore.Template{"t": {Body: `{"aps":{"alert":"$(title)"}}`}}}
		in.PushChannel.Handle = token
		if p == hubcore.FCMV1 {
			in.PushChannel.Handle = "fcm-token-1"
			in.Templates["t"].Body = `{"message":{"notification":{"title":"$(title)"}}}`
		}
		if _, err := hub.Core.PutInstallation(context.Background(), in, hubcore.Always); err != nil {
			t.Fatal(err)
		}
	}

	admin := func(method, path, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://localhost:2999/pushgate/hubs/dtest/"+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		return res.StatusCode, m
	}
	sendAndWait := func() map[string]any {
		t.Helper()
		status, m := admin("POST", "send", `{"tags":"news","body":{"title":"Hello"}}`)
		if status != http.StatusAccepted {
			t.Fatalf("send: %d %v", status, m)
		}
		id := m["notificationId"].(string)
		for deadline := time.Now().Add(20 * time.Second); ; {
			status, o := admin("GET", "messages/"+id, "")
			if status == 200 && (o["state"] == "Completed" || o["state"] == "NoTargetFound" || o["state"] == "Abandoned") {
				return o
			}
			if time.Now().After(deadline) {
				t.Fatalf("outcome still %d %v", status, o)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	o := sendAndWait()
	counts, _ := json.Marshal(o["counts"])
	if o["state"] != "Completed" || string(counts) != `{"apns":{"Success":1},"fcmv1":{"NoCredentials":1}}` {
		t.Fatalf("outcome %v (counts %s)", o, counts)
	}
	got := fake.Log.For(token)
	if len(got) != 1 || string(got[0].Body) != `{"aps":{"alert":"Hello"}}` || got[0].Header.Get("apns-topic") != "com.example.caddy" {
		t.Fatalf("the fake got %+v", got)
	}
	if status, m := admin("GET", "messages/nope", ""); status != 404 {
		t.Fatalf("unknown message: %d %v", status, m)
	}
	if status, m := admin("POST", "send", `{"tags":"news &&","body":{}}`); status != 400 {
		t.Fatalf("bad expression: %d %v", status, m)
	}

	// Same delivery config: the engine stays.
	tester.InitServer(config(""), "caddyfile")
	if engineStarts.Load() != starts+1 {
		t.Fatal("a reload with the same delivery config replaced the engine")
	}
	// log_only added: a new engine, and FCM is now logged instead of
	// counted as missing credentials.
	tester.InitServer(config("log_only"), "caddyfile")
	if engineStarts.Load() != starts+2 {
		t.Fatal("a reload with a new delivery config kept the old engine")
	}
	o = sendAndWait()
	counts, _ = json.Marshal(o["counts"])
	if string(counts) != `{"apns":{"Success":1},"fcmv1":{"Success":1}}` {
		t.Fatalf("after the reload: %s", counts)
	}
}
