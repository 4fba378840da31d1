package redisstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// maxProblems bounds the inconsistencies Check reports.
const maxProblems = 20

// Check verifies the store's invariants, shard by shard: every record
// decodes and sits at its slot; the universe bitmap, the count, the id map
// and the handle map list exactly the records; every tag index entry
// points at a record carrying the tag, every record is indexed under each
// of its index tags, each tag is in exactly one tier with the directory's
// count; template reference counts match the records. It reads the whole
// hub, so it is an offline tool (caddy pushgate fsck) and a test oracle,
// not something to run against a busy production hub.
func (s *Store) Check(ctx context.Context) error {
	var probs []string
	report := func(sh int, format string, args ...any) {
		if len(probs) < maxProblems {
			probs = append(probs, fmt.Sprintf("shard %d: ", sh)+fmt.Sprintf(format, args...))
		}
	}
	for sh := 0; sh < s.l.shards; sh++ {
		if err := s.checkShard(ctx, sh, report); err != nil {
			return err
		}
	}
	if len(probs) == 0 {
		return nil
	}
	return fmt.Errorf("redisstore: %d or more inconsistencies:\n  %s", len(probs), strings.Join(probs, "\n  "))
}

// placed is a bucket field an entry is expected at.
type placed struct {
	bucket int
	field  string
}

func (s *Store) checkShard(ctx context.Context, sh int, report func(int, string, ...any)) error {
	l := s.l
	meta, err := s.rdb.HGetAll(ctx, l.meta(sh)).Result()
	if err != nil {
		return unavailable(err)
	}
	nx, _ := strconv.ParseInt(meta["nx"], 10, 64)
	n, _ := strconv.ParseInt(meta["n"], 10, 64)

	recs := map[int64]*record{}
	idWant := map[placed][]int64{}
	hWant := map[placed][]int64{}
	tagWant := map[string][]int64{} // folded tag -> iids
	refWant := map[uint64]int64{}
	minExp := map[int64]int64{}
	for b := int64(0); b <= bucketOf(nx); b++ {
		all, err := s.rdb.HGetAll(ctx, l.recBucket(sh, b)).Result()
		if err != nil {
			return unavailable(err)
		}
		for f, raw := range all {
			slot, err := strconv.Atoi(f)
			if err != nil || slot < 0 || slot >= recordsPerBucket {
				report(sh, "bucket %d has field %q", b, f)
				continue
			}
			iid := b*recordsPerBucket + int64(slot)
			if raw == spillMarker {
				if raw, err = s.rdb.Get(ctx, l.spill(sh, iid)).Result(); err != nil {
					report(sh, "record %d is spilled but its key is missing", iid)
					continue
				}
			}
			r := &record{}
			if err := decodeRecord(raw, r); err != nil {
				report(sh, "record %d: %v", iid, err)
				continue
			}
			if int(r.slot) != slot {
				report(sh, "record %d carries slot %d", iid, r.slot)
			}
			recs[iid] = r
			kind := byte(hInstallation)
			if r.reg {
				kind = hRegistration
			}
			h := hashOf(kind, recordKey(r))
			if h.shard(l.shards) != sh {
				report(sh, "record %d (%s) belongs to shard %d", iid, r.id, h.shard(l.shards))
			}
			p := placed{h.bucket(l.buckets), h.field()}
			idWant[p] = append(idWant[p], iid)
			if k := handleKey(r); k != "" {
				hh := hashOf(hHandle, k)
				hp := placed{hh.bucket(l.buckets), hh.field()}
				hWant[hp] = append(hWant[hp], iid)
			}
			cs, err := s.contents(ctx, sh, r.tmpls)
			if err != nil {
				report(sh, "record %d: templates: %v", iid, err)
				continue
			}
			for _, t := range indexTags(r, cs) {
				tagWant[t] = append(tagWant[t], iid)
			}
			for _, e := range r.tmpls {
				if e.inline == "" {
					refWant[e.hash]++
				}
			}
			if !r.expiration.IsZero() {
				ms := max(r.expiration.UnixMilli(), 1)
				if cur, ok := minExp[b]; !ok || ms < cur {
					minExp[b] = ms
				}
			}
		}
	}
	if int64(len(recs)) != n {
		report(sh, "count n=%d but %d records", n, len(recs))
	}
	// One record per id: a second one would resurface when the first is
	// deleted (what a lost compare-and-set would leave behind).
	owner := map[string]int64{}
	for _, iid := range slices.Sorted(maps.Keys(recs)) {
		r := recs[iid]
		k := "i:" + recordKey(r)
		if r.reg {
			k = "r:" + recordKey(r)
		}
		if first, ok := owner[k]; ok {
			report(sh, "records %d and %d both hold %s", first, iid, r.id)
			continue
		}
		owner[k] = iid
	}
	for iid := range recs {
		if iid >= nx {
			report(sh, "record %d at or beyond the allocator's next id %d", iid, nx)
		}
	}

	// Universe.
	u, err := s.rdb.Get(ctx, l.universe(sh)).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return unavailable(err)
	}
	got := bitmapMembers(u)
	if err := sameSet(got, keysOf(recs)); err != "" {
		report(sh, "universe bitmap vs records: %s", err)
	}

	// Id and handle maps.
	checkMap := func(name string, key func(int) string, want map[placed][]int64) error {
		have := map[placed][]int64{}
		buckets, err := s.hgetallBuckets(ctx, key)
		if err != nil {
			return err
		}
		for b, all := range buckets {
			for f, v := range all {
				have[placed{b, f}] = parseIIDs(v)
			}
		}
		for p, iids := range have {
			if e := sameSet(iids, want[p]); e != "" {
				report(sh, "%s bucket %d field %x: %s", name, p.bucket, p.field, e)
			}
		}
		for p, iids := range want {
			if _, ok := have[p]; !ok {
				report(sh, "%s bucket %d field %x missing (records %v)", name, p.bucket, p.field, iids)
			}
		}
		return nil
	}
	if err := checkMap("id map", func(b int) string { return l.idBucket(sh, b) }, idWant); err != nil {
		return err
	}
	if err := checkMap("handle map", func(b int) string { return l.handleBucket(sh, b) }, hWant); err != nil {
		return err
	}

	// Tag index: tier 1 buckets, then the directory of tiers 2 and 3.
	byF6 := map[placed]string{}
	byF8 := map[string]string{}
	for t := range tagWant {
		h := hashOf(hTag, t)
		byF6[placed{h.bucket(l.buckets), h.field()}] = t
		byF8[h.full()] = t
	}
	found := map[string]int{} // tag -> tiers it was found in
	smalls, err := s.hgetallBuckets(ctx, func(b int) string { return l.smallBucket(sh, b) })
	if err != nil {
		return err
	}
	for b, all := range smalls {
		for f, v := range all {
			t, ok := byF6[placed{b, f}]
			if !ok {
				report(sh, "small-tag bucket %d has entries %v for a tag no record carries", b, packedMembers(v))
				continue
			}
			found[t]++
			members := packedMembers(v)
			if e := sameSet(members, tagWant[t]); e != "" {
				report(sh, "tag %q (tier 1): %s", t, e)
			}
			if len(members) > tier1Max {
				report(sh, "tag %q has %d members in tier 1 (max %d)", t, len(members), tier1Max)
			}
		}
	}
	dir, err := s.rdb.HGetAll(ctx, l.dir(sh)).Result()
	if err != nil {
		return unavailable(err)
	}
	for f8, cv := range dir {
		t, ok := byF8[f8]
		th := uint64(0)
		if len(f8) == 8 {
			th = binary.BigEndian.Uint64([]byte(f8))
		}
		var members []int64
		tiers := 0
		if ms, err := s.rdb.SMembers(ctx, l.set(sh, th)).Result(); err == nil && len(ms) > 0 {
			tiers++
			for _, m := range ms {
				v, _ := strconv.ParseInt(m, 10, 64)
				members = append(members, v)
			}
		}
		if bm, err := s.rdb.Get(ctx, l.bitmap(sh, th)).Result(); err == nil {
			tiers++
			members = append(members, bitmapMembers(bm)...)
		}
		if !ok {
			report(sh, "directory entry %x (count %s) for a tag no record carries (members %v)", f8, cv, members)
			continue
		}
		found[t]++
		if tiers != 1 {
			report(sh, "tag %q is in %d of tiers 2 and 3", t, tiers)
		}
		if c, _ := strconv.Atoi(cv); c != len(members) {
			report(sh, "tag %q: directory count %s, %d members", t, cv, len(members))
		}
		if e := sameSet(members, tagWant[t]); e != "" {
			report(sh, "tag %q (tiers 2/3): %s", t, e)
		}
	}
	for t, iids := range tagWant {
		if found[t] != 1 {
			report(sh, "tag %q (records %v) found in %d tiers; want exactly 1", t, firstFew(iids), found[t])
		}
	}

	// Templates.
	refs, err := s.rdb.HGetAll(ctx, l.tplRefs(sh)).Result()
	if err != nil {
		return unavailable(err)
	}
	tpls, err := s.rdb.HKeys(ctx, l.tpl(sh)).Result()
	if err != nil {
		return unavailable(err)
	}
	for f, v := range refs {
		c, _ := strconv.ParseInt(v, 10, 64)
		h := uint64(0)
		if len(f) == 8 {
			h = binary.BigEndian.Uint64([]byte(f))
		}
		if refWant[h] != c {
			report(sh, "template %x: refcount %d, %d references", h, c, refWant[h])
		}
	}
	for h, c := range refWant {
		if _, ok := refs[hashed(h).full()]; !ok {
			report(sh, "template %x referenced %d times has no refcount", h, c)
		}
	}
	if len(tpls) != len(refs) {
		report(sh, "%d templates stored, %d refcounted", len(tpls), len(refs))
	}

	// Bucket expiry: no later than the earliest expiration in the bucket.
	exq, err := s.rdb.HGetAll(ctx, l.expiry(sh)).Result()
	if err != nil {
		return unavailable(err)
	}
	for b, ms := range minExp {
		v, ok := exq[strconv.FormatInt(b, 10)]
		cur, _ := strconv.ParseInt(v, 10, 64)
		if !ok || cur > ms {
			report(sh, "bucket %d expires records at %d but its sweep mark is %q", b, ms, v)
		}
	}
	return nil
}

// hgetallBuckets reads every bucket of a bucketed map, many per round trip.
func (s *Store) hgetallBuckets(ctx context.Context, key func(int) string) ([]map[string]string, error) {
	out := make([]map[string]string, s.l.buckets)
	for from := 0; from < s.l.buckets; from += 256 {
		pipe := s.rdb.Pipeline()
		var cmds []*redis.MapStringStringCmd
		for b := from; b < min(from+256, s.l.buckets); b++ {
			cmds = append(cmds, pipe.HGetAll(ctx, key(b)))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, unavailable(err)
		}
		for i, c := range cmds {
			out[from+i] = c.Val()
		}
	}
	return out, nil
}

func keysOf(m map[int64]*record) []int64 {
	out := make([]int64, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func bitmapMembers(b string) []int64 {
	var out []int64
	for i := 0; i < len(b); i++ {
		for k := 0; k < 8; k++ {
			if b[i]&(0x80>>k) != 0 {
				out = append(out, int64(i*8+k))
			}
		}
	}
	return out
}

func packedMembers(v string) []int64 {
	var out []int64
	for k := 0; k+4 <= len(v); k += 4 {
		out = append(out, int64(binary.BigEndian.Uint32([]byte(v[k:k+4]))))
	}
	if len(v)%4 != 0 {
		out = append(out, -1) // a torn value never matches
	}
	return out
}

func firstFew(v []int64) []int64 {
	if len(v) > 5 {
		return v[:5]
	}
	return v
}

// sameSet compares two iid lists as sets (duplicates in got count as a
// difference) and describes the difference, or returns "".
func sameSet(got, want []int64) string {
	g := slices.Clone(got)
	w := slices.Clone(want)
	sort.Slice(g, func(i, j int) bool { return g[i] < g[j] })
	sort.Slice(w, func(i, j int) bool { return w[i] < w[j] })
	if slices.Equal(g, w) {
		return ""
	}
	return fmt.Sprintf("have %v, want %v", firstFew(g), firstFew(w))
}
