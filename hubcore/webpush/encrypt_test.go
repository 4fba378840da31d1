package webpush

import (
	"bytes"
	"crypto/ecdh"
	"encoding/base64"
	"strings"
	"testing"
)

// The example of RFC 8291 Appendix A: keys, salt, plaintext and the
// resulting message, as published (base64url).
const (
	rfcPlaintext = "When I grow up, I want to be a watermelon"
	rfcASPrivate = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"
	rfcASPublic  = "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8"
	rfcUAPrivate = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"
	rfcUAPublic  = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
	rfcAuth      = "BTBZMqHH6r4Tts7J_aSIgg"
	rfcSalt      = "DGv6ra1nlYgDCS1FRnbzlw"
	rfcMessage   = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
)

func unb64(t testing.TB, s string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func rfcEphemeral(t testing.TB) (*ecdh.PrivateKey, []byte) {
	t.Helper()
	as, err := ecdh.P256().NewPrivateKey(unb64(t, rfcASPrivate))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(as.PublicKey().Bytes(), unb64(t, rfcASPublic)) {
		t.Fatal("the RFC's application server key pair does not match")
	}
	return as, unb64(t, rfcSalt)
}

// TestSealRFC8291 reproduces the RFC's example message byte for byte.
func TestSealRFC8291(t *testing.T) {
	as, salt := rfcEphemeral(t)
	ua, err := ecdh.P256().NewPublicKey(unb64(t, rfcUAPublic))
	if err != nil {
		t.Fatal(err)
	}
	got, err := seal([]byte(rfcPlaintext), ua, unb64(t, rfcAuth), as, salt)
	if err != nil {
		t.Fatal(err)
	}
	if want := unb64(t, rfcMessage); !bytes.Equal(got, want) {
		t.Fatalf("seal:\n got %s\nwant %s", base64.RawURLEncoding.EncodeToString(got), rfcMessage)
	}
}

func TestSealLimits(t *testing.T) {
	as, salt := rfcEphemeral(t)
	ua, _ := ecdh.P256().NewPublicKey(unb64(t, rfcUAPublic))
	auth := unb64(t, rfcAuth)
	full, err := seal(bytes.Repeat([]byte("x"), MaxPlaintext), ua, auth, as, salt)
	if err != nil {
		t.Fatal(err)
	}
	if len(full) != recordSize {
		t.Errorf("a %d-byte payload makes a %d-byte message, want exactly %d", MaxPlaintext, len(full), recordSize)
	}
	if _, err := seal(bytes.Repeat([]byte("x"), MaxPlaintext+1), ua, auth, as, salt); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Errorf("oversized payload: %v", err)
	}
	if _, err := seal(nil, ua, auth, as, salt[:8]); err == nil {
		t.Error("short salt accepted")
	}
}
