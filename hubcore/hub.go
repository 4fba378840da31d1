package hubcore

import (
	"context"
	"errors"
	"time"

	"github.com/pushgate/pushgate/hubcore/tagexpr"
)

// Hub is the registry's application service: it validates and stamps what
// callers write and hands it to the Store, so that every front end (the
// device gate, the backend API, the CLI) applies the same rules.
type Hub struct {
	store  Store
	limits Limits
	expr   tagexpr.Limits
	now    func() time.Time
}

// HubOptions configures a Hub. Zero values mean the defaults.
type HubOptions struct {
	Limits     Limits
	ExprLimits tagexpr.Limits
	Now        func() time.Time
}

// NewHub returns a hub over store.
func NewHub(store Store, opts HubOptions) *Hub {
	h := &Hub{store: store, limits: opts.Limits.withDefaults(), expr: opts.ExprLimits, now: opts.Now}
	if h.now == nil {
		h.now = time.Now
	}
	return h
}

// Store returns the hub's store.
func (h *Hub) Store() Store { return h.store }

// Limits returns the limits the hub enforces.
func (h *Hub) Limits() Limits { return h.limits }

// PutInstallation validates, stamps and stores an installation (create or
// replace), conditional on cond. Replacing clears pushChannelExpired: the
// client has just told us its current handle.
func (h *Hub) PutInstallation(ctx context.Context, in *Installation, cond Cond) (*Installation, error) {
	in = in.Clone()
	in.PushChannelExpired = false
	return h.put(ctx, in, cond)
}

// PutPatched stores an installation that a caller built by applying a
// JSON-Patch (ApplyPatch) to the stored one, conditional on cond. Unlike
// PutInstallation it keeps pushChannelExpired as the patch left it: a
// patch clears it only by changing pushChannel, so changing tags neither
// revives a handle the push service reported dead nor signs a signed-off
// device back in.
func (h *Hub) PutPatched(ctx context.Context, in *Installation, cond Cond) (*Installation, error) {
	return h.put(ctx, in.Clone(), cond)
}

// put validates, stamps and stores in, which the caller owns.
func (h *Hub) put(ctx context.Context, in *Installation, cond Cond) (*Installation, error) {
	if err := in.Validate(h.limits); err != nil {
		return nil, err
	}
	in.Stamp(h.now(), h.limits)
	return h.store.PutInstallation(ctx, in, cond)
}

// PatchInstallation applies a JSON-Patch to the stored installation,
// whole or not at all, retrying if a concurrent write wins. cond.Version,
// when set, must match the version the patch is applied to.
func (h *Hub) PatchInstallation(ctx context.Context, id string, ops []PatchOp, cond Cond) (*Installation, error) {
	return h.store.UpdateInstallation(ctx, id, func(cur *Installation) (*Installation, error) {
		if cond.Version > 0 && cur.Version != cond.Version {
			return nil, &Error{Code: CodeConflict, Reason: "the installation has changed", Current: cur.Version}
		}
		out, err := ApplyPatch(cur, ops, h.limits)
		if err != nil {
			return nil, err
		}
		out.Stamp(h.now(), h.limits)
		return out, nil
	})
}

// PutRegistration validates, stamps and stores a registration.
func (h *Hub) PutRegistration(ctx context.Context, r *Registration, cond Cond) (*Registration, error) {
	c := *r
	if err := c.Validate(h.limits); err != nil {
		return nil, err
	}
	c.Stamp(h.now(), h.limits)
	return h.store.PutRegistration(ctx, &c, cond)
}

// ParseExpression parses a tag expression under the hub's limits. Errors
// are *Error on the field "tags", wrapping the tagexpr error with its
// position.
func (h *Hub) ParseExpression(src string) (*tagexpr.Expr, error) {
	e, err := tagexpr.Parse(src, h.expr)
	if err == nil {
		return e, nil
	}
	code := CodeInvalid
	var le *tagexpr.LimitError
	if errors.As(err, &le) {
		code = CodeLimit
	}
	return nil, &Error{Code: code, Field: "tags", Reason: err.Error(), Err: err}
}

// DryRun is the answer to "who would this send reach?": the exact number
// of targets and the plan, for Explain.
type DryRun struct {
	Targets int64
	Plan    *tagexpr.Plan
}

// DryRun counts the targets of an audience and returns the plan the store
// would execute.
func (h *Hub) DryRun(ctx context.Context, q AudienceQuery) (DryRun, error) {
	p, err := h.store.Plan(ctx, q.Expr)
	if err != nil {
		return DryRun{}, err
	}
	n, err := h.store.Count(ctx, q)
	if err != nil {
		return DryRun{}, err
	}
	return DryRun{Targets: n, Plan: p}, nil
}
