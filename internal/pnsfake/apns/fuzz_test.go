package apns

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// FuzzParseJWT: any string either fails to parse or yields a token whose
// parts are consistent with the input; nothing panics.
func FuzzParseJWT(f *testing.F) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(signJWT(f, k, "ES256", "KEYAAAAAAA", "TEAMAAAAAA", 1700000000))
	f.Add("a.b.c")
	f.Add("..")
	f.Add("eyJhbGciOiJFUzI1NiJ9.eyJpYXQiOiIxIn0.")
	f.Add("eyJhbGciOiJFUzI1NiJ9.eyJpYXQiOjEuNX0.AAAA")
	f.Fuzz(func(t *testing.T, raw string) {
		p, err := parseJWT(raw)
		if err != nil {
			return
		}
		if len(p.Sig) != 64 {
			t.Fatalf("signature of %d bytes accepted", len(p.Sig))
		}
		if !strings.HasPrefix(raw, p.SigningInput+".") || strings.Count(raw, ".") != 2 {
			t.Fatalf("signing input %q does not prefix %q", p.SigningInput, raw)
		}
		// Verifying garbage must not panic either.
		p.verify(&k.PublicKey)
	})
}

// FuzzJWTRoundTrip: a token minted from any claims parses back to them and
// verifies with its key only.
func FuzzJWTRoundTrip(f *testing.F) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	f.Add("KEYAAAAAAA", "TEAMAAAAAA", int64(1700000000))
	f.Add("", "\u2028\"", int64(-1))
	f.Fuzz(func(t *testing.T, kid, iss string, iat int64) {
		raw := signJWT(t, k, "ES256", kid, iss, iat)
		p, err := parseJWT(raw)
		if err != nil {
			t.Fatalf("parse %q: %v", raw, err)
		}
		var want struct{ Kid, Iss string }
		// JSON round trip normalises invalid UTF-8 the same way for both.
		b, _ := json.Marshal(struct{ Kid, Iss string }{kid, iss})
		json.Unmarshal(b, &want)
		if p.Alg != "ES256" || p.Kid != want.Kid || p.Iss != want.Iss || p.Iat != iat {
			t.Fatalf("got %+v", p)
		}
		if !p.verify(&k.PublicKey) || p.verify(&other.PublicKey) {
			t.Fatal("verification is wrong")
		}
	})
}

// FuzzCheckPayload: the hand-written top-level walk agrees with
// encoding/json on every input.
func FuzzCheckPayload(f *testing.F) {
	for _, s := range []string{
		`{"aps":{}}`, `{"aps":1}`, `{}`, `[]`, `{"a":[{"aps":{}}],"aps":{"x":"}"}}`,
		`{"aps":{},"aps":2}`, `{"\u0061ps":{}}`, ` { "aps" : { } } `, `{"a\"ps":{}}`,
		`"x"`, `{"aps":{}`, `{"x":"\\","aps":{}}`, `{"n":-1.5e3,"aps":{"t":true}}`,
	} {
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, b []byte, needAPS bool) {
		got := checkPayload(b, needAPS)
		var want error
		var v any
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber() // 1e400 is valid JSON, if no valid float64
		switch {
		case !json.Valid(b):
			want = errNotJSON
		case d.Decode(&v) != nil:
			t.Fatalf("valid JSON %q does not decode", b)
		default:
			m, ok := v.(map[string]any)
			switch {
			case !ok:
				want = errNotObject
			case needAPS:
				if _, ok := m["aps"].(map[string]any); !ok {
					want = errNoAPS
				}
			}
		}
		if !errors.Is(got, want) && got != want {
			t.Fatalf("checkPayload(%q) = %v, encoding/json says %v", b, got, want)
		}
	})
}
