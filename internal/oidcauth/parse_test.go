package oidcauth

import (
	"strings"
	"testing"
)

func TestParseAuthorization(t *testing.T) {
	for _, c := range []struct {
		in, tok, reason string
	}{
		{"Bearer abc", "abc", ""},
		{"bearer abc", "abc", ""},
		{"Bearer   a-b.c_d~e+f/g==", "a-b.c_d~e+f/g==", ""},
		{"\tBearer abc \t", "abc", ""},
		{"", "", ReasonMissing},
		{"Basic abc", "", ReasonMissing},
		{"Negotiate", "", ReasonMissing},
		{"Bearer", "", ReasonMalformed},
		{"Bearer abc=d", "", ReasonMalformed},
		{"Bearer =", "", ReasonMalformed},
		{"Bearer\tabc", "", ReasonMalformed},
		{"Bear(er abc", "", ReasonMalformed},
		{"Bearer abc,def", "", ReasonMalformed},
	} {
		tok, e := parseAuthorization(c.in)
		switch {
		case c.reason == "" && (e != nil || tok != c.tok):
			t.Errorf("%q: got %q, %v; want %q", c.in, tok, e, c.tok)
		case c.reason != "" && (e == nil || e.Reason != c.reason):
			t.Errorf("%q: got %q, %v; want reason %s", c.in, tok, e, c.reason)
		}
	}
	// A Basic header's credentials never appear in the error.
	_, e := parseAuthorization("Basic YWxpY2U6aHVudGVyMg==")
	if strings.Contains(e.Description, "YWxp") {
		t.Errorf("description echoes credentials: %s", e.Description)
	}
}

func FuzzParseAuthorization(f *testing.F) {
	for _, s := range []string{"", "Bearer abc", "bearer  a.b.c", "Basic dXNlcjpwdw==", "Bearer a=b", "Bearer \x00", "Bearer ä", " Bearer x "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		tok, e := parseAuthorization(h)
		if e != nil {
			if tok != "" {
				t.Fatalf("token %q returned with error", tok)
			}
			if e.Status != 400 && e.Status != 401 {
				t.Fatalf("status %d", e.Status)
			}
			// The challenge must stay a single well-formed header line.
			w := e.WWWAuthenticate("r")
			if strings.ContainsAny(w, "\r\n\x00") {
				t.Fatalf("challenge %q", w)
			}
			return
		}
		if tok == "" || len(tok) > maxTokenLen || !isB64Token(tok) || !strings.Contains(h, tok) {
			t.Fatalf("bad token %q from %q", tok, h)
		}
		if strings.ContainsAny(tok, " \t\"") {
			t.Fatalf("token %q has separators", tok)
		}
	})
}

func FuzzSplitJWT(f *testing.F) {
	f.Add("eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJodHRwczovL3gifQ.c2ln")
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("a.b.c.d.e")
	f.Add("..")
	f.Fuzz(func(t *testing.T, tok string) {
		hdr, iss, e := splitJWT(tok)
		if e != nil {
			if e.Code != CodeInvalidToken || e.Reason != ReasonMalformed {
				t.Fatalf("error %+v", e)
			}
			if len(tok) > 16 && strings.Contains(e.Description, tok) {
				t.Fatalf("description echoes the token")
			}
			return
		}
		if strings.Count(tok, ".") != 2 {
			t.Fatalf("accepted %q", tok)
		}
		_, _ = hdr, iss
	})
}

func FuzzWWWAuthenticate(f *testing.F) {
	f.Add("pushgate", "token expired at 2026-11-23T10:00:00Z")
	f.Add(`a"b\c`, "é\"\\\n\x7f")
	f.Fuzz(func(t *testing.T, realm, desc string) {
		w := (&Error{Code: CodeInvalidToken, Description: desc}).WWWAuthenticate(realm)
		// Walk the output as the RFC 9110 grammar would: three
		// quoted-strings, and error_description holding only the RFC 6750
		// characters.
		rest, ok := strings.CutPrefix(w, `Bearer realm="`)
		if !ok {
			t.Fatalf("%q", w)
		}
		i := 0
		for ; i < len(rest) && rest[i] != '"'; i++ {
			if rest[i] == '\\' {
				i++
			}
			if i < len(rest) && rest[i] < 0x20 && rest[i] != '\t' || i < len(rest) && rest[i] == 0x7f {
				t.Fatalf("control byte in realm: %q", w)
			}
		}
		rest, ok = strings.CutPrefix(rest[i:], `", error="invalid_token"`)
		if !ok {
			t.Fatalf("%q", w)
		}
		if desc == "" {
			if rest != "" {
				t.Fatalf("%q", w)
			}
			return
		}
		d, ok := strings.CutPrefix(rest, `, error_description="`)
		if !ok || !strings.HasSuffix(d, `"`) {
			t.Fatalf("%q", w)
		}
		for _, c := range []byte(d[:len(d)-1]) {
			if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
				t.Fatalf("byte %#x in error_description: %q", c, w)
			}
		}
	})
}
