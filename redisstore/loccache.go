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
	// A snapshot of the id's record with val, for writes (see snap):
	// key guards against a hash collision, iid is -1 for none.
	snap bool
	key  string
	iid  int64
	raw  string
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

// putSnap remembers val together with the record it names for key (iid
// -1 and raw "" when there is none), as last read or written.
func (c *locCache) putSnap(h hashed, key, val string, iid int64, raw string) {
	st, e := c.entry(h)
	st.mu.Lock()
	*e = locEntry{h: h, val: val, ok: true, snap: true, key: key, iid: iid, raw: raw}
	st.mu.Unlock()
}

// snap returns the remembered id-map value and record of key. A write may
// start from it instead of reading, because the write script compares both
// with what is stored and refuses the write if either changed; a read may
// not, since another process may have written since.
func (c *locCache) snap(h hashed, key string) (val string, iid int64, raw string, ok bool) {
	st, e := c.entry(h)
	st.mu.Lock()
	defer st.mu.Unlock()
	if e.ok && e.snap && e.h == h && e.key == key {
		return e.val, e.iid, e.raw, true
	}
	return "", -1, "", false
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
