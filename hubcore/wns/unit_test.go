package wns

import (
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pushgate/pushgate/hubcore"
)

func TestClassify(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	hdr := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	cases := []struct {
		name   string
		status int
		h      http.Header
		want   *hubcore.PushError
	}{
		{"received", 200, hdr("X-WNS-NotificationStatus", "received"), nil},
		{"no status", 200, hdr(), nil},
		{"received, offline", 200, hdr("X-WNS-NotificationStatus", "received", "X-WNS-DeviceConnectionStatus", "disconnected"), nil},
		{"dropped", 200, hdr("X-WNS-NotificationStatus", "dropped"), &hubcore.PushError{Outcome: hubcore.OutcomeDropped, Status: 200, Reason: "dropped"}},
		{"dropped, offline", 200, hdr("X-WNS-NotificationStatus", "Dropped", "X-WNS-DeviceConnectionStatus", "disconnected"),
			&hubcore.PushError{Outcome: hubcore.OutcomeChannelDisconnected, Status: 200, Reason: "dropped: device disconnected"}},
		{"channel throttled", 200, hdr("X-WNS-NotificationStatus", "channelThrottled", "Retry-After", "60"),
			&hubcore.PushError{Outcome: hubcore.OutcomeChannelThrottled, Status: 200, Reason: "channelThrottled", Retry: true, RetryAfter: time.Minute}},
		{"400", 400, hdr("X-WNS-Error-Description", "Invalid header"), &hubcore.PushError{Outcome: hubcore.OutcomePnsInterfaceError, Status: 400, Reason: "Invalid header"}},
		{"401", 401, hdr(), &hubcore.PushError{Outcome: outcomeStaleToken, Status: 401, Reason: "Unauthorized"}},
		{"403", 403, hdr(), &hubcore.PushError{Outcome: hubcore.OutcomeWrongToken, Status: 403, Reason: "Forbidden", ExpireHandle: true}},
		{"404", 404, hdr(), &hubcore.PushError{Outcome: hubcore.OutcomeBadChannel, Status: 404, Reason: "Not Found", ExpireHandle: true}},
		{"405", 405, hdr(), &hubcore.PushError{Outcome: hubcore.OutcomePnsInterfaceError, Status: 405, Reason: "Method Not Allowed"}},
		{"406", 406, hdr("Retry-After", "Fri, 01 May 2026 12:02:00 GMT"), &hubcore.PushError{Outcome: hubcore.OutcomeThrottled, Status: 406, Reason: "Not Acceptable", Retry: true, RetryAfter: 2 * time.Minute}},
		{"410", 410, hdr(), &hubcore.PushError{Outcome: hubcore.OutcomeExpiredChannel, Status: 410, Reason: "Gone", ExpireHandle: true}},
		{"413", 413, hdr(), &hubcore.PushError{Outcome: hubcore.OutcomeInvalidNotificationSize, Status: 413, Reason: "Request Entity Too Large"}},
		{"429", 429, hdr(), &hubcore.PushError{Outcome: hubcore.OutcomeThrottled, Status: 429, Reason: "Too Many Requests", Retry: true}},
		{"500", 500, hdr(), &hubcore.PushError{Outcome: hubcore.OutcomePnsServerError, Status: 500, Reason: "Internal Server Error", Retry: true}},
		{"503", 503, hdr("Retry-After", "5"), &hubcore.PushError{Outcome: hubcore.OutcomePnsUnavailable, Status: 503, Reason: "Service Unavailable", Retry: true, RetryAfter: 5 * time.Second}},
		{"599", 599, hdr(), &hubcore.PushError{Outcome: hubcore.OutcomePnsServerError, Status: 599, Reason: "HTTP 599", Retry: true}},
		{"202", 202, hdr(), nil},
	}
	for _, c := range cases {
		got := classify(c.status, c.h, now)
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: classify = %+v, want %+v", c.name, got, c.want)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"": 0, "0": 0, "30": 30 * time.Second, "4000000000": 24 * time.Hour, "x": 0, "-1": 0,
		"Fri, 01 May 2026 12:00:01 GMT": time.Second, "Fri, 01 May 2026 11:00:00 GMT": 0, "Fri, 01 May 2700 00:00:00 GMT": 24 * time.Hour,
	} {
		if got, _ := parseRetryAfter(in, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestTarget(t *testing.T) {
	s := &Sender{allowed: []string{DefaultHostSuffix, "wns.example"}}
	ok := []string{
		"https://wns2-by3p.notify.windows.com/w/?token=AwYAAAB%2b",
		"https://DB5.Notify.Windows.COM/?token=x",
		"https://db5.notify.windows.com:443/w/?token=x",
		"https://wns.example/x",
	}
	for _, u := range ok {
		if got, pe := s.target(u); pe != nil || got != u {
			t.Errorf("target(%q) = %q, %v", u, got, pe)
		}
	}
	bad := []string{
		"http://db5.notify.windows.com/?token=x",
		"https://notify.windows.com/?token=x",
		"https://evilnotify.windows.com/?token=x",
		"https://db5.notify.windows.com.evil/?token=x",
		"https://x@db5.notify.windows.com/?token=x",
		"https://sub.wns.example/x",
		"https:///w/?token=x",
		"https://db5.notify.windows.com/w/?token=a b",
		"db5.notify.windows.com/w/?token=x",
		"",
	}
	for _, u := range bad {
		if _, pe := s.target(u); pe == nil || pe.Outcome != hubcore.OutcomeBadChannel || !pe.ExpireHandle {
			t.Errorf("target(%q) = %v, want BadChannel", u, pe)
		}
	}
	s.override = "https://127.0.0.1:8443"
	for in, want := range map[string]string{
		"https://db5.notify.windows.com/w/?token=AwY%2b": "https://127.0.0.1:8443/w/?token=AwY%2b",
		"https://db5.notify.windows.com?token=x":         "https://127.0.0.1:8443/?token=x",
		"https://db5.notify.windows.com":                 "https://127.0.0.1:8443/",
	} {
		if got, pe := s.target(in); pe != nil || got != want {
			t.Errorf("target(%q) with override = %q, %v; want %q", in, got, pe, want)
		}
	}
}

func TestRequestHeaders(t *testing.T) {
	h, pe := requestHeaders([]hubcore.Header{
		{Name: "x-wns-type", Value: " WNS/Raw "},
		{Name: "X-Wns-Ttl", Value: "60"},
		{Name: "X-WNS-Custom", Value: "v"},
		{Name: "Authorization", Value: "Bearer stolen"},
	})
	if pe != nil {
		t.Fatal(pe)
	}
	want := http.Header{"X-WNS-Type": {"wns/raw"}, "X-WNS-TTL": {"60"}, "X-WNS-Custom": {"v"}, "Content-Type": {"application/octet-stream"}}
	if !reflect.DeepEqual(h, want) {
		t.Errorf("requestHeaders = %v, want %v", h, want)
	}
	for _, in := range [][]hubcore.Header{nil, {{Name: "X-WNS-Type", Value: "toast"}}, {{Name: "X-WNS-Tag", Value: "t"}}} {
		if _, pe := requestHeaders(in); pe == nil || pe.Outcome != hubcore.OutcomeInvalidPayload {
			t.Errorf("requestHeaders(%v) = %v, want InvalidPayload", in, pe)
		}
	}
}

// FuzzTarget checks the channel rewrite against net/url: an accepted
// channel keeps its path and query, and lands on the override.
func FuzzTarget(f *testing.F) {
	for _, s := range []string{
		"https://db5.notify.windows.com/w/?token=AwYAAAB%2b",
		"https://db5.notify.windows.com?token=x",
		"https://a.notify.windows.com:8443/x/y?z#f",
		"https://[::1]:443/x",
		"HTTPS://B.NOTIFY.WINDOWS.COM/",
		"https://a.notify.windows.com\\@evil/",
	} {
		f.Add(s)
	}
	s := &Sender{allowed: []string{DefaultHostSuffix}, override: "https://127.0.0.1:9"}
	f.Fuzz(func(t *testing.T, uri string) {
		got, pe := s.target(uri)
		if pe != nil {
			if pe.Outcome != hubcore.OutcomeBadChannel || !pe.ExpireHandle {
				t.Fatalf("target(%q) = %+v", uri, pe)
			}
			return
		}
		if !strings.HasPrefix(got, s.override+"/") {
			t.Fatalf("target(%q) = %q: not on the override", uri, got)
		}
		in, err := url.Parse(uri)
		if err != nil {
			return // the request will fail to build; the sender reports it
		}
		if !strings.HasSuffix(strings.ToLower(in.Hostname()), DefaultHostSuffix) {
			t.Fatalf("target(%q) accepted host %q", uri, in.Hostname())
		}
		out, err := url.Parse(got)
		if err != nil {
			t.Fatalf("target(%q) = %q does not parse: %v", uri, got, err)
		}
		if out.Host != "127.0.0.1:9" || out.RawQuery != in.RawQuery || out.EscapedPath() != in.EscapedPath() && !(in.EscapedPath() == "" && out.EscapedPath() == "/") {
			t.Fatalf("target(%q) = %q: path or query changed", uri, got)
		}
	})
}

func FuzzClassify(f *testing.F) {
	f.Add(200, "received", "", "")
	f.Add(200, "channelThrottled", "", "Fri, 01 May 2026 12:02:00 GMT")
	f.Add(200, "dropped", "disconnected", "")
	f.Add(406, "", "", "30")
	f.Add(410, "", "", "")
	f.Add(503, "", "", "-5")
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, status int, ns, dcs, ra string) {
		if status < 100 || status > 599 {
			return
		}
		h := http.Header{}
		h.Set("X-WNS-NotificationStatus", ns)
		h.Set("X-WNS-DeviceConnectionStatus", dcs)
		h.Set("Retry-After", ra)
		pe := classify(status, h, now)
		if pe == nil {
			if status < 200 || status > 299 {
				t.Fatalf("classify(%d) = nil", status)
			}
			return
		}
		if pe.Outcome == "" || pe.Reason == "" || pe.Status != status || pe.RetryAfter < 0 || (pe.RetryAfter > 0 && !pe.Retry) || (pe.Retry && pe.ExpireHandle) {
			t.Fatalf("classify(%d, %q) = %+v", status, ns, pe)
		}
	})
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "0", "120", "Fri, 01 May 2026 12:00:30 GMT", "-1", "4294967296"} {
		f.Add(s)
	}
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := parseRetryAfter(v, now)
		if d < 0 || d > maxRetryAfter || (!ok && d != 0) || d%time.Second != 0 {
			t.Fatalf("parseRetryAfter(%q) = %v, %v", v, d, ok)
		}
	})
}
