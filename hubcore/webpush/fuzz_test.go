package webpush

import (
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func FuzzParseRetryAfter(f *testing.F) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, s := range []string{"", "0", "120", "-1", "99999999999999999999", "Sun, 01 Mar 2026 12:01:30 GMT", "Sunday, 01-Mar-26 12:00:10 GMT", "Sun Mar  1 12:00:10 2026"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d := parseRetryAfter(v, now)
		if d < 0 || d > maxRetryAfter {
			t.Fatalf("%q: %v out of range", v, d)
		}
	})
}

func FuzzErrorReason(f *testing.F) {
	for _, s := range []string{``, `{"errno":102,"message":"x"}`, `{"error":{"message":"y"}}`, "a\nb", "\xff\xfe", `{"errno":1e999}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := errorReason(body)
		if !utf8.ValidString(r) {
			t.Fatalf("%q: reason %q is not UTF-8", body, r)
		}
		if len(r) > maxReason+len("…") {
			t.Fatalf("%q: reason of %d bytes", body, len(r))
		}
		if strings.ContainsAny(r, "\r\n\x00") {
			t.Fatalf("%q: reason %q has control characters", body, r)
		}
	})
}

func FuzzParsePrivateKey(f *testing.F) {
	f.Add("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw")
	f.Add("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
	f.Add("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("/////////////////////////////////////////w==")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := parsePrivateKey(s)
		if err != nil {
			return
		}
		if _, err := k.PublicKey.Bytes(); err != nil {
			t.Fatalf("%q: parsed a key without a valid public key: %v", s, err)
		}
	})
}

func FuzzCanonicalTTL(f *testing.F) {
	for _, s := range []string{"", "0", "60", "+60", "-0", "-1", "1e3", " 1", "99999999999", "007"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		out, ok := canonicalTTL(v)
		n, err := strconv.ParseInt(v, 10, 64)
		if ok != (err == nil && n >= 0) {
			t.Fatalf("%q: ok=%v, but ParseInt gives %d, %v", v, ok, n, err)
		}
		if !ok {
			return
		}
		if m, err := strconv.ParseUint(out, 10, 64); err != nil || int64(m) != n || strings.ContainsAny(out, "+- ") {
			t.Fatalf("%q: sent as %q", v, out)
		}
	})
}
