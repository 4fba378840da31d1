package webpush

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"math/big"
	"net/url"
	"strings"
	"sync"
	"time"
)

// maxExp is how far ahead a token may expire (RFC 8292 §2).
const maxExp = 24 * 60 * 60

// grant is what a verified Authorization value proves: who signed it and
// until when it may be used.
type grant struct {
	key string // raw 65-byte public key
	exp int64  // UNIX seconds
}

// grantCache remembers verified Authorization values by their exact text,
// so that a token is verified once however many requests carry it (RFC 8292
// §5 encourages senders to reuse tokens for exactly this reason).
type grantCache struct {
	mu sync.RWMutex
	m  map[string]grant
}

// maxGrants bounds the cache; senders reuse tokens, so it only fills when
// something mints per request.
const maxGrants = 1 << 14

func (c *grantCache) get(auth string) (grant, bool) {
	c.mu.RLock()
	g, ok := c.m[auth]
	c.mu.RUnlock()
	return g, ok
}

// put remembers g and reports whether auth was new: requests that verified
// the same new token at once add it once.
func (c *grantCache) put(auth string, g grant, now int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]grant)
	}
	if _, ok := c.m[auth]; ok {
		return false
	}
	if len(c.m) >= maxGrants {
		for k, v := range c.m {
			if v.exp <= now {
				delete(c.m, k)
			}
		}
		if len(c.m) >= maxGrants {
			clear(c.m)
		}
	}
	c.m[auth] = g
	return true
}

// errAbsent marks credentials that are missing rather than wrong: 401, not
// 403 (RFC 8292 §4.2).
var errAbsent = errors.New("absent")

// parseVapid splits an Authorization value of the vapid scheme (RFC 8292
// §3) into its t and k parameters. Unknown parameters are ignored, as the
// RFC requires; a parameter given twice makes the credentials ambiguous.
func parseVapid(h string) (t, k string, err error) {
	h = strings.TrimSpace(h)
	if h == "" {
		return "", "", errAbsent
	}
	scheme, params, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "vapid") {
		return "", "", errors.New("the Authorization scheme is not vapid (RFC 8292 §3)")
	}
	var seenT, seenK bool
	for params != "" {
		var p string
		p, params, _ = strings.Cut(params, ",")
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		name, val, ok := strings.Cut(p, "=")
		if !ok {
			return "", "", errors.New("vapid parameter without a value")
		}
		name = strings.TrimSpace(name)
		val = strings.TrimSpace(val)
		if len(val) >= 2 && val[0] == '"' && val[len(val)-1] == '"' {
			val = val[1 : len(val)-1]
		}
		switch {
		case strings.EqualFold(name, "t"):
			if seenT {
				return "", "", errors.New("vapid t given twice")
			}
			t, seenT = val, true
		case strings.EqualFold(name, "k"):
			if seenK {
				return "", "", errors.New("vapid k given twice")
			}
			k, seenK = val, true
		}
	}
	if t == "" || k == "" {
		return "", "", errors.New("vapid credentials need both t (the JWT) and k (the public key)")
	}
	return t, k, nil
}

// verifyJWT checks a VAPID token against the key k that claims to have
// signed it (RFC 8292 §2): an ES256 JWS whose claims name the fake's origin
// as aud, expire in the future but at most 24 h from now, and carry a
// mailto: or https: sub. It returns the raw key and the expiry.
func verifyJWT(t, k, origin string, now time.Time) (grant, error) {
	key, err := base64.RawURLEncoding.DecodeString(k)
	if err != nil || len(key) != 65 {
		return grant{}, errors.New("k is not the base64url of a 65-byte uncompressed P-256 key")
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), key)
	if err != nil {
		return grant{}, errors.New("k is not a point on P-256")
	}
	h64, rest, ok1 := strings.Cut(t, ".")
	c64, s64, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(s64, ".") {
		return grant{}, errors.New("t is not a JWS compact serialization (three base64url parts)")
	}
	hb, err1 := base64.RawURLEncoding.DecodeString(h64)
	cb, err2 := base64.RawURLEncoding.DecodeString(c64)
	sig, err3 := base64.RawURLEncoding.DecodeString(s64)
	if err1 != nil || err2 != nil || err3 != nil {
		return grant{}, errors.New("a JWT part is not unpadded base64url")
	}
	var hdr struct {
		Alg string `json:"alg"`
		Typ string `json:"typ"`
	}
	if err := strictJSON(hb, &hdr); err != nil {
		return grant{}, errors.New("the JWT header is not a JSON object: " + err.Error())
	}
	if hdr.Alg != "ES256" {
		return grant{}, errors.New("the JWT alg is " + quote(hdr.Alg) + "; VAPID requires ES256")
	}
	if hdr.Typ != "" && !strings.EqualFold(hdr.Typ, "JWT") {
		return grant{}, errors.New("the JWT typ is " + quote(hdr.Typ) + ", not JWT")
	}
	if len(sig) != 64 {
		return grant{}, errors.New("an ES256 signature is 64 bytes (r||s), not DER")
	}
	digest := sha256.Sum256([]byte(t[:len(h64)+1+len(c64)]))
	r := new(big.Int).SetBytes(sig[:32])
	s := new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(pub, digest[:], r, s) {
		return grant{}, errors.New("the JWT signature does not verify with k")
	}
	var claims struct {
		Aud json.RawMessage `json:"aud"`
		Exp json.Number     `json:"exp"`
		Sub *string         `json:"sub"`
	}
	if err := strictJSON(cb, &claims); err != nil {
		return grant{}, errors.New("the JWT claims are not a JSON object: " + err.Error())
	}
	if !audMatches(claims.Aud, origin) {
		return grant{}, errors.New("the JWT aud is not this push service's origin " + origin)
	}
	exp, err := numericDate(claims.Exp)
	if err != nil {
		return grant{}, err
	}
	g := grant{key: string(key), exp: exp}
	if err := g.current(now); err != nil {
		return grant{}, err
	}
	if claims.Sub == nil {
		return grant{}, errors.New("the JWT has no sub contact")
	}
	if !validSub(*claims.Sub) {
		return grant{}, errors.New("the JWT sub is not a mailto: or https: URI")
	}
	return g, nil
}

// current checks the expiry against the time of this request.
func (g grant) current(now time.Time) error {
	n := now.Unix()
	if g.exp <= n {
		return errors.New("the JWT has expired")
	}
	if g.exp-n > maxExp {
		return errors.New("the JWT exp is more than 24 hours ahead")
	}
	return nil
}

// numericDate reads a JWT NumericDate (RFC 7519 §2): seconds, possibly
// with a fraction, which is dropped.
func numericDate(n json.Number) (int64, error) {
	if n == "" {
		return 0, errors.New("the JWT has no exp")
	}
	if i, err := n.Int64(); err == nil {
		return i, nil
	}
	f, err := n.Float64()
	if err != nil || math.IsNaN(f) || f < 0 || f > 1<<53 {
		return 0, errors.New("the JWT exp is not a NumericDate")
	}
	return int64(f), nil
}

// strictJSON decodes one JSON object, rejecting trailing data.
func strictJSON(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("trailing data")
	}
	return nil
}

// audMatches accepts aud as a string or an array of strings (RFC 7519
// §4.1.3) that includes the origin.
func audMatches(raw json.RawMessage, origin string) bool {
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return one == origin
	}
	var many []string
	if json.Unmarshal(raw, &many) == nil {
		for _, a := range many {
			if a == origin {
				return true
			}
		}
	}
	return false
}

func validSub(sub string) bool {
	u, err := url.Parse(sub)
	if err != nil {
		return false
	}
	switch u.Scheme {
	case "mailto":
		return strings.Contains(u.Opaque, "@")
	case "https":
		return u.Host != ""
	}
	return false
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
