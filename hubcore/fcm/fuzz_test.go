package fcm

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/pushgate/pushgate/hubcore"
)

// FuzzSpliceToken checks the splice against encoding/json: whatever it
// accepts decodes to the input's message plus the token, and every
// well-formed wrapper without a target is accepted.
func FuzzSpliceToken(f *testing.F) {
	for _, s := range []string{
		`{"message":{}}`,
		`{"message":{"data":{"a":"b"},"notification":{"title":"t"}}}`,
		` {"message" : {"android":{"ttl":"3s","data":{"token":"x"}}, "x":[1,2,{"y":null}]}} `,
		`{"message":{"token":"x"}}`,
		`{"message":{"\u0074opic":"x"}}`,
		`{"message":{"a":"\"}"}}`,
		`{"message":{"a":[[[[]]]]}}`,
		`{"message":1}`,
		`{"other":{}}`,
	} {
		f.Add([]byte(s), "tok:APA91b")
	}
	f.Fuzz(func(t *testing.T, body []byte, handle string) {
		out, err := spliceToken(body, handle)
		var in map[string]json.RawMessage
		wellFormed := json.Unmarshal(body, &in) == nil && len(in) == 1 && in["message"] != nil && countKeys(body) == 1
		var msg map[string]any
		if wellFormed {
			if json.Unmarshal(in["message"], &msg) != nil || msg == nil {
				wellFormed = false
			}
		}
		if err != nil {
			if wellFormed && handle != "" && msg["token"] == nil && msg["topic"] == nil && msg["condition"] == nil && utf8.ValidString(handle) {
				// Only duplicate target keys with different spellings
				// may be refused here; encoding/json folds case.
				if !hasTargetKey(in["message"]) {
					t.Fatalf("spliceToken refused %s: %v", body, err)
				}
			}
			return
		}
		if handle == "" {
			t.Fatal("spliceToken accepted an empty handle")
		}
		var got struct{ Message map[string]any }
		if err := json.Unmarshal(out, &got); err != nil {
			// The splice does not validate scalars; invalid input may
			// stay invalid. Valid input must stay valid.
			if json.Valid(body) {
				t.Fatalf("spliceToken(%s) = %s: not JSON: %v", body, out, err)
			}
			return
		}
		if !json.Valid(body) {
			return
		}
		if got.Message["token"] != handle {
			t.Fatalf("spliceToken(%s) = %s: token %v, want %q", body, out, got.Message["token"], handle)
		}
		delete(got.Message, "token")
		var want struct{ Message map[string]any }
		_ = json.Unmarshal(body, &want)
		if len(want.Message) == 0 && len(got.Message) == 0 {
			return
		}
		if !reflect.DeepEqual(got.Message, want.Message) {
			t.Fatalf("spliceToken(%s) = %s: message changed", body, out)
		}
	})
}

// countKeys counts the top-level members of a JSON object, duplicates
// included (encoding/json keeps the last).
func countKeys(b []byte) int {
	d := json.NewDecoder(bytes.NewReader(b))
	if tok, err := d.Token(); err != nil || tok != json.Delim('{') {
		return -1
	}
	n := 0
	for d.More() {
		if _, err := d.Token(); err != nil {
			return -1
		}
		var v json.RawMessage
		if err := d.Decode(&v); err != nil {
			return -1
		}
		n++
	}
	return n
}

// hasTargetKey reports a member of the message whose name matches a target
// case-insensitively (which encoding/json would fold, the splice not).
func hasTargetKey(msg []byte) bool {
	d := json.NewDecoder(bytes.NewReader(msg))
	if tok, err := d.Token(); err != nil || tok != json.Delim('{') {
		return true
	}
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			return true
		}
		switch k, _ := tok.(string); k {
		case "token", "topic", "condition":
			return true
		}
		var v json.RawMessage
		if d.Decode(&v) != nil {
			return true
		}
	}
	return false
}

// FuzzClassify checks that any answer maps to a complete PushError.
func FuzzClassify(f *testing.F) {
	f.Add(404, "", []byte(`{"error":{"code":404,"status":"NOT_FOUND","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}`))
	f.Add(400, "", []byte(`{"error":{"code":400,"message":"The registration token is not a valid FCM registration token","status":"INVALID_ARGUMENT"}}`))
	f.Add(429, "30", []byte(`{"error":{"code":429,"status":"RESOURCE_EXHAUSTED"}}`))
	f.Add(503, "Fri, 01 May 2026 12:00:30 GMT", []byte(`<html>`))
	f.Add(401, "", []byte(`{"error":{"details":[{"fieldViolations":[{"field":"message.token"}]}]}}`))
	f.Add(500, "x", []byte(`{"error":null}`))
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, status int, retryAfter string, body []byte) {
		if status < 100 || status > 599 || status == 200 {
			return
		}
		pe := classify(status, retryAfter, body, now)
		if pe == nil || pe.Outcome == "" || pe.Status != status || pe.Reason == "" {
			t.Fatalf("classify(%d, %q, %q) = %+v", status, retryAfter, body, pe)
		}
		if pe.RetryAfter < 0 || (pe.RetryAfter > 0 && !pe.Retry) {
			t.Fatalf("classify: RetryAfter %v with Retry %v", pe.RetryAfter, pe.Retry)
		}
		if pe.ExpireHandle && pe.Retry {
			t.Fatalf("classify: both ExpireHandle and Retry: %+v", pe)
		}
		switch pe.Outcome {
		case hubcore.OutcomeExpiredChannel, hubcore.OutcomeBadChannel, hubcore.OutcomeWrongToken:
			if !pe.ExpireHandle {
				t.Fatalf("classify: %s without ExpireHandle", pe.Outcome)
			}
		default:
			if pe.ExpireHandle {
				t.Fatalf("classify: ExpireHandle with %s", pe.Outcome)
			}
		}
	})
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "0", "120", "Fri, 01 May 2026 12:00:30 GMT", "Friday, 01-May-26 12:01:00 GMT", "-1", "1e3", "4294967296"} {
		f.Add(s)
	}
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := parseRetryAfter(v, now)
		if d < 0 || (!ok && d != 0) || d%time.Second != 0 {
			t.Fatalf("parseRetryAfter(%q) = %v, %v", v, d, ok)
		}
	})
}
