package webpush

import (
	"bytes"
	"crypto/ecdh"
	"strings"
	"testing"
	"time"
)

func FuzzParseVapid(f *testing.F) {
	f.Add("vapid t=a.b.c, k=BA")
	f.Add(`VAPID t="a.b.c",k="x", realm=y`)
	f.Add("vapid t=, k=")
	f.Add("WebPush a.b.c")
	f.Add("vapid k=1, t=2, t=3")
	f.Fuzz(func(t *testing.T, h string) {
		tok, k, err := parseVapid(h)
		if err != nil {
			return
		}
		if tok == "" || k == "" {
			t.Fatalf("%q: accepted with t=%q k=%q", h, tok, k)
		}
		if !strings.Contains(h, tok) || !strings.Contains(h, k) {
			t.Fatalf("%q: t=%q k=%q not taken from the header", h, tok, k)
		}
	})
}

func FuzzVerifyJWT(f *testing.F) {
	a := fixedAppServer(f)
	const origin = "https://127.0.0.1:1"
	now := time.Now()
	good := a.jwtWith(f, `{"typ":"JWT","alg":"ES256"}`, a.claims(origin, now.Add(time.Hour), "mailto:a@b.c"))
	f.Add(good, a.k)
	f.Add(a.jwtWith(f, `{"alg":"ES256"}`, `{"aud":["x","`+origin+`"],"exp":1e12,"sub":"https://x"}`), a.k)
	f.Add("a.b.c", a.k)
	f.Add(good+".", "")
	f.Fuzz(func(t *testing.T, jwt, k string) {
		g, err := verifyJWT(jwt, k, origin, now)
		if err != nil {
			return
		}
		// Only a token signed by a's key can verify.
		if k != a.k {
			t.Fatalf("verified with key %q", k)
		}
		if err := g.current(now); err != nil {
			t.Fatalf("verified a token that is not current: %v", err)
		}
	})
}

func FuzzOpen(f *testing.F) {
	s := start(f, Options{})
	// Fixed keys: the seeds are sealed in one process and opened in the
	// fuzzing workers.
	ua, err := ecdh.P256().NewPrivateKey(bytes.Repeat([]byte{0x24}, 32))
	if err != nil {
		f.Fatal(err)
	}
	ch, err := s.SubscribeWith(SubscribeOptions{Key: ua, Auth: bytes.Repeat([]byte{9}, 16)})
	if err != nil {
		f.Fatal(err)
	}
	sub := s.lookup(ID(ch.Endpoint))
	f.Add(seal(f, ch, []byte("hello"), sealOpts{}))
	f.Add(seal(f, ch, []byte("hello"), sealOpts{padding: 30}))
	f.Add(seal(f, ch, nil, sealOpts{rs: 18}))
	f.Add(seal(f, ch, []byte("x"), sealOpts{delimiter: 1}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		orig := bytes.Clone(body)
		h, err := parseHeader(body)
		if err != nil {
			return
		}
		if len(h.keyid) != 65 || uint64(len(h.rec)) > uint64(h.rs) || h.rs < 18 {
			t.Fatalf("accepted header rs=%d keyid=%d rec=%d", h.rs, len(h.keyid), len(h.rec))
		}
		pt, err := sub.open(h)
		if err != nil {
			return
		}
		if _, err := ecdh.P256().NewPublicKey(orig[21:86]); err != nil {
			t.Fatal("decrypted with an invalid key id")
		}
		if len(pt) > len(orig)-86-17 {
			t.Fatalf("plaintext %d bytes from a %d-byte body", len(pt), len(orig))
		}
	})
}

func FuzzParseTTL(f *testing.F) {
	for _, s := range []string{"0", "60", "-1", "+5", "", "99999999999999999999999", "1 ", "١"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		n, ok := parseTTL([]string{v})
		if !ok {
			return
		}
		if n < 0 || n > MaxTTL {
			t.Fatalf("%q: TTL %d out of range", v, n)
		}
		for i := 0; i < len(v); i++ {
			if v[i] < '0' || v[i] > '9' {
				t.Fatalf("%q accepted with a non-digit", v)
			}
		}
	})
}
