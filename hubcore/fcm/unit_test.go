package fcm

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pushgate/pushgate/hubcore"
)

func TestSpliceToken(t *testing.T) {
	cases := []struct{ body, want string }{
		{`{"message":{"data":{"a":"b"}}}`, `{"message":{"token":"T","data":{"a":"b"}}}`},
		{`{"message":{}}`, `{"message":{"token":"T"}}`},
		{` { "message" : { } } `, ` { "message" : {"token":"T" } } `},
		{"{\n \"message\": {\n  \"notification\": {\"title\": \"}\"}\n }\n}", "{\n \"message\": {\"token\":\"T\",\n  \"notification\": {\"title\": \"}\"}\n }\n}"},
		// Nested members named like targets are the payload's business.
		{`{"message":{"data":{"token":"x","topic":"y"},"android":{"notification":{"condition":[1,{"token":2}]}}}}`,
			`{"message":{"token":"T","data":{"token":"x","topic":"y"},"android":{"notification":{"condition":[1,{"token":2}]}}}}`},
		{`{"message":{"data":{"q":"a \" quote \\ and \u00e9"}}}`, `{"message":{"token":"T","data":{"q":"a \" quote \\ and \u00e9"}}}`},
	}
	for _, c := range cases {
		got, err := spliceToken([]byte(c.body), "T")
		if err != nil {
			t.Errorf("spliceToken(%s): %v", c.body, err)
			continue
		}
		if string(got) != c.want {
			t.Errorf("spliceToken(%s)\n got %s\nwant %s", c.body, got, c.want)
		}
	}
}

func TestSpliceTokenEscapesHandle(t *testing.T) {
	got, err := spliceToken([]byte(`{"message":{}}`), "a\"b\\c\n")
	if err != nil {
		t.Fatal(err)
	}
	var m struct{ Message struct{ Token string } }
	if err := json.Unmarshal(got, &m); err != nil || m.Message.Token != "a\"b\\c\n" {
		t.Errorf("spliceToken = %s (%v)", got, err)
	}
}

func TestSpliceTokenRefuses(t *testing.T) {
	for body, want := range map[string]string{
		`{"message":{"token":"x"}}`:                      "sets message.token",
		`{"message":{"a":1,"topic":"x"}}`:                "sets message.topic",
		`{"message":{"condition":"x"}}`:                  "sets message.condition",
		`{"message":{"\u0074oken":"x"}}`:                 "sets message.token",
		`{"validate_only":true,"message":{}}`:            `top-level member "validate_only"`,
		`{"message":{},"message":{}}`:                    `two "message"`,
		`{"message":[]}`:                                 "not an object",
		`{}`:                                             `no "message"`,
		`"message"`:                                      "must be a JSON object",
		`{"message":{"a":}}`:                             "not valid JSON",
		`{"message":{"a":"b"}} x`:                        "trailing data",
		`{"message":{"a":{"b":[}]}}}`:                    "mismatched",
		`{"message":{"a":"unterminated}}`:                "unterminated string",
		"{\"message\":{\"a\":\"ctl\x01\"}}":              "control character",
		`{"message":{"a" "b"}}`:                          "expected ':'",
		`{"message":{"a":"b" "c":"d"}}`:                  "expected ',' or '}'",
		`{"message":{"a":"b"},"message2":{"token":"x"}}`: `top-level member "message2"`,
	} {
		_, err := spliceToken([]byte(body), "T")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("spliceToken(%s) = %v, want an error containing %q", body, err, want)
		}
	}
}

func TestClassify(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	fcm := func(code, status int, errCode, msg string) []byte {
		return []byte(`{"error":{"code":` + itoa(code) + `,"message":"` + msg + `","status":"` + statusText(status) +
			`","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"` + errCode + `"}]}}`)
	}
	cases := []struct {
		name       string
		status     int
		retryAfter string
		body       []byte
		want       hubcore.PushError
	}{
		{"unregistered", 404, "", fcm(404, 404, "UNREGISTERED", "Requested entity was not found."),
			hubcore.PushError{Outcome: hubcore.OutcomeExpiredChannel, Status: 404, Reason: "UNREGISTERED", ExpireHandle: true}},
		{"bad token by message", 400, "", fcm(400, 400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token"),
			hubcore.PushError{Outcome: hubcore.OutcomeBadChannel, Status: 400, Reason: "INVALID_ARGUMENT", ExpireHandle: true}},
		{"bad token by field", 400, "", []byte(`{"error":{"code":400,"message":"Invalid value","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"message.token","description":"bad"}]}]}}`),
			hubcore.PushError{Outcome: hubcore.OutcomeBadChannel, Status: 400, Reason: "INVALID_ARGUMENT", ExpireHandle: true}},
		{"bad data", 400, "", []byte(`{"error":{"code":400,"message":"Invalid value at 'message.data[0].value' (TYPE_STRING), 12","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"message.data[0].value","description":"x"}]}]}}`),
			hubcore.PushError{Outcome: hubcore.OutcomePnsInterfaceError, Status: 400, Reason: "INVALID_ARGUMENT"}},
		{"too big", 400, "", fcm(400, 400, "INVALID_ARGUMENT", "Android message is too big"),
			hubcore.PushError{Outcome: hubcore.OutcomeInvalidNotificationSize, Status: 400, Reason: "INVALID_ARGUMENT"}},
		{"sender mismatch", 403, "", fcm(403, 403, "SENDER_ID_MISMATCH", "SenderId mismatch"),
			hubcore.PushError{Outcome: hubcore.OutcomeWrongToken, Status: 403, Reason: "SENDER_ID_MISMATCH", ExpireHandle: true}},
		{"quota seconds", 429, "120", fcm(429, 429, "QUOTA_EXCEEDED", "q"),
			hubcore.PushError{Outcome: hubcore.OutcomeThrottled, Status: 429, Reason: "QUOTA_EXCEEDED", Retry: true, RetryAfter: 2 * time.Minute}},
		{"quota date", 429, "Fri, 01 May 2026 12:00:30 GMT", fcm(429, 429, "QUOTA_EXCEEDED", "q"),
			hubcore.PushError{Outcome: hubcore.OutcomeThrottled, Status: 429, Reason: "QUOTA_EXCEEDED", Retry: true, RetryAfter: 30 * time.Second}},
		{"unavailable", 503, "7", fcm(503, 503, "UNAVAILABLE", "u"),
			hubcore.PushError{Outcome: hubcore.OutcomePnsUnavailable, Status: 503, Reason: "UNAVAILABLE", Retry: true, RetryAfter: 7 * time.Second}},
		{"internal", 500, "", fcm(500, 500, "INTERNAL", "i"),
			hubcore.PushError{Outcome: hubcore.OutcomePnsServerError, Status: 500, Reason: "INTERNAL", Retry: true}},
		{"third party", 401, "", fcm(401, 401, "THIRD_PARTY_AUTH_ERROR", "t"),
			hubcore.PushError{Outcome: hubcore.OutcomeInvalidCredentials, Status: 401, Reason: "THIRD_PARTY_AUTH_ERROR"}},
		{"stale access token", 401, "", []byte(`{"error":{"code":401,"message":"Request had invalid authentication credentials.","status":"UNAUTHENTICATED"}}`),
			hubcore.PushError{Outcome: outcomeStaleToken, Status: 401, Reason: "UNAUTHENTICATED"}},
		{"permission denied", 403, "", []byte(`{"error":{"code":403,"message":"Permission denied","status":"PERMISSION_DENIED"}}`),
			hubcore.PushError{Outcome: hubcore.OutcomeInvalidCredentials, Status: 403, Reason: "PERMISSION_DENIED"}},
		{"resource exhausted", 429, "", []byte(`{"error":{"code":429,"message":"q","status":"RESOURCE_EXHAUSTED"}}`),
			hubcore.PushError{Outcome: hubcore.OutcomeThrottled, Status: 429, Reason: "RESOURCE_EXHAUSTED", Retry: true}},
		{"not found without code", 404, "", []byte(`{"error":{"code":404,"message":"x","status":"NOT_FOUND"}}`),
			hubcore.PushError{Outcome: hubcore.OutcomePnsInterfaceError, Status: 404, Reason: "NOT_FOUND"}},
		{"html 502", 502, "", []byte(`<html>bad gateway</html>`),
			hubcore.PushError{Outcome: hubcore.OutcomePnsUnavailable, Status: 502, Reason: "Bad Gateway", Retry: true}},
		{"empty 500", 500, "", nil,
			hubcore.PushError{Outcome: hubcore.OutcomePnsServerError, Status: 500, Reason: "Internal Server Error", Retry: true}},
		{"empty 401", 401, "", nil,
			hubcore.PushError{Outcome: outcomeStaleToken, Status: 401, Reason: "Unauthorized"}},
		{"empty 413", 413, "", nil,
			hubcore.PushError{Outcome: hubcore.OutcomeInvalidNotificationSize, Status: 413, Reason: "Request Entity Too Large"}},
		{"empty 400", 400, "", nil,
			hubcore.PushError{Outcome: hubcore.OutcomePnsInterfaceError, Status: 400, Reason: "Bad Request"}},
	}
	for _, c := range cases {
		got := classify(c.status, c.retryAfter, c.body, now)
		if !reflect.DeepEqual(*got, c.want) {
			t.Errorf("%s: classify =\n %+v\nwant\n %+v", c.name, *got, c.want)
		}
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func statusText(code int) string {
	return map[int]string{400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
		429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}[code]
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"0", 0, true},
		{" 30 ", 30 * time.Second, true},
		{"3600", time.Hour, true},
		{"4000000000", 24 * time.Hour, true},
		{"Fri, 01 May 2700 00:00:00 GMT", 24 * time.Hour, true},
		{"-5", 0, false},
		{"1.5", 0, false},
		{"99999999999", 24 * time.Hour, true},
		{"Fri, 01 May 2026 12:01:00 GMT", time.Minute, true},
		{"Friday, 01-May-26 12:01:00 GMT", time.Minute, true},
		{"Fri May  1 12:00:10 2026", 10 * time.Second, true},
		{"Fri, 01 May 2026 11:00:00 GMT", 0, true},
		{"soon", 0, false},
	}
	for _, c := range cases {
		got, ok := parseRetryAfter(c.in, now)
		if got != c.want || ok != c.ok {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}
