package nhwire

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/payload"
)

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func TestParseSendHeaders(t *testing.T) {
	s, err := ParseSendHeaders(hdr("ServiceBusNotification-Format", "apple", "ServiceBusNotification-Tags", "a && !b",
		"Content-Type", "application/json;charset=utf-8", "apns-push-type", "alert", "APNS-Priority", "10",
		"apns-topic", "evil", "X-WNS-Type", "wns/toast", "TTL", "60", "X-Apns-Priority", "5",
		"ServiceBusNotification-Apns-Expiry", "2024-05-01T12:00:00Z"))
	if err != nil {
		t.Fatal(err)
	}
	want := &SendHeaders{Format: payload.Apple, ContentType: "application/json;charset=utf-8", Tags: "a && !b", HasTags: true,
		Headers: []hubcore.Header{{Name: "apns-expiration", Value: "1714564800"}, {Name: "apns-priority", Value: "10"}, {Name: "apns-push-type", Value: "alert"}}}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("got %+v\nwant %+v", s, want)
	}

	// Lower-cased names, format case, WNS headers, absent tags.
	h := http.Header{"servicebusnotification-format": {"Windows"}, "x-wns-type": {"WNS/Raw"}, "x-wns-requestforstatus": {"true"}, "x-wns-custom": {"1"}}
	s, err = ParseSendHeaders(h)
	if err != nil {
		t.Fatal(err)
	}
	if s.Format != payload.Windows || s.HasTags || !reflect.DeepEqual(s.Headers, []hubcore.Header{
		{Name: "X-WNS-RequestForStatus", Value: "true"}, {Name: "X-WNS-Type", Value: "wns/raw"}, {Name: "X-WNS-custom", Value: "1"}}) {
		t.Fatalf("windows: %+v", s)
	}

	for in, f := range map[string]payload.Format{"fcmV1": payload.FCMV1, "FCM": payload.GCM, "gcm": payload.GCM, "browser": payload.Browser,
		"adm": payload.ADM, "baidu": payload.Baidu, "xiaomi": payload.Xiaomi, "TEMPLATE": payload.Template, "": payload.Template} {
		s, err := ParseSendHeaders(hdr("ServiceBusNotification-Format", in))
		if err != nil || s.Format != f {
			t.Errorf("%q: %v %v", in, s, err)
		}
	}
	if s, _ := ParseSendHeaders(http.Header{}); s.Format != payload.Template {
		t.Error("absent format is not template")
	}
	// Empty tags: no targets, not broadcast. JS's "undefined": broadcast.
	if s, _ := ParseSendHeaders(hdr("ServiceBusNotification-Tags", "")); !s.HasTags || s.Tags != "" {
		t.Error("empty tags")
	}
	if s, _ := ParseSendHeaders(hdr("ServiceBusNotification-Tags", "undefined")); s.HasTags {
		t.Error("undefined tags")
	}
	// Direct browser send; Web Push headers; template keeps every family.
	s, _ = ParseSendHeaders(hdr("ServiceBusNotification-Format", "browser", "ServiceBusNotification-DeviceHandle", "https://push/x",
		"P256DH", "k", "Auth", "a", "urgency", "high", "apns-priority", "10"))
	if s.DeviceHandle != "https://push/x" || s.P256DH != "k" || s.Auth != "a" || !reflect.DeepEqual(s.Headers, []hubcore.Header{{Name: "Urgency", Value: "high"}}) {
		t.Errorf("browser: %+v", s)
	}
	s, _ = ParseSendHeaders(hdr("ServiceBusNotification-Format", "template", "apns-priority", "10", "X-WNS-Type", "wns/toast", "Topic", "t"))
	if len(s.Headers) != 3 {
		t.Errorf("template: %+v", s.Headers)
	}
}

func TestParseScheduleTime(t *testing.T) {
	want := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, in := range []string{"2024-05-01T12:00:00.000Z", "2024-05-01T12:00:00Z", "2024-05-01T12:00:00", "2024-05-01T14:00:00+02:00", " 2024-05-01T12:00:00.0000000 "} {
		s, err := ParseSendHeaders(hdr("ServiceBusNotification-ScheduleTime", in))
		if err != nil || !s.ScheduleTime.Equal(want) || s.ScheduleTime.Location() != time.UTC {
			t.Errorf("%q: %v %v", in, s, err)
		}
	}
}

func TestParseSendHeadersErrors(t *testing.T) {
	cases := []struct {
		h     http.Header
		field string
		code  hubcore.Code
	}{
		{hdr("ServiceBusNotification-Format", "nope"), HeaderFormat, hubcore.CodeInvalid},
		{hdr("ServiceBusNotification-Format", "windowsphone"), HeaderFormat, hubcore.CodeUnsupported},
		{hdr("ServiceBusNotification-Format", "apple", "ServiceBusNotification-Format", "gcm"), HeaderFormat, hubcore.CodeInvalid},
		{hdr("ServiceBusNotification-Tags", "a", "ServiceBusNotification-Tags", "b"), HeaderTags, hubcore.CodeInvalid},
		{hdr("ServiceBusNotification-ScheduleTime", "tomorrow"), HeaderScheduleTime, hubcore.CodeInvalid},
		{hdr("ServiceBusNotification-Format", "windows"), "X-WNS-Type", hubcore.CodeInvalid},
		{hdr("ServiceBusNotification-Format", "windows", "X-WNS-Type", "wns/popup"), "X-WNS-Type", hubcore.CodeInvalid},
		{hdr("ServiceBusNotification-Format", "apple", "apns-priority", "5", "apns-priority", "10"), "Apns-Priority", hubcore.CodeInvalid},
		{hdr("ServiceBusNotification-Format", "apple", "ServiceBusNotification-Apns-Expiry", "x"), HeaderApnsExpiry, hubcore.CodeInvalid},
	}
	for i, c := range cases {
		_, err := ParseSendHeaders(c.h)
		e, ok := errAs(err)
		if !ok || e.Code != c.code || e.Field != c.field {
			t.Errorf("case %d: got %v (%+v), want %s %s", i, err, e, c.code, c.field)
		}
	}
}

const jsBatch = "--nh-boundary-1\r\nContent-Type: application/json;charset=utf-8\r\nContent-Disposition: inline; name=notification\r\n\r\n" +
	`{"message":{"notification":{"title":"t"}}}` + "\r\n--nh-boundary-1\r\nContent-Type: application/json\r\nContent-Disposition: inline; name=devices\r\n\r\n" +
	`["fcm-token-aaa","fcm-token-bbb"]` + "\r\n--nh-boundary-1--\r\n"

func TestParseBatch(t *testing.T) {
	b, err := ParseBatch(`multipart/mixed; boundary = "nh-boundary-1"`, strings.NewReader(jsBatch), BatchLimits{})
	if err != nil {
		t.Fatal(err)
	}
	want := &Batch{Notification: []byte(`{"message":{"notification":{"title":"t"}}}`), ContentType: "application/json;charset=utf-8", Devices: []string{"fcm-token-aaa", "fcm-token-bbb"}}
	if !reflect.DeepEqual(b, want) {
		t.Fatalf("got %+v", b)
	}
	// LF line endings, parts reversed, single-quoted devices, an extra part.
	lf := "--b\nContent-Disposition: inline; name=\"devices\"\n\n['x', 'y']\n--b\nContent-Disposition: inline; name=other\n\nzzz\n--b\nContent-Disposition: inline; name=notification\n\n{}\n--b--\n"
	b, err = ParseBatch("multipart/mixed;boundary=b", strings.NewReader(lf), BatchLimits{})
	if err != nil || string(b.Notification) != "{}" || !reflect.DeepEqual(b.Devices, []string{"x", "y"}) {
		t.Fatalf("lenient: %+v %v", b, err)
	}
}

func TestParseBatchErrors(t *testing.T) {
	part := func(name, body string) string {
		return "--b\r\nContent-Disposition: inline; name=" + name + "\r\n\r\n" + body + "\r\n"
	}
	many := `["` + strings.Repeat(`t","`, 1000) + `t"]`
	cases := []struct {
		ct, body, field string
		lim             BatchLimits
		code            hubcore.Code
	}{
		{"application/json", "", "Content-Type", BatchLimits{}, hubcore.CodeInvalid},
		{"multipart/mixed", "", "Content-Type", BatchLimits{}, hubcore.CodeInvalid},
		{"multipart/mixed; boundary=b", part("notification", "{}") + "--b--", batchField, BatchLimits{}, hubcore.CodeInvalid},
		{"multipart/mixed; boundary=b", part("devices", `["a"]`) + "--b--", batchField, BatchLimits{}, hubcore.CodeInvalid},
		{"multipart/mixed; boundary=b", part("notification", "{}") + part("notification", "{}") + "--b--", batchField, BatchLimits{}, hubcore.CodeInvalid},
		{"multipart/mixed; boundary=b", part("notification", "{}") + part("devices", `{"a":1}`) + "--b--", "devices", BatchLimits{}, hubcore.CodeInvalid},
		{"multipart/mixed; boundary=b", part("notification", "{}") + part("devices", `[]`) + "--b--", "devices", BatchLimits{}, hubcore.CodeInvalid},
		{"multipart/mixed; boundary=b", part("notification", "{}") + part("devices", `["a",""]`) + "--b--", "devices", BatchLimits{}, hubcore.CodeInvalid},
		{"multipart/mixed; boundary=b", part("notification", "{}") + part("devices", `["a",null]`) + "--b--", "devices", BatchLimits{}, hubcore.CodeInvalid},
		{"multipart/mixed; boundary=b", part("notification", "{}") + part("devices", many) + "--b--", "devices", BatchLimits{}, hubcore.CodeLimit},
		{"multipart/mixed; boundary=b", part("notification", "12345") + part("devices", `["a"]`) + "--b--", "notification", BatchLimits{MaxNotification: 4}, hubcore.CodeLimit},
		{"multipart/mixed; boundary=b", part("notification", strings.Repeat("x", 200)) + part("devices", `["a"]`) + "--b--", batchField, BatchLimits{MaxBody: 100}, hubcore.CodeLimit},
		{"multipart/mixed; boundary=b", "garbage without boundary", batchField, BatchLimits{}, hubcore.CodeInvalid},
		{"multipart/mixed; boundary=b", part("notification", "{}") + "--b\r\nbroken header\r\n\r\n", batchField, BatchLimits{}, hubcore.CodeInvalid},
	}
	for i, c := range cases {
		_, err := ParseBatch(c.ct, strings.NewReader(c.body), c.lim)
		e, ok := errAs(err)
		if !ok || e.Code != c.code || e.Field != c.field {
			t.Errorf("case %d: got %v, want %s %s", i, err, c.code, c.field)
		}
	}
}

func FuzzParseSendHeaders(f *testing.F) {
	f.Add("apple", "a && b", "2024-05-01T12:00:00Z", "apns-push-type", "alert")
	f.Add("windows", "", "2024-05-01T12:00:00", "X-WNS-Type", "wns/toast")
	f.Add("", "undefined", "x", "TTL", "60")
	f.Fuzz(func(t *testing.T, format, tags, at, name, value string) {
		h := http.Header{}
		h.Set(HeaderFormat, format)
		h.Set(HeaderTags, tags)
		h.Set(HeaderScheduleTime, at)
		h.Add(name, value)
		s, err := ParseSendHeaders(h)
		if err != nil {
			if _, ok := errAs(err); !ok {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if s.Format == "" {
			t.Fatal("no format")
		}
		for i := 1; i < len(s.Headers); i++ {
			if s.Headers[i-1].Name >= s.Headers[i].Name {
				t.Fatalf("headers not sorted: %v", s.Headers)
			}
		}
	})
}

func FuzzParseBatch(f *testing.F) {
	f.Add(`multipart/mixed; boundary = "nh-boundary-1"`, jsBatch)
	f.Add("multipart/mixed;boundary=b", "--b\nContent-Disposition: inline; name=devices\n\n['x']\n--b--\n")
	f.Fuzz(func(t *testing.T, ct, body string) {
		b, err := ParseBatch(ct, strings.NewReader(body), BatchLimits{MaxBody: 4096, MaxDevices: 10, MaxNotification: 512})
		if err != nil {
			if _, ok := errAs(err); !ok {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if len(b.Devices) == 0 || len(b.Devices) > 10 || len(b.Notification) > 512 {
			t.Fatalf("limits not applied: %+v", b)
		}
	})
}
