package redisstore

import "sync"

// locCache remembers, per id, the id-map value last read or written by this
// process, so that locate can fetch the id-map entry and the records it
// names in one pipelined round trip instead of two (an id-map read, then
// the records). It is only a guess: locate compares the guess with the
// id-map value read in the same pipeline and falls back to a second round
// trip when they differ, and every write is a compare-and-set on both the
// id-map value and the record bytes, so a stale or evicted entry costs a
// round trip, never correctness. Other processes' writes simply make the
// guess miss.
//
// It is direct-mapped (an id's hash picks its one entry; a colliding id
// overwrites it) so it is bounded without eviction bookkeeping, and
// striped so that concurrent requests rarely share a lock.
type locCache struct {
	stripes [locStripes]locStripe
}

const (
	locStripes     = 64
	locPerStripe   = 1024 // 64 Ki entries in all: a few MB at most
	locStripeShift = 6
)

type locStripe struct {
	mu      sync.Mutex
	entries [locPerStripe]locEntry
}

type locEntry struct {
	h   hashed
	val string
	ok  bool
}

func (c *locCache) entry(h hashed) (*locStripe, *locEntry) {
	st := &c.stripes[uint64(h)%locStripes]
	return st, &st.entries[(uint64(h)>>locStripeShift)%locPerStripe]
}

// get returns the remembered id-map value of the id hashed to h.
func (c *locCache) get(h hashed) (string, bool) {
	st, e := c.entry(h)
	st.mu.Lock()
	defer st.mu.Unlock()
	if e.ok && e.h == h {
		return e.val, true
	}
	return "", false
}

// put remembers val ("" for an id with no entry) as h's id-map value.
func (c *locCache) put(h hashed, val string) {
	st, e := c.entry(h)
	st.mu.Lock()
	*e = locEntry{h: h, val: val, ok: true}
	st.mu.Unlock()
}

// drop forgets h, after a write whose outcome is unknown.
func (c *locCache) drop(h hashed) {
	st, e := c.entry(h)
	st.mu.Lock()
	if e.h == h {
		e.ok = false
	}
	st.mu.Unlock()
}
