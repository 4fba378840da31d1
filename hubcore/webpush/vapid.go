package webpush

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Token lifetimes. RFC 8292 §2 allows exp at most 24 h ahead; half of that
// leaves room for clock skew between us and the push service, and
// re-minting an hour early means no request ever carries a token that
// expires in flight.
const (
	tokenLifetime = 12 * time.Hour
	refreshBefore = time.Hour
	// remintGuard stops a push service that refuses a brand-new token (a
	// subscription bound to another key) from making every request mint
	// one: a refused token younger than this is reported, not replaced.
	remintGuard = time.Minute
)

// jwtHeader is the base64url of {"typ":"JWT","alg":"ES256"}, the same for
// every token.
var jwtHeader = base64.RawURLEncoding.EncodeToString([]byte(`{"typ":"JWT","alg":"ES256"}`))

// vapidToken is one minted token, ready to go out as a header value.
type vapidToken struct {
	auth   []string // Authorization header value: vapid t=…, k=…
	exp    time.Time
	minted time.Time
}

// tokenSlot is the current token for one push service origin. Readers load
// it without locking; the mutex only serializes minting, so that a burst of
// requests to a new origin mints one token, not one each.
type tokenSlot struct {
	mu  sync.Mutex
	cur atomic.Pointer[vapidToken]
}

// tokens caches one slot per push service host. A RWMutex map rather than
// sync.Map: a string key in a sync.Map allocates on every lookup.
type tokens struct {
	mu    sync.RWMutex
	slots map[string]*tokenSlot
}

func (t *tokens) slot(host string) *tokenSlot {
	t.mu.RLock()
	s := t.slots[host]
	t.mu.RUnlock()
	if s != nil {
		return s
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if s = t.slots[host]; s == nil {
		if t.slots == nil {
			t.slots = make(map[string]*tokenSlot)
		}
		s = &tokenSlot{}
		t.slots[host] = s
	}
	return s
}

// token returns a token for the origin of host that is valid for at least
// refreshBefore, minting one when needed.
func (s *Sender) token(slot *tokenSlot, host string) (*vapidToken, error) {
	now := s.now()
	if t := slot.cur.Load(); t != nil && t.exp.Sub(now) >= refreshBefore {
		return t, nil
	}
	slot.mu.Lock()
	defer slot.mu.Unlock()
	if t := slot.cur.Load(); t != nil && t.exp.Sub(now) >= refreshBefore {
		return t, nil
	}
	t, err := s.mint(host, now)
	if err != nil {
		return nil, err
	}
	slot.cur.Store(t)
	return t, nil
}

// replace is called when the push service refused old. It returns the token
// to retry with, or nil when retrying is pointless: old was minted moments
// ago, so a new one would be refused the same way.
func (s *Sender) replace(slot *tokenSlot, host string, old *vapidToken) (*vapidToken, error) {
	slot.mu.Lock()
	defer slot.mu.Unlock()
	now := s.now()
	if cur := slot.cur.Load(); cur != old {
		// Another request already replaced it.
		return cur, nil
	}
	if now.Sub(old.minted) < remintGuard {
		return nil, nil
	}
	t, err := s.mint(host, now)
	if err != nil {
		return nil, err
	}
	slot.cur.Store(t)
	return t, nil
}

// mint signs a token for the push service at host (RFC 8292 §2): ES256 over
// {"aud","exp","sub"}, the signature as the raw r||s of JWS (RFC 7518 §3.4).
func (s *Sender) mint(host string, now time.Time) (*vapidToken, error) {
	exp := now.Add(tokenLifetime)
	claims, err := json.Marshal(struct {
		Aud string `json:"aud"`
		Exp int64  `json:"exp"`
		Sub string `json:"sub"`
	}{origin(host), exp.Unix(), s.cfg.Subject})
	if err != nil {
		return nil, err
	}
	input := jwtHeader + "." + base64.RawURLEncoding.EncodeToString(claims)
	digest := sha256.Sum256([]byte(input))
	r, sig, err := ecdsa.Sign(rand.Reader, s.key.priv, digest[:])
	if err != nil {
		return nil, err
	}
	var raw [64]byte
	r.FillBytes(raw[:32])
	sig.FillBytes(raw[32:])
	jwt := input + "." + base64.RawURLEncoding.EncodeToString(raw[:])
	s.minted.Add(1)
	return &vapidToken{
		auth:   []string{"vapid t=" + jwt + ", k=" + s.key.k},
		exp:    time.Unix(exp.Unix(), 0),
		minted: now,
	}, nil
}

// originKey maps a URL host to the token cache key: hosts that name the
// same origin (case, an explicit :443) share one token. It allocates only
// for hosts that need rewriting, which push services' URLs never do.
func originKey(host string) string {
	host = strings.TrimSuffix(host, ":443")
	for i := 0; i < len(host); i++ {
		if 'A' <= host[i] && host[i] <= 'Z' {
			return strings.ToLower(host)
		}
	}
	return host
}

// origin serializes the origin of an https push resource on host (RFC 6454
// §6.1): lower-case, without the default port.
func origin(host string) string {
	host = strings.ToLower(host)
	host = strings.TrimSuffix(host, ":443")
	return "https://" + host
}
