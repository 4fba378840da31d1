package redisstore

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"sort"
	"strings"

	"github.com/cespare/xxhash/v2"
	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/tag"
)

// A listing walks shards in order and, within a shard, records by iid;
// iids never change while a record lives, so a cursor is a position
// (shard, iid, and for registrations the index among the installation's
// projected registrations), and entries that exist throughout a listing
// are listed once.

// listPos is a cursor's position.
type listPos struct {
	sh  int
	iid int64
	sub int
}

const cursorPrefix = "c1."

// encodeCursor writes a position with a checksum bound to the hub, so that
// a cursor the store did not write (or wrote for another hub) is refused.
func (s *Store) encodeCursor(p listPos) string {
	b := binary.AppendUvarint(nil, uint64(p.sh))
	b = binary.AppendUvarint(b, uint64(p.iid))
	b = binary.AppendUvarint(b, uint64(p.sub))
	b = binary.BigEndian.AppendUint32(b, cursorSum(s.l.hub, b))
	return cursorPrefix + base64.RawURLEncoding.EncodeToString(b)
}

func cursorSum(hub string, payload []byte) uint32 {
	var d xxhash.Digest
	d.Reset()
	_, _ = d.WriteString(hub)
	_, _ = d.Write([]byte{0})
	_, _ = d.Write(payload)
	return uint32(d.Sum64())
}

var errCursor = errors.New("invalid cursor")

// decodeCursor reads a cursor written by encodeCursor for a hub of shards
// shards.
func decodeCursor(hub string, shards int, c string) (listPos, error) {
	rest, ok := strings.CutPrefix(c, cursorPrefix)
	if !ok || len(rest) > 64 {
		return listPos{}, errCursor
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil || len(b) < 4 {
		return listPos{}, errCursor
	}
	payload, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if cursorSum(hub, payload) != sum {
		return listPos{}, errCursor
	}
	var v [3]uint64
	for i := range v {
		n, k := binary.Uvarint(payload)
		if k <= 0 {
			return listPos{}, errCursor
		}
		v[i], payload = n, payload[k:]
	}
	if len(payload) != 0 || v[0] >= uint64(shards) || v[1] >= 1<<40 || v[2] >= 1<<16 {
		return listPos{}, errCursor
	}
	return listPos{sh: int(v[0]), iid: int64(v[1]), sub: int(v[2])}, nil
}

// source is what a listing walks.
type source struct {
	kind     int    // srcAll, srcTag, srcInstallation, srcHandle
	tag      string // folded, for srcTag and srcInstallation
	instID   string // folded installation id, for srcInstallation
	handle   string
	platform hubcore.Platform
}

const (
	srcAll = iota
	srcTag
	srcInstallation
	srcHandle
)

func listSource(q hubcore.ListQuery) (source, error) {
	n := 0
	for _, f := range []string{q.Tag, q.UserID, q.Handle} {
		if f != "" {
			n++
		}
	}
	if n > 1 {
		return source{}, invalid("", "set at most one of Tag, UserID and Handle")
	}
	if q.Platform != "" {
		if _, err := hubcore.ParsePlatform(string(q.Platform)); err != nil {
			return source{}, err
		}
	}
	src := source{platform: q.Platform}
	t := q.Tag
	if q.UserID != "" {
		if err := hubcore.ValidateUserID(q.UserID); err != nil {
			return source{}, err
		}
		t = tag.ForUser(q.UserID)
	}
	switch {
	case t != "":
		if err := tag.Validate(t); err != nil {
			return source{}, invalid("tag", "%v", err)
		}
		src.kind, src.tag = srcTag, tag.Fold(t)
		if id, ok := installationTag(src.tag); ok {
			src.kind, src.instID = srcInstallation, id
		}
	case q.Handle != "":
		src.kind, src.handle = srcHandle, q.Handle
	}
	return src, nil
}

func (s *Store) pageArgs(page hubcore.PageRequest) (int, listPos, error) {
	limit := page.Limit
	switch {
	case limit < 0:
		return 0, listPos{}, invalid("limit", "a page limit cannot be negative")
	case limit == 0:
		limit = hubcore.DefaultPageSize
	case limit > hubcore.MaxPageSize:
		limit = hubcore.MaxPageSize
	}
	var pos listPos
	if page.Cursor != "" {
		var err error
		if pos, err = decodeCursor(s.l.hub, s.l.shards, page.Cursor); err != nil {
			return 0, listPos{}, invalid("cursor", "not a cursor this store wrote")
		}
	}
	return limit, pos, nil
}

// handleMatches reports whether r's handle is q (as ListQuery.Handle): its
// PushChannel.Key, APNs tokens in any case.
func handleMatches(r *record, q string) bool {
	k := r.channel.Key(r.platform)
	if r.platform == hubcore.APNS {
		return strings.EqualFold(k, q)
	}
	return k == q
}

// ListInstallations pages through installations matching q.
func (s *Store) ListInstallations(ctx context.Context, q hubcore.ListQuery, page hubcore.PageRequest) (hubcore.Page[*hubcore.Installation], error) {
	var out hubcore.Page[*hubcore.Installation]
	limit, pos, err := s.pageArgs(page)
	if err != nil {
		return out, err
	}
	src, err := listSource(q)
	if err != nil {
		return out, err
	}
	var m memb
	err = s.walk(ctx, src, pos, func(sh int, iid int64, r *record, cs []*tmplContent) (bool, error) {
		if r.reg || src.platform != "" && r.platform != src.platform {
			return false, nil
		}
		switch src.kind {
		case srcTag:
			m.setRecord(r)
			for _, c := range cs {
				m.addTemplate(c)
			}
			if !m.Has(src.tag) {
				return false, nil
			}
		case srcHandle:
			if !handleMatches(r, src.handle) {
				return false, nil
			}
		}
		in, err := s.toInstallation(ctx, sh, r)
		if err != nil {
			return false, err
		}
		out.Items = append(out.Items, in)
		if len(out.Items) == limit {
			out.Next = s.encodeCursor(listPos{sh: sh, iid: iid + 1})
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		return hubcore.Page[*hubcore.Installation]{}, err
	}
	return out, nil
}

// ListRegistrations pages through registrations matching q, projected ones
// included.
func (s *Store) ListRegistrations(ctx context.Context, q hubcore.ListQuery, page hubcore.PageRequest) (hubcore.Page[*hubcore.Registration], error) {
	var out hubcore.Page[*hubcore.Registration]
	limit, pos, err := s.pageArgs(page)
	if err != nil {
		return out, err
	}
	src, err := listSource(q)
	if err != nil {
		return out, err
	}
	err = s.walk(ctx, src, pos, func(sh int, iid int64, r *record, cs []*tmplContent) (bool, error) {
		if src.platform != "" && r.platform != src.platform {
			return false, nil
		}
		if src.kind == srcHandle && !handleMatches(r, src.handle) {
			return false, nil
		}
		var regs []hubcore.Registration
		if r.reg {
			g, err := s.toRegistration(ctx, sh, r)
			if err != nil {
				return false, err
			}
			regs = []hubcore.Registration{*g}
		} else {
			in, err := s.toInstallation(ctx, sh, r)
			if err != nil {
				return false, err
			}
			regs = in.Registrations()
		}
		from := 0
		if sh == pos.sh && iid == pos.iid {
			from = pos.sub
		}
		for i := from; i < len(regs); i++ {
			g := regs[i]
			if src.kind == srcTag || src.kind == srcInstallation {
				set := g.TagSet()
				if !set.Has(src.tag) {
					continue
				}
			}
			out.Items = append(out.Items, &g)
			if len(out.Items) == limit {
				out.Next = s.encodeCursor(listPos{sh: sh, iid: iid, sub: i + 1})
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return hubcore.Page[*hubcore.Registration]{}, err
	}
	return out, nil
}

// listBuckets is how many record buckets one round trip of a full listing
// reads.
const listBuckets = 16

// walk calls fn for the live records of src from pos on, in (shard, iid)
// order, until fn returns true.
func (s *Store) walk(ctx context.Context, src source, pos listPos, fn func(sh int, iid int64, r *record, cs []*tmplContent) (bool, error)) error {
	now := s.now()
	visit := func(sh int, iid int64, raw string) (bool, error) {
		r := &record{}
		if err := decodeRecord(raw, r); err != nil {
			return false, unavailable(err)
		}
		if expiredAt(r, now) {
			return false, nil
		}
		cs, err := s.contents(ctx, sh, r.tmpls)
		if err != nil {
			return false, err
		}
		return fn(sh, iid, r, cs)
	}
	visitIIDs := func(sh int, iids []int64) (bool, error) {
		for len(iids) > 0 {
			n := min(len(iids), 64)
			raws, err := s.fetchRecords(ctx, sh, iids[:n])
			if err != nil {
				return false, err
			}
			for i, raw := range raws {
				if raw == "" {
					continue
				}
				if stop, err := visit(sh, iids[i], raw); stop || err != nil {
					return stop, err
				}
			}
			iids = iids[n:]
		}
		return false, nil
	}
	if src.kind == srcInstallation {
		sh := hashOf(hInstallation, src.instID).shard(s.l.shards)
		if sh < pos.sh {
			return nil
		}
		sl, err := s.locate(ctx, hInstallation, src.instID)
		if err != nil || sl.rec == nil || sh == pos.sh && sl.iid < pos.iid {
			return err
		}
		_, err = visit(sh, sl.iid, sl.raw)
		return err
	}
	for sh := pos.sh; sh < s.l.shards; sh++ {
		from := int64(0)
		if sh == pos.sh {
			from = pos.iid
		}
		var stop bool
		var err error
		switch src.kind {
		case srcAll:
			stop, err = s.walkAll(ctx, sh, from, visit)
		case srcTag:
			stop, err = s.walkTag(ctx, sh, src.tag, from, visitIIDs)
		case srcHandle:
			var iids []int64
			h := hashOf(hHandle, strings.ToUpper(src.handle))
			v, e := s.rdb.HGet(ctx, s.l.handleBucket(sh, h.bucket(s.l.buckets)), h.field()).Result()
			if e != nil && !errors.Is(e, redis.Nil) {
				return unavailable(e)
			}
			for _, iid := range parseIIDs(v) {
				if iid >= from {
					iids = append(iids, iid)
				}
			}
			sort.Slice(iids, func(a, b int) bool { return iids[a] < iids[b] })
			stop, err = visitIIDs(sh, iids)
		}
		if stop || err != nil {
			return err
		}
	}
	return nil
}

// walkAll visits every record of a shard from iid from on, a few buckets
// per round trip.
func (s *Store) walkAll(ctx context.Context, sh int, from int64, visit func(int, int64, string) (bool, error)) (bool, error) {
	nx, err := s.rdb.HGet(ctx, s.l.meta(sh), "nx").Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return false, unavailable(err)
	}
	for b := bucketOf(from); b <= bucketOf(nx); b += listBuckets {
		pipe := s.rdb.Pipeline()
		cmds := make([]*redis.StringSliceCmd, 0, listBuckets)
		for k := int64(0); k < listBuckets && b+k <= bucketOf(nx); k++ {
			cmds = append(cmds, pipe.HVals(ctx, s.l.recBucket(sh, b+k)))
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return false, unavailable(err)
		}
		for k, c := range cmds {
			var slots []int
			bySlot := map[int]string{}
			for _, raw := range c.Val() {
				if len(raw) >= 2 && raw != spillMarker {
					sl := int(raw[1] % recordsPerBucket)
					bySlot[sl] = raw
					slots = append(slots, sl)
				}
			}
			// Spilled records are found by their slots: read the fields.
			if len(slots) < len(c.Val()) {
				all, err := s.rdb.HGetAll(ctx, s.l.recBucket(sh, b+int64(k))).Result()
				if err != nil {
					return false, unavailable(err)
				}
				for f, v := range all {
					if v != spillMarker {
						continue
					}
					var sl int
					for _, ch := range f {
						sl = sl*10 + int(ch-'0')
					}
					raw, err := s.rdb.Get(ctx, s.l.spill(sh, (b+int64(k))*recordsPerBucket+int64(sl))).Result()
					if err != nil && !errors.Is(err, redis.Nil) {
						return false, unavailable(err)
					}
					if raw != "" {
						bySlot[sl] = raw
						slots = append(slots, sl)
					}
				}
			}
			sort.Ints(slots)
			for _, sl := range slots {
				iid := (b+int64(k))*recordsPerBucket + int64(sl)
				if iid < from {
					continue
				}
				if stop, err := visit(sh, iid, bySlot[sl]); stop || err != nil {
					return stop, err
				}
			}
		}
	}
	return false, nil
}

// walkTag visits a tag's members in one shard from iid from on.
func (s *Store) walkTag(ctx context.Context, sh int, folded string, from int64, visitIIDs func(int, []int64) (bool, error)) (bool, error) {
	tk := s.l.tagKeys(sh, folded)
	keys := []string{s.l.universe(sh), tk.small, tk.set, tk.bitmap}
	for off := int(from / 8); ; off += scanChunk {
		res, err := scanScript.Run(ctx, s.rdb, keys, "t", tk.f6, off, scanChunk, 0).Slice()
		if err != nil {
			return false, unavailable(err)
		}
		if len(res) != 3 {
			return false, unavailable(errors.New("unexpected scan reply"))
		}
		tier, _ := res[0].(int64)
		data, _ := res[1].(string)
		blen, _ := res[2].(int64)
		var iids []int64
		switch tier {
		case 1, 2:
			for k := 0; k+4 <= len(data); k += 4 {
				if iid := int64(binary.BigEndian.Uint32([]byte(data[k : k+4]))); iid >= from {
					iids = append(iids, iid)
				}
			}
			sort.Slice(iids, func(a, b int) bool { return iids[a] < iids[b] })
		case 3:
			for bi := 0; bi < len(data); bi++ {
				for b := 0; b < 8; b++ {
					if data[bi]&(0x80>>b) != 0 {
						if iid := int64((off+bi)*8 + b); iid >= from {
							iids = append(iids, iid)
						}
					}
				}
			}
		}
		if stop, err := visitIIDs(sh, iids); stop || err != nil {
			return stop, err
		}
		if tier != 3 || int64(off+scanChunk) >= blen {
			return false, nil
		}
	}
}
