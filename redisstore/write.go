package redisstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/hubcore"
)

// slot is where an id lives: its shard, its id-map entry as read, and the
// record it names, if any. It is the "before" of a write's compare-and-set.
type slot struct {
	sh      int
	h       hashed // the id's hash (locCache key)
	idKey   string // id bucket key
	idField string
	idVal   string // the id-map value as read ("" none)
	iid     int64  // -1 when no record
	raw     string // the stored record bytes ("" none)
	rec     *record
}

// locate reads the id map and the record an id names. kind is
// hInstallation (key is the InstallationKey) or hRegistration. With a
// remembered id-map value (locCache) the id-map entry and the records are
// read in one pipeline; otherwise, or when the guess was wrong, the records
// take a second round trip.
func (s *Store) locate(ctx context.Context, kind byte, key string) (*slot, error) {
	h := hashOf(kind, key)
	sl := &slot{sh: h.shard(s.l.shards), h: h, idField: h.field(), iid: -1}
	sl.idKey = s.l.idBucket(sl.sh, h.bucket(s.l.buckets))
	// The records must be read in one snapshot with the id-map value that
	// names them. Read apart, a delete and a re-create that reuses the
	// same iid can fall in between: the id then looks absent (its record
	// is gone) although the id-map value is back to what was read, so a
	// create's compare-and-set on that value passes (ABA) and the id ends
	// up with two records, the older one resurfacing when the newer is
	// deleted. So the records are read in a transaction that reads the
	// value again, until it confirms the value the iids came from (the
	// remembered guess, or a plain read).
	v, known := s.loc.get(h)
	confirmed := false
	if !known {
		var err error
		v, err = s.rdb.HGet(ctx, sl.idKey, sl.idField).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, unavailable(err)
		}
		confirmed = true
	}
	var raws []string
	for attempt := 0; ; attempt++ {
		if confirmed && v == "" {
			break // absent: one read is a snapshot
		}
		if attempt == maxRetries {
			return nil, unavailable(errors.New("an id-map entry changed on every read"))
		}
		again, rs, err := s.fetchSnapshot(ctx, sl, parseIIDs(v))
		if err != nil {
			return nil, err
		}
		if again == v {
			raws = rs
			break
		}
		v, confirmed = again, true
	}
	sl.idVal = v
	iids := parseIIDs(v)
	for i, raw := range raws {
		if raw == "" {
			continue
		}
		r := &record{}
		if err := decodeRecord(raw, r); err != nil {
			s.loc.drop(h)
			return nil, unavailable(fmt.Errorf("record %d of shard %d: %w", iids[i], sl.sh, err))
		}
		if r.reg == (kind == hRegistration) && recordKey(r) == key {
			sl.iid, sl.raw, sl.rec = iids[i], raw, r
			break
		}
	}
	s.loc.putSnap(h, key, v, sl.iid, sl.raw)
	return sl, nil
}

// locateForWrite is locate for a write that retries on errRetry: it starts
// from the snapshot this process last read or wrote, when it has one, and
// reports whether it did. Everything the write script is conditional on
// (the id-map value and the record bytes) is in the snapshot, so a stale
// one makes the script refuse the write and the retry reads afresh; the
// caller must not answer from a snapshot either (a version or existence
// check that fails on it is checked again on a fresh read).
func (s *Store) locateForWrite(ctx context.Context, kind byte, key string) (*slot, bool, error) {
	h := hashOf(kind, key)
	if v, iid, raw, r, ok := s.snapshot(h, key); ok {
		sl := &slot{sh: h.shard(s.l.shards), h: h, idField: h.field(), idVal: v, iid: -1}
		sl.idKey = s.l.idBucket(sl.sh, h.bucket(s.l.buckets))
		if r != nil {
			sl.iid, sl.raw, sl.rec = iid, raw, r
		}
		return sl, true, nil
	}
	sl, err := s.locate(ctx, kind, key)
	return sl, false, err
}

// snapshot is the remembered snapshot of key (locCache.snap) with its
// record decoded; r is nil when the id had no record. A snapshot whose
// record does not decode is not one.
func (s *Store) snapshot(h hashed, key string) (val string, iid int64, raw string, r *record, ok bool) {
	val, iid, raw, ok = s.loc.snap(h, key)
	if !ok || iid < 0 {
		return val, iid, raw, nil, ok
	}
	r = &record{}
	if decodeRecord(raw, r) != nil {
		return "", -1, "", nil, false
	}
	return val, iid, raw, r, true
}

// fetchSnapshot reads, in one MULTI/EXEC transaction (one round trip),
// sl's id-map value and the stored bytes of iids ("" for none), spilled
// records included: a consistent snapshot when the value read names iids.
func (s *Store) fetchSnapshot(ctx context.Context, sl *slot, iids []int64) (string, []string, error) {
	pipe := s.rdb.TxPipeline()
	idCmd := pipe.HGet(ctx, sl.idKey, sl.idField)
	recs := make([]*redis.StringCmd, len(iids))
	spills := make([]*redis.StringCmd, len(iids))
	for i, iid := range iids {
		recs[i] = pipe.HGet(ctx, s.l.recBucket(sl.sh, bucketOf(iid)), strconv.Itoa(int(slotOf(iid))))
		spills[i] = pipe.Get(ctx, s.l.spill(sl.sh, iid))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return "", nil, unavailable(err)
	}
	v, err := idCmd.Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return "", nil, unavailable(err)
	}
	out := make([]string, len(iids))
	for i := range iids {
		r, err := recs[i].Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return "", nil, unavailable(err)
		}
		if r == spillMarker {
			if r, err = spills[i].Result(); err != nil && !errors.Is(err, redis.Nil) {
				return "", nil, unavailable(err)
			}
		}
		out[i] = r
	}
	return v, out, nil
}

// recordKey is the identity of a record's id: folded for installations.
func recordKey(r *record) string {
	if r.reg {
		return r.id
	}
	return hubcore.InstallationKey(r.id)
}

func parseIIDs(v string) []int64 {
	if v == "" {
		return nil
	}
	var out []int64
	for _, p := range strings.Split(v, ",") {
		if n, err := strconv.ParseInt(p, 10, 64); err == nil && n >= 0 {
			out = append(out, n)
		}
	}
	return out
}

func withIID(v string, iid int64) string {
	if slices.Contains(parseIIDs(v), iid) {
		return v
	}
	if v == "" {
		return strconv.FormatInt(iid, 10)
	}
	return v + "," + strconv.FormatInt(iid, 10)
}

func withoutIID(v string, iid int64) string {
	var out []string
	for _, n := range parseIIDs(v) {
		if n != iid {
			out = append(out, strconv.FormatInt(n, 10))
		}
	}
	return strings.Join(out, ",")
}

// fetchRecords reads the stored bytes of iids in one shard ("" for none),
// following spilled records.
func (s *Store) fetchRecords(ctx context.Context, sh int, iids []int64) ([]string, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(iids))
	for i, iid := range iids {
		cmds[i] = pipe.HGet(ctx, s.l.recBucket(sh, bucketOf(iid)), strconv.Itoa(int(slotOf(iid))))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, unavailable(err)
	}
	out := make([]string, len(iids))
	var spilled []int
	for i, c := range cmds {
		v, err := c.Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, unavailable(err)
		}
		out[i] = v
		if v == spillMarker {
			spilled = append(spilled, i)
		}
	}
	for _, i := range spilled {
		v, err := s.rdb.Get(ctx, s.l.spill(sh, iids[i])).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, unavailable(err)
		}
		out[i] = v
	}
	return out, nil
}

// change is one write: the slot as read and what to make of it.
type change struct {
	sl     *slot
	iid    int64
	newRec *record // nil deletes
	newTpl newTemplates
	// tomb, for registrations: the registration id's marker in the
	// shard's registration-id hash, as read and as to be written.
	tomb             bool
	tombID           string
	tombOld, tombNew string
	free             bool
}

// errRetry says a precondition of the write script failed: read again.
var errRetry = errors.New("redisstore: concurrent write, retry")

// collisionError names a template whose hash collided.
type collisionError struct{ hash uint64 }

func (e *collisionError) Error() string { return fmt.Sprintf("template hash %x collides", e.hash) }

// tryApply allocates an integer id for a new record, applies the change,
// and tells the caller's compare-and-set loop what happened: done, go round
// again (a concurrent write won, or a template hash collided and is now
// marked in inline), or a final error.
func (s *Store) tryApply(ctx context.Context, c *change, inline map[uint64]bool) (done bool, err error) {
	if c.iid < 0 {
		if c.iid, err = s.allocIID(ctx, c.sl.sh); err != nil {
			return false, err
		}
	}
	err = s.apply(ctx, c)
	var ce *collisionError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &ce):
		inline[ce.hash] = true
		return false, nil
	case errors.Is(err, errRetry):
		return false, nil
	}
	return false, err
}

// maxRetries bounds the compare-and-set loops; reaching it means a record
// is written faster than a round trip, for seconds.
const maxRetries = 1000

// apply runs the write script for c. It returns errRetry when the slot
// changed since it was read, and *collisionError when a template's hash
// names other content in this shard.
func (s *Store) apply(ctx context.Context, c *change) error {
	sl := c.sl
	sh := sl.sh
	var oldCS, newCS []*tmplContent
	var err error
	if sl.rec != nil {
		if oldCS, err = s.contents(ctx, sh, sl.rec.tmpls); err != nil {
			return err
		}
	}
	newRaw := ""
	var newIdx []string
	if c.newRec != nil {
		c.newRec.slot = slotOf(c.iid)
		newRaw = string(encodeRecord(nil, c.newRec))
		newCS = make([]*tmplContent, len(c.newRec.tmpls))
		var kept []tmplEntry
		var keptAt []int
		for i, e := range c.newRec.tmpls {
			src := e.inline
			if src == "" {
				src = c.newTpl[e.hash]
			}
			if src == "" {
				// An unchanged template of the record: stored already.
				kept = append(kept, e)
				keptAt = append(keptAt, i)
				continue
			}
			if newCS[i], err = decodeTemplate(src); err != nil {
				return err
			}
		}
		if len(kept) > 0 {
			cs, err := s.contents(ctx, sh, kept)
			if err != nil {
				return err
			}
			for k, i := range keptAt {
				newCS[i] = cs[k]
			}
		}
		newIdx = indexTags(c.newRec, newCS)
	}
	var oldIdx []string
	if sl.rec != nil {
		oldIdx = indexTags(sl.rec, oldCS)
	}

	idNew := sl.idVal
	if c.newRec != nil {
		idNew = withIID(idNew, c.iid)
	} else {
		idNew = withoutIID(idNew, c.iid)
	}
	keys := []string{
		s.l.meta(sh), s.l.recBucket(sh, bucketOf(c.iid)), s.l.spill(sh, c.iid), s.l.universe(sh),
		sl.idKey, s.l.dir(sh), s.l.expiry(sh), s.l.tplRefs(sh), s.l.tpl(sh), s.l.free(sh), s.l.regIDs(sh),
	}
	exp := int64(0)
	if c.newRec != nil && !c.newRec.expiration.IsZero() {
		exp = max(c.newRec.expiration.UnixMilli(), 1)
	}
	args := []any{
		c.iid, int(slotOf(c.iid)), sl.raw, newRaw, b2s(len(newRaw) > spillThreshold),
		sl.idField, sl.idVal, idNew,
		"", "", "",
		bucketOf(c.iid), exp, b2s(c.free),
		0, 0, 0,
	}
	if c.tomb {
		args[8], args[9], args[10] = c.tombID, c.tombOld, c.tombNew
	}

	// handles
	nh := 0
	oldH, newH := "", ""
	if sl.rec != nil {
		oldH = handleKey(sl.rec)
	}
	if c.newRec != nil {
		newH = handleKey(c.newRec)
	}
	if oldH != newH {
		for _, hd := range []struct {
			k string
			d int
		}{{oldH, -1}, {newH, +1}} {
			if hd.k == "" {
				continue
			}
			h := hashOf(hHandle, hd.k)
			keys = append(keys, s.l.handleBucket(sh, h.bucket(s.l.buckets)))
			args = append(args, h.field(), hd.d)
			nh++
		}
	}

	// templates: net reference changes
	delta := map[uint64]int{}
	if sl.rec != nil {
		for _, e := range sl.rec.tmpls {
			if e.inline == "" {
				delta[e.hash]--
			}
		}
	}
	if c.newRec != nil {
		for _, e := range c.newRec.tmpls {
			if e.inline == "" {
				delta[e.hash]++
			}
		}
	}
	var tplOrder []uint64
	for h, d := range delta {
		if d != 0 {
			tplOrder = append(tplOrder, h)
		}
	}
	slices.Sort(tplOrder)
	for _, h := range tplOrder {
		args = append(args, hashed(h).full(), delta[h], c.newTpl[h])
	}

	// tags: the symmetric difference of the index tags
	ng := 0
	addTag := func(t string, d int) {
		tk := s.l.tagKeys(sh, t)
		keys = append(keys, tk.small, tk.set, tk.bitmap)
		args = append(args, tk.f6, tk.f8, d)
		ng++
	}
	i, j := 0, 0
	for i < len(oldIdx) || j < len(newIdx) {
		switch {
		case j == len(newIdx) || i < len(oldIdx) && oldIdx[i] < newIdx[j]:
			addTag(oldIdx[i], -1)
			i++
		case i == len(oldIdx) || newIdx[j] < oldIdx[i]:
			addTag(newIdx[j], +1)
			j++
		default:
			i++
			j++
		}
	}
	args[14], args[15], args[16] = nh, len(tplOrder), ng

	res, err := applyScript.Run(ctx, s.rdb, keys, args...).Text()
	if err != nil {
		s.loc.drop(sl.h)
		return unavailable(err)
	}
	switch {
	case res == "ok":
		switch {
		case c.newRec != nil:
			s.loc.putSnap(sl.h, recordKey(c.newRec), idNew, c.iid, newRaw)
		case sl.rec != nil:
			s.loc.putSnap(sl.h, recordKey(sl.rec), idNew, -1, "")
		default:
			s.loc.put(sl.h, idNew)
		}
		for h, src := range c.newTpl {
			if tc, err := decodeTemplate(src); err == nil {
				s.tc.putContent(tplKey{sh, h}, tc)
			}
		}
		return nil
	case res == "conflict":
		s.loc.drop(sl.h)
		return errRetry
	case strings.HasPrefix(res, "collision:"):
		n, _ := strconv.Atoi(strings.TrimPrefix(res, "collision:"))
		if n >= 1 && n <= len(tplOrder) {
			return &collisionError{hash: tplOrder[n-1]}
		}
	}
	return unavailable(fmt.Errorf("unexpected reply %q from the write script", res))
}

func b2s(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// --- installations ---

// sameUpdate applies hubcore.Cond.Updated to a live record.
func sameUpdate(r *record, c hubcore.Cond) bool {
	return c.Updated.IsZero() || r.lastUpdate.Equal(c.Updated)
}

// live reports whether the slot holds a live installation or registration.
func (s *Store) live(sl *slot) bool {
	return sl.rec != nil && !expiredAt(sl.rec, s.now())
}

// PutInstallation creates or replaces the installation, conditional on
// ifMatch.
func (s *Store) PutInstallation(ctx context.Context, in *hubcore.Installation, ifMatch hubcore.Cond) (*hubcore.Installation, error) {
	if in == nil {
		return nil, invalid("", "no installation")
	}
	key := hubcore.InstallationKey(in.InstallationID)
	inline := map[uint64]bool{}
	for attempt := 0; attempt < maxRetries; attempt++ {
		// The first attempt may start from this process's last snapshot:
		// the write script checks it, and a failed precondition is only
		// answered after a fresh read.
		var sl *slot
		var snap bool
		var err error
		if attempt == 0 {
			sl, snap, err = s.locateForWrite(ctx, hInstallation, key)
		} else {
			sl, err = s.locate(ctx, hInstallation, key)
		}
		if err != nil {
			return nil, err
		}
		live := s.live(sl)
		var cur int64
		if live {
			cur = sl.rec.version
		}
		var pre error
		switch {
		case ifMatch.Version > 0 && (cur != ifMatch.Version || !sameUpdate(sl.rec, ifMatch)):
			pre = conflict(cur)
		case ifMatch.Exists && !live:
			pre = notFound("installation")
		case ifMatch.Absent && live:
			pre = conflict(cur)
		}
		if pre != nil {
			if snap {
				continue
			}
			return nil, pre
		}
		r, nt := recordOfInstallation(in, cur+1, inline)
		c := &change{sl: sl, iid: sl.iid, newRec: r, newTpl: nt}
		done, err := s.tryApply(ctx, c, inline)
		if err != nil {
			return nil, err
		}
		if done {
			return s.written(ctx, sl.sh, r, in)
		}
	}
	return nil, unavailable(errors.New("too many concurrent writes to one installation"))
}

// written is the installation just stored as r, made from in. A later
// write may already have replaced it and freed its templates; the write
// happened all the same, so the answer is then made from in.
func (s *Store) written(ctx context.Context, sh int, r *record, in *hubcore.Installation) (*hubcore.Installation, error) {
	out, err := s.toInstallation(ctx, sh, r)
	if errors.Is(err, errRetry) {
		out, err = in.Clone(), nil
		out.Version = r.version
	}
	return out, err
}

// GetInstallation returns the installation or CodeNotFound.
func (s *Store) GetInstallation(ctx context.Context, id string) (*hubcore.Installation, error) {
	sl, err := s.locate(ctx, hInstallation, hubcore.InstallationKey(id))
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		if !s.live(sl) {
			return nil, notFound("installation")
		}
		in, err := s.toInstallation(ctx, sl.sh, sl.rec)
		if !errors.Is(err, errRetry) || attempt == maxRetries {
			return in, err
		}
		// The record read was replaced and its templates freed: read again.
		if sl, err = s.locate(ctx, hInstallation, hubcore.InstallationKey(id)); err != nil {
			return nil, err
		}
	}
}

// RecentInstallation returns, without asking Redis, the installation as
// this process last read or wrote it: found reports whether it remembers
// the id at all, and in is nil when it remembers no live installation. The
// copy may be stale (another process, or an eviction, may have changed
// it), so it is only fit to decide a write made conditional on its version
// (hubcore.Cond), which the write script checks against what is stored:
// deciding on it saves the read and risks nothing but a retry.
func (s *Store) RecentInstallation(ctx context.Context, id string) (in *hubcore.Installation, found bool) {
	key := hubcore.InstallationKey(id)
	h := hashOf(hInstallation, key)
	_, _, _, r, ok := s.snapshot(h, key)
	if !ok {
		return nil, false
	}
	if r == nil || expiredAt(r, s.now()) {
		return nil, true
	}
	in, err := s.toInstallation(ctx, h.shard(s.l.shards), r)
	if err != nil {
		return nil, false // its templates are gone: read it properly
	}
	return in, true
}

// UpdateInstallation reads the installation, calls fn with a copy and
// writes the result conditional on the record read, retrying when a
// concurrent write won.
func (s *Store) UpdateInstallation(ctx context.Context, id string, fn func(*hubcore.Installation) (*hubcore.Installation, error)) (*hubcore.Installation, error) {
	key := hubcore.InstallationKey(id)
	inline := map[uint64]bool{}
	for attempt := 0; attempt < maxRetries; attempt++ {
		sl, err := s.locate(ctx, hInstallation, key)
		if err != nil {
			return nil, err
		}
		if !s.live(sl) {
			return nil, notFound("installation")
		}
		cur, err := s.toInstallation(ctx, sl.sh, sl.rec)
		if errors.Is(err, errRetry) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out, err := fn(cur)
		if err != nil {
			return nil, err
		}
		if out == nil {
			return nil, invalid("", "the update returned no installation")
		}
		if hubcore.InstallationKey(out.InstallationID) != key {
			return nil, invalid("installationId", "an update cannot change the installation id (%q to %q)", id, out.InstallationID)
		}
		r, nt := recordOfInstallation(out, sl.rec.version+1, inline)
		err = s.apply(ctx, &change{sl: sl, iid: sl.iid, newRec: r, newTpl: nt})
		var ce *collisionError
		switch {
		case err == nil:
			return s.written(ctx, sl.sh, r, out)
		case errors.As(err, &ce):
			inline[ce.hash] = true
		case errors.Is(err, errRetry):
		default:
			return nil, err
		}
	}
	return nil, unavailable(errors.New("too many concurrent writes to one installation"))
}

// DeleteInstallation deletes the installation, conditional on ifMatch.
func (s *Store) DeleteInstallation(ctx context.Context, id string, ifMatch hubcore.Cond) error {
	key := hubcore.InstallationKey(id)
	for attempt := 0; attempt < maxRetries; attempt++ {
		sl, err := s.locate(ctx, hInstallation, key)
		if err != nil {
			return err
		}
		if !s.live(sl) {
			if sl.rec != nil {
				// Expired: purge it now that we are here.
				if err := s.apply(ctx, &change{sl: sl, iid: sl.iid, free: true}); err != nil && !errors.Is(err, errRetry) {
					return err
				}
			}
			return notFound("installation")
		}
		if ifMatch.Version > 0 && (sl.rec.version != ifMatch.Version || !sameUpdate(sl.rec, ifMatch)) {
			return conflict(sl.rec.version)
		}
		err = s.apply(ctx, &change{sl: sl, iid: sl.iid, free: true})
		if !errors.Is(err, errRetry) {
			return err
		}
	}
	return unavailable(errors.New("too many concurrent writes to one installation"))
}
