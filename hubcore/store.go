package hubcore

import (
	"context"
	"encoding/json"
	"io"
	"time"

	"github.com/pushgate/pushgate/hubcore/tagexpr"
)

// Store is what the hub needs from a registry backend: where installations
// and registrations live and where tag expressions become audiences. It is
// declared here, by its consumer; redisstore and memstore implement it, and
// storetest is the conformance suite both must pass.
//
// Common rules:
//   - Entries handed to a store have been validated (Validate) and stamped
//     (Stamp) by the caller; the store sets Version (1 on create, +1 on each
//     write) and returns the stored copy. Entries it returns are validated
//     again on the way out (templates compiled), so callers can render them.
//   - Every write of a record and its index entries is atomic: no reader
//     sees a tag index entry without its record, or the reverse.
//   - Reads see every write that returned before them (read-your-writes).
//   - An entry whose ExpirationTime has passed does not exist for reads,
//     listings and audiences, and is purged eventually.
//   - Installation ids compare case-insensitively (InstallationKey).
//   - Errors are *Error with CodeNotFound, CodeConflict (Current set to the
//     current version, 0 when the entry does not exist), CodeGone or
//     CodeInvalid; a backend failure is CodeUnavailable.
type Store interface {
	// PutInstallation creates or replaces the installation, conditional on
	// ifMatch (see Cond).
	PutInstallation(ctx context.Context, in *Installation, ifMatch Cond) (*Installation, error)
	// GetInstallation returns the installation or CodeNotFound.
	GetInstallation(ctx context.Context, id string) (*Installation, error)
	// UpdateInstallation reads the installation, calls fn with a copy, and
	// writes what fn returns conditional on the version read, retrying when
	// a concurrent write won. fn may be called several times and must not
	// have side effects; it validates and stamps what it returns. An error
	// from fn is returned as is. CodeNotFound if the installation does not
	// exist.
	UpdateInstallation(ctx context.Context, id string, fn func(*Installation) (*Installation, error)) (*Installation, error)
	// DeleteInstallation deletes it, conditional on ifMatch; CodeNotFound if
	// it does not exist.
	DeleteInstallation(ctx context.Context, id string, ifMatch Cond) error

	// NewRegistrationID issues a fresh id and remembers it for
	// RegistrationIDTTL, so that PutRegistration with Issued can tell an
	// id this hub handed out from one it never did.
	NewRegistrationID(ctx context.Context) (string, error)
	// PutRegistration writes the registration at r.RegistrationID (which the
	// caller set, from NewRegistrationID or a client), conditional on cond.
	// Writing an id that was deleted or expired within RegistrationIDTTL is
	// CodeGone (Notification Hubs' "use a different registration id"), and
	// so is, with cond.Issued, an id that neither exists nor was issued.
	// Projected ids (ParseProjectionID) are CodeInvalid.
	PutRegistration(ctx context.Context, r *Registration, cond Cond) (*Registration, error)
	// GetRegistration returns a registration, including the registrations
	// projected from installations (by their ProjectionID).
	GetRegistration(ctx context.Context, id string) (*Registration, error)
	// DeleteRegistration deletes a registration conditional on ifMatch.
	// Deleting a projected registration removes the template it stands
	// for, or the whole installation for the native one.
	DeleteRegistration(ctx context.Context, id string, ifMatch Cond) error

	// ListInstallations pages through installations matching q.
	ListInstallations(ctx context.Context, q ListQuery, page PageRequest) (Page[*Installation], error)
	// ListRegistrations pages through registrations matching q, those
	// projected from installations included.
	ListRegistrations(ctx context.Context, q ListQuery, page PageRequest) (Page[*Registration], error)

	// Plan plans e (nil: broadcast) with the store's current index sizes.
	Plan(ctx context.Context, e *tagexpr.Expr) (*tagexpr.Plan, error)
	// Resolve streams the targets of an audience to fn in batches of at
	// most batch targets (a slice fn must not keep). Each registration
	// (native or template, projected or stored) that matches q is one
	// target; entries whose handle is expired are left out. Resolve stops
	// at the first error from fn and returns it.
	Resolve(ctx context.Context, q AudienceQuery, batch int, fn func([]Target) error) error
	// Count returns exactly how many targets Resolve would produce.
	Count(ctx context.Context, q AudienceQuery) (int64, error)

	// ExpireHandle records that the push service rejected a handle for
	// good: installations with it get PushChannelExpired and LastActiveOn
	// = at; registrations with it are deleted. It returns how many entries
	// it changed.
	ExpireHandle(ctx context.Context, p Platform, handle string, at time.Time) (int, error)
	// EditTags adds and removes tags on every installation whose own tags
	// (with its implicit tags) match e, in batches so that no single write
	// holds the store for long. It returns how many installations changed.
	EditTags(ctx context.Context, e *tagexpr.Expr, add, remove []string) (int64, error)

	// Export writes every live installation and registration to w as
	// NDJSON (see ExportRecord), streaming.
	Export(ctx context.Context, w io.Writer) error
	// Import reads NDJSON written by Export and writes each entry
	// unconditionally (create or replace), streaming; it stops at the first
	// invalid line with an error naming it.
	Import(ctx context.Context, r io.Reader) (int64, error)

	// Close releases the store's resources.
	Close() error
}

// Cond is a write precondition on an entry's version: the If-Match of the
// API. A conditional Put of an absent entry is CodeConflict with Current 0
// (the version the caller expected is not there); a Delete of an absent
// entry is CodeNotFound whatever the condition.
type Cond struct {
	// Version, when positive, requires the entry to exist at exactly this
	// version (If-Match: "n").
	Version int64
	// Updated, with Version, also requires an installation's LastUpdate to
	// be exactly this. A version alone repeats once an entry is deleted
	// and created again (both start at 1); the time of the write that made
	// the version does not, so a write decided on what one incarnation of
	// an id held is never applied to the next (see CondOn).
	Updated time.Time
	// Exists requires the entry to exist (If-Match: *).
	Exists bool
	// Absent requires the entry not to exist (If-None-Match: *): a create
	// that must not replace an entry written since the caller looked.
	// Violated, it is CodeConflict with Current set.
	Absent bool
	// Issued, for registrations, requires the id to exist or to have been
	// issued by NewRegistrationID (the device flow answers 410 otherwise).
	Issued bool
}

// Always is the unconditional write (no If-Match).
var Always = Cond{}

// CondOn is the precondition for a write decided on in as read: in
// unchanged, or, for nil, still absent.
func CondOn(in *Installation) Cond {
	if in == nil {
		return Cond{Absent: true}
	}
	return Cond{Version: in.Version, Updated: in.LastUpdate}
}

// RegistrationIDTTL is how long an issued, deleted or expired registration
// id is remembered.
const RegistrationIDTTL = 24 * time.Hour

// ListQuery selects entries to list. At most one of Tag, UserID and Handle
// is set (none lists everything); Platform narrows any of them.
type ListQuery struct {
	// Tag lists entries carrying the tag (system tags included).
	Tag string
	// UserID lists entries whose installation has this user id.
	UserID string
	// Handle lists entries with this PNS handle (for browser, the endpoint);
	// APNs tokens compare case-insensitively. Platform narrows it if set.
	Handle   string
	Platform Platform
}

// PageRequest asks for one page: at most Limit entries (1..MaxPageSize;
// 0 means DefaultPageSize) after Cursor ("" for the first page).
type PageRequest struct {
	Cursor string
	Limit  int
}

// Page sizes.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// Page is one page of a listing. Next is "" on the last page; a listing
// read page by page returns every entry that existed throughout, once.
type Page[T any] struct {
	Items []T
	Next  string
}

// AudienceQuery is the audience of a send.
type AudienceQuery struct {
	// Expr is the tag expression; nil is a broadcast.
	Expr *tagexpr.Expr
	// Template selects template registrations (a template send); otherwise
	// native registrations of Platform are selected.
	Template bool
	Platform Platform
	// Parts, when positive, cuts the audience into Parts disjoint parts
	// that together are the whole, and selects part Part (0..Parts-1): the
	// fan-out runs each part as its own job. Which entries fall in which
	// part is the store's choice (its shards); a part may be empty.
	Part, Parts int
}

// CheckParts validates the Part/Parts of q.
func (q AudienceQuery) CheckParts() error {
	if q.Parts < 0 || q.Parts > 1<<16 || (q.Parts > 0 && (q.Part < 0 || q.Part >= q.Parts)) || (q.Parts == 0 && q.Part != 0) {
		return invalid("part", "part %d of %d is out of range", q.Part, q.Parts)
	}
	return nil
}

// Target is one registration a send reaches. Its Template and
// PushVariables are shared with the store's copy: read-only.
type Target struct {
	RegistrationID string
	InstallationID string // "" for a registration stored as such
	Platform       Platform
	Channel        PushChannel
	// Template is the template to render; nil for a native send.
	Template      *Template
	TemplateName  string
	PushVariables map[string]string
}

// ExportRecord is one NDJSON line of an export: exactly one of the two
// fields is set. Installations use the Notification Hubs JSON shape.
type ExportRecord struct {
	Installation *Installation `json:"installation,omitempty"`
	Registration *Registration `json:"registration,omitempty"`
}

// UnmarshalJSON reads one line written by Export. Unlike a request body, an
// export is a restore: it keeps the fields the hub sets itself
// (pushChannelExpired, lastActiveOn, lastUpdate), which
// Installation.UnmarshalJSON ignores, so that an expired handle stays
// expired across an export and import. It checks the shape only; Validate
// checks the rules.
func (r *ExportRecord) UnmarshalJSON(data []byte) error {
	var w struct {
		Installation json.RawMessage `json:"installation"`
		Registration json.RawMessage `json:"registration"`
	}
	if err := decodeStrict(data, &w); err != nil {
		return err
	}
	hasInst, hasReg := !isNull(w.Installation), !isNull(w.Registration)
	if hasInst == hasReg {
		return invalid("", "an export record has exactly one of installation and registration")
	}
	out := ExportRecord{}
	if hasReg {
		out.Registration = &Registration{}
		if err := out.Registration.UnmarshalJSON(w.Registration); err != nil {
			return retarget(err, "registration")
		}
		*r = out
		return nil
	}
	in, err := DecodeInstallation(w.Installation)
	if err != nil {
		return retarget(err, "installation")
	}
	var kept struct {
		PushChannelExpired bool   `json:"pushChannelExpired"`
		LastActiveOn       string `json:"lastActiveOn"`
		LastUpdate         string `json:"lastUpdate"`
	}
	if err := decodeStrict(w.Installation, &kept); err != nil {
		return retarget(err, "installation")
	}
	in.PushChannelExpired = kept.PushChannelExpired
	for _, f := range []struct {
		name string
		s    string
		t    *time.Time
	}{{"lastActiveOn", kept.LastActiveOn, &in.LastActiveOn}, {"lastUpdate", kept.LastUpdate, &in.LastUpdate}} {
		if f.s == "" {
			continue
		}
		t, err := ParseTime(f.s)
		if err != nil {
			return invalid("installation."+f.name, "%v", err)
		}
		*f.t = t
	}
	out.Installation = in
	*r = out
	return nil
}
