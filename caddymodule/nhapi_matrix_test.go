package caddymodule

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/pushgate/pushgate/internal/nhwire"
)

// doURL sends a request to an absolute URL (any scheme and host) and
// checks what every answer must carry: TrackingId and the correlation id,
// and never a 5xx.
func (e *nhEnv) doURL(method, target, auth, body string, hdr ...string) nhResp {
	e.t.Helper()
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	if err := e.api.ServeHTTP(w, r, nil); err != nil {
		e.t.Fatal(err)
	}
	res := nhResp{status: w.Code, body: w.Body.String(), header: w.Header()}
	tid := res.header.Get("TrackingId")
	if tid == "" || res.header.Get("x-ms-correlation-request-id") != tid {
		e.t.Fatalf("%s %s: TrackingId %q, x-ms-correlation-request-id %q", method, target, tid, res.header.Get("x-ms-correlation-request-id"))
	}
	if res.status >= 500 {
		e.t.Fatalf("%s %s: %d %s", method, target, res.status, res.body)
	}
	return res
}

// storeDump is the store's whole content, to show that a request changed
// nothing.
func (e *nhEnv) storeDump() string {
	e.t.Helper()
	var b bytes.Buffer
	if err := e.store.Export(context.Background(), &b); err != nil {
		e.t.Fatal(err)
	}
	return b.String()
}

// signRaw builds a SAS header from its parts exactly as given, for tokens
// no SDK would make (fields missing or doubled, a key used differently).
func signRaw(sr, se string, key []byte, skn string) string {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(sr + "\n" + se))
	sig := url.QueryEscape(base64.StdEncoding.EncodeToString(h.Sum(nil)))
	return "SharedAccessSignature sr=" + sr + "&sig=" + sig + "&se=" + se + "&skn=" + skn
}

func inHour() string { return strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10) }

const fullRule = "DefaultFullSharedAccessSignature"

// TestNHStatusMatrix walks the reference's §14.1 status matrix, row by row
// in the order a client would call, and checks the headers §14.3 requires
// on each answer. Rows that need an id take it from an earlier answer.
func TestNHStatusMatrix(t *testing.T) {
	e := newNHEnv(t)
	tok := fullToken()
	base := "https://" + nhHost + "/orders"
	var regID, msgID, schedID string

	wantLocation := func(coll string, id *string, version string) func(*testing.T, nhResp) {
		return func(t *testing.T, res nhResp) {
			loc := res.header.Get("Location")
			prefix := base + "/" + coll + "/"
			suffix := "?api-version=" + version
			if !strings.HasPrefix(loc, prefix) || !strings.Contains(loc, suffix) {
				t.Fatalf("Location %q, want %s{id}%s", loc, prefix, suffix)
			}
			rest := strings.TrimPrefix(loc, prefix)
			got, _, _ := strings.Cut(rest, "?")
			if got == "" || strings.Contains(got, "/") {
				t.Fatalf("Location %q has no id", loc)
			}
			if id != nil {
				*id = got
			}
		}
	}
	wantEntryHeaders := func(version int64) func(*testing.T, nhResp) {
		return func(t *testing.T, res nhResp) {
			if got := res.header.Get("ETag"); got != fmt.Sprintf(`W/"%d"`, version) {
				t.Errorf("ETag %q, want W/\"%d\"", got, version)
			}
			want := base + "/registrations/" + regID + "?api-version=2020-06"
			if got := res.header.Get("Content-Location"); got != want {
				t.Errorf("Content-Location %q, want %q", got, want)
			}
			if ct := res.header.Get("Content-Type"); ct != nhwire.ContentTypeEntry {
				t.Errorf("Content-Type %q", ct)
			}
		}
	}
	wantNoContinuation := func(t *testing.T, res nhResp) {
		if c := res.header.Get(nhwire.ContinuationHeader); c != "" {
			t.Errorf("continuation token %q on the only page", c)
		}
	}
	batch := "--b1\r\nContent-Type: application/json\r\nContent-Disposition: inline; name=notification\r\n\r\n" +
		`{"message":{"notification":{"title":"b"}}}` + "\r\n--b1\r\nContent-Type: application/json\r\nContent-Disposition: inline; name=devices\r\n\r\n" +
		`["tok-a","tok-b"]` + "\r\n--b1--\r\n"
	at := time.Now().UTC().Add(time.Hour).Format("2006-01-02T15:04:05")

	rows := []struct {
		name   string
		method string
		path   func() string // below https://host/orders
		body   string
		hdr    []string
		status int
		check  func(*testing.T, nhResp)
	}{
		{"PUT installation", "PUT", func() string { return "/installations/inst-1" + v }, nhInstallation, nil, 200, func(t *testing.T, res nhResp) {
			if got := res.header.Get("Content-Location"); got != base+"/installations/inst-1" {
				t.Errorf("Content-Location %q", got)
			}
		}},
		{"GET installation", "GET", func() string { return "/installations/inst-1" + v }, "", nil, 200, func(t *testing.T, res nhResp) {
			if !strings.Contains(res.body, `"installationId":"inst-1"`) || !strings.Contains(res.body, `"pushChannelExpired":false`) ||
				!strings.Contains(res.body, `"expirationTime":"9999-12-31T23:59:59`) {
				t.Errorf("body %s", res.body)
			}
		}},
		{"GET installation absent", "GET", func() string { return "/installations/absent" + v }, "", nil, 404, nil},
		{"PATCH installation", "PATCH", func() string { return "/installations/inst-1" + v }, `[{"op":"add","path":"/tags","value":"sports"}]`, nil, 200, nil},
		{"DELETE installation absent", "DELETE", func() string { return "/installations/absent" + v }, "", nil, 204, nil},
		{"POST registrationIDs", "POST", func() string { return "/registrationIDs" + v }, "", nil, 201, wantLocation("registrationids", &regID, "2020-06")},
		{"POST registrationids, api-version 2015-01", "POST", func() string { return "/registrationids?api-version=2015-01" }, "", nil, 201, wantLocation("registrationids", nil, "2015-01")},
		{"POST registrationids, no api-version", "POST", func() string { return "/registrationids/" }, "", nil, 201, wantLocation("registrationids", nil, "2020-06")},
		{"PUT registration", "PUT", func() string { return "/registrations/" + regID + v }, appleEntry("news,lang_en"), nil, 200, wantEntryHeaders(1)},
		{"PUT registration If-Match", "PUT", func() string { return "/registrations/" + regID + v }, appleEntry("news"), []string{"If-Match", `"1"`}, 200, wantEntryHeaders(2)},
		{"PUT registration stale If-Match", "PUT", func() string { return "/registrations/" + regID + v }, appleEntry("x"), []string{"If-Match", `W/"1"`}, 412, nil},
		{"GET registration", "GET", func() string { return "/registrations/" + regID + v }, "", nil, 200, wantEntryHeaders(2)},
		{"POST registrations", "POST", func() string { return "/registrations" + v }, appleEntry("news"), nil, 200, func(t *testing.T, res nhResp) {
			if res.header.Get("ETag") != `W/"1"` || !strings.HasPrefix(res.header.Get("Content-Location"), base+"/registrations/") ||
				!strings.HasSuffix(res.header.Get("Content-Location"), v) {
				t.Errorf("headers %v", res.header)
			}
		}},
		{"GET registrations", "GET", func() string { return "/registrations" + v }, "", nil, 200, func(t *testing.T, res nhResp) {
			wantNoContinuation(t, res)
			if res.header.Get("Content-Type") != nhwire.ContentTypeFeed || strings.Count(res.body, "<entry") != 4 {
				t.Errorf("feed %v %s", res.header, res.body)
			}
		}},
		{"GET registrations, one of several pages", "GET", func() string { return "/registrations" + v + "&$top=1" }, "", nil, 200, func(t *testing.T, res nhResp) {
			if res.header.Get(nhwire.ContinuationHeader) == "" {
				t.Error("no continuation token though more pages exist")
			}
		}},
		{"GET registrations by tag", "GET", func() string { return "/tags/news/registrations" + v }, "", nil, 200, wantNoContinuation},
		{"GET registrations by channel", "GET", func() string {
			return "/registrations" + v + "&$filter=" + url.QueryEscape("DeviceToken eq '"+apnsToken+"'")
		}, "", nil, 200, wantNoContinuation},
		{"DELETE registration", "DELETE", func() string { return "/registrations/" + regID + v }, "", nil, 200, nil},
		{"DELETE registration absent", "DELETE", func() string { return "/registrations/" + regID + v }, "", []string{"If-Match", "*"}, 404, nil},
		{"GET registration deleted", "GET", func() string { return "/registrations/" + regID + v }, "", nil, 404, nil},
		{"POST messages", "POST", func() string { return "/messages" + v }, `{"aps":{"alert":"hi"}}`,
			[]string{"ServiceBusNotification-Format", "apple", "ServiceBusNotification-Tags", "news"}, 201, wantLocation("messages", &msgID, "2020-06")},
		{"POST messages, template broadcast", "POST", func() string { return "/messages/" + v }, `{"msg":"hi"}`, nil, 201, wantLocation("messages", nil, "2020-06")},
		{"POST messages?direct", "POST", func() string { return "/messages" + v + "&direct" }, `{"aps":{"alert":"hi"}}`,
			[]string{"ServiceBusNotification-Format", "apple", "ServiceBusNotification-DeviceHandle", apnsToken}, 201, func(t *testing.T, res nhResp) {
				wantLocation("messages", nil, "2020-06")(t, res)
				if !strings.HasSuffix(res.header.Get("Location"), "&direct") {
					t.Errorf("direct Location %q", res.header.Get("Location"))
				}
			}},
		{"POST messages/$batch", "POST", func() string { return "/messages/$batch" + v + "&direct" }, batch,
			[]string{"ServiceBusNotification-Format", "fcmv1", "Content-Type", `multipart/mixed; boundary="b1"`}, 201, wantLocation("messages", nil, "2020-06")},
		{"POST messages?test", "POST", func() string { return "/messages" + v + "&test=true" }, `{"aps":{"alert":"hi"}}`,
			[]string{"ServiceBusNotification-Format", "apple", "ServiceBusNotification-Tags", "news"}, 201, func(t *testing.T, res nhResp) {
				if !strings.HasPrefix(res.body, "<NotificationOutcome") {
					t.Errorf("test send body %s", res.body)
				}
			}},
		{"POST schedulednotifications", "POST", func() string { return "/schedulednotifications" + v }, `{"msg":"later"}`,
			[]string{"ServiceBusNotification-ScheduleTime", at, "ServiceBusNotification-Tags", "news"}, 201, wantLocation("schedulednotifications", &schedID, "2020-06")},
		{"GET messages/{id} while scheduled", "GET", func() string { return "/messages/" + schedID + v }, "", nil, 404, nil},
		{"DELETE schedulednotifications", "DELETE", func() string { return "/schedulednotifications/" + schedID + v }, "", nil, 200, nil},
		{"DELETE schedulednotifications again", "DELETE", func() string { return "/schedulednotifications/" + schedID + v }, "", nil, 404, nil},
		{"GET messages/{id} unknown", "GET", func() string { return "/messages/no-such-id" + v }, "", nil, 404, nil},
		{"GET feedbackcontainer", "GET", func() string { return "/feedbackcontainer" + v }, "", nil, 200, func(t *testing.T, res nhResp) {
			if !strings.HasPrefix(res.body, base+"/") {
				t.Errorf("feedback container URL %q", res.body)
			}
		}},
		{"DELETE installation", "DELETE", func() string { return "/installations/inst-1" + v }, "", nil, 204, nil},
		// Jobs (export/import) are not implemented: a clear 404, not a 5xx
		// or a silent success.
		{"POST jobs (not implemented)", "POST", func() string { return "/jobs" + v }, `<entry/>`, nil, 404, nil},
		{"GET jobs (not implemented)", "GET", func() string { return "/jobs" + v }, "", nil, 404, nil},
	}
	for _, row := range rows {
		res := e.doURL(row.method, base+row.path(), tok, row.body, row.hdr...)
		if res.status != row.status {
			t.Fatalf("%s: got %d %s, want %d", row.name, res.status, res.body, row.status)
		}
		if row.status >= 400 && !strings.HasPrefix(res.body, fmt.Sprintf("<Error><Code>%d</Code><Detail>", row.status)) {
			t.Errorf("%s: error body %q", row.name, res.body)
		}
		if row.status >= 400 && !strings.Contains(res.body, "TrackingId:"+res.header.Get("TrackingId")) {
			t.Errorf("%s: error detail without the TrackingId: %s", row.name, res.body)
		}
		if row.check != nil {
			row.check(t, res)
		}
	}

	// GET messages/{id} answers 200 once the send is known (§14.1).
	res := e.want(e.do("GET", "/orders/messages/"+msgID+v, tok, ""), 200, "details")
	if !strings.Contains(res.body, "<NotificationDetails") {
		t.Errorf("details body %s", res.body)
	}
	// Paging to the end: the token goes away on the last page.
	cont, pages := "", 0
	for {
		hdr := []string{}
		if cont != "" {
			hdr = []string{nhwire.ContinuationHeader, cont}
		}
		res := e.do("GET", "/orders/registrations"+v+"&$top=1", tok, "", hdr...)
		pages++
		if cont = res.header.Get(nhwire.ContinuationHeader); cont == "" {
			break
		}
		if pages > 10 {
			t.Fatal("paging does not end")
		}
	}
	if pages != 1 { // only the POSTed registration is left
		t.Errorf("%d pages for one registration", pages)
	}
}

// TestNHMalformedInput sends malformed input of every kind: each answer is
// the exact 4xx with a Detail naming the problem, and the store's export
// is byte for byte what it was.
func TestNHMalformedInput(t *testing.T) {
	e := newNHEnv(t)
	tok := fullToken()
	e.want(e.do("PUT", "/orders/installations/inst-1"+v, tok, nhInstallation), 200, "installation")
	res := e.want(e.do("POST", "/orders/registrationIDs"+v, tok, ""), 201, "registration id")
	regID := strings.TrimSuffix(strings.TrimPrefix(res.header.Get("Location"), "https://"+nhHost+"/orders/registrationids/"), v)
	reg := "/orders/registrations/" + regID + v
	e.want(e.do("PUT", reg, tok, appleEntry("news")), 200, "registration")
	before := e.storeDump()
	if !strings.Contains(before, "inst-1") || !strings.Contains(before, regID) {
		t.Fatalf("export before: %s", before)
	}

	const inst = "/orders/installations/inst-1" + v
	const msgs = "/orders/messages" + v
	patch := func(ops string) string { return "[" + ops + "]" }
	manyOps := strings.TrimSuffix(strings.Repeat(`{"op":"add","path":"/tags","value":"t"},`, 101), ",")
	manyTags := strings.TrimSuffix(strings.Repeat("a || ", 201), " || ")
	longExpr := "a || " + strings.Repeat("(", 1) + strings.Repeat("b", 16<<10) + ")"
	entry := func(desc string) string {
		return `<entry xmlns="http://www.w3.org/2005/Atom"><content type="application/xml">` + desc + `</content></entry>`
	}
	const nhNS = `xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect"`
	part := func(name, body string) string {
		return "--b1\r\nContent-Type: application/json\r\nContent-Disposition: inline; name=" + name + "\r\n\r\n" + body + "\r\n"
	}
	const mixed = `multipart/mixed; boundary="b1"`
	goodNote := part("notification", `{"message":{"notification":{"title":"b"}}}`)
	fcm := []string{"ServiceBusNotification-Format", "fcmv1", "Content-Type", mixed}
	manyDevices := `["` + strings.TrimSuffix(strings.Repeat(`d",`+`"`, 1001), `,"`) + `]`
	soon := time.Now().UTC().Add(time.Hour).Format(time.RFC3339)

	cases := []struct {
		kind, name, method, path, body string
		hdr                            []string
		status                         int
		detail                         string // must appear in the Detail
	}{
		// Installation JSON.
		{"json", "truncated", "PUT", inst, `{"installationId":"inst-1","platform":"apns"`, nil, 400, ""},
		{"json", "empty body", "PUT", inst, ``, nil, 400, ""},
		{"json", "an array", "PUT", inst, `[]`, nil, 400, ""},
		{"json", "trailing garbage", "PUT", inst, nhInstallation + `x`, nil, 400, ""},
		{"json", "tags not an array", "PUT", inst, strings.Replace(nhInstallation, `["news","lang_en"]`, `{"news":1}`, 1), nil, 400, "tags"},
		{"json", "platform a number", "PUT", inst, strings.Replace(nhInstallation, `"apns"`, `5`, 1), nil, 400, "platform"},
		{"json", "templates an array", "PUT", inst, strings.Replace(nhInstallation, `"templates":{"t":{"body":"{\"aps\":{\"alert\":\"$(msg)\"}}"}}`, `"templates":[]`, 1), nil, 400, "templates"},
		{"json", "unknown platform", "PUT", inst, strings.Replace(nhInstallation, `"apns"`, `"pager"`, 1), nil, 400, "pager"},
		{"json", "no push channel", "PUT", inst, `{"installationId":"inst-1","platform":"apns"}`, nil, 400, "pushChannel"},
		{"json", "bad installation id", "PUT", "/orders/installations/a:b" + v, strings.Replace(nhInstallation, `"inst-1"`, `"a:b"`, 1), nil, 400, ""},
		{"json", "id mismatch", "PUT", inst, strings.Replace(nhInstallation, `"inst-1"`, `"inst-2"`, 1), nil, 400, "installationId"},
		{"json", "system tag", "PUT", inst, strings.Replace(nhInstallation, `"news"`, `"$UserId:{x}"`, 1), nil, 400, ""},
		{"json", "template with a bad expression", "PUT", inst, strings.Replace(nhInstallation, `$(msg)`, `$(msg`, 1), nil, 400, ""},
		// Registration XML.
		{"xml", "truncated", "PUT", reg, appleEntry("x")[:80], nil, 400, ""},
		{"xml", "not xml", "PUT", reg, `{"json":true}`, nil, 400, ""},
		{"xml", "wrong root", "PUT", reg, `<feed xmlns="http://www.w3.org/2005/Atom"/>`, nil, 400, ""},
		{"xml", "missing content", "PUT", reg, `<entry xmlns="http://www.w3.org/2005/Atom"></entry>`, nil, 400, ""},
		{"xml", "empty content", "PUT", reg, entry(``), nil, 400, ""},
		{"xml", "unknown description", "PUT", reg, entry(`<PagerRegistrationDescription ` + nhNS + `><Tags>a</Tags></PagerRegistrationDescription>`), nil, 400, ""},
		{"xml", "no device token", "PUT", reg, entry(`<AppleRegistrationDescription ` + nhNS + `><Tags>a</Tags></AppleRegistrationDescription>`), nil, 400, ""},
		{"xml", "template without body", "PUT", reg, entry(`<AppleTemplateRegistrationDescription ` + nhNS + `><DeviceToken>` + apnsToken + `</DeviceToken></AppleTemplateRegistrationDescription>`), nil, 400, ""},
		{"xml", "system tag", "PUT", reg, appleEntry("$InstallationId:{x}"), nil, 400, ""},
		{"xml", "bad registration id", "PUT", "/orders/registrations/a:b" + v, appleEntry("x"), nil, 400, ""},
		{"xml", "create, truncated", "POST", "/orders/registrations" + v, appleEntry("x")[:120], nil, 400, ""},
		// JSON-Patch.
		{"patch", "truncated", "PATCH", inst, `[{"op":`, nil, 400, ""},
		{"patch", "not an array", "PATCH", inst, `{"op":"add","path":"/tags","value":"x"}`, nil, 400, ""},
		{"patch", "bad op", "PATCH", inst, patch(`{"op":"move","from":"/tags","path":"/tags"}`), nil, 400, "move"},
		{"patch", "test op", "PATCH", inst, patch(`{"op":"test","path":"/userId","value":"u1"}`), nil, 400, ""},
		{"patch", "unknown path", "PATCH", inst, patch(`{"op":"add","path":"/colour","value":"blue"}`), nil, 400, "colour"},
		{"patch", "path into templates/x/nothing", "PATCH", inst, patch(`{"op":"add","path":"/templates/t/colour","value":"x"}`), nil, 400, ""},
		{"patch", "add a single tag by path", "PATCH", inst, patch(`{"op":"add","path":"/tags/sports","value":"sports"}`), nil, 400, ""},
		{"patch", "path into pushChannel", "PATCH", inst, patch(`{"op":"replace","path":"/pushChannel/x","value":"y"}`), nil, 400, ""},
		{"patch", "replace platform", "PATCH", inst, patch(`{"op":"replace","path":"/platform","value":"gcm"}`), nil, 400, ""},
		{"patch", "add without value", "PATCH", inst, patch(`{"op":"add","path":"/tags"}`), nil, 400, ""},
		{"patch", "system tag", "PATCH", inst, patch(`{"op":"add","path":"/tags","value":"$UserId:{x}"}`), nil, 400, ""},
		{"patch", "too many operations", "PATCH", inst, "[" + manyOps + "]", nil, 400, ""},
		{"patch", "second op bad, first not applied", "PATCH", inst, patch(`{"op":"add","path":"/tags","value":"ok"},{"op":"add","path":"/colour","value":"x"}`), nil, 400, ""},
		// Tag expressions.
		{"expr", "syntax", "POST", msgs, `{"msg":"x"}`, []string{"ServiceBusNotification-Tags", "news &&"}, 400, nhwire.HeaderTags},
		{"expr", "unbalanced", "POST", msgs, `{"msg":"x"}`, []string{"ServiceBusNotification-Tags", "(news || sports"}, 400, nhwire.HeaderTags},
		{"expr", "bad character", "POST", msgs, `{"msg":"x"}`, []string{"ServiceBusNotification-Tags", "news % sports"}, 400, nhwire.HeaderTags},
		{"expr", "too many tags", "POST", msgs, `{"msg":"x"}`, []string{"ServiceBusNotification-Tags", manyTags}, 400, nhwire.HeaderTags},
		{"expr", "too long", "POST", msgs, `{"msg":"x"}`, []string{"ServiceBusNotification-Tags", longExpr}, 400, nhwire.HeaderTags},
		{"expr", "tag over 120 characters", "POST", msgs, `{"msg":"x"}`, []string{"ServiceBusNotification-Tags", strings.Repeat("t", 121)}, 400, nhwire.HeaderTags},
		{"expr", "scheduled send", "POST", "/orders/schedulednotifications" + v, `{"msg":"x"}`, []string{"ServiceBusNotification-Tags", "||", nhwire.HeaderScheduleTime, soon}, 400, nhwire.HeaderTags},
		{"expr", "test send", "POST", msgs + "&test", `{"msg":"x"}`, []string{"ServiceBusNotification-Tags", "a &&& b"}, 400, nhwire.HeaderTags},
		// Oversize bodies.
		{"size", "installation", "PUT", inst, strings.Repeat(" ", nhMaxEntryBody+1), nil, 413, "larger than 1 MB"},
		{"size", "patch", "PATCH", inst, strings.Repeat(" ", nhMaxEntryBody+1), nil, 413, "larger than 1 MB"},
		{"size", "registration", "PUT", reg, strings.Repeat(" ", nhMaxEntryBody+1), nil, 413, "larger than 1 MB"},
		{"size", "registration create", "POST", "/orders/registrations" + v, strings.Repeat(" ", nhMaxEntryBody+1), nil, 413, "larger than 1 MB"},
		{"size", "send", "POST", msgs, `{"msg":"` + strings.Repeat("x", 64<<10) + `"}`, nil, 413, "64 Kb"},
		{"size", "scheduled send", "POST", "/orders/schedulednotifications" + v, `{"msg":"` + strings.Repeat("x", 64<<10) + `"}`, []string{nhwire.HeaderScheduleTime, soon}, 413, "64 Kb"},
		{"size", "batch", "POST", "/orders/messages/$batch" + v, goodNote + part("devices", `["`+strings.Repeat("d", nhMaxBatchBody)+`"]`) + "--b1--\r\n", fcm, 413, "1 MB"},
		{"size", "batch notification", "POST", "/orders/messages/$batch" + v, part("notification", `{"m":"`+strings.Repeat("x", 64<<10)+`"}`) + part("devices", `["d"]`) + "--b1--\r\n", fcm, 413, "64 Kb"},
		// Unknown hub.
		{"hub", "unknown hub", "GET", "/nohub/installations/inst-1" + v, "", nil, 404, "/nohub/installations/inst-1"},
		{"hub", "hub name prefix", "PUT", "/ordersx/installations/inst-1" + v, nhInstallation, nil, 404, ""},
		{"hub", "no hub", "GET", "/" + v, "", nil, 404, ""},
		{"hub", "hub root", "GET", "/orders" + v, "", nil, 404, ""},
		// If-Match.
		{"if-match", "word", "PUT", reg, appleEntry("x"), []string{"If-Match", "soon"}, 400, "If-Match"},
		{"if-match", "zero", "PUT", reg, appleEntry("x"), []string{"If-Match", `"0"`}, 400, "If-Match"},
		{"if-match", "negative", "PUT", reg, appleEntry("x"), []string{"If-Match", `"-3"`}, 400, "If-Match"},
		{"if-match", "weak non-number", "DELETE", reg, "", []string{"If-Match", `W/"x"`}, 400, "If-Match"},
		{"if-match", "unquoted list", "DELETE", reg, "", []string{"If-Match", `"1", "2"`}, 400, "If-Match"},
		{"if-match", "stale", "DELETE", reg, "", []string{"If-Match", `"7"`}, 412, ""},
		// $top.
		{"top", "word", "GET", "/orders/registrations" + v + "&$top=zero", "", nil, 400, "$top"},
		{"top", "zero", "GET", "/orders/registrations" + v + "&$top=0", "", nil, 400, "$top"},
		{"top", "negative", "GET", "/orders/registrations" + v + "&$top=-1", "", nil, 400, "$top"},
		{"top", "fraction", "GET", "/orders/tags/news/registrations" + v + "&$top=1.5", "", nil, 400, "$top"},
		{"top", "overflow", "GET", "/orders/tags/news/registrations" + v + "&$top=99999999999999999999", "", nil, 400, "$top"},
		// Continuation tokens.
		{"continuation", "garbage in the query", "GET", "/orders/registrations" + v + "&continuationtoken=garbage", "", nil, 400, ""},
		{"continuation", "garbage in the header", "GET", "/orders/registrations" + v, "", []string{nhwire.ContinuationHeader, "%%%"}, 400, ""},
		{"continuation", "by tag", "GET", "/orders/tags/news/registrations" + v + "&ContinuationToken=not-a-cursor", "", nil, 400, ""},
		// $filter.
		{"filter", "unknown property", "GET", "/orders/registrations" + v + "&$filter=" + url.QueryEscape("Colour eq 'blue'"), "", nil, 400, "$filter"},
		{"filter", "no operator", "GET", "/orders/registrations" + v + "&$filter=" + url.QueryEscape("DeviceToken"), "", nil, 400, "$filter"},
		// Schedule times.
		{"schedule", "a word", "POST", "/orders/schedulednotifications" + v, `{"msg":"x"}`, []string{nhwire.HeaderScheduleTime, "tomorrow"}, 400, nhwire.HeaderScheduleTime},
		{"schedule", "missing", "POST", "/orders/schedulednotifications" + v, `{"msg":"x"}`, nil, 400, nhwire.HeaderScheduleTime},
		{"schedule", "date only", "POST", "/orders/schedulednotifications" + v, `{"msg":"x"}`, []string{nhwire.HeaderScheduleTime, "2030-01-02"}, 400, nhwire.HeaderScheduleTime},
		{"schedule", "beyond 7 days", "POST", "/orders/schedulednotifications" + v, `{"msg":"x"}`, []string{nhwire.HeaderScheduleTime, time.Now().UTC().Add(8 * 24 * time.Hour).Format(time.RFC3339)}, 400, ""},
		// $batch multipart.
		{"batch", "not multipart", "POST", "/orders/messages/$batch" + v, `{"a":1}`, []string{"ServiceBusNotification-Format", "fcmv1", "Content-Type", "application/json"}, 400, "multipart"},
		{"batch", "no boundary", "POST", "/orders/messages/$batch" + v, goodNote, []string{"ServiceBusNotification-Format", "fcmv1", "Content-Type", "multipart/mixed"}, 400, "boundary"},
		{"batch", "truncated", "POST", "/orders/messages/$batch" + v, goodNote + part("devices", `["d"]`)[:30], fcm, 400, ""},
		{"batch", "no notification part", "POST", "/orders/messages/$batch" + v, part("devices", `["d"]`) + "--b1--\r\n", fcm, 400, ""},
		{"batch", "no devices part", "POST", "/orders/messages/$batch" + v, goodNote + "--b1--\r\n", fcm, 400, ""},
		{"batch", "devices not an array", "POST", "/orders/messages/$batch" + v, goodNote + part("devices", `{"d":1}`) + "--b1--\r\n", fcm, 400, "devices"},
		{"batch", "devices empty", "POST", "/orders/messages/$batch" + v, goodNote + part("devices", `[]`) + "--b1--\r\n", fcm, 400, "devices"},
		{"batch", "an empty handle", "POST", "/orders/messages/$batch" + v, goodNote + part("devices", `["a",""]`) + "--b1--\r\n", fcm, 400, "devices"},
		{"batch", "too many devices", "POST", "/orders/messages/$batch" + v, goodNote + part("devices", manyDevices) + "--b1--\r\n", fcm, 400, "1000"},
		{"batch", "template format", "POST", "/orders/messages/$batch" + v, goodNote + part("devices", `["d"]`) + "--b1--\r\n", []string{"Content-Type", mixed}, 400, "native format"},
		{"batch", "notification twice", "POST", "/orders/messages/$batch" + v, goodNote + goodNote + part("devices", `["d"]`) + "--b1--\r\n", fcm, 400, "twice"},
		{"batch", "bad fcm payload", "POST", "/orders/messages/$batch" + v, part("notification", `{"message":`) + part("devices", `["d"]`) + "--b1--\r\n", fcm, 400, ""},
		// Send headers and bodies.
		{"send", "unknown format", "POST", msgs, `{}`, []string{"ServiceBusNotification-Format", "pager"}, 400, "pager"},
		{"send", "retired format", "POST", msgs, `{}`, []string{"ServiceBusNotification-Format", "windowsphone"}, 400, "retired"},
		{"send", "bad apple json", "POST", msgs, `{"aps":`, []string{"ServiceBusNotification-Format", "apple"}, 400, ""},
		{"send", "windows without X-WNS-Type", "POST", msgs, `<toast/>`, []string{"ServiceBusNotification-Format", "windows"}, 400, "X-WNS-Type"},
		{"send", "direct without a handle", "POST", msgs + "&direct", `{"aps":{}}`, []string{"ServiceBusNotification-Format", "apple"}, 400, nhwire.HeaderDeviceHandle},
		{"send", "template body not json", "POST", msgs, `msg=x`, nil, 400, ""},
		// Routes and methods.
		{"route", "unknown collection", "GET", "/orders/frobs" + v, "", nil, 404, ""},
		{"route", "too deep", "GET", "/orders/installations/inst-1/x" + v, "", nil, 404, ""},
		{"route", "wrong method", "POST", inst, nhInstallation, nil, 405, "POST"},
		{"route", "cancel an unknown schedule", "DELETE", "/orders/schedulednotifications/nope" + v, "", nil, 404, ""},
	}
	for _, c := range cases {
		name := c.kind + ": " + c.name
		res := e.do(c.method, c.path, tok, c.body, c.hdr...)
		if res.status != c.status {
			t.Errorf("%s: got %d %s, want %d", name, res.status, res.body, c.status)
			continue
		}
		prefix := fmt.Sprintf("<Error><Code>%d</Code><Detail>", c.status)
		if !strings.HasPrefix(res.body, prefix) || !strings.Contains(res.body, c.detail) {
			t.Errorf("%s: body %q, want a Detail mentioning %q", name, res.body, c.detail)
		}
		// A clear message: more than the TrackingId suffix.
		if detail := strings.TrimPrefix(res.body, prefix); strings.Index(detail, "TrackingId:") < 10 {
			t.Errorf("%s: no message in %q", name, res.body)
		}
		if loc := res.header.Get("Location"); loc != "" {
			t.Errorf("%s: Location %q on an error", name, loc)
		}
		if c.status == 405 && res.header.Get("Allow") == "" {
			t.Errorf("%s: 405 without Allow", name)
		}
		if after := e.storeDump(); after != before {
			t.Fatalf("%s changed the store:\nbefore %s\nafter  %s", name, before, after)
		}
	}
}

// TestNHSASRules covers the SAS rules TestNHAuth does not: the audience as
// a URL prefix, expiry edges, malformed tokens, how the key is used, the
// scheme and case of the signed resource, and the rights of each key on
// every operation.
func TestNHSASRules(t *testing.T) {
	e := newNHEnv(t)
	const path = "/orders/installations/absent" + v
	key := []byte(nhFullKey)
	enc := func(u string) string { return url.QueryEscape(strings.ToLower(u)) }
	sr := enc("https://" + nhHost + "/")
	expire := func(d time.Duration) string { return strconv.FormatInt(time.Now().Add(d).Unix(), 10) }
	sig := func(sr, se string, key []byte) string {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(sr + "\n" + se))
		return url.QueryEscape(base64.StdEncoding.EncodeToString(h.Sum(nil)))
	}
	se := inHour()
	good := sig(sr, se, key)
	decoded, err := base64.StdEncoding.DecodeString(nhFullKey)
	if err != nil {
		t.Fatal(err)
	}
	accept := map[string]string{
		"prefix: the hub":                  signRaw(enc("https://"+nhHost+"/orders"), se, key, fullRule),
		"prefix: the collection":           signRaw(enc("https://"+nhHost+"/orders/installations"), se, key, fullRule),
		"prefix: the full URL with query":  signRaw(enc("https://"+nhHost+"/orders/installations/absent?api-version=2020-06"), se, key, fullRule),
		"prefix: trailing slash":           signRaw(enc("https://"+nhHost+"/orders/"), se, key, fullRule),
		"scheme: http on https":            signRaw(enc("http://"+nhHost+"/"), se, key, fullRule),
		"scheme: sb":                       signRaw(enc("sb://"+nhHost+"/"), se, key, fullRule),
		"host: upper case, signed as sent": signRaw(url.QueryEscape("https://CONTOSO.Example/"), se, key, fullRule),
		"escapes: lower-case hex (.NET)":   signRaw(strings.ToLower(sr), se, key, fullRule),
		"port: 443 stands for none":        signRaw(enc("https://"+nhHost+":443/"), se, key, fullRule),
		"expiry: within the clock skew":    signRaw(sr, expire(-time.Minute), key, fullRule),
		"expiry: far in the future":        signRaw(sr, "253402300799", key, fullRule), // 9999-12-31
		"fields: any order":                "SharedAccessSignature skn=" + fullRule + "&se=" + se + "&sig=" + good + "&sr=" + sr,
		"fields: unknown ones ignored":     "SharedAccessSignature sr=" + sr + "&sig=" + good + "&se=" + se + "&skn=" + fullRule + "&foo=bar",
		"scheme word in any case":          "sharedaccesssignature sr=" + sr + "&sig=" + good + "&se=" + se + "&skn=" + fullRule,
		"key used as-is":                   signRaw(sr, se, []byte(nhFullKey), fullRule),
	}
	for name, auth := range accept {
		e.want(e.do("GET", path, auth, ""), 404, name) // authenticated: the installation is absent
	}
	// A request to an upper-case host over http, signed for the lower-case
	// https host: host case and scheme do not matter.
	e.want(e.doURL("GET", "http://CONTOSO.EXAMPLE"+path, fullToken(), ""), 404, "upper-case host, http")

	refuse := map[string]struct{ auth, detail string }{
		"prefix: not at a segment boundary": {signRaw(enc("https://"+nhHost+"/ord"), se, key, fullRule), "40104"},
		"prefix: another hub":               {signRaw(enc("https://"+nhHost+"/orders2"), se, key, fullRule), "40104"},
		"prefix: another collection":        {signRaw(enc("https://"+nhHost+"/orders/registrations"), se, key, fullRule), "40104"},
		"prefix: another id":                {signRaw(enc("https://"+nhHost+"/orders/installations/present"), se, key, fullRule), "40104"},
		"host: another one":                 {signRaw(enc("https://other.example/"), se, key, fullRule), "40104"},
		"host: a suffix of it":              {signRaw(enc("https://example/"), se, key, fullRule), "40104"},
		"port: another one":                 {signRaw(enc("https://"+nhHost+":8443/"), se, key, fullRule), "40104"},
		"expiry: past the clock skew":       {signRaw(sr, expire(-nhwire.ClockSkew-time.Minute), key, fullRule), "ExpiredToken"},
		"expiry: zero":                      {signRaw(sr, "0", key, fullRule), "ExpiredToken"},
		"expiry: not a number":              {signRaw(sr, "soon", key, fullRule), "MalformedToken"},
		"expiry: overflows":                 {signRaw(sr, "99999999999999999999", key, fullRule), "MalformedToken"},
		"missing sr":                        {"SharedAccessSignature sig=" + good + "&se=" + se + "&skn=" + fullRule, "MalformedToken"},
		"missing sig":                       {"SharedAccessSignature sr=" + sr + "&se=" + se + "&skn=" + fullRule, "MalformedToken"},
		"missing se":                        {"SharedAccessSignature sr=" + sr + "&sig=" + good + "&skn=" + fullRule, "MalformedToken"},
		"missing skn":                       {"SharedAccessSignature sr=" + sr + "&sig=" + good + "&se=" + se, "MalformedToken"},
		"empty sig":                         {"SharedAccessSignature sr=" + sr + "&sig=&se=" + se + "&skn=" + fullRule, "InvalidSignature"},
		"duplicate sr":                      {"SharedAccessSignature sr=" + sr + "&sr=" + enc("https://other.example/") + "&sig=" + good + "&se=" + se + "&skn=" + fullRule, "MalformedToken"},
		"duplicate sig":                     {"SharedAccessSignature sr=" + sr + "&sig=" + good + "&sig=" + good + "&se=" + se + "&skn=" + fullRule, "MalformedToken"},
		"duplicate se":                      {"SharedAccessSignature sr=" + sr + "&sig=" + good + "&se=" + se + "&se=" + se + "&skn=" + fullRule, "MalformedToken"},
		"duplicate skn":                     {"SharedAccessSignature sr=" + sr + "&sig=" + good + "&se=" + se + "&skn=" + fullRule + "&skn=SendOnly", "MalformedToken"},
		"no space after the scheme word":    {"SharedAccessSignaturesr=" + sr + "&sig=" + good + "&se=" + se + "&skn=" + fullRule, "MalformedToken"},
		"unknown skn":                       {signRaw(sr, se, key, "Nobody"), "InvalidSignature"},
		"skn in another case":               {signRaw(sr, se, key, strings.ToLower(fullRule)), "InvalidSignature"},
		"wrong key":                         {signRaw(sr, se, []byte("c29tZS1vdGhlci1rZXk="), fullRule), "InvalidSignature"},
		"key base64-decoded":                {signRaw(sr, se, decoded, fullRule), "InvalidSignature"},
		"another rule's key":                {signRaw(sr, se, []byte(nhSendKey), fullRule), "InvalidSignature"},
		"se changed after signing":          {"SharedAccessSignature sr=" + sr + "&sig=" + good + "&se=" + expire(2*time.Hour) + "&skn=" + fullRule, "InvalidSignature"},
		"sr changed after signing":          {"SharedAccessSignature sr=" + enc("https://"+nhHost+"/orders") + "&sig=" + good + "&se=" + se + "&skn=" + fullRule, "InvalidSignature"},
		"basic auth":                        {"Basic dXNlcjpwYXNz", "MalformedToken"},
	}
	for name, c := range refuse {
		res := e.want(e.do("GET", path, c.auth, ""), 401, name)
		if !strings.Contains(res.body, c.detail) {
			t.Errorf("%s: detail %s, want %q", name, res.body, c.detail)
		}
	}
	// Two Authorization headers: refused even when both are good.
	r := httptest.NewRequest("GET", "https://"+nhHost+path, nil)
	r.Header.Add("Authorization", fullToken())
	r.Header.Add("Authorization", fullToken())
	w := httptest.NewRecorder()
	_ = e.api.ServeHTTP(w, r, nil)
	if w.Code != 401 || !strings.Contains(w.Body.String(), "MissingToken") {
		t.Errorf("two Authorization headers: %d %s", w.Code, w.Body.String())
	}

	// A primary and a secondary key under one rule name: either signs.
	two := &NHAPI{Hub: "orders", Rules: []NHRule{
		{Name: "Backend", Key: "primary-key", Rights: []string{"Manage"}},
		{Name: "Backend", Key: "secondary-key", Rights: []string{"Manage"}},
	}}
	if err := two.setup(e.api.hub, caddy.NewReplacer()); err != nil {
		t.Fatal(err)
	}
	saved := e.api
	e.api = two
	e.want(e.do("GET", path, token("Backend", "primary-key"), ""), 404, "primary key")
	e.want(e.do("GET", path, token("Backend", "secondary-key"), ""), 404, "secondary key")
	e.want(e.do("GET", path, token("Backend", "tertiary-key"), ""), 401, "neither key")
	// Manage alone implies Listen and Send.
	e.want(e.do("POST", "/orders/messages"+v, token("Backend", "primary-key"), `{"msg":"x"}`, "ServiceBusNotification-Tags", "none"), 201, "manage sends")
	e.api = saved

	// Rights, operation by operation: a missing right is 403 from
	// api-version 2020-06 on (and when absent), 401 before, and nothing is
	// stored or sent either way.
	e.want(e.do("PUT", "/orders/installations/inst-1"+v, fullToken(), nhInstallation), 200, "installation")
	before := e.storeDump()
	listen := token("DefaultListenSharedAccessSignature", nhListenKey)
	send := token("SendOnly", nhSendKey)
	at := time.Now().UTC().Add(time.Hour).Format(time.RFC3339)
	batch := "--b1\r\nContent-Disposition: inline; name=notification\r\n\r\n{}\r\n--b1\r\nContent-Disposition: inline; name=devices\r\n\r\n[\"d\"]\r\n--b1--\r\n"
	type op struct {
		name, method, path, body, need string
		hdr                            []string
	}
	sendOps := []op{
		{"send", "POST", "/orders/messages", `{"msg":"x"}`, "Send", nil},
		{"test send", "POST", "/orders/messages?test&", `{"msg":"x"}`, "Send", []string{nhwire.HeaderTags, "news"}},
		{"direct send", "POST", "/orders/messages?direct&", `{"aps":{}}`, "Send", []string{nhwire.HeaderFormat, "apple", nhwire.HeaderDeviceHandle, apnsToken}},
		{"batch send", "POST", "/orders/messages/$batch?direct&", batch, "Send", []string{nhwire.HeaderFormat, "fcmv1", "Content-Type", `multipart/mixed; boundary=b1`}},
		{"schedule", "POST", "/orders/schedulednotifications", `{"msg":"x"}`, "Send", []string{nhwire.HeaderScheduleTime, at}},
		{"cancel schedule", "DELETE", "/orders/schedulednotifications/some-id", "", "Send", nil},
		{"notification details", "GET", "/orders/messages/some-id", "", "Send", nil},
		{"feedback container", "GET", "/orders/feedbackcontainer", "", "Send", nil},
	}
	manageOps := []op{
		{"list registrations", "GET", "/orders/registrations", "", "Manage", nil},
		{"list by tag", "GET", "/orders/tags/news/registrations", "", "Manage", nil},
	}
	listenOps := []op{
		{"put installation", "PUT", "/orders/installations/inst-2", strings.Replace(nhInstallation, "inst-1", "inst-2", 1), "Listen", nil},
		{"get installation", "GET", "/orders/installations/inst-1", "", "Listen", nil},
		{"patch installation", "PATCH", "/orders/installations/inst-1", `[{"op":"add","path":"/tags","value":"x"}]`, "Listen", nil},
		{"delete installation", "DELETE", "/orders/installations/inst-1", "", "Listen", nil},
		{"registration id", "POST", "/orders/registrationIDs", "", "Listen", nil},
		{"create registration", "POST", "/orders/registrations", appleEntry("x"), "Listen", nil},
		{"list by channel", "GET", "/orders/registrations?$filter=" + url.QueryEscape("DeviceToken eq '"+apnsToken+"'") + "&", "", "Listen", nil},
	}
	versioned := func(p, version string) string {
		sep := "?"
		if strings.HasSuffix(p, "&") {
			p, sep = strings.TrimSuffix(p, "&"), "&"
		}
		if version == "" {
			return p
		}
		return p + sep + "api-version=" + version
	}
	check := func(key, keyName string, ops []op) {
		for _, o := range ops {
			for _, c := range []struct {
				version string
				status  int
			}{{"2020-06", 403}, {"", 403}, {"2017-04", 401}, {"2015-01", 401}} {
				what := fmt.Sprintf("%s key, %s, api-version %q", keyName, o.name, c.version)
				res := e.want(e.do(o.method, versioned(o.path, c.version), key, o.body, o.hdr...), c.status, what)
				if !strings.Contains(res.body, o.need+" claim is required for this operation.") {
					t.Errorf("%s: detail %s", what, res.body)
				}
				if res.header.Get("Location") != "" || res.header.Get("Retry-After") != "" {
					t.Errorf("%s: headers %v", what, res.header)
				}
			}
		}
	}
	check(listen, "Listen", sendOps)
	check(listen, "Listen", manageOps)
	check(send, "Send", manageOps)
	check(send, "Send", listenOps)
	if after := e.storeDump(); after != before {
		t.Fatalf("refused operations changed the store:\n%s\n%s", before, after)
	}
	// And each key does what its rights allow.
	for _, o := range listenOps {
		res := e.do(o.method, versioned(o.path, "2020-06"), listen, o.body, o.hdr...)
		if res.status == 401 || res.status == 403 {
			t.Errorf("Listen key, %s: %d %s", o.name, res.status, res.body)
		}
	}
	for _, o := range sendOps {
		res := e.do(o.method, versioned(o.path, "2020-06"), send, o.body, o.hdr...)
		if res.status == 401 || res.status == 403 {
			t.Errorf("Send key, %s: %d %s", o.name, res.status, res.body)
		}
	}
}

// fakeClock is an injectable clock for the throttle tests, so waiting out
// a Retry-After takes no time.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// throttledAPI replaces e's handler by one over the same hub with the
// given throttles and a fake clock.
func throttledAPI(t *testing.T, e *nhEnv, def *NHThrottle, perRule map[string]*NHThrottle) *fakeClock {
	t.Helper()
	clock := &fakeClock{now: time.Now()}
	api := &NHAPI{Hub: "orders", Throttle: def, Rules: []NHRule{
		{Name: fullRule, Key: nhFullKey, Rights: []string{"Listen", "Send", "Manage"}},
		{Name: fullRule, Key: "secondary-full-key", Rights: []string{"Listen", "Send", "Manage"}},
		{Name: "DefaultListenSharedAccessSignature", Key: nhListenKey, Rights: []string{"Listen"}},
		{Name: "SendOnly", Key: nhSendKey, Rights: []string{"Send"}},
	}, now: clock.Now}
	for i := range api.Rules {
		api.Rules[i].Throttle = perRule[api.Rules[i].Name]
	}
	if err := api.setup(e.api.hub, caddy.NewReplacer()); err != nil {
		t.Fatal(err)
	}
	e.api = api
	return clock
}

func TestNHThrottle(t *testing.T) {
	e := newNHEnv(t)
	clock := throttledAPI(t, e, &NHThrottle{Rate: 0.5, Burst: 2}, map[string]*NHThrottle{
		"DefaultListenSharedAccessSignature": {Rate: 0}, // exempt
	})
	const path = "/orders/installations/absent" + v
	full := fullToken()
	secondary := token(fullRule, "secondary-full-key")

	// The burst passes, the next request is throttled.
	e.want(e.do("GET", path, full, ""), 404, "first")
	e.want(e.do("GET", path, secondary, ""), 404, "second, with the rule's other key")
	res := e.want(e.do("GET", path, full, ""), 429, "over the burst")
	if ra := res.header.Get("Retry-After"); ra != "2" { // one token at 0.5/s
		t.Fatalf("Retry-After %q, want 2", ra)
	}
	if !strings.Contains(res.body, "Throttled") || !strings.Contains(res.body, "Retry after 2 seconds") ||
		!strings.Contains(res.body, "TrackingId:"+res.header.Get("TrackingId")) || res.header.Get("x-ms-correlation-request-id") == "" {
		t.Errorf("throttled answer: %v %s", res.header, res.body)
	}
	// The other key of the same name shares the budget.
	e.want(e.do("GET", path, secondary, ""), 429, "secondary key, same budget")
	// An older api-version gets 403 with Retry-After, which older SDKs read
	// as throttling.
	res = e.want(e.do("GET", "/orders/installations/absent?api-version=2015-01", full, ""), 403, "old api-version")
	if res.header.Get("Retry-After") == "" {
		t.Error("403 throttling without Retry-After")
	}
	// A throttled write changes nothing: the check comes before the store.
	before := e.storeDump()
	e.want(e.do("PUT", "/orders/installations/inst-1"+v, full, nhInstallation), 429, "throttled write")
	if e.storeDump() != before {
		t.Fatal("a throttled PUT changed the store")
	}

	// Other keys are unaffected: the Send rule has its own bucket, the
	// Listen rule is exempt.
	e.want(e.do("POST", "/orders/messages"+v, token("SendOnly", nhSendKey), `{"msg":"x"}`, nhwire.HeaderTags, "none"), 201, "send key")
	for i := 0; i < 20; i++ {
		e.want(e.do("GET", path, token("DefaultListenSharedAccessSignature", nhListenKey), ""), 404, "exempt listen key")
	}

	// After Retry-After the key works again, once.
	clock.Advance(2 * time.Second)
	e.want(e.do("GET", path, full, ""), 404, "after Retry-After")
	res = e.want(e.do("GET", path, full, ""), 429, "again at once")

	// Unauthenticated requests naming the rule spend nothing: after a
	// flood of them, a full refill still allows exactly the burst.
	clock.Advance(time.Hour)
	for _, auth := range []string{token(fullRule, "wrong-key"), signRaw("x", "1", []byte(nhFullKey), fullRule), "SharedAccessSignature skn=" + fullRule, ""} {
		for i := 0; i < 10; i++ {
			e.want(e.do("GET", path, auth, ""), 401, "unauthenticated")
		}
	}
	e.want(e.do("GET", path, full, ""), 404, "burst 1 after the flood")
	e.want(e.do("GET", path, full, ""), 404, "burst 2 after the flood")
	e.want(e.do("GET", path, full, ""), 429, "over the burst after the flood")

	// A forbidden request (authenticated, missing right) does spend: the
	// key is known, and its holder is the one calling.
	throttledAPI(t, e, &NHThrottle{Rate: 1, Burst: 1}, nil)
	e.want(e.do("POST", "/orders/messages"+v, token("DefaultListenSharedAccessSignature", nhListenKey), `{"msg":"x"}`), 403, "forbidden")
	e.want(e.do("GET", path, token("DefaultListenSharedAccessSignature", nhListenKey), ""), 429, "after the forbidden one")
}

// TestNHThrottleRetryAfter checks Retry-After on slow rates: whole
// seconds, rounded up, and waiting that long is always enough.
func TestNHThrottleRetryAfter(t *testing.T) {
	e := newNHEnv(t)
	for _, c := range []struct {
		limit NHThrottle
		want  string
	}{
		{NHThrottle{Rate: 1.0 / 60, Burst: 1}, "60"},
		{NHThrottle{Rate: 3, Burst: 1}, "1"}, // a third of a second, rounded up
		{NHThrottle{Rate: 1.0 / 3600, Burst: 5}, "3600"},
		{NHThrottle{Rate: 0.4}, "3"}, // burst defaults to 1; 2.5 s rounded up
	} {
		lim := c.limit
		clock := throttledAPI(t, e, &lim, nil)
		const path = "/orders/installations/absent" + v
		var res nhResp
		for i := 0; ; i++ {
			if res = e.do("GET", path, fullToken(), ""); res.status == 429 {
				break
			}
			if i > 10 {
				t.Fatalf("%+v: never throttled", c.limit)
			}
		}
		if got := res.header.Get("Retry-After"); got != c.want {
			t.Errorf("%+v: Retry-After %q, want %q", c.limit, got, c.want)
		}
		secs, _ := strconv.Atoi(res.header.Get("Retry-After"))
		clock.Advance(time.Duration(secs) * time.Second)
		e.want(e.do("GET", path, fullToken(), ""), 404, fmt.Sprintf("%+v after Retry-After", c.limit))
	}
}

// TestNHThrottleConcurrent spends one bucket from many goroutines with the
// real clock and a rate so slow that no token comes back during the test:
// exactly the burst gets through.
func TestNHThrottleConcurrent(t *testing.T) {
	e := newNHEnv(t)
	throttledAPI(t, e, &NHThrottle{Rate: 1.0 / 3600, Burst: 25}, nil)
	e.api.now = time.Now
	var ok, throttled atomic.Int64
	var wg sync.WaitGroup
	auth := fullToken()
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				r := httptest.NewRequest("GET", "https://"+nhHost+"/orders/installations/absent"+v, nil)
				r.Header.Set("Authorization", auth)
				w := httptest.NewRecorder()
				_ = e.api.ServeHTTP(w, r, nil)
				switch w.Code {
				case 404:
					ok.Add(1)
				case 429:
					throttled.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 25 || throttled.Load() != 55 {
		t.Fatalf("%d passed, %d throttled; want 25 and 55", ok.Load(), throttled.Load())
	}
}

func TestNHThrottleConfig(t *testing.T) {
	hub := &Hub{Name: "orders"}
	bad := map[string]*NHAPI{
		"negative rate": {Hub: "orders", Throttle: &NHThrottle{Rate: -1}, Rules: []NHRule{{Name: "a", Key: "k", Rights: []string{"Send"}}}},
		"negative burst": {Hub: "orders", Rules: []NHRule{{Name: "a", Key: "k", Rights: []string{"Send"},
			Throttle: &NHThrottle{Rate: 1, Burst: -1}}}},
		"rate too high": {Hub: "orders", Throttle: &NHThrottle{Rate: 2e9}, Rules: []NHRule{{Name: "a", Key: "k", Rights: []string{"Send"}}}},
		"rate too low":  {Hub: "orders", Throttle: &NHThrottle{Rate: 1e-7}, Rules: []NHRule{{Name: "a", Key: "k", Rights: []string{"Send"}}}},
		"keys of a rule disagree": {Hub: "orders", Rules: []NHRule{
			{Name: "a", Key: "k1", Rights: []string{"Send"}, Throttle: &NHThrottle{Rate: 1}},
			{Name: "a", Key: "k2", Rights: []string{"Send"}, Throttle: &NHThrottle{Rate: 2}},
		}},
	}
	for name, n := range bad {
		if err := n.setup(hub, caddy.NewReplacer()); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// The default burst is the rate rounded up; keys of a rule that agree,
	// or both inherit, are fine.
	n := &NHAPI{Hub: "orders", Throttle: &NHThrottle{Rate: 2.5}, Rules: []NHRule{
		{Name: "a", Key: "k1", Rights: []string{"Send"}},
		{Name: "a", Key: "k2", Rights: []string{"Send"}},
		{Name: "b", Key: "k3", Rights: []string{"Send"}, Throttle: &NHThrottle{}},
	}}
	if err := n.setup(hub, caddy.NewReplacer()); err != nil {
		t.Fatal(err)
	}
	if n.Throttle.Burst != 3 || n.limiter.buckets["a"] == nil || n.limiter.buckets["b"] != nil {
		t.Errorf("burst %d, buckets %v", n.Throttle.Burst, n.limiter.buckets)
	}
	// No throttle anywhere: no buckets at all.
	n = &NHAPI{Hub: "orders", Rules: []NHRule{{Name: "a", Key: "k", Rights: []string{"Send"}}}}
	if err := n.setup(hub, caddy.NewReplacer()); err != nil || len(n.limiter.buckets) != 0 {
		t.Errorf("unthrottled: %v, %v", err, n.limiter.buckets)
	}
}

// TestNHCaddyfileThrottle extends TestNHCaddyfile with the throttle
// syntax: a handler default, a per-rule override in a block after the rule
// line, off, and the errors.
func TestNHCaddyfileThrottle(t *testing.T) {
	adapt := func(body string) (string, error) {
		cf := ":80 {\n\tpushgate_nh {\n\t\thub orders\n" + body + "\t}\n}\n"
		out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), nil)
		return string(out), err
	}
	good := []struct{ body, want string }{
		{"\t\trule a k Send\n\t\tthrottle 200/s\n", `"throttle":{"burst":200,"rate":200}`},
		{"\t\trule a k Send\n\t\tthrottle 200/s burst 400\n", `"throttle":{"burst":400,"rate":200}`},
		{"\t\trule a k Send\n\t\tthrottle 120/m\n", `"throttle":{"burst":120,"rate":2}`},
		{"\t\trule a k Send\n\t\tthrottle 7200/h burst 10\n", `"throttle":{"burst":10,"rate":2}`},
		{"\t\trule a k Send\n\t\tthrottle 10/500ms\n", `"throttle":{"burst":10,"rate":20}`},
		{"\t\trule a k Send\n\t\tthrottle 0.5/s\n", `"throttle":{"burst":1,"rate":0.5}`},
		{"\t\trule a k Send\n\t\tthrottle off\n", `"throttle":{"rate":0}`},
		{"\t\trule a k Send {\n\t\t\tthrottle 5/s burst 7\n\t\t}\n", `"rules":[{"key":"k","name":"a","rights":["Send"],"throttle":{"burst":7,"rate":5}}]`},
		{"\t\tthrottle 100/s\n\t\trule a k Send {\n\t\t\tthrottle off\n\t\t}\n\t\trule b k2 Listen\n",
			`"rules":[{"key":"k","name":"a","rights":["Send"],"throttle":{"rate":0}},{"key":"k2","name":"b","rights":["Listen"]}],"throttle":{"burst":100,"rate":100}`},
	}
	for _, c := range good {
		out, err := adapt(c.body)
		if err != nil {
			t.Errorf("%q: %v", c.body, err)
			continue
		}
		if !strings.Contains(out, c.want) {
			t.Errorf("%q: adapted to %s, want %s", c.body, out, c.want)
		}
	}
	bad := map[string]string{
		"no rate":           "\t\trule a k Send\n\t\tthrottle\n",
		"no unit":           "\t\trule a k Send\n\t\tthrottle 200\n",
		"bad unit":          "\t\trule a k Send\n\t\tthrottle 200/fortnight\n",
		"zero":              "\t\trule a k Send\n\t\tthrottle 0/s\n",
		"negative":          "\t\trule a k Send\n\t\tthrottle -5/s\n",
		"not a number":      "\t\trule a k Send\n\t\tthrottle lots/s\n",
		"burst missing n":   "\t\trule a k Send\n\t\tthrottle 5/s burst\n",
		"burst zero":        "\t\trule a k Send\n\t\tthrottle 5/s burst 0\n",
		"burst word":        "\t\trule a k Send\n\t\tthrottle 5/s burst many\n",
		"stray argument":    "\t\trule a k Send\n\t\tthrottle 5/s per key\n",
		"off with a burst":  "\t\trule a k Send\n\t\tthrottle off burst 5\n",
		"twice":             "\t\trule a k Send\n\t\tthrottle 5/s\n\t\tthrottle 6/s\n",
		"rule block option": "\t\trule a k Send {\n\t\t\tcolour blue\n\t\t}\n",
		"rule block twice":  "\t\trule a k Send {\n\t\t\tthrottle 1/s\n\t\t\tthrottle 2/s\n\t\t}\n",
		"zero duration":     "\t\trule a k Send\n\t\tthrottle 5/0s\n",
		"too fast":          "\t\trule a k Send\n\t\tthrottle 1e12/1ns\n",
		"too slow":          "\t\trule a k Send\n\t\tthrottle 1/1000000h\n",
		"huge count":        "\t\trule a k Send\n\t\tthrottle 1e300/s\n",
	}
	for name, body := range bad {
		if out, err := adapt(body); err == nil {
			t.Errorf("%s: adapted to %s", name, out)
		}
	}
}

// TestNHThrottleCaddy runs the throttle from a Caddyfile in a running
// Caddy over HTTPS: the handler's limit applies, an exempt rule is not
// limited, and a reload with the limit off lets the key through again.
func TestNHThrottleCaddy(t *testing.T) {
	dataDir := t.TempDir()
	site := func(throttle string) string {
		return fmt.Sprintf(`{
	pushgate {
		hub orders {
			data_dir %q
		}
	}
}
localhost:HTTPS_PORT {
	bind 127.0.0.1
	tls internal
	pushgate_nh {
		hub orders
		rule Backend backend-key Listen Send Manage
		rule Device device-key Listen {
			throttle off
		}
		throttle %s
	}
}
`, dataDir, throttle)
	}
	tc := startCaddy(t, site("1/h burst 2"))
	get := func(rule, key string) *http.Response {
		t.Helper()
		req, err := http.NewRequest("GET", tc.Base+"/orders/installations/absent"+v, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", nhwire.Sign(tc.Base+"/", rule, []byte(key), time.Now().Add(time.Hour)))
		res, err := tc.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res
	}
	for i, want := range []int{404, 404, 429} {
		if res := get("Backend", "backend-key"); res.StatusCode != want {
			t.Fatalf("request %d: %d, want %d", i, res.StatusCode, want)
		} else if want == 429 {
			ra, err := strconv.Atoi(res.Header.Get("Retry-After"))
			if err != nil || ra < 1 || ra > 3600 {
				t.Errorf("Retry-After %q", res.Header.Get("Retry-After"))
			}
			t.Logf("throttled over HTTPS, Retry-After %d", ra)
		}
	}
	for i := 0; i < 5; i++ {
		if res := get("Device", "device-key"); res.StatusCode != 404 {
			t.Fatalf("exempt rule, request %d: %d", i, res.StatusCode)
		}
	}
	tc.Reload(site("off"))
	// A kept-alive connection would still reach the old config's handler
	// during its grace period.
	tc.Client.CloseIdleConnections()
	for i := 0; i < 3; i++ {
		if res := get("Backend", "backend-key"); res.StatusCode != 404 {
			t.Fatalf("after reload with throttle off, request %d: %d", i, res.StatusCode)
		}
	}
}

// FuzzNHThrottleRate feeds the throttle's rate parser arbitrary text: it
// never panics, and what it accepts is a positive, finite rate that agrees
// with its count.
func FuzzNHThrottleRate(f *testing.F) {
	for _, s := range []string{"200/s", "12000/m", "5/h", "10/500ms", "0.5/s", "1e3/1h30m", "0/s", "-1/s", "NaN/s", "Inf/s", "1/0s", "1/-1s", "/s", "1/", "1//s", "1e400/s", "1/1ns"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rate, n, err := parseRate(s)
		if err != nil {
			return
		}
		if !(rate > 0) || math.IsInf(rate, 0) || !(n > 0) || math.IsInf(n, 0) {
			t.Fatalf("%q: accepted rate %v, count %v", s, rate, n)
		}
		lim := NHThrottle{Rate: rate, Burst: 1}
		if err := lim.validate(); err != nil {
			if rate >= nhMinRate && rate <= nhMaxRate {
				t.Fatalf("%q: rate %v in bounds refused: %v", s, rate, err)
			}
			return
		}
		// A bucket of one: the first request passes, the second waits a
		// positive time no longer than 1/rate.
		b := &tokenBucket{limit: lim}
		now := time.Unix(1e9, 0)
		if _, ok := b.take(now); !ok {
			t.Fatalf("%q: the first request was refused", s)
		}
		wait, ok := b.take(now)
		if ok || wait <= 0 || wait > time.Duration(math.Ceil(1/rate*1e9)) {
			t.Fatalf("%q: second request: ok %v, wait %v at rate %v", s, ok, wait, rate)
		}
		if _, ok := b.take(now.Add(wait)); !ok {
			t.Fatalf("%q: refused after waiting %v", s, wait)
		}
	})
}
