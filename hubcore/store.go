package hubcore

import (
	"context"
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
// API.
type Cond struct {
	// Version, when positive, requires the entry to exist at exactly this
	// version (If-Match: "n").
	Version int64
	// Exists requires the entry to exist (If-Match: *).
	Exists bool
	// Issued, for registrations, requires the id to exist or to have been
	// issued by NewRegistrationID (the device flow answers 410 otherwise).
	Issued bool
}

// Always is the unconditional write (no If-Match).
var Always = Cond{}

// RegistrationIDTTL is how long an issued, deleted or expired registration
// id is remembered.
const RegistrationIDTTL = 24 * time.Hour

// ListQuery selects entries to list. At most one field is set; none lists
// everything.
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
}

// Target is one registration a send reaches.
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
