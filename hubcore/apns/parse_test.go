package apns

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/pushgate/pushgate/hubcore"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"120", 2 * time.Minute},
		{" 7 ", 7 * time.Second},
		{"-5", 0},
		{"1.5", 0},
		{"99999999999999999999999", maxRetryAfter},
		{"86401", maxRetryAfter},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{"Fri, 01 May 2026 12:00:30 GMT", 30 * time.Second},
		{"Friday, 01-May-26 12:00:30 GMT", 30 * time.Second}, // RFC 850
		{"tomorrow", 0},
	}
	for _, tc := range cases {
		if got := parseRetryAfter(tc.in, now); got != tc.want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestParseErrorBody(t *testing.T) {
	cases := []struct {
		in     string
		reason string
		ts     int64
	}{
		{`{"reason":"BadDeviceToken"}`, "BadDeviceToken", 0},
		{`{"reason":"Unregistered","timestamp":1700000000123}`, "Unregistered", 1700000000123},
		{``, "", 0},
		{`<html>`, "", 0},
		{`{"reason":7}`, "", 0},
		{`{"reason":"X","extra":[1,2]}`, "X", 0},
	}
	for _, tc := range cases {
		r, ts := parseErrorBody([]byte(tc.in))
		if r != tc.reason || ts != tc.ts {
			t.Errorf("parseErrorBody(%q) = %q %d", tc.in, r, ts)
		}
	}
}

// TestClassifyByStatus: an answer without a readable reason is classified
// by its status alone.
func TestClassifyByStatus(t *testing.T) {
	cases := []struct {
		status  int
		outcome hubcore.OutcomeName
		retry   bool
		expire  bool
	}{
		{400, hubcore.OutcomePnsInterfaceError, false, false},
		{403, hubcore.OutcomeInvalidCredentials, false, false},
		{404, hubcore.OutcomePnsInterfaceError, false, false},
		{410, hubcore.OutcomeExpiredChannel, false, true},
		{413, hubcore.OutcomeInvalidNotificationSize, false, false},
		{429, hubcore.OutcomeThrottled, true, false},
		{500, hubcore.OutcomePnsServerError, true, false},
		{502, hubcore.OutcomePnsServerError, true, false},
		{503, hubcore.OutcomePnsUnavailable, true, false},
		{302, hubcore.OutcomeUnknownError, false, false},
	}
	for _, tc := range cases {
		e := classify(tc.status, "", 0)
		if e.Outcome != tc.outcome || e.Retry != tc.retry || e.ExpireHandle != tc.expire {
			t.Errorf("%d: %+v", tc.status, e)
		}
	}
}

func TestBackgroundOnly(t *testing.T) {
	cases := map[string]bool{
		`{"aps":{"content-available":1}}`:                    true,
		`{"aps":{ "content-available" : 1 },"data":{"x":1}}`: true,
		`{"aps":{"content-available":1,"sound":""}}`:         false,
		`{"aps":{"content-available":"1"}}`:                  false,
		`{"aps":{"alert":"x"}}`:                              false,
		`{"x":{"content-available":1}}`:                      false,
		`{"aps":{"content-available":1}`:                     false,
	}
	for in, want := range cases {
		if got := backgroundOnly([]byte(in)); got != want {
			t.Errorf("backgroundOnly(%s) = %v", in, got)
		}
	}
}

// FuzzParseErrorBody: any body yields a reason without panicking, and a
// body APNs could send round-trips.
func FuzzParseErrorBody(f *testing.F) {
	f.Add([]byte(`{"reason":"Unregistered","timestamp":1700000000123}`), "BadTopic", int64(0))
	f.Add([]byte(`{"reason":null}`), "", int64(-1))
	f.Add([]byte(`{`), "\xff", int64(1))
	f.Fuzz(func(t *testing.T, body []byte, reason string, ts int64) {
		parseErrorBody(body)
		b, err := json.Marshal(errorBody{Reason: reason, Timestamp: ts})
		if err != nil {
			t.Fatal(err)
		}
		var want errorBody
		json.Unmarshal(b, &want)
		if r, got := parseErrorBody(b); r != want.Reason || got != ts {
			t.Fatalf("round trip of %s: %q %d", b, r, got)
		}
	})
}

// FuzzParseRetryAfter: never negative, never beyond the cap, and exact
// for plain seconds.
func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "0", "120", "Fri, 01 May 2026 12:00:30 GMT", "Friday, 01-May-26 12:00:30 GMT", "Fri May  1 12:00:30 2026", "1e3", "+5", "18446744073709551616"} {
		f.Add(s)
	}
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		d := parseRetryAfter(v, now)
		if d < 0 || d > maxRetryAfter {
			t.Fatalf("parseRetryAfter(%q) = %s", v, d)
		}
		if n, err := strconv.ParseUint(v, 10, 64); err == nil && n <= uint64(maxRetryAfter/time.Second) && d != time.Duration(n)*time.Second {
			t.Fatalf("parseRetryAfter(%q) = %s, want %d s", v, d, n)
		}
	})
}

// FuzzBackgroundOnly agrees with a plain decode of the body.
func FuzzBackgroundOnly(f *testing.F) {
	f.Add([]byte(`{"aps":{"content-available":1}}`))
	f.Add([]byte(`{"aps":{"content-available":1,"alert":"x"}}`))
	f.Add([]byte(`{"aps":{"content-available": 1.0}}`))
	f.Add([]byte(`{"APS":{"content-available":1}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		got := backgroundOnly(body)
		var p struct {
			APS map[string]json.RawMessage `json:"aps"`
		}
		want := false
		// Only the literal key counts: an escaped spelling of it is left
		// to the alert default rather than paid for on every body.
		if bytes.Contains(body, []byte(`"content-available"`)) && json.Unmarshal(body, &p) == nil && len(p.APS) == 1 {
			var n json.Number
			v, ok := p.APS["content-available"]
			want = ok && json.Unmarshal(v, &n) == nil && n.String() == "1"
		}
		if got != want {
			t.Fatalf("backgroundOnly(%q) = %v, want %v", body, got, want)
		}
	})
}
