package webpush

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"strings"
	"testing"
	"time"
)

func TestNewConfig(t *testing.T) {
	priv, pub := vapidKeys(t)
	_, otherPub := vapidKeys(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	pkcs8 := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	sec1der, _ := x509.MarshalECPrivateKey(key)
	sec1 := string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1der}))
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der384, _ := x509.MarshalPKCS8PrivateKey(p384)
	pem384 := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der384}))
	rawPub, _ := key.PublicKey.Bytes()
	std := base64.StdEncoding.EncodeToString(mustDecode(t, priv))

	ok := func(c Config) Config {
		if c.Subject == "" {
			c.Subject = "mailto:ops@example.com"
		}
		return c
	}
	cases := []struct {
		name string
		cfg  Config
		err  string // "" means valid
	}{
		{"raw key", ok(Config{VAPIDPrivateKey: priv}), ""},
		{"raw key with public key", ok(Config{VAPIDPrivateKey: priv, VAPIDPublicKey: pub}), ""},
		{"standard base64 padded", ok(Config{VAPIDPrivateKey: std}), ""},
		{"PKCS #8 PEM", ok(Config{VAPIDPrivateKey: pkcs8, VAPIDPublicKey: base64.RawURLEncoding.EncodeToString(rawPub)}), ""},
		{"SEC 1 PEM", ok(Config{VAPIDPrivateKey: sec1}), ""},
		{"https subject", Config{VAPIDPrivateKey: priv, Subject: "https://example.com/contact"}, ""},
		{"no key", ok(Config{}), "VAPIDPrivateKey is required"},
		{"short key", ok(Config{VAPIDPrivateKey: "AAAA"}), "32-byte"},
		{"not base64", ok(Config{VAPIDPrivateKey: "!!"}), "base64url"},
		{"P-384", ok(Config{VAPIDPrivateKey: pem384}), "P-256"},
		{"RSA PEM type", ok(Config{VAPIDPrivateKey: "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"}), "PEM block"},
		{"mismatched public key", ok(Config{VAPIDPrivateKey: priv, VAPIDPublicKey: otherPub}), "does not belong"},
		{"public key wrong size", ok(Config{VAPIDPrivateKey: priv, VAPIDPublicKey: "AAAA"}), "65-byte"},
		{"no subject", Config{VAPIDPrivateKey: priv}, "Subject is required"},
		{"http subject", Config{VAPIDPrivateKey: priv, Subject: "http://example.com"}, "mailto: or https:"},
		{"mailto without address", Config{VAPIDPrivateKey: priv, Subject: "mailto:"}, "address"},
		{"bare address", Config{VAPIDPrivateKey: priv, Subject: "ops@example.com"}, "mailto: or https:"},
		{"negative TTL", ok(Config{VAPIDPrivateKey: priv, TTL: -time.Second}), "TTL"},
		{"negative Conns", ok(Config{VAPIDPrivateKey: priv, Conns: -1}), "Conns"},
		{"negative Timeout", ok(Config{VAPIDPrivateKey: priv, Timeout: -1}), "Timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(tc.cfg)
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				if tc.cfg.VAPIDPublicKey != "" && s.PublicKey() != tc.cfg.VAPIDPublicKey {
					t.Errorf("PublicKey %s, want %s", s.PublicKey(), tc.cfg.VAPIDPublicKey)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err %v, want one mentioning %q", err, tc.err)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	priv, pub := vapidKeys(t)
	s, err := New(Config{VAPIDPrivateKey: priv, Subject: "mailto:a@b.c"})
	if err != nil {
		t.Fatal(err)
	}
	if s.PublicKey() != pub {
		t.Errorf("derived public key %s, want %s", s.PublicKey(), pub)
	}
	if s.conns.max != DefaultConns || s.cfg.Timeout != DefaultTimeout || s.ttl[0] != "86400" {
		t.Errorf("defaults: %d conns, timeout %v, TTL %s", s.conns.max, s.cfg.Timeout, s.ttl[0])
	}
	s, _ = New(Config{VAPIDPrivateKey: priv, Subject: "mailto:a@b.c", TTL: 500 * time.Millisecond, Conns: 5})
	if s.conns.max != 5 || s.ttl[0] != "0" {
		t.Errorf("sub-second TTL sends %s; %d conns", s.ttl[0], s.conns.max)
	}
}

func TestOrigin(t *testing.T) {
	for host, want := range map[string]string{
		"fcm.googleapis.com":                "https://fcm.googleapis.com",
		"Updates.Push.Services.Mozilla.com": "https://updates.push.services.mozilla.com",
		"web.push.apple.com:443":            "https://web.push.apple.com",
		"127.0.0.1:8443":                    "https://127.0.0.1:8443",
		"[::1]:443":                         "https://[::1]",
	} {
		if got := origin(host); got != want {
			t.Errorf("origin(%q) = %q, want %q", host, got, want)
		}
		if got := "https://" + originKey(host); got != want {
			t.Errorf("originKey(%q) = %q, want the origin %q", host, got, want)
		}
	}
}

func mustDecode(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
