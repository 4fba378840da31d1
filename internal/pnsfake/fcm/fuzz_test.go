package fcm

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzCheck runs the body checker on anything: it must not panic, and what
// it accepts must be JSON with exactly one target in its message, whose
// recorded bounds hold the message object.
func FuzzCheck(f *testing.F) {
	tok := Token("fuzz")
	for _, s := range []string{
		`{"message":{"token":"` + tok + `","data":{"a":"b"}}}`,
		`{"message":{"topic":"t","notification":{"title":"x"},"android":{"ttl":"1.5s","priority":"HIGH"}}}`,
		`{"validate_only":true,"message":{"condition":"'a' in topics","apns":{"payload":{"aps":{}}}}}`,
		`{"message":{"token":"\u0061bc","webpush":{"headers":{"a":"b"}}}}`,
		`{"message":{"token":null,"topic":""}}`,
		`{"message":{"data":{"k":1}}}`,
		`[1,2]`,
		`{"message":{"token":"x","data":{"from":"y"}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var c checker
		e := c.check(body)
		if e != nil {
			if e.code == 0 || e.status == "" || e.msg == "" {
				t.Fatalf("check(%q): incomplete error %+v", body, e)
			}
			return
		}
		if !json.Valid(body) || c.m.targets != 1 {
			t.Fatalf("check(%q) accepted (targets %d)", body, c.m.targets)
		}
		var m map[string]any
		if err := json.Unmarshal(body[c.m.start:c.m.end], &m); err != nil {
			t.Fatalf("check(%q): message bounds %d:%d are not an object: %v", body, c.m.start, c.m.end, err)
		}
		if c.m.token != "" && m["token"] != c.m.token {
			t.Fatalf("check(%q): token %q, decoded %v", body, c.m.token, m["token"])
		}
	})
}

func FuzzParseAssertion(f *testing.F) {
	f.Add("eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJhIiwiaWF0IjoxLCJleHAiOjJ9.c2ln")
	f.Add("a.b.c")
	f.Add("..")
	f.Add("e30.e30.")
	f.Add("eyJhbGciOjF9.e30.")
	f.Add("e30.eyJpYXQiOi0xfQ.")
	f.Fuzz(func(t *testing.T, raw string) {
		a, err := parseAssertion(raw)
		if err != nil {
			return
		}
		if a.iat < 0 || a.exp < 0 || strings.Count(raw, ".") != 2 {
			t.Fatalf("parseAssertion(%q) = %+v", raw, a)
		}
		if !strings.HasPrefix(raw, string(a.signingInput)+".") {
			t.Fatalf("signing input %q is not the start of %q", a.signingInput, raw)
		}
	})
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"3s", "3.5s", "0s", "2419200s", ".5s", "1.s", "1.0000000001s", "s", "-1s", "99999999999999999999s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		secs, ok := parseDuration([]byte(v))
		if ok && (secs < 0 || !strings.HasSuffix(v, "s")) {
			t.Fatalf("parseDuration(%q) = %d", v, secs)
		}
	})
}

// FuzzSendHandler feeds arbitrary bodies through the whole handler with a
// valid token: it must answer 200 or a well-formed Google error.
func FuzzSendHandler(f *testing.F) {
	f.Add([]byte(`{"message":{"token":"` + Token("h") + `"}}`))
	f.Add([]byte(`{"message":{"token":"` + Token("h") + `","android":{"ttl":"x"}}}`))
	f.Add([]byte(`{`))
	srv := New(Options{})
	g := &grant{project: "p", scoped: true}
	g.expires.Store(1 << 62)
	srv.tokens.Store("tok", g)
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/v1/projects/p/messages:send", strings.NewReader(string(body)))
		req.Header.Set("Authorization", "Bearer tok")
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, req)
		if w.Code == 200 {
			return
		}
		var e googleErr
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error.Code != w.Code || e.Error.Status == "" {
			t.Fatalf("answer %d %s", w.Code, w.Body.Bytes())
		}
	})
}
