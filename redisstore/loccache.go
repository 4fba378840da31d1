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
// It is two-way set-associative (an id's hash picks one set of two
// entries, and a third id in the set replaces the one used less recently),
// so it is bounded without eviction bookkeeping and two ids that share a
// set do not evict each other on every write, as they would in a
// direct-mapped cache (with 10,000 busy ids in 64 Ki entries, one in seven
// did). It is striped so that concurrent requests rarely share a lock.
type locCache struct {
	stripes [locStripes]locStripe
}

const (
	locStripes     = 64
	locSetsStripe  = 512 // 64 Ki entries in all (64 × 512 × 2): a few MB at most
	locStripeShift = 6
)

type locStripe struct {
	mu   sync.Mutex
	sets [locSetsStripe]locSet
}

// locSet holds two entries; lru is the index of the one used less recently.
type locSet struct {
	e   [2]locEntry
	lru uint8
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

func (c *locCache) set(h hashed) (*locStripe, *locSet) {
	st := &c.stripes[uint64(h)%locStripes]
	return st, &st.sets[(uint64(h)>>locStripeShift)%locSetsStripe]
}

// find returns the live entry of h in the set, marking it used; st.mu
// must be held.
func (s *locSet) find(h hashed) *locEntry {
	for i := range s.e {
		if e := &s.e[i]; e.ok && e.h == h {
			s.lru = uint8(1 - i)
			return e
		}
	}
	return nil
}

// slot returns the entry a new value of h goes into: h's own, else the
// one used less recently; st.mu must be held.
func (s *locSet) slot(h hashed) *locEntry {
	i := int(s.lru)
	for j := range s.e {
		if s.e[j].h == h || !s.e[j].ok {
			i = j
			break
		}
	}
	s.lru = uint8(1 - i)
	return &s.e[i]
}

// get returns the remembered id-map value of the id hashed to h.
func (c *locCache) get(h hashed) (string, bool) {
	st, s := c.set(h)
	st.mu.Lock()
	defer st.mu.Unlock()
	if e := s.find(h); e != nil {
		return e.val, true
	}
	return "", false
}

// put remembers val ("" for an id with no entry) as h's id-map value.
func (c *locCache) put(h hashed, val string) {
	st, s := c.set(h)
	st.mu.Lock()
	*s.slot(h) = locEntry{h: h, val: val, ok: true}
	st.mu.Unlock()
}

// putSnap remembers val together with the record it names for key (iid
// -1 and raw "" when there is none), as last read or written.
func (c *locCache) putSnap(h hashed, key, val string, iid int64, raw string) {
	st, s := c.set(h)
	st.mu.Lock()
	*s.slot(h) = locEntry{h: h, val: val, ok: true, snap: true, key: key, iid: iid, raw: raw}
	st.mu.Unlock()
}

// snap returns the remembered id-map value and record of key. A write may
// start from it instead of reading, because the write script compares both
// with what is stored and refuses the write if either changed; a read may
// not, since another process may have written since.
func (c *locCache) snap(h hashed, key string) (val string, iid int64, raw string, ok bool) {
	st, s := c.set(h)
	st.mu.Lock()
	defer st.mu.Unlock()
	if e := s.find(h); e != nil && e.snap && e.key == key {
		return e.val, e.iid, e.raw, true
	}
	return "", -1, "", false
}

// drop forgets h, after a write whose outcome is unknown.
func (c *locCache) drop(h hashed) {
	st, s := c.set(h)
	st.mu.Lock()
	for i := range s.e {
		if s.e[i].h == h {
			s.e[i].ok = false
		}
	}
	st.mu.Unlock()
}
