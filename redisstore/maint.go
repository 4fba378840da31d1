package redisstore

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/tag"
	"github.com/pushgate/pushgate/hubcore/tagexpr"
)

// handleOf is the identity a handle is compared under for platform p.
func handleOf(p hubcore.Platform, h string) string {
	if p == hubcore.APNS {
		return strings.ToUpper(h)
	}
	return h
}

// ExpireHandle marks installations with the handle as expired and deletes
// registrations with it.
func (s *Store) ExpireHandle(ctx context.Context, p hubcore.Platform, handle string, at time.Time) (int, error) {
	want := handleOf(p, handle)
	h := hashOf(hHandle, strings.ToUpper(handle))
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, s.l.shards)
	for sh := range cmds {
		cmds[sh] = pipe.HGet(ctx, s.l.handleBucket(sh, h.bucket(s.l.buckets)), h.field())
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return 0, unavailable(err)
	}
	matches := func(r *record) bool {
		return r.platform == p && r.channel.Key(p) == want
	}
	changed := 0
	for sh, c := range cmds {
		iids := parseIIDs(c.Val())
		if len(iids) == 0 {
			continue
		}
		raws, err := s.fetchRecords(ctx, sh, iids)
		if err != nil {
			return changed, err
		}
		for _, raw := range raws {
			r := &record{}
			if raw == "" || decodeRecord(raw, r) != nil || !matches(r) {
				continue
			}
			ok, err := s.expireOne(ctx, r.reg, recordKey(r), matches, at)
			if err != nil {
				return changed, err
			}
			if ok {
				changed++
			}
		}
	}
	return changed, nil
}

// expireOne applies ExpireHandle to one entry, re-reading it until its
// write wins; it reports whether the entry changed.
func (s *Store) expireOne(ctx context.Context, reg bool, key string, matches func(*record) bool, at time.Time) (bool, error) {
	kind := byte(hInstallation)
	if reg {
		kind = hRegistration
	}
	for attempt := 0; attempt < maxRetries; attempt++ {
		sl, err := s.locate(ctx, kind, key)
		if err != nil {
			return false, err
		}
		if !s.live(sl) || !matches(sl.rec) {
			return false, nil
		}
		c := &change{sl: sl, iid: sl.iid}
		if reg {
			m, err := s.regMarker(ctx, sl.sh, key)
			if err != nil {
				return false, err
			}
			c.free, c.tomb, c.tombID, c.tombOld, c.tombNew = true, true, key, m, marker(markGone, s.now())
		} else {
			if sl.rec.expired {
				return false, nil
			}
			nr := *sl.rec
			nr.expired, nr.lastActive, nr.version = true, at.UTC(), sl.rec.version+1
			c.newRec = &nr
		}
		if err := s.apply(ctx, c); !errors.Is(err, errRetry) {
			return err == nil, err
		}
	}
	return false, unavailable(errors.New("too many concurrent writes"))
}

// EditTags adds and removes tags on every installation whose own and
// implicit tags match e, one installation per write.
func (s *Store) EditTags(ctx context.Context, e *tagexpr.Expr, add, remove []string) (int64, error) {
	for i, t := range add {
		if tag.IsSystem(t) {
			return 0, invalid(fmt.Sprintf("add[%d]", i), "tag %q: system tags cannot be added", t)
		}
		if err := tag.Validate(t); err != nil {
			return 0, invalid(fmt.Sprintf("add[%d]", i), "%v", err)
		}
	}
	// Collect the matching installations first, then write them: a scan
	// and writes to what it scans do not mix well.
	var keys []string
	var mu sync.Mutex
	err := s.execute(ctx, hubcore.AudienceQuery{Expr: e}, func(w *worker) visitor {
		return &collectSink{w: w, e: e, out: func(k string) {
			mu.Lock()
			keys = append(keys, k)
			mu.Unlock()
		}}
	})
	if err != nil {
		return 0, err
	}
	removeSet := tag.NewSet(remove...)
	var n int64
	var skipped error
	for _, k := range keys {
		ok, err := s.editOne(ctx, k, add, &removeSet)
		var he *hubcore.Error
		switch {
		case err == nil:
			if ok {
				n++
			}
		case errors.As(err, &he) && (he.Code == hubcore.CodeLimit || he.Code == hubcore.CodeInvalid):
			if skipped == nil {
				skipped = &hubcore.Error{Code: hubcore.CodeLimit, Field: "tags", Reason: fmt.Sprintf("installation %s skipped: %s", k, he.Reason), Err: err}
			}
		default:
			return n, err
		}
	}
	return n, skipped
}

type collectSink struct {
	w   *worker
	e   *tagexpr.Expr
	out func(string)
	m   memb
}

func (c *collectSink) visit(_ int, r *record, _ []*tmplContent) error {
	if r.reg {
		return nil
	}
	c.m.setRecord(r)
	if c.e == nil || c.e.Eval(&c.m) {
		c.out(recordKey(r))
	}
	return nil
}

func (c *collectSink) expect(int) {}

func (c *collectSink) flush() error { return nil }

func (s *Store) editOne(ctx context.Context, key string, add []string, remove *tag.Set) (bool, error) {
	changed := false
	_, err := s.UpdateInstallation(ctx, key, func(in *hubcore.Installation) (*hubcore.Installation, error) {
		changed = false
		out := in.Clone()
		out.Tags = out.Tags[:0]
		have := map[string]bool{}
		for _, t := range in.Tags {
			if remove.Has(tag.Fold(t)) {
				changed = true
				continue
			}
			out.Tags = append(out.Tags, t)
			have[tag.Fold(t)] = true
		}
		for _, t := range add {
			if !have[tag.Fold(t)] {
				out.Tags = append(out.Tags, t)
				have[tag.Fold(t)] = true
				changed = true
			}
		}
		if !changed {
			return nil, errUnchanged
		}
		if err := out.Validate(s.lim); err != nil {
			return nil, err
		}
		out.LastUpdate = s.now().UTC()
		return out, nil
	})
	if errors.Is(err, errUnchanged) {
		return false, nil
	}
	var he *hubcore.Error
	if errors.As(err, &he) && he.Code == hubcore.CodeNotFound {
		return false, nil // deleted meanwhile
	}
	return err == nil, err
}

var errUnchanged = errors.New("unchanged")

// Export writes every live installation and registration as NDJSON.
func (s *Store) Export(ctx context.Context, w io.Writer) error {
	bw := bufio.NewWriter(w)
	err := s.walk(ctx, source{kind: srcAll}, listPos{}, func(sh int, _ int64, r *record, _ []*tmplContent) (bool, error) {
		var rec hubcore.ExportRecord
		if r.reg {
			g, err := s.toRegistration(ctx, sh, r)
			if err != nil {
				return false, err
			}
			rec.Registration = g
		} else {
			in, err := s.toInstallation(ctx, sh, r)
			if err != nil {
				return false, err
			}
			rec.Installation = in
		}
		b, err := json.Marshal(&rec)
		if err != nil {
			return false, err
		}
		b = append(b, '\n')
		_, err = bw.Write(b)
		return false, err
	})
	if err != nil {
		return err
	}
	return bw.Flush()
}

// maxImportLine bounds one NDJSON line of an import.
const maxImportLine = 16 << 20

// Import reads NDJSON written by Export and writes each entry
// unconditionally.
func (s *Store) Import(ctx context.Context, r io.Reader) (int64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxImportLine)
	var n int64
	line := 0
	bad := func(err error) error {
		return &hubcore.Error{Code: hubcore.CodeInvalid, Reason: fmt.Sprintf("line %d: %v", line, err), Err: err}
	}
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		var rec hubcore.ExportRecord
		if err := json.Unmarshal([]byte(text), &rec); err != nil {
			return n, bad(err)
		}
		now := s.now()
		switch {
		case rec.Installation != nil:
			in := rec.Installation
			if err := in.Validate(s.lim); err != nil {
				return n, bad(err)
			}
			if in.Expired(now) {
				continue
			}
			if _, err := s.PutInstallation(ctx, in, hubcore.Always); err != nil {
				return n, err
			}
		case rec.Registration != nil:
			g := rec.Registration
			if err := g.Validate(s.lim); err != nil {
				return n, bad(err)
			}
			if g.Expired(now) {
				continue
			}
			if _, err := s.putRegistrationForce(ctx, g); err != nil {
				return n, err
			}
		}
		n++
	}
	if err := sc.Err(); err != nil {
		line++
		return n, bad(err)
	}
	return n, nil
}

// putRegistrationForce writes a registration whatever its id's history
// (Import restores over tombstones).
func (s *Store) putRegistrationForce(ctx context.Context, r *hubcore.Registration) (*hubcore.Registration, error) {
	if err := hubcore.ValidateRegistrationID(r.RegistrationID); err != nil {
		return nil, err
	}
	inline := map[uint64]bool{}
	for attempt := 0; attempt < maxRetries; attempt++ {
		sl, err := s.locate(ctx, hRegistration, r.RegistrationID)
		if err != nil {
			return nil, err
		}
		m, err := s.regMarker(ctx, sl.sh, r.RegistrationID)
		if err != nil {
			return nil, err
		}
		var cur int64
		if s.live(sl) {
			cur = sl.rec.version
		}
		rec, nt := recordOfRegistration(r, cur+1, inline)
		c := &change{sl: sl, iid: sl.iid, newRec: rec, newTpl: nt, tomb: true, tombID: r.RegistrationID, tombOld: m}
		done, err := s.tryApply(ctx, c, inline)
		if err != nil {
			return nil, err
		}
		if done {
			return s.toRegistration(ctx, sl.sh, rec)
		}
	}
	return nil, unavailable(errors.New("too many concurrent writes to one registration"))
}

// Sweep deletes the entries that have expired (expired registrations
// leave their tombstone) and forgets registration-id markers older than
// RegistrationIDTTL. Reads already treat expired entries as absent; Sweep
// reclaims their memory and index entries. It visits only the record
// buckets whose earliest expiration has passed. It returns how many
// entries it deleted.
func (s *Store) Sweep(ctx context.Context) (int, error) {
	now := s.now()
	deleted := 0
	for sh := 0; sh < s.l.shards; sh++ {
		mins, err := s.rdb.HGetAll(ctx, s.l.expiry(sh)).Result()
		if err != nil {
			return deleted, unavailable(err)
		}
		for f, v := range mins {
			ms, err1 := strconv.ParseInt(v, 10, 64)
			b, err2 := strconv.ParseInt(f, 10, 64)
			if err1 != nil || err2 != nil || ms > now.UnixMilli() {
				continue
			}
			n, err := s.sweepBucket(ctx, sh, b, now)
			deleted += n
			if err != nil {
				return deleted, err
			}
		}
		if err := s.sweepMarkers(ctx, sh, now); err != nil {
			return deleted, err
		}
	}
	return deleted, nil
}

func (s *Store) sweepBucket(ctx context.Context, sh int, b int64, now time.Time) (int, error) {
	deleted := 0
	next := int64(0)
	all, err := s.rdb.HGetAll(ctx, s.l.recBucket(sh, b)).Result()
	if err != nil {
		return 0, unavailable(err)
	}
	for f, raw := range all {
		if raw == spillMarker {
			slot, _ := strconv.ParseInt(f, 10, 64)
			if raw, err = s.rdb.Get(ctx, s.l.spill(sh, b*recordsPerBucket+slot)).Result(); err != nil {
				continue
			}
		}
		r := &record{}
		if err := decodeRecord(raw, r); err != nil {
			return deleted, unavailable(err)
		}
		if !expiredAt(r, now) {
			if !r.expiration.IsZero() && (next == 0 || r.expiration.UnixMilli() < next) {
				next = max(r.expiration.UnixMilli(), 1)
			}
			continue
		}
		ok, err := s.purge(ctx, r, now)
		if err != nil {
			return deleted, err
		}
		if ok {
			deleted++
		}
	}
	// A write racing with this may lower the bucket's earliest expiration
	// after it was computed; the bucket is then swept late, never wrongly.
	if next == 0 {
		err = s.rdb.HDel(ctx, s.l.expiry(sh), strconv.FormatInt(b, 10)).Err()
	} else {
		err = s.rdb.HSet(ctx, s.l.expiry(sh), strconv.FormatInt(b, 10), next).Err()
	}
	return deleted, unavailable0(err)
}

func unavailable0(err error) error {
	if err == nil {
		return nil
	}
	return unavailable(err)
}

// purge deletes an expired entry if it is still the one read and still
// expired.
func (s *Store) purge(ctx context.Context, r *record, now time.Time) (bool, error) {
	kind := byte(hInstallation)
	if r.reg {
		kind = hRegistration
	}
	key := recordKey(r)
	for attempt := 0; attempt < maxRetries; attempt++ {
		sl, err := s.locate(ctx, kind, key)
		if err != nil {
			return false, err
		}
		if sl.rec == nil || !expiredAt(sl.rec, now) {
			return false, nil
		}
		c := &change{sl: sl, iid: sl.iid, free: true}
		if r.reg {
			m, err := s.regMarker(ctx, sl.sh, key)
			if err != nil {
				return false, err
			}
			c.tomb, c.tombID, c.tombOld, c.tombNew = true, key, m, marker(markGone, sl.rec.expiration)
		}
		if err := s.apply(ctx, c); !errors.Is(err, errRetry) {
			return err == nil, err
		}
	}
	return false, nil
}

func (s *Store) sweepMarkers(ctx context.Context, sh int, now time.Time) error {
	var cursor uint64
	for {
		kvs, next, err := s.rdb.HScan(ctx, s.l.regIDs(sh), cursor, "", 500).Result()
		if err != nil {
			return unavailable(err)
		}
		var old []string
		for i := 0; i+1 < len(kvs); i += 2 {
			if _, at, ok := parseMarker(kvs[i+1]); !ok || !now.Before(at.Add(hubcore.RegistrationIDTTL)) {
				old = append(old, kvs[i])
			}
		}
		if len(old) > 0 {
			if err := s.rdb.HDel(ctx, s.l.regIDs(sh), old...).Err(); err != nil {
				return unavailable(err)
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

func (s *Store) sweepLoop(every time.Duration) {
	defer close(s.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), every)
			_, _ = s.Sweep(ctx)
			cancel()
		}
	}
}
