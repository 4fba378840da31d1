package webpush

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cases := map[string]time.Duration{
		"":                               0,
		"0":                              0,
		"120":                            120 * time.Second,
		" 5 ":                            5 * time.Second,
		"-5":                             0,
		"1.5":                            0,
		"99999999999999999999":           maxRetryAfter,
		"86401":                          maxRetryAfter,
		"Sun, 01 Mar 2026 12:01:30 GMT":  90 * time.Second,
		"Sun, 01 Mar 2026 11:00:00 GMT":  0,
		"Sunday, 01-Mar-26 12:00:10 GMT": 10 * time.Second,
		"tomorrow":                       0,
	}
	for in, want := range cases {
		if got := parseRetryAfter(in, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestErrorReason(t *testing.T) {
	cases := map[string]string{
		``: "",
		`{"code":404,"errno":102,"error":"Not Found","message":"Request did not validate invalid token"}`: "errno 102: Request did not validate invalid token",
		`{"reason":"BadJwtToken"}`:                                             "BadJwtToken",
		`{"error":{"code":400,"message":"bad"}}`:                               "bad",
		`{"error":"Unauthorized"}`:                                             "Unauthorized",
		"the key in the authorization header does not correspond\nsecond line": "the key in the authorization header does not correspond",
		"  spaced  ":  "spaced",
		"bad\x00byte": "bad byte",
		`{not json`:   "{not json",
	}
	for in, want := range cases {
		if got := errorReason([]byte(in)); got != want {
			t.Errorf("errorReason(%q) = %q, want %q", in, got, want)
		}
	}
	long := errorReason([]byte(strings.Repeat("é", 300)))
	if len(long) > maxReason+len("…") || !strings.HasSuffix(long, "…") {
		t.Errorf("long reason: %d bytes %q", len(long), long)
	}
}

func TestClassify(t *testing.T) {
	h := http.Header{"Retry-After": {"30"}}
	for status, want := range map[int]struct {
		outcome      string
		retry, retrA bool
		expire       bool
	}{
		200: {}, // not called for 2xx; listed to keep the table honest below
		301: {outcome: "PnsInterfaceError"},
		400: {outcome: "PnsInterfaceError"},
		401: {outcome: "InvalidCredentials"},
		403: {outcome: "InvalidCredentials"},
		404: {outcome: "ExpiredChannel", expire: true},
		410: {outcome: "ExpiredChannel", expire: true},
		413: {outcome: "InvalidNotificationSize"},
		415: {outcome: "PnsInterfaceError"},
		429: {outcome: "Throttled", retry: true, retrA: true},
		500: {outcome: "PnsServerError", retry: true, retrA: true},
		503: {outcome: "PnsUnavailable", retry: true, retrA: true},
		504: {outcome: "PnsUnavailable", retry: true, retrA: true},
	} {
		if status == 200 {
			continue
		}
		e := classify(status, h, nil, time.Now())
		if string(e.Outcome) != want.outcome || e.Retry != want.retry || e.ExpireHandle != want.expire ||
			(e.RetryAfter == 30*time.Second) != want.retrA || e.Status != status {
			t.Errorf("%d: %+v, want %+v", status, e, want)
		}
	}
}
