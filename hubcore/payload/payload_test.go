package payload

import (
	"errors"
	"strings"
	"testing"
)

func TestParseFormat(t *testing.T) {
	ok := map[string]Format{
		"apple": Apple, "APPLE": Apple, "fcmv1": FCMV1, "fcmV1": FCMV1, "gcm": GCM, "fcm": GCM, "FCM": GCM,
		"windows": Windows, "browser": Browser, "adm": ADM, "baidu": Baidu, "xiaomi": Xiaomi,
		"Template": Template, " apple ": Apple,
	}
	for in, want := range ok {
		if got, err := ParseFormat(in); err != nil || got != want {
			t.Errorf("ParseFormat(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "ios", "windowsphone", "nokiax", "apns"} {
		if _, err := ParseFormat(in); err == nil {
			t.Errorf("ParseFormat(%q) accepted", in)
		}
	}
}

func TestWebPushLimit(t *testing.T) {
	if MaxBrowser != 3993 {
		t.Fatalf("MaxBrowser = %d, want 3993 (RFC 8291 §4)", MaxBrowser)
	}
}

// jsonOfSize returns a JSON object of exactly n bytes built around prefix,
// e.g. `{"aps":{},"p":"xxx"}`.
func jsonOfSize(t *testing.T, prefix string, n int) []byte {
	t.Helper()
	head := `{` + prefix + `"p":"`
	tail := `"}`
	pad := n - len(head) - len(tail)
	if pad < 0 {
		t.Fatalf("cannot build %d bytes", n)
	}
	return []byte(head + strings.Repeat("x", pad) + tail)
}

func xmlOfSize(t *testing.T, n int) []byte {
	t.Helper()
	head, tail := `<toast><visual><binding template="ToastGeneric"><text>`, `</text></binding></visual></toast>`
	return []byte(head + strings.Repeat("x", n-len(head)-len(tail)) + tail)
}

func TestSizeBoundaries(t *testing.T) {
	tests := []struct {
		f       Format
		limit   int
		prefix  string
		wnsType string
		xml     bool
		raw     bool
	}{
		{Apple, 4096, `"aps":{"alert":"hi"},`, "", false, false},
		{FCMV1, 4096, ``, "", false, false},
		{GCM, 4096, `"data":{"a":"b"},`, "", false, false},
		{Windows, 5120, ``, "wns/toast", true, false},
		{Windows, 5120, ``, "", true, false},
		{Windows, 5120, ``, "wns/raw", false, true},
		{Browser, 3993, `"title":"t",`, "", false, false},
		{ADM, 6144, `"data":{},`, "", false, false},
		{Baidu, 4096, ``, "", false, false},
		{Xiaomi, 4096, ``, "", false, false},
		{Template, 65536, ``, "", false, false},
	}
	for _, tt := range tests {
		name := string(tt.f) + "/" + tt.wnsType
		t.Run(name, func(t *testing.T) {
			build := func(n int) []byte {
				switch {
				case tt.xml:
					return xmlOfSize(t, n)
				case tt.raw:
					return []byte(strings.Repeat("\xff", n))
				case tt.f == FCMV1:
					head, tail := `{"message":{"data":{"p":"`, `"}}}`
					return []byte(head + strings.Repeat("x", n-len(head)-len(tail)) + tail)
				}
				return jsonOfSize(t, tt.prefix, n)
			}
			at := build(tt.limit)
			if len(at) != tt.limit {
				t.Fatalf("built %d bytes", len(at))
			}
			if err := Check(tt.f, at, tt.wnsType); err != nil {
				t.Errorf("at the limit (%d): %v", tt.limit, err)
			}
			err := Check(tt.f, build(tt.limit+1), tt.wnsType)
			var pe *Error
			if !errors.As(err, &pe) || !errors.Is(err, ErrTooLarge) {
				t.Fatalf("limit+1: err = %v", err)
			}
			if pe.Limit != tt.limit || pe.Size != tt.limit+1 || pe.Format != tt.f {
				t.Errorf("limit+1: %+v", pe)
			}
			if lim, _ := MaxSize(tt.f); lim != tt.limit {
				t.Errorf("MaxSize = %d", lim)
			}
		})
	}
}

func TestSizeMessage(t *testing.T) {
	err := Check(Apple, jsonOfSize(t, ``, 4203), "")
	if got, want := err.Error(), "apple payload is 4203 bytes; APNs accepts at most 4096"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestShape(t *testing.T) {
	tests := []struct {
		f       Format
		body    string
		wnsType string
		reason  string // empty: must pass
	}{
		{Apple, `{"aps":{"alert":"hi","badge":1}}`, "", ""},
		{Apple, ` {"aps":{}} `, "", ""},
		{Apple, `{"custom":1}`, "", ""},
		{Apple, `{"aps":"x"}`, "", `"aps" member that is not an object`},
		{Apple, `[1]`, "", "must be a JSON object"},
		{Apple, `"x"`, "", "must be a JSON object"},
		{Apple, `{"aps":`, "", "is not valid JSON"},
		{Apple, ``, "", "is not valid JSON"},
		{FCMV1, `{"message":{"notification":{"title":"t"},"data":{"a":"1","b":""},"android":{"priority":"high"}}}`, "", ""},
		{FCMV1, `{"message":{"data":null}}`, "", ""},
		{FCMV1, `{"message":{"token":"abc"}}`, "", "must not set message.token"},
		{FCMV1, `{"message":{"topic":"news"}}`, "", "must not set message.topic"},
		{FCMV1, `{"message":{"condition":"'a' in topics"}}`, "", "must not set message.condition"},
		{FCMV1, `{"message":{"data":{"n":1}}}`, "", "message.data.n that is not a string"},
		{FCMV1, `{"message":{"data":{"n":null}}}`, "", "message.data.n that is not a string"},
		{FCMV1, `{"message":{"data":{"o":{"x":"y"}}}}`, "", "message.data.o that is not a string"},
		{FCMV1, `{"message":{"data":["a"]}}`, "", "message.data that is not an object"},
		{FCMV1, `{"notification":{}}`, "", `no "message" member`},
		{FCMV1, `{"message":{},"validate_only":true}`, "", `unexpected top-level member "validate_only"`},
		{FCMV1, `{"message":"x"}`, "", `"message" member that is not an object`},
		{GCM, `{"data":{"a":"b"},"notification":{"title":"t"},"time_to_live":60}`, "", ""},
		{GCM, `{"to":"abc","data":{}}`, "", `must not set "to"`},
		{GCM, `{"registration_ids":["a"]}`, "", `must not set "registration_ids"`},
		{GCM, `{"condition":"x"}`, "", `must not set "condition"`},
		{Windows, `<toast><visual><binding template="ToastText01"><text id="1">hi</text></binding></visual></toast>`, "wns/toast", ""},
		{Windows, `<?xml version="1.0" encoding="utf-8"?><badge value="3"/>`, "WNS/Badge", ""},
		{Windows, "\uFEFF<tile/>", "wns/tile", ""},
		{Windows, `<toast>`, "wns/toast", "is not well-formed XML"},
		{Windows, `<a></b>`, "", "is not well-formed XML"},
		{Windows, `<a/><b/>`, "", "more than one root element"},
		{Windows, `hello`, "", "text outside the root element"},
		{Windows, ``, "wns/toast", "no root element"},
		{Windows, `not xml at all {`, "wns/raw", ""},
		{Windows, ``, "wns/raw", ""},
		{Windows, `<a/>`, "wns/bogus", `X-WNS-Type "wns/bogus"`},
		{Browser, `{"title":"t","body":"b"}`, "", ""},
		{Browser, `title`, "", "is not valid JSON"},
		{ADM, `{"data":{"a":"b"}}`, "", ""},
		{ADM, `[]`, "", "must be a JSON object"},
		{Baidu, `{"title":"t"}`, "", ""},
		{Baidu, `null`, "", "must be a JSON object"},
		{Xiaomi, `{"payload":"x"}`, "", ""},
		{Xiaomi, `{`, "", "is not valid JSON"},
		{Template, `{"msg":"hi","badge":"3","n":3,"b":true,"z":null}`, "", ""},
		{Template, `{"msg":{"a":"b"}}`, "", `property "msg" that is not a string`},
		{Template, `{"msg":["a"]}`, "", `property "msg" that is not a string`},
		{Template, `["a"]`, "", "must be a JSON object"},
		{Format("mpns"), `{}`, "", "unknown format"},
	}
	for _, tt := range tests {
		err := Check(tt.f, []byte(tt.body), tt.wnsType)
		if tt.reason == "" {
			if err != nil {
				t.Errorf("Check(%s, %q) = %v, want ok", tt.f, tt.body, err)
			}
			continue
		}
		var pe *Error
		if !errors.As(err, &pe) || !strings.Contains(err.Error(), tt.reason) {
			t.Errorf("Check(%s, %q) = %v, want error containing %q", tt.f, tt.body, err, tt.reason)
			continue
		}
		if errors.Is(err, ErrTooLarge) {
			t.Errorf("shape error %v matches ErrTooLarge", err)
		}
		if !strings.HasPrefix(err.Error(), string(tt.f)+" payload ") {
			t.Errorf("message %q does not name the format", err)
		}
	}
}

func FuzzCheck(f *testing.F) {
	f.Add(byte(0), []byte(`{"aps":{}}`), "")
	f.Add(byte(1), []byte(`{"message":{"data":{"a":"b"}}}`), "")
	f.Add(byte(3), []byte(`<toast/>`), "wns/toast")
	formats := []Format{Apple, FCMV1, GCM, Windows, Browser, ADM, Baidu, Xiaomi, Template}
	f.Fuzz(func(t *testing.T, sel byte, body []byte, wnsType string) {
		format := formats[int(sel)%len(formats)]
		err := Check(format, body, wnsType)
		if err == nil {
			return
		}
		var pe *Error
		if !errors.As(err, &pe) || pe.Format != format {
			t.Fatalf("error %v is not a *Error for %s", err, format)
		}
	})
}
