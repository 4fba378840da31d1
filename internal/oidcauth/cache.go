package oidcauth

import (
	"crypto/sha256"
	"sync"
	"time"
)

// tokenCache remembers verified tokens by their SHA-256 for a short time.
// A device sends the same token with every request until it expires, and a
// signature check costs tens of microseconds; the cache turns repeats into
// a hash and a map lookup. Only successful verifications are cached, so a
// flood of bad tokens cannot fill it with anything but misses.
type tokenCache struct {
	ttl time.Duration
	max int

	mu sync.RWMutex
	m  map[[sha256.Size]byte]cachedIdentity
}

type cachedIdentity struct {
	id    *Identity
	until time.Time
}

func newTokenCache(ttl time.Duration, size int) *tokenCache {
	if ttl < 0 {
		return nil
	}
	return &tokenCache{ttl: ttl, max: size, m: make(map[[sha256.Size]byte]cachedIdentity)}
}

func (c *tokenCache) get(tok string, now time.Time) (*Identity, bool) {
	if c == nil {
		return nil, false
	}
	k := sha256.Sum256([]byte(tok))
	c.mu.RLock()
	e, ok := c.m[k]
	c.mu.RUnlock()
	if !ok || !now.Before(e.until) {
		return nil, false
	}
	id := *e.id
	return &id, true
}

// put caches id until the earlier of now+ttl and the token's expiry.
func (c *tokenCache) put(tok string, id *Identity, now time.Time) {
	if c == nil {
		return
	}
	until := now.Add(c.ttl)
	if !id.Expiry.IsZero() && id.Expiry.Before(until) {
		until = id.Expiry
	}
	k := sha256.Sum256([]byte(tok))
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		// Drop the expired entries; if that frees nothing, start over:
		// bounded memory matters more than the hit rate of a full cache.
		for key, e := range c.m {
			if !now.Before(e.until) {
				delete(c.m, key)
			}
		}
		if len(c.m) >= c.max {
			clear(c.m)
		}
	}
	c.m[k] = cachedIdentity{id: id, until: until}
}
