package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/fanout"
)

// nhjsDir holds client.mjs and the pinned @azure/notification-hubs.
const nhjsDir = "testdata/nhjs"

// nhjsUnavailable fails the test under CI and skips it elsewhere, as
// idptest does: CI cannot go green by skipping.
func nhjsUnavailable(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("nhjs: %s (CI=true, so this is a failure)", msg)
	}
	t.Skipf("nhjs: %s; skipping the official JS client test", msg)
}

// nhjsInstall runs `npm ci` when node_modules lacks the client.
func nhjsInstall(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@azure", "notification-hubs", "package.json")); err == nil {
		return nil
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return fmt.Errorf("node_modules is missing in %s and npm is not on PATH", dir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("npm ci in %s: %v\n%s", dir, err, out)
	}
	return nil
}

// TestOfficialJSClient runs the official JavaScript SDK
// (@azure/notification-hubs 2.1.0) against pushgate_nh served by Caddy
// over HTTPS (tls internal), and checks both what the client saw and what
// the hub stored.
func TestOfficialJSClient(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		nhjsUnavailable(t, "node is not on PATH")
	}
	dir, err := filepath.Abs(nhjsDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := nhjsInstall(dir); err != nil {
		nhjsUnavailable(t, "%v", err)
	}

	const key = "anMtY2xpZW50LWtleS1mb3ItdGVzdHMtb25seS0wMTIzNDU="
	tmp := t.TempDir()
	tester := caddytest.NewTester(t)
	tester.InitServer(fmt.Sprintf(`{
	admin localhost:2999
	http_port 9080
	https_port 9443
	grace_period 1ns
	skip_install_trust
	pushgate {
		hub nhjs {
			data_dir %s
			delivery {
				log_only
			}
		}
	}
}
localhost:9443 {
	bind 127.0.0.1 [::1]
	tls internal
	pushgate_nh {
		hub nhjs
		rule DefaultFullSharedAccessSignature %s Listen Send Manage
	}
}`, filepath.Join(tmp, "data"), key), "caddyfile")

	app, err := caddy.ActiveContext().App("pushgate")
	if err != nil {
		t.Fatal(err)
	}
	hub, ok := app.(*App).Hub("nhjs")
	if !ok {
		t.Fatal("hub nhjs is not configured")
	}

	// The root of Caddy's internal CA, for NODE_EXTRA_CA_CERTS.
	root, err := os.ReadFile(filepath.Join(caddy.AppDataDir(), "pki", "authorities", "local", "root.crt"))
	if err != nil {
		t.Fatalf("reading the internal CA root: %v", err)
	}
	caFile := filepath.Join(tmp, "root.pem")
	if err := os.WriteFile(caFile, root, 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cs := "Endpoint=sb://localhost:9443/;SharedAccessKeyName=DefaultFullSharedAccessSignature;SharedAccessKey=" + key
	cmd := exec.CommandContext(ctx, node, "client.mjs", cs, "nhjs", "all")
	cmd.Dir = dir
	env := []string{"NODE_EXTRA_CA_CERTS=" + caFile}
	for _, kv := range os.Environ() {
		// Loopback only: no proxy may see the requests.
		switch k, _, _ := strings.Cut(kv, "="); strings.ToUpper(k) {
		case "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "NODE_EXTRA_CA_CERTS", "NODE_OPTIONS":
			continue
		}
		env = append(env, kv)
	}
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()

	steps := map[string]map[string]any{}
	var order []string
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("client printed a line that is not JSON: %q\nstderr:\n%s", line, stderr.String())
		}
		name, _ := m["step"].(string)
		steps[name] = m
		order = append(order, name)
		t.Logf("%s", line)
	}
	if runErr != nil {
		t.Fatalf("client.mjs: %v\nstderr:\n%s", runErr, stderr.String())
	}
	want := []string{
		"createOrUpdateInstallation.apple", "createOrUpdateInstallation.fcmv1", "getInstallation", "updateInstallation",
		"createRegistrationId", "createOrUpdateRegistration", "getRegistration", "listRegistrationsByTag",
		"updateRegistration", "updateRegistration.staleEtag",
		"sendNotification.template", "sendNotification.apple", "sendNotification.test",
		"scheduleNotification", "cancelScheduledNotification", "getNotificationOutcomeDetails", "getFeedbackContainerUrl",
		"deleteRegistration", "deleteInstallation", "done",
	}
	if !slices.Equal(order, want) {
		t.Fatalf("steps %v\nwant %v", order, want)
	}
	for _, name := range order {
		if e, ok := steps[name]["error"]; ok {
			t.Fatalf("step %s: %v", name, e)
		}
	}

	str := func(step, field string) string {
		t.Helper()
		s, ok := steps[step][field].(string)
		if !ok {
			t.Fatalf("step %s: %s is %v", step, field, steps[step][field])
		}
		return s
	}
	strs := func(step, field string) []string {
		t.Helper()
		raw, _ := steps[step][field].([]any)
		out := make([]string, 0, len(raw))
		for _, v := range raw {
			s, _ := v.(string)
			out = append(out, s)
		}
		slices.Sort(out)
		return out
	}

	// What the client read back.
	if got := str("getInstallation", "platform"); got != "apns" {
		t.Errorf("getInstallation platform %q, want apns", got)
	}
	if got := strs("getInstallation", "tags"); !slices.Equal(got, []string{"js_apple", "js_news"}) {
		t.Errorf("getInstallation tags %v", got)
	}
	if got := strs("updateInstallation", "tags"); !slices.Equal(got, []string{"js_apple", "js_news", "js_patched"}) {
		t.Errorf("tags after the patch %v", got)
	}
	regID := str("createRegistrationId", "registrationId")
	if str("createOrUpdateRegistration", "kind") != "Apple" || str("createOrUpdateRegistration", "etag") != "1" {
		t.Errorf("createOrUpdateRegistration returned %v", steps["createOrUpdateRegistration"])
	}
	if got := strs("getRegistration", "tags"); !slices.Equal(got, []string{"js_news", "js_reg"}) {
		t.Errorf("getRegistration tags %v", got)
	}
	// js_news is on the registration and on both installations, whose
	// native and template registrations are listed too (inst~…); $top=1
	// makes one page each, so the client followed the continuation token.
	listed := strs("listRegistrationsByTag", "registrationIds")
	var fromApple, fromFCM int
	for _, id := range listed {
		switch {
		case strings.HasPrefix(id, "inst~js-apple-1"):
			fromApple++
		case strings.HasPrefix(id, "inst~js-fcm-1"):
			fromFCM++
		}
	}
	if len(listed) != 5 || !slices.Contains(listed, regID) || fromApple != 2 || fromFCM != 2 ||
		steps["listRegistrationsByTag"]["pages"] != float64(5) {
		t.Errorf("listRegistrationsByTag: %v", steps["listRegistrationsByTag"])
	}
	if got := str("updateRegistration", "etag"); got != "2" {
		t.Errorf("updateRegistration etag %q, want 2", got)
	}
	if got := steps["updateRegistration.staleEtag"]["statusCode"]; got != float64(412) {
		t.Errorf("stale etag: status %v, want 412", got)
	}
	// js_news reaches both installations (one template each) and the
	// native registration, which a template send skips.
	test := steps["sendNotification.test"]
	results, _ := test["results"].([]any)
	if test["successCount"] != float64(2) || test["failureCount"] != float64(0) || len(results) != 2 {
		t.Errorf("test send %v", test)
	}
	for _, r := range results {
		m, _ := r.(map[string]any)
		if m["outcome"] != "The Notification was successfully sent to the Push Notification System" || m["pnsHandle"] == "" {
			t.Errorf("test send result %v", m)
		}
	}
	details := steps["getNotificationOutcomeDetails"]
	if details["notificationId"] != steps["sendNotification.apple"]["notificationId"] || details["state"] != "Completed" {
		t.Errorf("outcome details %v", details)
	}
	if fb := steps["getFeedbackContainerUrl"]; fb["status"] != float64(200) || fb["path"] != "/nhjs/x-pushgate/feedback" {
		t.Errorf("feedback container URL: %v", fb)
	}
	if steps["deleteRegistration"]["getAfterDelete"] != float64(404) || steps["deleteInstallation"]["getAfterDelete"] != float64(404) {
		t.Errorf("deletes: %v %v", steps["deleteRegistration"], steps["deleteInstallation"])
	}

	// What the hub stored.
	st := hub.Core.Store()
	bg := context.Background()
	in, err := st.GetInstallation(bg, "js-apple-1")
	if err != nil {
		t.Fatalf("js-apple-1: %v", err)
	}
	tags := slices.Clone(in.Tags)
	slices.Sort(tags)
	if in.Platform != hubcore.APNS || !strings.EqualFold(in.PushChannel.Handle, "00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF") ||
		!slices.Equal(tags, []string{"js_apple", "js_news", "js_patched"}) || in.Templates["t1"] == nil ||
		in.Templates["t1"].Body != `{"aps":{"alert":"$(message)"}}` || !slices.Equal(in.Templates["t1"].Tags, []string{"js_tpl"}) {
		t.Errorf("stored js-apple-1: %+v (template %+v)", in, in.Templates["t1"])
	}
	if _, err := st.GetInstallation(bg, "js-fcm-1"); hubcore.CodeOf(err) != hubcore.CodeNotFound {
		t.Errorf("js-fcm-1 after the delete: %v", err)
	}
	if _, err := st.GetRegistration(bg, regID); hubcore.CodeOf(err) != hubcore.CodeNotFound {
		t.Errorf("registration %s after the delete: %v", regID, err)
	}
	if o, err := hub.Engine.Outcome(bg, str("scheduleNotification", "notificationId")); err != nil || o.State != fanout.Cancelled {
		t.Errorf("the cancelled schedule: %+v %v", o, err)
	}
}
