package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"go.uber.org/zap"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/fanout"
	"github.com/pushgate/pushgate/internal/nhwire"
	"github.com/pushgate/pushgate/memstore"
)

const (
	nhHost      = "contoso.example"
	nhFullKey   = "ZnVsbC1rZXktZm9yLXRlc3RzLW9ubHktMDEyMzQ1Njc4OQ=="
	nhListenKey = "bGlzdGVuLWtleS1mb3ItdGVzdHMtb25seS0wMTIzNDU2Nzg="
	nhSendKey   = "c2VuZC1rZXktZm9yLXRlc3RzLW9ubHktMDEyMzQ1Njc4OTA="
)

// nhEnv is an API handler over an in-memory hub whose engine delivers to
// the log (log_only), running in the background.
type nhEnv struct {
	t     *testing.T
	api   *NHAPI
	store hubcore.Store
}

func newNHEnv(t *testing.T) *nhEnv {
	t.Helper()
	st, err := memstore.Open(memstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	core := hubcore.NewHub(st, hubcore.HubOptions{})
	senders := map[hubcore.Platform]hubcore.Sender{}
	for _, p := range hubcore.Platforms {
		senders[p] = logSender(zap.NewNop())
	}
	en, err := fanout.New(fanout.Config{Store: st, Broker: memstore.NewBroker(memstore.BrokerOptions{}), Senders: senders,
		ParseExpr: core.ParseExpression, Poll: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = en.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; st.Close() })

	t.Setenv("NH_TEST_FULL_KEY", nhFullKey)
	api := &NHAPI{Hub: "orders", Rules: []NHRule{
		{Name: "DefaultFullSharedAccessSignature", Key: "{env.NH_TEST_FULL_KEY}", Rights: []string{"Listen", "Send", "Manage"}},
		{Name: "DefaultListenSharedAccessSignature", Key: nhListenKey, Rights: []string{"Listen"}},
		{Name: "SendOnly", Key: nhSendKey, Rights: []string{"send"}},
	}}
	if err := api.setup(&Hub{Name: "orders", Core: core, Engine: en}, caddy.NewReplacer()); err != nil {
		t.Fatal(err)
	}
	return &nhEnv{t: t, api: api, store: st}
}

type nhResp struct {
	status int
	body   string
	header http.Header
}

// token signs for the namespace root, as the JS client does.
func token(rule, key string) string {
	return nhwire.Sign("https://"+nhHost+"/", rule, []byte(key), time.Now().Add(time.Hour))
}

var fullToken = func() string { return token("DefaultFullSharedAccessSignature", nhFullKey) }

func (e *nhEnv) do(method, path, auth, body string, hdr ...string) nhResp {
	e.t.Helper()
	return e.doURL(method, "https://"+nhHost+path, auth, body, hdr...)
}

// want checks the status and, for errors, the NH error body.
func (e *nhEnv) want(res nhResp, status int, what string) nhResp {
	e.t.Helper()
	if res.status != status {
		e.t.Fatalf("%s: got %d %s, want %d", what, res.status, res.body, status)
	}
	if status >= 400 && !strings.HasPrefix(res.body, fmt.Sprintf("<Error><Code>%d</Code><Detail>", status)) {
		e.t.Fatalf("%s: error body %q", what, res.body)
	}
	return res
}

const v = "?api-version=2020-06"

const nhInstallation = `{"installationId":"inst-1","platform":"apns","pushChannel":"` + apnsToken + `","tags":["news","lang_en"],"userId":"u1",
"templates":{"t":{"body":"{\"aps\":{\"alert\":\"$(msg)\"}}"}}}`

func TestNHAuth(t *testing.T) {
	e := newNHEnv(t)
	path := "/orders/installations/absent" + v
	expired := nhwire.Sign("https://"+nhHost+"/", "DefaultFullSharedAccessSignature", []byte(nhFullKey), time.Now().Add(-time.Hour))
	otherHub := nhwire.Sign("https://"+nhHost+"/other", "DefaultFullSharedAccessSignature", []byte(nhFullKey), time.Now().Add(time.Hour))
	cases := map[string]string{
		"no header":     "",
		"bad key":       token("DefaultFullSharedAccessSignature", "not-the-key"),
		"unknown rule":  token("NoSuchRule", nhFullKey),
		"expired":       expired,
		"wrong sr":      otherHub,
		"malformed":     "SharedAccessSignature garbage",
		"bearer":        "Bearer abc",
		"listen as key": token("DefaultFullSharedAccessSignature", nhListenKey),
	}
	for name, auth := range cases {
		res := e.want(e.do("GET", path, auth, ""), 401, name)
		if !strings.Contains(res.body, "TrackingId:"+res.header.Get("TrackingId")) {
			t.Errorf("%s: detail without tracking id: %s", name, res.body)
		}
	}
	if res := e.do("GET", path, expired, ""); !strings.Contains(res.body, "ExpiredToken") {
		t.Errorf("expired: %s", res.body)
	}
	if res := e.do("GET", path, otherHub, ""); !strings.Contains(res.body, "40104") {
		t.Errorf("wrong audience: %s", res.body)
	}
	// Auth comes before the hub lookup: an unknown hub with a bad key is 401,
	// with a good one 404.
	e.want(e.do("GET", "/nohub/installations/x"+v, token("DefaultFullSharedAccessSignature", "bad"), ""), 401, "bad key, unknown hub")
	e.want(e.do("GET", "/nohub/installations/x"+v, fullToken(), ""), 404, "unknown hub")
	e.want(e.do("GET", "/orders/frobs"+v, fullToken(), ""), 404, "unknown collection")
	e.want(e.do("POST", "/orders/installations/x"+v, fullToken(), ""), 405, "wrong method")
	// A hub-rooted token and a full-URL token (.NET: http, trailing slash).
	hubTok := nhwire.Sign("https://"+nhHost+"/orders", "DefaultFullSharedAccessSignature", []byte(nhFullKey), time.Now().Add(time.Hour))
	e.want(e.do("GET", path, hubTok, ""), 404, "hub-rooted token")
	netTok := nhwire.Sign("http://"+nhHost+"/orders/installations/absent/", "DefaultFullSharedAccessSignature", []byte(nhFullKey), time.Now().Add(time.Hour))
	e.want(e.do("GET", path, netTok, ""), 404, ".NET token")

	// Rights: Listen cannot send or list; Send cannot manage. 403 for
	// api-version 2020-06, 401 for older versions (reference §2.4).
	listen := token("DefaultListenSharedAccessSignature", nhListenKey)
	send := token("SendOnly", nhSendKey)
	res := e.want(e.do("POST", "/orders/messages"+v, listen, `{"msg":"x"}`), 403, "listen sends")
	if !strings.Contains(res.body, "Send claim is required for this operation.") {
		t.Errorf("claim detail: %s", res.body)
	}
	e.want(e.do("POST", "/orders/messages?api-version=2015-01", listen, `{"msg":"x"}`), 401, "listen sends, old api")
	e.want(e.do("GET", "/orders/registrations"+v, listen, ""), 403, "listen lists")
	e.want(e.do("GET", "/orders/tags/news/registrations"+v, send, ""), 403, "send lists by tag")
	e.want(e.do("PUT", "/orders/installations/inst-1"+v, send, nhInstallation), 403, "send puts installation")
	e.want(e.do("GET", "/orders/messages/abc"+v, listen, ""), 403, "listen reads details")
	// The right one works.
	e.want(e.do("PUT", "/orders/installations/inst-1"+v, listen, nhInstallation), 200, "listen puts installation")
	e.want(e.do("POST", "/orders/messages"+v, send, `{"msg":"x"}`, "ServiceBusNotification-Tags", "news"), 201, "send sends")

	// TrackingId is echoed when the client sends one.
	if res := e.do("GET", path, "", "", "TrackingId", "abc-123"); res.header.Get("TrackingId") != "abc-123" {
		t.Errorf("TrackingId not echoed: %q", res.header.Get("TrackingId"))
	}
}

func TestNHInstallations(t *testing.T) {
	e := newNHEnv(t)
	tok := fullToken()
	base := "/orders/installations/inst-1" + v
	e.want(e.do("PUT", base, tok, nhInstallation, "Content-Type", "application/json"), 200, "put")
	res := e.want(e.do("GET", base, tok, ""), 200, "get")
	var got map[string]any
	if err := json.Unmarshal([]byte(res.body), &got); err != nil {
		t.Fatalf("GET body %q: %v", res.body, err)
	}
	if got["installationId"] != "inst-1" || got["platform"] != "apns" || got["userId"] != "u1" {
		t.Fatalf("GET %s", res.body)
	}
	stored := res.body

	// Malformed input: 4xx with a detail, nothing stored changed.
	bad := []struct{ name, method, body, detail string }{
		{"bad json", "PUT", `{"installationId":`, ""},
		{"system tag", "PUT", strings.Replace(nhInstallation, `"news"`, `"$InstallationId:{x}"`, 1), "reserved"},
		{"id mismatch", "PUT", strings.Replace(nhInstallation, `"inst-1"`, `"inst-2"`, 1), "installationId"},
		{"bad platform", "PUT", strings.Replace(nhInstallation, `"apns"`, `"pager"`, 1), "platform"},
		{"bad patch json", "PATCH", `[{"op":`, ""},
		{"bad patch path", "PATCH", `[{"op":"add","path":"/colour","value":"blue"}]`, ""},
		{"bad patch op", "PATCH", `[{"op":"move","path":"/tags","value":"x"}]`, ""},
		{"patch system tag", "PATCH", `[{"op":"add","path":"/tags","value":"$UserId:{x}"}]`, ""},
	}
	for _, c := range bad {
		res := e.do(c.method, base, tok, c.body)
		if res.status != 400 || !strings.HasPrefix(res.body, "<Error><Code>400</Code><Detail>") || !strings.Contains(res.body, c.detail) {
			t.Errorf("%s: %d %s", c.name, res.status, res.body)
		}
		if now := e.do("GET", base, tok, "").body; now != stored {
			t.Fatalf("%s changed the installation:\n%s\n%s", c.name, stored, now)
		}
	}
	e.want(e.do("PUT", "/orders/installations/a:b"+v, tok, strings.Replace(nhInstallation, `"inst-1"`, `"a:b"`, 1)), 400, "bad id characters")
	e.want(e.do("PUT", base, tok, strings.Repeat(" ", nhMaxEntryBody+1)), 413, "oversize installation")

	// JSON-Patch, both value styles (.NET content type too).
	e.want(e.do("PATCH", base, tok, `[{"op":"add","path":"/tags","value":"sports"},{"op":"replace","path":"/userId","value":"u2"}]`,
		"Content-Type", "application/json-patch+json"), 200, "patch")
	res = e.want(e.do("GET", base, tok, ""), 200, "get after patch")
	if !strings.Contains(res.body, `"sports"`) || !strings.Contains(res.body, `"userId":"u2"`) {
		t.Fatalf("after patch: %s", res.body)
	}
	e.want(e.do("PATCH", "/orders/installations/absent"+v, tok, `[{"op":"add","path":"/tags","value":"x"}]`), 404, "patch absent")
	res = e.want(e.do("GET", "/orders/installations/absent"+v, tok, ""), 404, "get absent")
	if !strings.Contains(res.body, "Installation not found") {
		t.Errorf("404 detail: %s", res.body)
	}
	e.want(e.do("DELETE", base, tok, ""), 204, "delete")
	e.want(e.do("DELETE", base, tok, ""), 204, "delete absent")
	e.want(e.do("GET", base, tok, ""), 404, "get deleted")
}

func appleEntry(tags string) string {
	return `<?xml version="1.0" encoding="utf-8"?><entry xmlns="http://www.w3.org/2005/Atom"><content type="application/xml">
<AppleRegistrationDescription xmlns:i="http://www.w3.org/2001/XMLSchema-instance" xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect">
<Tags>` + tags + `</Tags><DeviceToken>` + apnsToken + `</DeviceToken></AppleRegistrationDescription></content></entry>`
}

func TestNHRegistrations(t *testing.T) {
	e := newNHEnv(t)
	tok := fullToken()
	res := e.want(e.do("POST", "/orders/registrationIDs"+v, tok, ""), 201, "registration id")
	loc := res.header.Get("Location")
	prefix := "https://" + nhHost + "/orders/registrationids/"
	if !strings.HasPrefix(loc, prefix) || !strings.HasSuffix(loc, v) {
		t.Fatalf("Location %q", loc)
	}
	id := strings.TrimSuffix(strings.TrimPrefix(loc, prefix), v)
	reg := "/orders/registrations/" + id + v

	res = e.want(e.do("PUT", reg, tok, appleEntry("news,lang_en")), 200, "upsert")
	if res.header.Get("ETag") != `W/"1"` || res.header.Get("Content-Type") != nhwire.ContentTypeEntry ||
		!strings.Contains(res.body, "<AppleRegistrationDescription") || !strings.Contains(res.body, "<RegistrationId>"+id+"</RegistrationId>") {
		t.Fatalf("upsert: %v %s", res.header, res.body)
	}
	e.want(e.do("PUT", reg, tok, appleEntry("news,sports"), "If-Match", `"1"`), 200, "update at 1")
	res = e.want(e.do("PUT", reg, tok, appleEntry("stale"), "If-Match", `W/"1"`), 412, "stale update")
	e.want(e.do("DELETE", reg, tok, "", "If-Match", `"1"`), 412, "stale delete")
	res = e.want(e.do("GET", reg, tok, ""), 200, "get")
	if res.header.Get("ETag") != `W/"2"` || !strings.Contains(res.body, "<Tags>news,sports</Tags>") {
		t.Fatalf("get: %v %s", res.header, res.body)
	}
	// The entry's <updated> is the time of the answer: compare what is stored.
	snapshot := func(r nhResp) string {
		return r.header.Get("ETag") + r.body[strings.Index(r.body, "<ETag>"):]
	}
	stored := snapshot(res)

	// Malformed input changes nothing.
	for name, c := range map[string][2]string{
		"bad xml":      {appleEntry("x")[:80], ""},
		"system tag":   {appleEntry("$UserId:{x}"), ""},
		"no desc":      {`<entry xmlns="http://www.w3.org/2005/Atom"><content/></entry>`, ""},
		"bad if-match": {appleEntry("x"), "soon"},
	} {
		hdr := []string{}
		if c[1] != "" {
			hdr = []string{"If-Match", c[1]}
		}
		e.want(e.do("PUT", reg, tok, c[0], hdr...), 400, name)
		if now := snapshot(e.do("GET", reg, tok, "")); now != stored {
			t.Fatalf("%s changed the registration:\n%s\n%s", name, stored, now)
		}
	}
	e.want(e.do("PUT", "/orders/registrations/abc"+v, tok, appleEntry("x"), "If-Match", "*"), 404, "conditional put of absent")

	// A server-assigned one, and an installation (projected as registrations).
	res = e.want(e.do("POST", "/orders/registrations"+v, tok, appleEntry("news")), 200, "create")
	if res.header.Get("ETag") != `W/"1"` {
		t.Fatalf("create ETag %q", res.header.Get("ETag"))
	}
	e.want(e.do("PUT", "/orders/installations/inst-1"+v, tok, nhInstallation), 200, "installation")

	res = e.want(e.do("GET", "/orders/tags/news/registrations"+v, tok, ""), 200, "by tag")
	if n := strings.Count(res.body, "<entry"); n != 4 { // two registrations, the installation's native and template ones
		t.Fatalf("by tag: %d entries\n%s", n, res.body)
	}
	res = e.want(e.do("GET", "/orders/registrations"+v+"&$filter="+url.QueryEscape("ChannelUri eq '"+apnsToken+"'"), tok, ""), 200, "by channel")
	if n := strings.Count(res.body, "<entry"); n != 4 {
		t.Fatalf("by channel: %d entries", n)
	}
	res = e.want(e.do("GET", "/orders/registrations"+v+"&$filter="+url.QueryEscape("DeviceToken eq '"+strings.ToLower(apnsToken)+"'"), tok, ""), 200, "by device token")
	if n := strings.Count(res.body, "<entry"); n != 4 {
		t.Fatalf("by device token: %d entries", n)
	}
	res = e.want(e.do("GET", "/orders/registrations"+v+"&$filter="+url.QueryEscape("FcmV1RegistrationId eq '"+apnsToken+"'"), tok, ""), 200, "wrong platform")
	if n := strings.Count(res.body, "<entry"); n != 0 {
		t.Fatalf("fcm filter on an apns token: %d entries", n)
	}
	e.want(e.do("GET", "/orders/registrations"+v+"&$filter="+url.QueryEscape("Colour eq 'blue'"), tok, ""), 400, "bad filter")
	e.want(e.do("GET", "/orders/registrations"+v+"&$top=zero", tok, ""), 400, "bad $top")

	// Paging: $top=1, continuation token out in the header, back in the
	// query (any case) or the header.
	seen := map[string]bool{}
	cont := ""
	for i := 0; ; i++ {
		q := v + "&$top=1"
		var hdr []string
		switch {
		case cont != "" && i%2 == 1:
			q += "&ContinuationToken=" + cont // verbatim, as Java does
		case cont != "":
			hdr = []string{nhwire.ContinuationHeader, cont}
		}
		res := e.want(e.do("GET", "/orders/registrations"+q, tok, "", hdr...), 200, "page")
		if strings.Count(res.body, "<entry") != 1 {
			t.Fatalf("page %d: %s", i, res.body)
		}
		seen[res.body[strings.Index(res.body, "<RegistrationId>"):strings.Index(res.body, "</RegistrationId>")]] = true
		if cont = res.header.Get(nhwire.ContinuationHeader); cont == "" {
			break
		}
		if i > 10 {
			t.Fatal("paging does not end")
		}
	}
	if len(seen) != 4 {
		t.Fatalf("paged through %d registrations, want 4", len(seen))
	}

	e.want(e.do("DELETE", reg, tok, "", "If-Match", "*"), 200, "delete")
	e.want(e.do("GET", reg, tok, ""), 404, "get deleted")
	e.want(e.do("DELETE", reg, tok, "", "If-Match", "*"), 404, "delete absent")
	e.want(e.do("PUT", reg, tok, appleEntry("news")), 410, "reuse a deleted id")
}

// waitDetails polls GET messages/{id} until the send reaches a final state.
func (e *nhEnv) waitDetails(loc string) string {
	e.t.Helper()
	u, err := url.Parse(loc)
	if err != nil || u.Scheme != "https" || u.Host != nhHost {
		e.t.Fatalf("Location %q", loc)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		res := e.do("GET", u.Path+v, fullToken(), "")
		if res.status == 200 {
			for _, s := range []string{"Completed", "NoTargetFound", "Abandoned"} {
				if strings.Contains(res.body, "<State>"+s+"</State>") {
					return res.body
				}
			}
		} else if res.status != 404 {
			e.t.Fatalf("details: %d %s", res.status, res.body)
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("details still %d %s", res.status, res.body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestNHSend(t *testing.T) {
	e := newNHEnv(t)
	tok := fullToken()
	e.want(e.do("PUT", "/orders/installations/inst-1"+v, tok, nhInstallation), 200, "installation")
	fcm := `{"installationId":"inst-2","platform":"fcmv1","pushChannel":"fcm-token-2","tags":["news"]}`
	e.want(e.do("PUT", "/orders/installations/inst-2"+v, tok, fcm), 200, "installation 2")

	// A native send to a tag, end to end.
	res := e.want(e.do("POST", "/orders/messages"+v, tok, `{"aps":{"alert":"hi"}}`,
		"ServiceBusNotification-Format", "apple", "ServiceBusNotification-Tags", "news && lang_en", "Content-Type", "application/json;charset=utf-8"), 201, "send")
	loc := res.header.Get("Location")
	if !strings.HasPrefix(loc, "https://"+nhHost+"/orders/messages/") || !strings.HasSuffix(loc, v) {
		t.Fatalf("Location %q", loc)
	}
	d := e.waitDetails(loc)
	if !strings.Contains(d, "<State>Completed</State>") || !strings.Contains(d, "<ApnsOutcomeCounts><Outcome><Name>Success</Name><Count>1</Count></Outcome></ApnsOutcomeCounts>") {
		t.Fatalf("details: %s", d)
	}
	// A template broadcast (no Format header, no Tags header) reaches the
	// installation's template.
	res = e.want(e.do("POST", "/orders/messages/"+v, tok, `{"msg":"hello"}`), 201, "template broadcast")
	if d := e.waitDetails(res.header.Get("Location")); !strings.Contains(d, "<Name>Success</Name><Count>1</Count>") {
		t.Fatalf("template details: %s", d)
	}
	// An empty tag header reaches nobody.
	res = e.want(e.do("POST", "/orders/messages"+v, tok, `{"msg":"x"}`, "ServiceBusNotification-Tags", ""), 201, "empty tags")
	if d := e.waitDetails(res.header.Get("Location")); !strings.Contains(d, "<State>NoTargetFound</State>") {
		t.Fatalf("empty tags: %s", d)
	}
	// A test send answers synchronously with the outcome document.
	res = e.want(e.do("POST", "/orders/messages"+v+"&test", tok, `{"message":{"notification":{"title":"t"}}}`,
		"ServiceBusNotification-Format", "fcmV1", "ServiceBusNotification-Tags", "news"), 201, "test send")
	if !strings.HasPrefix(res.body, "<NotificationOutcome") || !strings.Contains(res.body, "<Success>1</Success><Failure>0</Failure>") ||
		!strings.Contains(res.body, "<PnsHandle>fcm-token-2</PnsHandle>") {
		t.Fatalf("test send: %s", res.body)
	}
	// Direct send and direct batch.
	res = e.want(e.do("POST", "/orders/messages"+v+"&direct", tok, `{"aps":{"alert":"direct"}}`,
		"ServiceBusNotification-Format", "apple", "ServiceBusNotification-DeviceHandle", apnsToken), 201, "direct")
	if d := e.waitDetails(res.header.Get("Location")); !strings.Contains(d, "<Name>Success</Name><Count>1</Count>") {
		t.Fatalf("direct details: %s", d)
	}
	batch := "--b1\r\nContent-Type: application/json\r\nContent-Disposition: inline; name=notification\r\n\r\n" +
		`{"message":{"notification":{"title":"b"}}}` + "\r\n--b1\r\nContent-Type: application/json\r\nContent-Disposition: inline; name=devices\r\n\r\n" +
		`['tok-a','tok-b']` + "\r\n--b1--\r\n"
	res = e.want(e.do("POST", "/orders/messages/$batch"+v+"&direct", tok, batch,
		"ServiceBusNotification-Format", "fcmv1", "Content-Type", `multipart/mixed; boundary = "b1"`), 201, "batch")
	if d := e.waitDetails(res.header.Get("Location")); !strings.Contains(d, "<Name>Success</Name><Count>2</Count>") {
		t.Fatalf("batch details: %s", d)
	}
	e.want(e.do("POST", "/orders/messages/$batch"+v, tok, strings.Replace(batch, "name=devices", "name=other", 1),
		"ServiceBusNotification-Format", "fcmv1", "Content-Type", `multipart/mixed; boundary="b1"`), 400, "batch without devices")

	// Bad sends: 4xx, nothing queued.
	for name, c := range map[string]struct {
		body   string
		status int
		hdr    []string
	}{
		"bad tag expression": {`{"msg":"x"}`, 400, []string{"ServiceBusNotification-Tags", "news &&"}},
		"unknown format":     {`{}`, 400, []string{"ServiceBusNotification-Format", "pager"}},
		"bad apple json":     {`{"aps":`, 400, []string{"ServiceBusNotification-Format", "apple"}},
		"oversize":           {`{"msg":"` + strings.Repeat("x", 64<<10) + `"}`, 413, nil},
		"direct no handle":   {`{"aps":{}}`, 400, []string{"ServiceBusNotification-Format", "apple", "X-Direct", ""}},
	} {
		path := "/orders/messages" + v
		if name == "direct no handle" {
			path += "&direct"
		}
		res := e.want(e.do("POST", path, tok, c.body, c.hdr...), c.status, name)
		if res.header.Get("Location") != "" {
			t.Errorf("%s: Location %q", name, res.header.Get("Location"))
		}
		if name == "oversize" && !strings.Contains(res.body, "message size cannot be over 64 Kb") {
			t.Errorf("oversize detail: %s", res.body)
		}
	}
	e.want(e.do("GET", "/orders/messages/nope"+v, tok, ""), 404, "unknown message")
}

func TestNHScheduled(t *testing.T) {
	e := newNHEnv(t)
	tok := fullToken()
	at := time.Now().UTC().Add(time.Hour).Format("2006-01-02T15:04:05")
	res := e.want(e.do("POST", "/orders/schedulednotifications"+v, tok, `{"msg":"later"}`,
		"ServiceBusNotification-ScheduleTime", at, "ServiceBusNotification-Tags", "news"), 201, "schedule")
	loc := res.header.Get("Location")
	prefix := "https://" + nhHost + "/orders/schedulednotifications/"
	if !strings.HasPrefix(loc, prefix) || !strings.HasSuffix(loc, v) {
		t.Fatalf("Location %q", loc)
	}
	id := strings.TrimSuffix(strings.TrimPrefix(loc, prefix), v)
	e.want(e.do("GET", "/orders/messages/"+id+v, tok, ""), 404, "details while scheduled")
	e.want(e.do("DELETE", "/orders/schedulednotifications/"+id+v, tok, ""), 200, "cancel")
	res = e.want(e.do("GET", "/orders/messages/"+id+v, tok, ""), 200, "details after cancel")
	if !strings.Contains(res.body, "<State>Cancelled</State>") {
		t.Fatalf("cancelled details: %s", res.body)
	}
	e.want(e.do("DELETE", "/orders/schedulednotifications/"+id+v, tok, ""), 404, "cancel twice")
	e.want(e.do("DELETE", "/orders/schedulednotifications/nope"+v, tok, ""), 404, "cancel unknown")
	e.want(e.do("POST", "/orders/schedulednotifications"+v, tok, `{"msg":"x"}`), 400, "no schedule time")
	e.want(e.do("POST", "/orders/schedulednotifications"+v, tok, `{"msg":"x"}`, "ServiceBusNotification-ScheduleTime", "tomorrow"), 400, "bad schedule time")
	far := time.Now().UTC().Add(30 * 24 * time.Hour).Format(time.RFC3339)
	e.want(e.do("POST", "/orders/schedulednotifications"+v, tok, `{"msg":"x"}`, "ServiceBusNotification-ScheduleTime", far), 400, "too far ahead")
}

func TestNHCaddyfile(t *testing.T) {
	cf := "{\n\tpushgate {\n\t\thub orders\n\t}\n}\n:80 {\n\tpushgate_nh /orders/* {\n\t\thub orders\n\t\trule DefaultFullSharedAccessSignature {env.NH_KEY} Listen Send Manage\n\t\trule Listen k2 Listen\n\t\tmax_body 32KiB\n\t\timport_max_body 2GiB\n\t}\n\tpushgate_gate {\n\t\thub orders\n\t}\n}\n"
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	want := `"handler":"pushgate_nh","hub":"orders","import_max_bytes":2147483648,"max_body_bytes":32768,"rules":[{"key":"{env.NH_KEY}","name":"DefaultFullSharedAccessSignature","rights":["Listen","Send","Manage"]},{"key":"k2","name":"Listen","rights":["Listen"]}]`
	if !strings.Contains(s, want) {
		t.Fatalf("adapted: %s", s)
	}
	if strings.Index(s, `"pushgate_gate"`) > strings.Index(s, `"pushgate_nh"`) {
		t.Errorf("the gate must run before the NH API: %s", s)
	}
	for name, bad := range map[string]string{
		"no hub":       ":80 {\n\tpushgate_nh {\n\t\trule a k Send\n\t}\n}\n",
		"no rule":      ":80 {\n\tpushgate_nh {\n\t\thub a\n\t}\n}\n",
		"bad right":    ":80 {\n\tpushgate_nh {\n\t\thub a\n\t\trule a k Fly\n\t}\n}\n",
		"short rule":   ":80 {\n\tpushgate_nh {\n\t\thub a\n\t\trule a k\n\t}\n}\n",
		"bad max_body": ":80 {\n\tpushgate_nh {\n\t\thub a\n\t\trule a k Send\n\t\tmax_body lots\n\t}\n}\n",
		"bad import":   ":80 {\n\tpushgate_nh {\n\t\thub a\n\t\trule a k Send\n\t\timport_max_body 0\n\t}\n}\n",
		"unknown opt":  ":80 {\n\tpushgate_nh {\n\t\thub a\n\t\trule a k Send\n\t\tcolour blue\n\t}\n}\n",
	} {
		if _, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(bad), nil); err == nil {
			t.Errorf("%s: adapted without error", name)
		}
	}
	// A key placeholder that resolves to nothing is refused at provision.
	n := &NHAPI{Hub: "orders", Rules: []NHRule{{Name: "r", Key: "{env.NH_TEST_UNSET_KEY}", Rights: []string{"Send"}}}}
	if err := n.setup(&Hub{Name: "orders"}, caddy.NewReplacer()); err == nil {
		t.Error("an empty key was accepted")
	}
}
