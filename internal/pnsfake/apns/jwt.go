package apns

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Provider token lifetimes as Apple documents them: a token is refused once
// it is older than an hour, and a connection may change its token at most
// once every 20 minutes.
const (
	tokenMaxAge     = 3600 // seconds
	tokenMinReuse   = 1200 // seconds
	tokenFutureSkew = 60   // seconds of clock skew tolerated for iat
)

// jwtHeader and jwtClaims are the parts of a provider token APNs reads.
type jwtHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
}

type jwtClaims struct {
	Iss string          `json:"iss"`
	Iat json.RawMessage `json:"iat"`
}

// parsedJWT is a provider token split and decoded, not yet verified.
type parsedJWT struct {
	Alg, Kid, Iss string
	Iat           int64
	SigningInput  string
	Sig           []byte
}

var b64 = base64.RawURLEncoding.Strict()

// parseJWT splits and decodes a compact JWS. Apple's tokens have no padding
// and a raw 64-byte r||s ES256 signature; anything else is refused here,
// before any key is looked up.
func parseJWT(raw string) (parsedJWT, error) {
	var p parsedJWT
	i := strings.IndexByte(raw, '.')
	if i < 0 {
		return p, errors.New("not a compact JWS")
	}
	j := strings.IndexByte(raw[i+1:], '.')
	if j < 0 {
		return p, errors.New("not a compact JWS")
	}
	j += i + 1
	if strings.IndexByte(raw[j+1:], '.') >= 0 {
		return p, errors.New("too many JWS segments")
	}
	hb, err := b64.DecodeString(raw[:i])
	if err != nil {
		return p, errors.New("header is not base64url")
	}
	cb, err := b64.DecodeString(raw[i+1 : j])
	if err != nil {
		return p, errors.New("claims are not base64url")
	}
	sig, err := b64.DecodeString(raw[j+1:])
	if err != nil {
		return p, errors.New("signature is not base64url")
	}
	var h jwtHeader
	if err := json.Unmarshal(hb, &h); err != nil {
		return p, errors.New("header is not a JSON object")
	}
	var c jwtClaims
	if err := json.Unmarshal(cb, &c); err != nil {
		return p, errors.New("claims are not a JSON object")
	}
	iat, err := strconv.ParseInt(string(c.Iat), 10, 64)
	if err != nil {
		return p, errors.New("iat is not an integer")
	}
	if len(sig) != 64 {
		return p, errors.New("an ES256 signature is 64 bytes")
	}
	p.Alg, p.Kid, p.Iss, p.Iat = h.Alg, h.Kid, c.Iss, iat
	p.SigningInput = raw[:j]
	p.Sig = sig
	return p, nil
}

// verify checks the signature with pub.
func (p *parsedJWT) verify(pub *ecdsa.PublicKey) bool {
	sum := sha256.Sum256([]byte(p.SigningInput))
	r := new(big.Int).SetBytes(p.Sig[:32])
	s := new(big.Int).SetBytes(p.Sig[32:])
	return ecdsa.Verify(pub, sum[:], r, s)
}

// jwtEntry is the verdict on one exact provider token string. The
// time-independent part (signature, key, team) is decided once; age is
// judged per request against the fake's clock.
type jwtEntry struct {
	raw    string
	team   string
	iat    int64
	reason string // "" when the token verified
	seq    uint64 // order of first sight, for ExpireTokens
	// revoked: a scripted ExpiredProviderToken named this token, so it
	// stays expired, as it would at Apple.
	revoked atomic.Bool
}

// jwtCache remembers verdicts by token string so that each distinct token
// costs one ECDSA verification, not one per request.
type jwtCache struct {
	mu  sync.RWMutex
	m   map[string]*jwtEntry
	seq atomic.Uint64
}

const jwtCacheMax = 1 << 14

func (c *jwtCache) get(raw string) *jwtEntry {
	c.mu.RLock()
	e := c.m[raw]
	c.mu.RUnlock()
	return e
}

// put stores e unless another request got there first, returning the entry
// that won so that all requests share one pointer per token.
func (c *jwtCache) put(e *jwtEntry, now int64) (*jwtEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.m[e.raw]; old != nil {
		return old, false
	}
	if c.m == nil {
		c.m = make(map[string]*jwtEntry)
	}
	if len(c.m) >= jwtCacheMax {
		// Forget what can no longer pass, then anything if still full:
		// a forgotten token is merely verified again.
		for k, v := range c.m {
			if v.reason != "" || now-v.iat > tokenMaxAge {
				delete(c.m, k)
			}
		}
		if len(c.m) >= jwtCacheMax {
			clear(c.m)
		}
	}
	e.seq = c.seq.Add(1)
	c.m[e.raw] = e
	return e, true
}

// SignToken mints a provider token for load tools that cannot (h2load's
// -H "authorization: bearer …"): p8 is a key from GenerateKey, listed in
// Options.Keys under keyID for teamID. The token is good for an hour from
// iat.
func SignToken(p8 []byte, keyID, teamID string, iat time.Time) (string, error) {
	block, _ := pem.Decode(p8)
	if block == nil {
		return "", errors.New("p8 is not PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return "", err
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return "", errors.New("p8 is not an EC key")
	}
	h, _ := json.Marshal(jwtHeader{Alg: "ES256", Kid: keyID})
	c, _ := json.Marshal(struct {
		Iss string `json:"iss"`
		Iat int64  `json:"iat"`
	}{teamID, iat.Unix()})
	in := b64.EncodeToString(h) + "." + b64.EncodeToString(c)
	sum := sha256.Sum256([]byte(in))
	r, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
	if err != nil {
		return "", err
	}
	var sig [64]byte
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return in + "." + b64.EncodeToString(sig[:]), nil
}
