// Package memstore is pushgate's embedded registry: a hubcore.Store held in
// process memory, optionally persisted to a snapshot file. It suits a single
// hub instance; redisstore is the store to share between instances.
//
// Records (installations and registrations) are immutable once stored: every
// write builds a new record and swaps it in under the write lock, so readers
// may keep a record after releasing the lock (Export, Resolve) and see a
// consistent value. An inverted index maps each folded tag to the records
// carrying it (installations under Installation.IndexTags, registrations
// under their own tags), and a handle index maps PNS handles to records.
//
// Persistence: with Options.Path set, Open loads the snapshot (the Export
// NDJSON) if the file exists, validating every record, and Close (and the
// optional periodic snapshot) writes it atomically: a temporary file in the
// same directory, fsync, rename, fsync of the directory. Issued registration
// ids and tombstones are not persisted: after a restart a recently deleted
// registration id can be written again.
package memstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/tag"
	"github.com/pushgate/pushgate/hubcore/tagexpr"
)

// Options configure a Store.
type Options struct {
	// Path is the snapshot file; "" keeps the store purely in memory.
	Path string
	// Now is the store's clock (expiry, tombstones); nil means time.Now.
	Now func() time.Time
	// Limits are the hub's limits, applied where the store itself changes
	// or admits entries: Import (and so the snapshot load) and EditTags.
	// Writes through the Store methods are validated by their callers.
	Limits hubcore.Limits
	// SnapshotInterval, when positive and Path is set, also writes the
	// snapshot this often (real time) if anything changed since the last
	// one, bounding what a crash loses.
	SnapshotInterval time.Duration
}

// Store is the in-memory hubcore.Store. Its methods are safe for concurrent
// use.
type Store struct {
	opts Options
	now  func() time.Time
	lim  hubcore.Limits

	mu      sync.RWMutex
	recs    map[string]*record             // by record key (instKey / regKey)
	index   map[string]map[string]struct{} // folded tag → record keys
	handles map[string]map[string]struct{} // handleKey → record keys
	issued  map[string]time.Time           // registration id → forgotten at
	tombs   map[string]time.Time           // registration id → Gone until
	gen     uint64                         // bumped by every write, for snapshots
	purgeAt time.Time                      // next sweep of expired entries
	closed  bool

	snapMu  sync.Mutex // one snapshot at a time
	snapGen uint64     // gen of the last snapshot written or loaded
	stop    chan struct{}
	done    chan struct{}

	closeOnce sync.Once
	closeErr  error
}

var _ hubcore.Store = (*Store)(nil)

// record is one stored installation or registration with what the indexes
// and audiences need precomputed. It is never modified after it is stored.
type record struct {
	key  string
	inst *hubcore.Installation // exactly one of inst and reg is set
	reg  *hubcore.Registration
	// tags are the folded tags the record is indexed under.
	tags tag.Set
	// regs are the record's registrations (an installation's projections,
	// or the registration itself), each with its tag set and its listing
	// sub-key, sorted by sub-key.
	regs []projected
	// handle is the handle index key.
	handle string
}

type projected struct {
	reg *hubcore.Registration
	set tag.Set
	sub string // the folded registration id: order within the record
}

func (r *record) platform() hubcore.Platform {
	if r.inst != nil {
		return r.inst.Platform
	}
	return r.reg.Platform
}

func (r *record) expired(now time.Time) bool {
	if r.inst != nil {
		return r.inst.Expired(now)
	}
	return r.reg.Expired(now)
}

// Record keys: installations sort before registrations; '/' cannot occur in
// either kind of id, so the prefixes keep the two key spaces apart.
const (
	instPrefix = "i/"
	regPrefix  = "r/"
)

func instKey(id string) string { return instPrefix + hubcore.InstallationKey(id) }
func regKey(id string) string  { return regPrefix + id }

func handleKey(p hubcore.Platform, c hubcore.PushChannel) string {
	return string(p) + "\x00" + c.Key(p)
}

// purgeEvery is how often (by the store's clock) writes sweep out expired
// entries, tombstones and issued ids. Reads never see expired entries
// whether swept or not.
const purgeEvery = time.Minute

// structural are the limits of the validation the store does on writes:
// the model's rules without the deployment's bounds, which callers apply.
var structural = hubcore.Limits{MaxTags: 1 << 30, MaxTemplates: 1 << 30, MaxPushVariables: 1 << 30, MaxHeaders: 1 << 30}

// Open returns a store, loading the snapshot at opts.Path if it exists. A
// snapshot that does not load is an error, and the file is left as it is.
func Open(opts Options) (*Store, error) {
	s := &Store{
		opts:    opts,
		now:     opts.Now,
		lim:     opts.Limits,
		recs:    map[string]*record{},
		index:   map[string]map[string]struct{}{},
		handles: map[string]map[string]struct{}{},
		issued:  map[string]time.Time{},
		tombs:   map[string]time.Time{},
	}
	if s.now == nil {
		s.now = time.Now
	}
	if opts.Path != "" {
		if err := s.load(opts.Path); err != nil {
			return nil, err
		}
		if opts.SnapshotInterval > 0 {
			s.stop, s.done = make(chan struct{}), make(chan struct{})
			go s.snapshotLoop(opts.SnapshotInterval)
		}
	}
	return s, nil
}

func errClosed() error {
	return &hubcore.Error{Code: hubcore.CodeUnavailable, Reason: "the store is closed"}
}

func invalidf(field, format string, args ...any) *hubcore.Error {
	return &hubcore.Error{Code: hubcore.CodeInvalid, Field: field, Reason: fmt.Sprintf(format, args...)}
}

func notFound(what, id string) *hubcore.Error {
	return &hubcore.Error{Code: hubcore.CodeNotFound, Reason: fmt.Sprintf("%s %q not found", what, id)}
}

func conflict(current int64) *hubcore.Error {
	return &hubcore.Error{Code: hubcore.CodeConflict, Reason: fmt.Sprintf("the entry is at version %d", current), Current: current}
}

func gone(id string) *hubcore.Error {
	return &hubcore.Error{Code: hubcore.CodeGone, Field: "RegistrationId", Reason: fmt.Sprintf("registration id %q cannot be used; create a new registration id", id)}
}

// checkCond applies a version precondition to the current version (0: the
// entry does not exist).
func checkCond(cur int64, c hubcore.Cond, what, id string) error {
	if c.Version > 0 && cur != c.Version {
		return conflict(cur)
	}
	if c.Exists && cur == 0 {
		return notFound(what, id)
	}
	if c.Absent && cur != 0 {
		return conflict(cur)
	}
	return nil
}

// checkUpdated applies hubcore.Cond.Updated to an installation at version
// cur, last written at updated.
func checkUpdated(cur int64, updated time.Time, c hubcore.Cond) error {
	if c.Version > 0 && !c.Updated.IsZero() && !updated.Equal(c.Updated) {
		return conflict(cur)
	}
	return nil
}

// newInstRecord builds the record of a validated installation.
func newInstRecord(in *hubcore.Installation) *record {
	r := &record{key: instKey(in.InstallationID), inst: in, tags: tag.NewSet(in.IndexTags()...), handle: handleKey(in.Platform, in.PushChannel)}
	regs := in.Registrations()
	r.regs = make([]projected, len(regs))
	for i := range regs {
		r.regs[i] = projected{reg: &regs[i], set: regs[i].TagSet(), sub: projectedSub(regs[i].RegistrationID)}
	}
	sort.Slice(r.regs, func(i, j int) bool { return r.regs[i].sub < r.regs[j].sub })
	return r
}

func newRegRecord(rg *hubcore.Registration) *record {
	set := rg.TagSet()
	return &record{key: regKey(rg.RegistrationID), reg: rg, tags: set, handle: handleKey(rg.Platform, rg.PushChannel),
		regs: []projected{{reg: rg, set: set, sub: rg.RegistrationID}}}
}

// projectedSub is the identity of a projected registration id: its
// installation id part folded, as installation ids compare.
func projectedSub(id string) string {
	inst, hash, _ := hubcore.ParseProjectionID(id)
	return hubcore.ProjectionID(hubcore.InstallationKey(inst), "") + subHash(hash)
}

func subHash(hash string) string {
	if hash == "" {
		return ""
	}
	return "~" + tag.Fold(hash)
}

// putLocked stores rec in place of whatever has its key, keeping the
// indexes in step. The caller holds the write lock.
func (s *Store) putLocked(rec *record) {
	s.removeLocked(rec.key)
	s.recs[rec.key] = rec
	for _, t := range rec.tags.Folded() {
		set := s.index[t]
		if set == nil {
			set = map[string]struct{}{}
			s.index[t] = set
		}
		set[rec.key] = struct{}{}
	}
	set := s.handles[rec.handle]
	if set == nil {
		set = map[string]struct{}{}
		s.handles[rec.handle] = set
	}
	set[rec.key] = struct{}{}
	s.gen++
}

// removeLocked deletes the record at key and its index entries.
func (s *Store) removeLocked(key string) {
	old := s.recs[key]
	if old == nil {
		return
	}
	delete(s.recs, key)
	for _, t := range old.tags.Folded() {
		if set := s.index[t]; set != nil {
			delete(set, key)
			if len(set) == 0 {
				delete(s.index, t)
			}
		}
	}
	if set := s.handles[old.handle]; set != nil {
		delete(set, key)
		if len(set) == 0 {
			delete(s.handles, old.handle)
		}
	}
	s.gen++
}

// tombstoneLocked makes a registration id Gone for RegistrationIDTTL after
// from (its deletion or expiry).
func (s *Store) tombstoneLocked(id string, from time.Time) {
	until := from.Add(hubcore.RegistrationIDTTL)
	if until.After(s.tombs[id]) {
		s.tombs[id] = until
	}
}

// liveLocked returns the record at key if it exists and has not expired.
// Under the write lock (reap), an expired record is removed on the way,
// leaving a tombstone if it is a registration.
func (s *Store) liveLocked(key string, now time.Time, reap bool) *record {
	rec := s.recs[key]
	if rec == nil {
		return nil
	}
	if rec.expired(now) {
		if reap {
			s.reapLocked(rec)
		}
		return nil
	}
	return rec
}

func (s *Store) reapLocked(rec *record) {
	s.removeLocked(rec.key)
	if rec.reg != nil {
		s.tombstoneLocked(rec.reg.RegistrationID, rec.reg.ExpirationTime)
	}
}

// maybePurgeLocked sweeps expired records, tombstones and issued ids, at
// most once per purgeEvery.
func (s *Store) maybePurgeLocked(now time.Time) {
	if now.Before(s.purgeAt) {
		return
	}
	s.purgeAt = now.Add(purgeEvery)
	for _, rec := range s.recs {
		if rec.expired(now) {
			s.reapLocked(rec)
		}
	}
	for id, until := range s.tombs {
		if !now.Before(until) {
			delete(s.tombs, id)
		}
	}
	for id, until := range s.issued {
		if !now.Before(until) {
			delete(s.issued, id)
		}
	}
}

// lockWrite takes the write lock for a write at the store's current time.
func (s *Store) lockWrite() (time.Time, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return time.Time{}, errClosed()
	}
	now := s.now()
	s.maybePurgeLocked(now)
	return now, nil
}

func (s *Store) lockRead() (time.Time, error) {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return time.Time{}, errClosed()
	}
	return s.now(), nil
}

// PutInstallation implements hubcore.Store.
func (s *Store) PutInstallation(ctx context.Context, in *hubcore.Installation, ifMatch hubcore.Cond) (*hubcore.Installation, error) {
	if in == nil {
		return nil, invalidf("", "no installation")
	}
	c := in.Clone()
	if err := c.Validate(structural); err != nil {
		return nil, err
	}
	now, err := s.lockWrite()
	if err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	var cur int64
	var updated time.Time
	if old := s.liveLocked(instKey(c.InstallationID), now, true); old != nil {
		cur, updated = old.inst.Version, old.inst.LastUpdate
	}
	if err := checkCond(cur, ifMatch, "installation", c.InstallationID); err != nil {
		return nil, err
	}
	if err := checkUpdated(cur, updated, ifMatch); err != nil {
		return nil, err
	}
	c.Version = cur + 1
	s.putLocked(newInstRecord(c))
	return c.Clone(), nil
}

// GetInstallation implements hubcore.Store.
func (s *Store) GetInstallation(ctx context.Context, id string) (*hubcore.Installation, error) {
	now, err := s.lockRead()
	if err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	rec := s.liveLocked(instKey(id), now, false)
	if rec == nil {
		return nil, notFound("installation", id)
	}
	return rec.inst.Clone(), nil
}

// UpdateInstallation implements hubcore.Store. fn runs without the lock;
// the write happens only if the record fn saw is still the stored one.
func (s *Store) UpdateInstallation(ctx context.Context, id string, fn func(*hubcore.Installation) (*hubcore.Installation, error)) (*hubcore.Installation, error) {
	key := instKey(id)
	for {
		if err := ctx.Err(); err != nil {
			return nil, &hubcore.Error{Code: hubcore.CodeUnavailable, Reason: "update abandoned: " + err.Error(), Err: err}
		}
		now, err := s.lockRead()
		if err != nil {
			return nil, err
		}
		rec := s.liveLocked(key, now, false)
		s.mu.RUnlock()
		if rec == nil {
			return nil, notFound("installation", id)
		}
		out, err := fn(rec.inst.Clone())
		if err != nil {
			return nil, err
		}
		if out == nil {
			return nil, invalidf("", "the update produced no installation")
		}
		if instKey(out.InstallationID) != key {
			return nil, invalidf("installationId", "an update cannot change the installation id (%q to %q)", id, out.InstallationID)
		}
		c := out.Clone()
		if err := c.Validate(structural); err != nil {
			return nil, err
		}
		now, err = s.lockWrite()
		if err != nil {
			return nil, err
		}
		cur := s.liveLocked(key, now, true)
		if cur == nil {
			s.mu.Unlock()
			return nil, notFound("installation", id)
		}
		if cur != rec {
			// A concurrent write won; run fn again on what it wrote.
			s.mu.Unlock()
			continue
		}
		c.Version = rec.inst.Version + 1
		s.putLocked(newInstRecord(c))
		s.mu.Unlock()
		return c.Clone(), nil
	}
}

// DeleteInstallation implements hubcore.Store.
func (s *Store) DeleteInstallation(ctx context.Context, id string, ifMatch hubcore.Cond) error {
	now, err := s.lockWrite()
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	rec := s.liveLocked(instKey(id), now, true)
	if rec == nil {
		return notFound("installation", id)
	}
	if err := checkCond(rec.inst.Version, ifMatch, "installation", id); err != nil {
		return err
	}
	if err := checkUpdated(rec.inst.Version, rec.inst.LastUpdate, ifMatch); err != nil {
		return err
	}
	s.removeLocked(rec.key)
	return nil
}

// NewRegistrationID implements hubcore.Store.
func (s *Store) NewRegistrationID(ctx context.Context) (string, error) {
	now, err := s.lockWrite()
	if err != nil {
		return "", err
	}
	defer s.mu.Unlock()
	for {
		id := hubcore.NewRegistrationID()
		_, issued := s.issued[id]
		_, dead := s.tombs[id]
		if _, exists := s.recs[regKey(id)]; exists || issued || dead {
			continue // 2^-126; but an id must never be handed out twice
		}
		s.issued[id] = now.Add(hubcore.RegistrationIDTTL)
		return id, nil
	}
}

// PutRegistration implements hubcore.Store.
func (s *Store) PutRegistration(ctx context.Context, r *hubcore.Registration, cond hubcore.Cond) (*hubcore.Registration, error) {
	if r == nil {
		return nil, invalidf("", "no registration")
	}
	if _, _, ok := hubcore.ParseProjectionID(r.RegistrationID); ok {
		return nil, invalidf("RegistrationId", "%q is the id of an installation's registration; change it through the installation", r.RegistrationID)
	}
	if r.RegistrationID == "" {
		return nil, invalidf("RegistrationId", "a registration id is required")
	}
	c := cloneReg(r)
	if err := c.Validate(structural); err != nil {
		return nil, err
	}
	now, err := s.lockWrite()
	if err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	id := c.RegistrationID
	var cur int64
	if old := s.liveLocked(regKey(id), now, true); old != nil {
		cur = old.reg.Version
	} else if until, ok := s.tombs[id]; ok && now.Before(until) {
		return nil, gone(id)
	}
	if err := checkCond(cur, cond, "registration", id); err != nil {
		return nil, err
	}
	if cond.Issued && cur == 0 {
		if until, ok := s.issued[id]; !ok || !now.Before(until) {
			return nil, gone(id)
		}
	}
	c.Version = cur + 1
	s.putLocked(newRegRecord(c))
	return cloneReg(c), nil
}

// findProjected returns the installation record and position of a
// projected registration id, or nil.
func (s *Store) findProjectedLocked(id string, now time.Time, reap bool) (*record, int) {
	inst, _, _ := hubcore.ParseProjectionID(id)
	rec := s.liveLocked(instKey(inst), now, reap)
	if rec == nil {
		return nil, -1
	}
	sub := projectedSub(id)
	for i, p := range rec.regs {
		if p.sub == sub {
			return rec, i
		}
	}
	return nil, -1
}

// GetRegistration implements hubcore.Store.
func (s *Store) GetRegistration(ctx context.Context, id string) (*hubcore.Registration, error) {
	now, err := s.lockRead()
	if err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	if _, _, ok := hubcore.ParseProjectionID(id); ok {
		rec, i := s.findProjectedLocked(id, now, false)
		if rec == nil {
			return nil, notFound("registration", id)
		}
		return cloneReg(rec.regs[i].reg), nil
	}
	rec := s.liveLocked(regKey(id), now, false)
	if rec == nil {
		return nil, notFound("registration", id)
	}
	return cloneReg(rec.reg), nil
}

// DeleteRegistration implements hubcore.Store.
func (s *Store) DeleteRegistration(ctx context.Context, id string, ifMatch hubcore.Cond) error {
	now, err := s.lockWrite()
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	if _, _, ok := hubcore.ParseProjectionID(id); ok {
		rec, i := s.findProjectedLocked(id, now, true)
		if rec == nil {
			return notFound("registration", id)
		}
		if err := checkCond(rec.inst.Version, ifMatch, "registration", id); err != nil {
			return err
		}
		p := rec.regs[i].reg
		if !p.IsTemplate() {
			s.removeLocked(rec.key)
			return nil
		}
		c := rec.inst.Clone()
		delete(c.Templates, p.TemplateName)
		c.Version++
		c.LastUpdate = now.UTC()
		s.putLocked(newInstRecord(c))
		return nil
	}
	rec := s.liveLocked(regKey(id), now, true)
	if rec == nil {
		return notFound("registration", id)
	}
	if err := checkCond(rec.reg.Version, ifMatch, "registration", id); err != nil {
		return err
	}
	s.removeLocked(rec.key)
	s.tombstoneLocked(id, now)
	return nil
}

// ExpireHandle implements hubcore.Store.
func (s *Store) ExpireHandle(ctx context.Context, p hubcore.Platform, handle string, at time.Time) (int, error) {
	now, err := s.lockWrite()
	if err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	hk := handleKey(p, hubcore.PushChannel{Handle: handle, Endpoint: handle})
	keys := make([]string, 0, len(s.handles[hk]))
	for k := range s.handles[hk] {
		keys = append(keys, k)
	}
	n := 0
	for _, k := range keys {
		rec := s.liveLocked(k, now, true)
		switch {
		case rec == nil:
		case rec.reg != nil:
			s.removeLocked(k)
			s.tombstoneLocked(rec.reg.RegistrationID, now)
			n++
		case !rec.inst.PushChannelExpired:
			c := rec.inst.Clone()
			c.PushChannelExpired = true
			c.LastActiveOn = at.UTC()
			c.Version++
			s.putLocked(newInstRecord(c))
			n++
		}
	}
	return n, nil
}

// Close writes the snapshot (if the store has a Path and changed since the
// last one) and releases the store; later calls fail with CodeUnavailable.
// Closing again returns the first Close's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		if s.stop != nil {
			close(s.stop)
			<-s.done
		}
		s.closeErr = s.Snapshot()
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
	})
	return s.closeErr
}

func cloneReg(r *hubcore.Registration) *hubcore.Registration {
	c := *r
	if r.Tags != nil {
		c.Tags = append([]string(nil), r.Tags...)
	}
	if r.PushVariables != nil {
		c.PushVariables = make(map[string]string, len(r.PushVariables))
		for k, v := range r.PushVariables {
			c.PushVariables[k] = v
		}
	}
	c.Template = r.Template.Clone()
	return &c
}

// stats gives the planner exact sizes. The caller holds the lock.
type stats struct{ s *Store }

func (st stats) Cardinality(folded string) int64 { return int64(len(st.s.index[folded])) }
func (st stats) Universe() int64                 { return int64(len(st.s.recs)) }

// Plan implements hubcore.Store.
func (s *Store) Plan(ctx context.Context, e *tagexpr.Expr) (*tagexpr.Plan, error) {
	if _, err := s.lockRead(); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	return tagexpr.NewPlan(e, stats{s}), nil
}

// Check verifies the store's invariants: every index entry points at a
// record carrying the tag or handle, every record is indexed under all its
// tags and its handle, no index set is empty, and every record is keyed by
// its own id. storetest calls it after each conformance test.
func (s *Store) Check(ctx context.Context) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var problems []error
	for key, rec := range s.recs {
		if rec.key != key {
			problems = append(problems, fmt.Errorf("record %s stored under %s", rec.key, key))
		}
		switch {
		case rec.inst != nil && rec.reg == nil:
			if instKey(rec.inst.InstallationID) != key || rec.inst.Version < 1 || len(rec.regs) != 1+len(rec.inst.Templates) {
				problems = append(problems, fmt.Errorf("installation record %s malformed", key))
			}
		case rec.reg != nil && rec.inst == nil:
			if regKey(rec.reg.RegistrationID) != key || rec.reg.Version < 1 || len(rec.regs) != 1 {
				problems = append(problems, fmt.Errorf("registration record %s malformed", key))
			}
		default:
			problems = append(problems, fmt.Errorf("record %s is neither an installation nor a registration", key))
		}
		for _, t := range rec.tags.Folded() {
			if _, ok := s.index[t][key]; !ok {
				problems = append(problems, fmt.Errorf("record %s not indexed under %q", key, t))
			}
		}
		if _, ok := s.handles[rec.handle][key]; !ok {
			problems = append(problems, fmt.Errorf("record %s not in the handle index", key))
		}
	}
	for t, set := range s.index {
		if len(set) == 0 {
			problems = append(problems, fmt.Errorf("empty index set %q", t))
		}
		for key := range set {
			if rec := s.recs[key]; rec == nil || !rec.tags.Has(t) {
				problems = append(problems, fmt.Errorf("index %q lists %s, which does not carry it", t, key))
			}
		}
	}
	for h, set := range s.handles {
		if len(set) == 0 {
			problems = append(problems, fmt.Errorf("empty handle set %q", h))
		}
		for key := range set {
			if rec := s.recs[key]; rec == nil || rec.handle != h {
				problems = append(problems, fmt.Errorf("handle index %q lists %s, which does not have it", h, key))
			}
		}
	}
	if len(problems) > 10 {
		problems = append(problems[:10], fmt.Errorf("and %d more", len(problems)-10))
	}
	return errors.Join(problems...)
}

// fileExists reports whether path names an existing file.
func fileExists(path string) (bool, error) {
	_, err := os.Stat(path)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return false, err
}
