package apns

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// providerToken is one minted JWT, shared by every request until it is
// due for refresh.
type providerToken struct {
	// auth is the authorization header value, as a slice so that every
	// request's header map can share it.
	auth      []string
	iat       time.Time
	refreshAt time.Time
}

// signer mints provider tokens. APNs refuses tokens older than an hour and
// answers TooManyProviderTokenUpdates when a connection's token changes
// more often than every 20 minutes, so one token is shared by all
// goroutines and replaced only when due or when APNs says it expired.
type signer struct {
	key    *ecdsa.PrivateKey
	header string // base64url of the JOSE header, fixed per key
	teamID string
	ttl    time.Duration
	now    func() time.Time

	cur atomic.Pointer[providerToken]
	mu  sync.Mutex
}

func newSigner(keyPEM []byte, keyID, teamID string, ttl time.Duration, now func() time.Time) (*signer, error) {
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, err
	}
	h, err := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}{"ES256", keyID})
	if err != nil {
		return nil, err
	}
	return &signer{key: key, header: base64.RawURLEncoding.EncodeToString(h), teamID: teamID, ttl: ttl, now: now}, nil
}

// parseKey reads the .p8 file Apple hands out (PKCS#8 PEM); a SEC 1 "EC
// PRIVATE KEY" PEM of the same key is accepted too.
func parseKey(b []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("apns: KeyPEM is not PEM; pass the contents of the AuthKey_<KeyID>.p8 file")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("apns: KeyPEM holds a %q block; want the PRIVATE KEY of a .p8 file", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("apns: KeyPEM: %w", err)
	}
	ek, ok := key.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, errors.New("apns: KeyPEM is not a P-256 EC key; APNs signs provider tokens with ES256")
	}
	return ek, nil
}

// get returns the current token, minting one when none is current.
func (g *signer) get() (*providerToken, error) {
	t := g.cur.Load()
	if t != nil && g.now().Before(t.refreshAt) {
		return t, nil
	}
	return g.replace(t)
}

// replace mints a new token unless old has already been replaced (by a
// refresh in another goroutine): a burst of requests that all saw the old
// token expire causes one mint, not one each.
func (g *signer) replace(old *providerToken) (*providerToken, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if t := g.cur.Load(); t != old {
		return t, nil
	}
	t, err := g.mint()
	if err != nil {
		return nil, err
	}
	g.cur.Store(t)
	return t, nil
}

func (g *signer) mint() (*providerToken, error) {
	now := g.now()
	claims, err := json.Marshal(struct {
		Iss string `json:"iss"`
		Iat int64  `json:"iat"`
	}{g.teamID, now.Unix()})
	if err != nil {
		return nil, err
	}
	enc := base64.RawURLEncoding
	input := g.header + "." + enc.EncodeToString(claims)
	sum := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, g.key, sum[:])
	if err != nil {
		return nil, fmt.Errorf("apns: signing the provider token: %w", err)
	}
	// JWS wants the raw 32-byte big-endian r and s, not ASN.1.
	var sig [64]byte
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	jwt := input + "." + enc.EncodeToString(sig[:])
	return &providerToken{auth: []string{"bearer " + jwt}, iat: now, refreshAt: now.Add(g.ttl)}, nil
}
