package caddymodule

import (
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// The client and API the attack table's gate accepts tokens for.
const (
	attackClientID = "pushgate-mobile"
	attackAudience = "api://pushgate"
	attackKID      = "k1"
)

// attackIdP is an OpenID issuer the attack table controls: it publishes one
// RSA key for RS256 and counts JWKS requests. A real provider never signs
// what an attacker sends, so the table mints those tokens itself, and the
// count shows what a flood of unknown key ids costs the provider.
type attackIdP struct {
	srv   *httptest.Server
	key   *rsa.PrivateKey
	other *rsa.PrivateKey // a second, untrusted issuer's key
	jwks  atomic.Int64
	pubPE []byte // the public key as PEM, the secret of the HS256 forgery
	pubJW []byte // the public key as the JWK the issuer publishes
}

func newAttackIdP(t *testing.T) *attackIdP {
	t.Helper()
	p := &attackIdP{key: newRSAKey(t), other: newRSAKey(t)}
	der, err := x509.MarshalPKIXPublicKey(&p.key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	p.pubPE = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	jwk := jose.JSONWebKey{Key: &p.key.PublicKey, KeyID: attackKID, Algorithm: "RS256", Use: "sig"}
	if p.pubJW, err = jwk.MarshalJSON(); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer":                                p.Issuer(),
			"jwks_uri":                              p.Issuer() + "/jwks",
			"response_types_supported":              []string{"code"},
			"subject_types_supported":               []string{"public"},
			"id_token_signing_alg_values_supported": []string{"RS256"},
		})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		p.jwks.Add(1)
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write([]byte(`{"keys":[` + string(p.pubJW) + `]}`))
	})
	// httptest listens on 127.0.0.1: the issuer never leaves loopback.
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	return p
}

func newRSAKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Issuer is the issuer URL (plain http, allowed because it is loopback).
func (p *attackIdP) Issuer() string { return p.srv.URL }

// JWKSFetches is how many times the key set was requested.
func (p *attackIdP) JWKSFetches() int64 { return p.jwks.Load() }

// claims are a valid ID token's claims for user; rows edit a copy.
func (p *attackIdP) claims(user string) map[string]any {
	now := time.Now()
	return map[string]any{
		"iss": p.Issuer(),
		"sub": user,
		"aud": attackClientID,
		"iat": now.Unix(),
		"exp": now.Add(10 * time.Minute).Unix(),
	}
}

// token is a valid ID token for user, signed by the issuer.
func (p *attackIdP) token(user string) string {
	return signJWT(map[string]any{"alg": "RS256", "typ": "JWT", "kid": attackKID}, p.claims(user), rs256(p.key))
}

// tokenWith signs the claims edited by edit with the issuer's key.
func (p *attackIdP) tokenWith(user string, edit func(map[string]any)) string {
	c := p.claims(user)
	edit(c)
	return signJWT(map[string]any{"alg": "RS256", "typ": "JWT", "kid": attackKID}, c, rs256(p.key))
}

// signJWT builds a compact JWS from a header and claims exactly as given
// (no library normalizes away what the attack depends on) and a signing
// function over the signing input; nil sign leaves the signature empty.
func signJWT(header, claims map[string]any, sign func([]byte) []byte) string {
	enc := base64.RawURLEncoding
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	input := enc.EncodeToString(h) + "." + enc.EncodeToString(c)
	var sig []byte
	if sign != nil {
		sig = sign([]byte(input))
	}
	return input + "." + enc.EncodeToString(sig)
}

func rs256(k *rsa.PrivateKey) func([]byte) []byte {
	return func(in []byte) []byte {
		d := sha256.Sum256(in)
		s, err := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, d[:])
		if err != nil {
			panic(err)
		}
		return s
	}
}

func ps256(k *rsa.PrivateKey) func([]byte) []byte {
	return func(in []byte) []byte {
		d := sha256.Sum256(in)
		s, err := rsa.SignPSS(rand.Reader, k, crypto.SHA256, d[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		if err != nil {
			panic(err)
		}
		return s
	}
}

func hs256(secret []byte) func([]byte) []byte {
	return func(in []byte) []byte {
		m := hmac.New(sha256.New, secret)
		m.Write(in)
		return m.Sum(nil)
	}
}
