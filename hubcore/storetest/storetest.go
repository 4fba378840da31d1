// Package storetest is the conformance suite of hubcore.Store: every store
// (memstore, redisstore) runs it from its own tests, so that both implement
// the same contract, down to error codes and the behaviours the Store
// documentation leaves to the implementation (see Decisions below).
//
// A store's test is a few lines:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T, clock *storetest.Clock) hubcore.Store {
//			s, err := memstore.Open(memstore.Options{Now: clock.Now})
//			if err != nil {
//				t.Fatal(err)
//			}
//			return s
//		})
//	}
//
// Each subtest gets a fresh, empty store from the factory (ExportImport and
// ImportMalformed ask for more than one, open at the same time, so each
// call must return an independent store: its own database or key prefix,
// not a flush of the previous one's), runs against a fake clock the
// store must take as its time source, calls the store's Check method if it
// has one (see Checker) and closes the store. The factory must open the
// store with hubcore's default Limits, or pass the ones it uses in
// Options.Limits. A slow store (Redis Cluster) can shrink the random tests
// with RunWith and Options.
//
// # Decisions
//
// Where the Store documentation is silent, the suite expects:
//   - The stored installation keeps the id spelling of its latest write.
//   - PutInstallation and PutRegistration with Cond.Version on an absent
//     entry: CodeConflict with Current 0. Cond.Exists on an absent entry:
//     CodeNotFound. Deletes of an absent entry: CodeNotFound whatever the
//     condition.
//   - UpdateInstallation: fn returning nil, or an installation with another
//     id (compared with InstallationKey), is CodeInvalid; fn is not called
//     for an absent installation.
//   - Registrations deleted by DeleteRegistration or ExpireHandle, and
//     registrations that expired, leave a tombstone for RegistrationIDTTL
//     from the deletion or expiry (PutRegistration answers CodeGone whatever
//     the condition). Deleting projected ids leaves none. Import writes
//     over a tombstone.
//   - Projected registrations carry their installation's Version, and are
//     looked up case-insensitively in their installation id part.
//     Deleting a projected template registration removes the template:
//     the installation's Version+1, LastUpdate = now.
//   - Listings: Platform narrows any query. Setting more than one of Tag,
//     UserID and Handle is CodeInvalid, and so is a Tag that is not a valid
//     tag. ListInstallations by Tag lists installations under any of their
//     IndexTags (template tags and template names included); by UserID it is
//     the same as by the tag $UserId:{…} (so case-insensitive). By Handle, an
//     entry matches when PushChannel.Key of its platform equals the handle's
//     (APNs tokens in any case; a Web Push endpoint). Entries whose handle
//     expired are listed. PageRequest.Limit < 0 is CodeInvalid, 0 means
//     DefaultPageSize, above MaxPageSize it is clamped to MaxPageSize. A
//     cursor the store did not write is CodeInvalid. Next may be non-empty
//     on a page that happens to end at the last entry, but then the next
//     page is empty with Next "".
//   - Resolve and Count: batch < 1 is CodeInvalid; a native query without
//     Platform is CodeInvalid; a template query with Platform set is
//     narrowed to it. fn is never called with an empty batch. Targets of
//     installations have the projected RegistrationID and the
//     InstallationID; targets of stored registrations have InstallationID "".
//   - ExpireHandle matches entries of platform p only (PushChannel.Key), and
//     counts an installation only if it was not already expired; the
//     installation's Version is bumped (its representation changed).
//   - EditTags: nil e means every installation. e is matched against the
//     installation's own tags and implicit tags (its native registration),
//     not its template tags. Tags to add must be valid user tags (else
//     CodeInvalid, nothing changes); tags to remove compare
//     case-insensitively. Only installations whose tags actually change are
//     written (Version+1, LastUpdate = now) and counted. An installation that
//     would break the store's Limits after the edit is skipped and left
//     unchanged; the call edits the others and returns their count together
//     with a CodeLimit error naming a skipped installation.
//   - Export writes one line per live entry, expired handles included.
//     Import restores pushChannelExpired, lastActiveOn and lastUpdate (see
//     hubcore.ExportRecord.UnmarshalJSON), sets Version to the current
//     version+1 (1 for a new entry), skips entries that have already expired
//     (not counted) and blank lines, and on a bad line returns the number of
//     entries written before it and an error (CodeInvalid, or the
//     validation's CodeLimit/CodeUnsupported) whose text names "line N",
//     1-based, blank lines counted.
package storetest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/pushgate/pushgate/hubcore"
)

// Factory returns a fresh, empty store that takes clock as its time source.
// The suite closes the store at the end of the subtest.
type Factory func(t *testing.T, clock *Clock) hubcore.Store

// Checker is implemented by stores that can verify their own invariants
// (index entries match records, and so on). The suite calls Check at the
// end of every subtest and fails it on a non-nil error.
type Checker interface {
	Check(ctx context.Context) error
}

// Options scale and parameterise the suite. Zero fields mean the default.
type Options struct {
	// Installations and Registrations size the population of the audience
	// property test (defaults 2000 and 400).
	Installations int
	Registrations int
	// Expressions is how many random expressions the audience property test
	// resolves (default 1000).
	Expressions int
	// Paging is how many entries the paging test lists (default 300).
	Paging int
	// Seed seeds the random tests (default 1); a failure message names it.
	Seed uint64
	// Limits are the limits the store validates with (on Import, EditTags);
	// zero means hubcore's defaults.
	Limits hubcore.Limits
}

func (o Options) withDefaults() Options {
	if o.Installations <= 0 {
		o.Installations = 2000
	}
	if o.Registrations <= 0 {
		o.Registrations = 400
	}
	if o.Expressions <= 0 {
		o.Expressions = 1000
	}
	if o.Paging <= 0 {
		o.Paging = 300
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	return o
}

// Run runs the whole suite with default Options.
func Run(t *testing.T, newStore Factory) { RunWith(t, newStore, Options{}) }

// RunWith runs the whole suite with opts.
func RunWith(t *testing.T, newStore Factory, opts Options) {
	opts = opts.withDefaults()
	tests := []struct {
		name string
		fn   func(h *harness)
	}{
		{"InstallationCRUD", testInstallationCRUD},
		{"InstallationIDCase", testInstallationIDCase},
		{"InstallationConditions", testInstallationConditions},
		{"InstallationIncarnations", testInstallationIncarnations},
		{"UpdateInstallation", testUpdateInstallation},
		{"UpdateInstallationConcurrent", testUpdateInstallationConcurrent},
		{"RegistrationCRUD", testRegistrationCRUD},
		{"RegistrationConditions", testRegistrationConditions},
		{"RegistrationIssuedAndGone", testRegistrationIssuedAndGone},
		{"ProjectedRegistrations", testProjectedRegistrations},
		{"Expiry", testExpiry},
		{"ListInstallations", testListInstallations},
		{"ListRegistrations", testListRegistrations},
		{"Paging", testPaging},
		{"PageRequests", testPageRequests},
		{"AudienceBasics", testAudienceBasics},
		{"AudienceProperty", testAudienceProperty},
		{"Feedback", testFeedback},
		{"EditTags", testEditTags},
		{"ExportImport", testExportImport},
		{"ImportMalformed", testImportMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(newHarness(t, newStore, opts))
		})
	}
}

// harness is the harness of one subtest: the store under test, its clock and
// helpers that fail the test on unexpected errors.
type harness struct {
	t        *testing.T
	ctx      context.Context
	s        hubcore.Store
	clock    *Clock
	opts     Options
	lim      hubcore.Limits
	newStore func() hubcore.Store
}

func newHarness(t *testing.T, f Factory, opts Options) *harness {
	clock := NewClock(Epoch)
	h := &harness{t: t, ctx: context.Background(), clock: clock, opts: opts, lim: opts.Limits}
	h.newStore = func() hubcore.Store {
		s := f(t, clock)
		t.Cleanup(func() {
			if c, ok := s.(Checker); ok {
				if err := c.Check(context.Background()); err != nil {
					t.Errorf("store invariants broken at the end of the test: %v", err)
				}
			}
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return s
	}
	h.s = h.newStore()
	return h
}

// Epoch is the time every subtest's clock starts at.
var Epoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// Clock is a settable fake clock, safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock reading t.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// Set sets the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}
