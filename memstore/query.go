package memstore

import (
	"context"
	"encoding/base64"
	"fmt"
	"hash/fnv"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/tag"
	"github.com/pushgate/pushgate/hubcore/tagexpr"
)

// A cursor is the position of the last entry of a page: its record key and,
// for registrations, its sub-key within the record. Listings run in
// (record key, sub-key) order, so entries written or deleted between pages
// never make another entry appear twice or not at all.
type cursor struct {
	kind byte // 'i' for installations, 'r' for registrations
	rec  string
	sub  string
}

const (
	cursorVersion = "m1"
	maxCursorLen  = 2048
)

func (c cursor) encode() string {
	return base64.RawURLEncoding.EncodeToString([]byte(cursorVersion + string(c.kind) + c.rec + "\x00" + c.sub))
}

// decodeCursor reads a cursor of the given kind; anything else (another
// listing's cursor, a cursor from another store, garbage) is CodeInvalid.
func decodeCursor(s string, kind byte) (cursor, error) {
	bad := func(why string) (cursor, error) {
		return cursor{}, invalidf("continuationToken", "not a continuation token of this listing: %s", why)
	}
	if len(s) > maxCursorLen {
		return bad("too long")
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return bad("not base64url")
	}
	raw := string(b)
	if !strings.HasPrefix(raw, cursorVersion) || len(raw) < len(cursorVersion)+1 || raw[len(cursorVersion)] != kind {
		return bad("wrong version or listing")
	}
	rec, sub, ok := strings.Cut(raw[len(cursorVersion)+1:], "\x00")
	if !ok || strings.IndexByte(sub, 0) >= 0 {
		return bad("malformed")
	}
	switch {
	case strings.HasPrefix(rec, instPrefix) && len(rec) > len(instPrefix):
	case kind == 'r' && strings.HasPrefix(rec, regPrefix) && len(rec) > len(regPrefix):
	default:
		return bad("malformed position")
	}
	if (kind == 'i') != (sub == "") {
		return bad("malformed position")
	}
	return cursor{kind: kind, rec: rec, sub: sub}, nil
}

func pageLimit(p hubcore.PageRequest) (int, error) {
	switch {
	case p.Limit < 0:
		return 0, invalidf("$top", "a page size is positive; got %d", p.Limit)
	case p.Limit == 0:
		return hubcore.DefaultPageSize, nil
	case p.Limit > hubcore.MaxPageSize:
		return hubcore.MaxPageSize, nil
	}
	return p.Limit, nil
}

// filter is a ListQuery made ready to apply.
type filter struct {
	q      hubcore.ListQuery
	folded string // the tag to match (Tag, or UserID's system tag)
}

func newFilter(q hubcore.ListQuery) (filter, error) {
	set := 0
	for _, v := range []string{q.Tag, q.UserID, q.Handle} {
		if v != "" {
			set++
		}
	}
	if set > 1 {
		return filter{}, invalidf("", "list by at most one of tag, user id and handle")
	}
	if q.Platform != "" {
		if _, err := hubcore.ParsePlatform(string(q.Platform)); err != nil {
			return filter{}, err
		}
	}
	f := filter{q: q}
	t := q.Tag
	if q.UserID != "" {
		t = tag.ForUser(q.UserID)
	}
	if t != "" {
		if err := tag.Validate(t); err != nil {
			return filter{}, &hubcore.Error{Code: hubcore.CodeInvalid, Field: "tag", Reason: err.Error(), Err: err}
		}
		f.folded = tag.Fold(t)
	}
	return f, nil
}

// candidatesLocked returns the keys of the records that may match f.
func (s *Store) candidatesLocked(f filter, prefix string) []string {
	var keys []string
	add := func(set map[string]struct{}) {
		for k := range set {
			if strings.HasPrefix(k, prefix) {
				keys = append(keys, k)
			}
		}
	}
	switch {
	case f.folded != "":
		add(s.index[f.folded])
	case f.q.Handle != "":
		ch := hubcore.PushChannel{Handle: f.q.Handle, Endpoint: f.q.Handle}
		for _, p := range hubcore.Platforms {
			if f.q.Platform == "" || f.q.Platform == p {
				add(s.handles[handleKey(p, ch)])
			}
		}
	default:
		for k := range s.recs {
			if strings.HasPrefix(k, prefix) {
				keys = append(keys, k)
			}
		}
	}
	return keys
}

// ListInstallations implements hubcore.Store.
func (s *Store) ListInstallations(ctx context.Context, q hubcore.ListQuery, page hubcore.PageRequest) (hubcore.Page[*hubcore.Installation], error) {
	var out hubcore.Page[*hubcore.Installation]
	limit, f, after, now, err := s.beginList(q, page, 'i')
	if err != nil {
		return out, err
	}
	defer s.mu.RUnlock()
	keys := s.candidatesLocked(f, instPrefix)
	keys = keysAfter(keys, after.rec, true)
	sort.Strings(keys)
	for _, k := range keys {
		rec := s.liveLocked(k, now, false)
		if rec == nil || (q.Platform != "" && rec.inst.Platform != q.Platform) {
			continue
		}
		if len(out.Items) == limit {
			// There is at least one more: the page ends at the last item.
			out.Next = cursor{kind: 'i', rec: instKey(out.Items[limit-1].InstallationID)}.encode()
			break
		}
		out.Items = append(out.Items, rec.inst.Clone())
	}
	return out, nil
}

// beginList checks a listing's arguments and takes the read lock (which the
// caller releases) only when they are valid.
func (s *Store) beginList(q hubcore.ListQuery, page hubcore.PageRequest, kind byte) (limit int, f filter, after cursor, now time.Time, err error) {
	if limit, err = pageLimit(page); err != nil {
		return
	}
	if f, err = newFilter(q); err != nil {
		return
	}
	if page.Cursor != "" {
		if after, err = decodeCursor(page.Cursor, kind); err != nil {
			return
		}
	}
	now, err = s.lockRead()
	return
}

// keysAfter keeps the keys at or after (strict: after) from.
func keysAfter(keys []string, from string, strict bool) []string {
	if from == "" {
		return keys
	}
	out := keys[:0]
	for _, k := range keys {
		if k > from || (!strict && k == from) {
			out = append(out, k)
		}
	}
	return out
}

// ListRegistrations implements hubcore.Store.
func (s *Store) ListRegistrations(ctx context.Context, q hubcore.ListQuery, page hubcore.PageRequest) (hubcore.Page[*hubcore.Registration], error) {
	var out hubcore.Page[*hubcore.Registration]
	limit, f, after, now, err := s.beginList(q, page, 'r')
	if err != nil {
		return out, err
	}
	defer s.mu.RUnlock()
	keys := keysAfter(s.candidatesLocked(f, ""), after.rec, false)
	sort.Strings(keys)
	var last cursor
	for _, k := range keys {
		rec := s.liveLocked(k, now, false)
		if rec == nil || (q.Platform != "" && rec.platform() != q.Platform) {
			continue
		}
		for _, p := range rec.regs {
			if k == after.rec && p.sub <= after.sub {
				continue
			}
			if f.folded != "" && !p.set.Has(f.folded) {
				continue
			}
			if len(out.Items) == limit {
				out.Next = last.encode()
				return out, nil
			}
			out.Items = append(out.Items, cloneReg(p.reg))
			last = cursor{kind: 'r', rec: k, sub: p.sub}
		}
	}
	return out, nil
}

func checkAudience(q hubcore.AudienceQuery) error {
	if err := q.CheckParts(); err != nil {
		return err
	}
	if q.Platform != "" {
		if _, err := hubcore.ParsePlatform(string(q.Platform)); err != nil {
			return err
		}
	} else if !q.Template {
		return invalidf("platform", "a native send names its platform")
	}
	return nil
}

// candidateKeysLocked executes plan's steps on the index and returns the
// keys of the records that may hold a match, each once. A record is taken
// in the first step whose driver it carries: a matching registration's tags
// are a subset of its record's index tags, so the record is in the set of
// the first driver the registration carries, and that step is in the plan
// (its filter is true for the registration). Each candidate is then matched
// registration by registration against the whole expression, because a
// step's filter, evaluated on a record's union of tags, says nothing exact
// about any one of its registrations. onlyInst keeps installations only.
func (s *Store) candidateKeysLocked(plan *tagexpr.Plan, onlyInst bool) []string {
	var keys []string
	for i, st := range plan.Steps {
		take := func(k string, rec *record) {
			if onlyInst && rec.inst == nil {
				return
			}
			for _, prev := range plan.Steps[:i] {
				if rec.tags.Has(prev.Driver) {
					return
				}
			}
			keys = append(keys, k)
		}
		if st.Driver == "" {
			for k, rec := range s.recs {
				take(k, rec)
			}
			continue
		}
		for k := range s.index[st.Driver] {
			take(k, s.recs[k])
		}
	}
	return keys
}

// appendTargets appends the targets of rec for q.
func appendTargets(dst []hubcore.Target, rec *record, q hubcore.AudienceQuery, e *tagexpr.Expr) []hubcore.Target {
	if q.Platform != "" && rec.platform() != q.Platform {
		return dst
	}
	if rec.inst != nil && rec.inst.PushChannelExpired {
		return dst
	}
	for _, p := range rec.regs {
		r := p.reg
		if r.IsTemplate() != q.Template || (e != nil && !e.EvalSet(p.set)) {
			continue
		}
		dst = append(dst, hubcore.Target{
			RegistrationID: r.RegistrationID,
			InstallationID: r.InstallationID,
			Platform:       r.Platform,
			Channel:        r.PushChannel,
			Template:       r.Template,
			TemplateName:   r.TemplateName,
			PushVariables:  r.PushVariables,
		})
	}
	return dst
}

// inPart keeps the record keys in q's part: parts are hash classes of the
// record key, so that an entry stays in one part whatever is written.
func inPart(keys []string, q hubcore.AudienceQuery) []string {
	if q.Parts <= 0 {
		return keys
	}
	out := keys[:0]
	for _, k := range keys {
		h := fnv.New32a()
		h.Write([]byte(k))
		if int(h.Sum32()%uint32(q.Parts)) == q.Part {
			out = append(out, k)
		}
	}
	return out
}

// resolveChunk is how many candidate records Resolve matches per read lock,
// so that writers are never held off for long.
const resolveChunk = 512

// Resolve implements hubcore.Store. Targets share the stored templates and
// push variables: fn must treat them as read-only.
func (s *Store) Resolve(ctx context.Context, q hubcore.AudienceQuery, batch int, fn func([]hubcore.Target) error) error {
	if batch < 1 {
		return invalidf("batch", "batch size must be positive; got %d", batch)
	}
	if err := checkAudience(q); err != nil {
		return err
	}
	if _, err := s.lockRead(); err != nil {
		return err
	}
	plan := tagexpr.NewPlan(q.Expr, stats{s})
	keys := inPart(s.candidateKeysLocked(plan, false), q)
	s.mu.RUnlock()

	var pending []hubcore.Target
	for len(keys) > 0 {
		if err := ctx.Err(); err != nil {
			return &hubcore.Error{Code: hubcore.CodeUnavailable, Reason: "resolve abandoned: " + err.Error(), Err: err}
		}
		n := min(len(keys), resolveChunk)
		now, err := s.lockRead()
		if err != nil {
			return err
		}
		for _, k := range keys[:n] {
			if rec := s.liveLocked(k, now, false); rec != nil {
				pending = appendTargets(pending, rec, q, q.Expr)
			}
		}
		s.mu.RUnlock()
		keys = keys[n:]
		for len(pending) >= batch {
			if err := fn(pending[:batch:batch]); err != nil {
				return err
			}
			pending = pending[batch:]
		}
	}
	if len(pending) > 0 {
		return fn(pending)
	}
	return nil
}

// Count implements hubcore.Store.
func (s *Store) Count(ctx context.Context, q hubcore.AudienceQuery) (int64, error) {
	if err := checkAudience(q); err != nil {
		return 0, err
	}
	now, err := s.lockRead()
	if err != nil {
		return 0, err
	}
	defer s.mu.RUnlock()
	plan := tagexpr.NewPlan(q.Expr, stats{s})
	var n int64
	var buf []hubcore.Target
	for _, k := range inPart(s.candidateKeysLocked(plan, false), q) {
		if rec := s.liveLocked(k, now, false); rec != nil {
			buf = appendTargets(buf[:0], rec, q, q.Expr)
			n += int64(len(buf))
		}
	}
	return n, nil
}

// editChunk is how many installations EditTags rewrites per write lock.
const editChunk = 256

// EditTags implements hubcore.Store. Installations that would break the
// store's Limits after the edit are left unchanged; the others are edited,
// and the error (CodeLimit) names the first one skipped.
func (s *Store) EditTags(ctx context.Context, e *tagexpr.Expr, add, remove []string) (int64, error) {
	for i, t := range add {
		if tag.IsSystem(t) {
			return 0, invalidf(fmt.Sprintf("add[%d]", i), "system tags (%q) cannot be added", t)
		}
		if err := tag.Validate(t); err != nil {
			return 0, &hubcore.Error{Code: hubcore.CodeInvalid, Field: fmt.Sprintf("add[%d]", i), Reason: err.Error(), Err: err}
		}
	}
	drop := make(map[string]bool, len(remove))
	for _, t := range remove {
		drop[tag.Fold(t)] = true
	}
	if _, err := s.lockRead(); err != nil {
		return 0, err
	}
	keys := s.candidateKeysLocked(tagexpr.NewPlan(e, stats{s}), true)
	s.mu.RUnlock()
	sort.Strings(keys)

	var changed, skipped int64
	var firstErr error
	for len(keys) > 0 {
		n := min(len(keys), editChunk)
		now, err := s.lockWrite()
		if err != nil {
			return changed, err
		}
		for _, k := range keys[:n] {
			rec := s.liveLocked(k, now, true)
			if rec == nil || rec.inst == nil || (e != nil && !e.EvalSet(rec.regs[nativeIndex(rec)].set)) {
				continue
			}
			tags, ok := editedTags(rec.inst.Tags, add, drop)
			if !ok {
				continue
			}
			c := rec.inst.Clone()
			c.Tags = tags
			if err := c.Validate(s.lim); err != nil {
				skipped++
				if firstErr == nil {
					firstErr = fmt.Errorf("installation %s: %w", c.InstallationID, err)
				}
				continue
			}
			c.Stamp(now, s.lim)
			c.Version++
			s.putLocked(newInstRecord(c))
			changed++
		}
		s.mu.Unlock()
		keys = keys[n:]
	}
	if skipped > 0 {
		return changed, &hubcore.Error{Code: hubcore.CodeLimit, Field: "tags",
			Reason: fmt.Sprintf("%d installation(s) left unchanged, the edit would break a limit; %v", skipped, firstErr), Err: firstErr}
	}
	return changed, nil
}

// nativeIndex finds an installation record's native registration: the
// one matched by EditTags, as it carries exactly the installation's own and
// implicit tags.
func nativeIndex(rec *record) int {
	for i, p := range rec.regs {
		if !p.reg.IsTemplate() {
			return i
		}
	}
	return 0
}

// editedTags removes drop and adds add (case-insensitively, keeping the
// first spelling), and reports whether the result differs from have.
func editedTags(have, add []string, drop map[string]bool) ([]string, bool) {
	out := make([]string, 0, len(have)+len(add))
	seen := make(map[string]bool, len(have)+len(add))
	for _, t := range have {
		f := tag.Fold(t)
		if drop[f] {
			continue
		}
		seen[f] = true
		out = append(out, t)
	}
	for _, t := range add {
		if f := tag.Fold(t); !seen[f] {
			seen[f] = true
			out = append(out, t)
		}
	}
	return out, !slices.Equal(out, have)
}
