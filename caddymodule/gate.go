package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/tag"
	"github.com/pushgate/pushgate/internal/oidcauth"
	"github.com/pushgate/pushgate/policy"
)

func init() {
	caddy.RegisterModule(Gate{})
}

// Gate is the device-facing handler: devices register through it with an
// OIDC bearer token, a policy decides their tags, and the hub stores the
// result. Requests outside its prefix go to the next handler (typically
// reverse_proxy to the app's backend) with client-supplied identity headers
// removed.
type Gate struct {
	// Hub names the hub (configured in the pushgate app) devices register in.
	Hub string `json:"hub"`
	// Prefix is the path under which the device endpoints live (default
	// "/push").
	Prefix string `json:"prefix,omitempty"`
	// OIDC configures token verification.
	OIDC *OIDCConfig `json:"oidc,omitempty"`
	// Policy is the directory of Rego policies (and data files) that decide
	// each request.
	Policy string `json:"policy"`
	// IdentityHeaders, when set, passes the verified identity of requests
	// that go upstream in X-Pushgate-User and X-Pushgate-Issuer.
	IdentityHeaders bool `json:"identity_headers,omitempty"`
	// MaxBodyBytes bounds a request body (default 256 KiB).
	MaxBodyBytes int64 `json:"max_body_bytes,omitempty"`
	// DecisionCache bounds the policy decisions reused for requests equal
	// on every input path the policy reads (policy.Options
	// .DecisionCacheSize): 0 for the default, negative for none.
	DecisionCache int `json:"decision_cache,omitempty"`

	hub      *hubcore.Hub
	verifier tokenVerifier
	decider  decider
	engine   *policy.Engine
	regIDs   *registerIDs
	metrics  *metrics
	logger   *zap.Logger
	cancel   context.CancelFunc
}

// OIDCConfig configures bearer token verification.
type OIDCConfig struct {
	// Issuer is the OpenID issuer URL (discovery and JWKS come from it).
	Issuer string `json:"issuer,omitempty"`
	// ClientIDs accepts ID tokens issued to these clients.
	ClientIDs []string `json:"client_ids,omitempty"`
	// Audiences accepts RFC 9068 JWT access tokens for these APIs.
	Audiences []string `json:"audiences,omitempty"`
	// UserClaim is the claim that identifies the user (default "sub").
	UserClaim string `json:"user_claim,omitempty"`
	// Algorithms restricts the accepted signature algorithms.
	Algorithms []string `json:"algorithms,omitempty"`
}

// tokenVerifier and decider are what the gate needs from authentication and
// policy; declared here, by their consumer, so tests can substitute them.
type tokenVerifier interface {
	Verify(ctx context.Context, authorization string) (*oidcauth.Identity, error)
}

type decider interface {
	Decide(ctx context.Context, in policy.Input) (policy.Decision, error)
}

// recentReader is offered by a store that remembers what it last read or
// wrote (redisstore): a copy that may be stale, which the gate decides a
// write on only because the write is conditional on the copy's version.
type recentReader interface {
	RecentInstallation(ctx context.Context, id string) (*hubcore.Installation, bool)
}

// CaddyModule returns the Caddy module information.
func (Gate) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.pushgate_gate",
		New: func() caddy.Module { return new(Gate) },
	}
}

// Provision connects the gate to its hub, verifier and policy.
func (g *Gate) Provision(ctx caddy.Context) error {
	g.logger = ctx.Logger()
	if g.Prefix == "" {
		g.Prefix = "/push"
	}
	g.Prefix = "/" + strings.Trim(g.Prefix, "/")
	if g.MaxBodyBytes <= 0 {
		g.MaxBodyBytes = 256 << 10
	}
	appIface, err := ctx.App("pushgate")
	if err != nil {
		return fmt.Errorf("pushgate_gate: %v", err)
	}
	h, ok := appIface.(*App).Hub(g.Hub)
	if !ok {
		return fmt.Errorf("pushgate_gate: hub %q is not configured in the pushgate global options", g.Hub)
	}
	g.hub = h.Core
	if g.regIDs, err = newRegisterIDs(ctx); err != nil {
		return err
	}
	if g.metrics, err = registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	if g.verifier == nil {
		if g.verifier, err = g.newVerifier(ctx); err != nil {
			return err
		}
	}
	if g.decider == nil {
		if g.Policy == "" {
			return fmt.Errorf("pushgate_gate: a policy directory is required")
		}
		g.engine, err = policy.Load(ctx, policy.Options{Dir: g.Policy, Logger: g.logger.Named("policy"), DecisionCacheSize: g.DecisionCache})
		if err != nil {
			return fmt.Errorf("pushgate_gate: %v", err)
		}
		go g.engine.Watch(runCtx)
		g.decider = g.engine
	}
	return nil
}

// Cleanup stops the policy watcher.
func (g *Gate) Cleanup() error {
	if g.cancel != nil {
		g.cancel()
	}
	return nil
}

// identityHeaders are removed from every request: only the gate may set
// them, and only from a verified token.
var identityHeaders = []string{"X-Pushgate-User", "X-Pushgate-Issuer", "X-Pushgate-Subject"}

// isIdentityField reports whether a header or trailer name would be read as
// an identity header: in any case, and with '_' for '-', since CGI, PHP,
// WSGI and Rack map both to the same variable (Caddy drops such names by
// default, but an operator may allow them).
func isIdentityField(name string) bool {
	n := strings.ReplaceAll(name, "_", "-")
	for _, h := range identityHeaders {
		if strings.EqualFold(n, h) {
			return true
		}
	}
	return false
}

// stripIdentity removes client-sent identity fields from the headers now,
// and from the trailers when the body has been read: reverse_proxy forwards
// a request's trailers, which arrive only at the end of its body.
func stripIdentity(r *http.Request) {
	for name := range r.Header {
		if isIdentityField(name) {
			delete(r.Header, name)
		}
	}
	// Declared trailers are keys without values until the body ends;
	// dropping them now keeps them out of the proxied request's
	// declaration, and the body wrapper drops the values when they come.
	stripTrailers(r)
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &trailerStripper{ReadCloser: r.Body, r: r}
	}
}

func stripTrailers(r *http.Request) {
	for name := range r.Trailer {
		if isIdentityField(name) {
			delete(r.Trailer, name)
		}
	}
}

// trailerStripper drops identity trailers at the end of the body, before
// whoever reads it (reverse_proxy) copies them on.
type trailerStripper struct {
	io.ReadCloser
	r *http.Request
}

func (b *trailerStripper) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		stripTrailers(b.r)
	}
	return n, err
}

// ServeHTTP routes device endpoints under Prefix and passes everything else
// on.
func (g *Gate) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	stripIdentity(r)
	rest, under := strings.CutPrefix(r.URL.Path, g.Prefix)
	if !under || (rest != "" && rest[0] != '/') {
		return g.passThrough(w, r, next)
	}
	start := time.Now()
	status := g.serveDevice(w, r, strings.Trim(rest, "/"))
	g.metrics.requests.WithLabelValues(strconv.Itoa(status)).Inc()
	g.logger.Debug("device request", zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.Int("status", status), zap.Duration("took", time.Since(start)))
	return nil
}

func (g *Gate) passThrough(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if g.IdentityHeaders && r.Header.Get("Authorization") != "" {
		if id, err := g.verifier.Verify(r.Context(), r.Header.Get("Authorization")); err == nil {
			r.Header.Set("X-Pushgate-User", id.UserID)
			r.Header.Set("X-Pushgate-Subject", id.Subject)
			r.Header.Set("X-Pushgate-Issuer", id.Issuer)
		}
	}
	return next.ServeHTTP(w, r)
}

// serveDevice answers one device request and returns its status.
func (g *Gate) serveDevice(w http.ResponseWriter, r *http.Request, route string) int {
	seg := strings.Split(route, "/")
	var handler func(context.Context, *request) (int, any, error)
	switch {
	case len(seg) == 2 && seg[0] == "installations":
		switch r.Method {
		case http.MethodPut:
			handler = g.putInstallation
		case http.MethodPatch:
			handler = g.patchInstallation
		case http.MethodGet:
			handler = g.getInstallation
		case http.MethodDelete:
			handler = g.deleteInstallation
		}
	case len(seg) == 1 && seg[0] == "register":
		if r.Method == http.MethodPost {
			handler = g.newRegistration
		}
	case len(seg) == 2 && seg[0] == "register":
		switch r.Method {
		case http.MethodPut:
			handler = g.putRegister
		case http.MethodDelete:
			handler = g.deleteInstallation
		}
	default:
		return writeError(w, &hubcore.Error{Code: hubcore.CodeNotFound, Reason: "no device endpoint at " + r.URL.Path})
	}
	if handler == nil {
		w.Header().Set("Allow", allowFor(seg))
		writeJSON(w, http.StatusMethodNotAllowed, deviceError{Error: "method_not_allowed", Message: r.Method + " is not allowed here"})
		return http.StatusMethodNotAllowed
	}
	if len(r.Header.Values("Authorization")) > 1 {
		writeJSON(w, http.StatusBadRequest, deviceError{Error: "invalid_request", Message: "more than one Authorization header"})
		return http.StatusBadRequest
	}
	id, err := g.verifier.Verify(r.Context(), r.Header.Get("Authorization"))
	if err != nil {
		return g.authFailed(w, err)
	}
	req := &request{r: r, user: userOf(id)}
	if len(seg) == 2 {
		req.id = seg[1]
	}
	if r.Body != nil && (r.Method == http.MethodPut || r.Method == http.MethodPatch || r.Method == http.MethodPost) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.MaxBodyBytes))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				writeJSON(w, http.StatusRequestEntityTooLarge, deviceError{Error: "too_large", Message: fmt.Sprintf("the body exceeds %d bytes", g.MaxBodyBytes)})
				return http.StatusRequestEntityTooLarge
			}
			return writeError(w, &hubcore.Error{Code: hubcore.CodeInvalid, Reason: "reading the body: " + err.Error()})
		}
		req.body = body
	}
	status, resp, err := g.withRetry(r.Context(), req, handler)
	if err != nil {
		switch {
		case r.Context().Err() != nil:
			// The client is gone: no one reads the answer, nothing failed.
			g.logger.Debug("device request abandoned by the client", zap.String("path", r.URL.Path), zap.Error(err))
		case statusOf(err) >= 500:
			g.logger.Error("device request failed", zap.String("path", r.URL.Path), zap.Error(err))
		}
		return writeError(w, err)
	}
	if resp == nil {
		w.WriteHeader(status)
		return status
	}
	writeJSON(w, status, resp)
	return status
}

// withRetry reruns a request whose conditional write lost to a concurrent
// one: the policy decided on the record it read, so a changed record means
// deciding again, not writing anyway.
func (g *Gate) withRetry(ctx context.Context, req *request, h func(context.Context, *request) (int, any, error)) (int, any, error) {
	for attempt := 0; ; attempt++ {
		status, resp, err := h(ctx, req)
		switch {
		case err != nil && req.remembered && !req.fresh && ctx.Err() == nil:
			// Decided on a remembered copy, which may be stale: a refusal
			// is only final once decided on what is stored.
		case hubcore.CodeOf(err) != hubcore.CodeConflict || attempt == 4:
			return status, resp, err
		}
		req.fresh = true
	}
}

func allowFor(seg []string) string {
	switch {
	case len(seg) == 2 && seg[0] == "installations":
		return "GET, PUT, PATCH, DELETE"
	case len(seg) == 1:
		return "POST"
	default:
		return "PUT, DELETE"
	}
}

func (g *Gate) authFailed(w http.ResponseWriter, err error) int {
	var ae *oidcauth.Error
	if !errors.As(err, &ae) {
		g.logger.Error("token verification failed", zap.Error(err))
		writeJSON(w, http.StatusServiceUnavailable, deviceError{Error: "unavailable", Message: "token verification is unavailable"})
		return http.StatusServiceUnavailable
	}
	g.metrics.tokenFailures.WithLabelValues(ae.Reason).Inc()
	if ae.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", ae.WWWAuthenticate("pushgate"))
	}
	code := ae.Code
	if code == "" {
		code = "unauthorized"
	}
	writeJSON(w, ae.Status, deviceError{Error: code, Message: ae.Description})
	return ae.Status
}

type request struct {
	r    *http.Request
	user policy.User
	id   string
	body []byte
	// remembered is set when the request was decided on the store's
	// remembered copy; fresh once it must be decided on what is stored.
	remembered, fresh bool
}

func userOf(id *oidcauth.Identity) policy.User {
	return policy.User{Subject: id.Subject, UserID: id.UserID, Issuer: id.Issuer, Claims: id.Claims}
}

// decide asks the policy and enforces the rules that hold whatever it says:
// undefined or failing policies deny; the user id is the policy's or, when
// it sets none, the verified one; an entry owned by another user is never
// read, replaced, patched or deleted.
func (g *Gate) decide(ctx context.Context, in policy.Input, stored *hubcore.Installation) (policy.Decision, error) {
	start := time.Now()
	d, err := g.decider.Decide(ctx, in)
	g.metrics.policyLatency.Observe(time.Since(start).Seconds())
	if err != nil {
		switch {
		case ctx.Err() != nil:
			// The client went away; nothing to answer, nothing to alarm.
			g.logger.Debug("policy evaluation abandoned", zap.String("operation", in.Operation), zap.Error(err))
			return policy.Decision{}, ctx.Err()
		case errors.Is(err, policy.ErrTimeout):
			// Still fail closed, but as 503 + Retry-After: a device told
			// "forbidden" would not retry a registration it is entitled to.
			g.metrics.decisions.WithLabelValues("timeout").Inc()
			g.logger.Warn("policy evaluation timed out; answering 503", zap.String("operation", in.Operation), zap.Error(err))
			return policy.Decision{}, &hubcore.Error{Code: hubcore.CodeUnavailable, Reason: "the policy did not decide in time; retry the request", Err: err}
		}
		g.logger.Error("policy evaluation failed; denying", zap.String("operation", in.Operation), zap.Error(err))
		d = policy.Decision{Allow: false, Reasons: []string{"the policy could not be evaluated"}}
	}
	if d.UserID == "" {
		d.UserID = in.User.UserID
	}
	result := "allow"
	var denial error
	switch {
	case !d.Allow:
		result = "deny"
		denial = &hubcore.Error{Code: hubcore.CodeForbidden, Reason: "denied by policy: " + strings.Join(d.Reasons, "; ")}
	case d.UserID == "":
		result = "deny"
		denial = forbidden("no user id: the token has no user claim and the policy set none")
	case stored != nil && !tag.Equal(stored.UserID, d.UserID) && !parked(stored):
		result = "deny"
		denial = forbidden("this installation belongs to another user")
	}
	g.metrics.decisions.WithLabelValues(result).Inc()
	// Checked first: the fields cost allocations on every request, and the
	// decision log is usually off.
	if ce := g.logger.Check(zap.InfoLevel, "decision"); ce != nil {
		ce.Write(zap.String("user", in.User.UserID), zap.String("operation", in.Operation), zap.String("resource", in.Resource),
			zap.Strings("requested_tags", in.RequestedTags), zap.Strings("granted_tags", d.FilterTags(in.RequestedTags)),
			zap.Strings("injected_tags", d.Inject), zap.String("result", result), zap.Strings("reasons", d.Reasons),
			zap.Bool("cached", d.Cached), zap.Duration("latency", time.Since(start)))
	}
	return d, denial
}

// parked reports whether an installation was signed off: its handle is
// marked dead, so nothing reaches it. The gate then lets another user take
// the device over (its previous tags are dropped) if the policy allows it;
// the per-user example policy does not (an installation with an owner is
// that owner's until deleted), which attack_test.go's
// takeover/signed-off-installation-put row pins.
func parked(in *hubcore.Installation) bool { return in.PushChannelExpired }

// load returns the stored installation, or nil when there is none.
func (g *Gate) load(ctx context.Context, id string) (*hubcore.Installation, error) {
	in, err := g.hub.Store().GetInstallation(ctx, id)
	if hubcore.CodeOf(err) == hubcore.CodeNotFound {
		return nil, nil
	}
	return in, err
}

func (g *Gate) putInstallation(ctx context.Context, req *request) (int, any, error) {
	in, err := hubcore.DecodeInstallation(req.body)
	if err != nil {
		return 0, nil, err
	}
	if in.InstallationID == "" {
		in.InstallationID = req.id
	}
	if hubcore.InstallationKey(in.InstallationID) != hubcore.InstallationKey(req.id) {
		return 0, nil, &hubcore.Error{Code: hubcore.CodeInvalid, Field: "installationId", Reason: "installationId must match the URL"}
	}
	return g.write(ctx, req, in, nil)
}

func (g *Gate) patchInstallation(ctx context.Context, req *request) (int, any, error) {
	ops, err := hubcore.ParsePatch(req.body)
	if err != nil {
		return 0, nil, err
	}
	stored, err := g.loadForWrite(ctx, req, req.id)
	if err == nil && stored == nil {
		// A 404 is an answer, not a conditional write: make sure.
		stored, err = g.load(ctx, req.id)
	}
	if err != nil {
		return 0, nil, err
	}
	if stored == nil {
		return 0, nil, &hubcore.Error{Code: hubcore.CodeNotFound, Reason: "no installation " + req.id}
	}
	patched, err := hubcore.ApplyPatch(stored, ops, g.hub.Limits())
	if err != nil {
		return 0, nil, err
	}
	return g.writeOver(ctx, req, patched, stored, ops)
}

// loadForWrite returns the installation a write is decided on: the
// store's remembered copy when it has one (the write is conditional on its
// version, so a stale copy costs a retry, never a wrong decision), else
// what is stored.
func (g *Gate) loadForWrite(ctx context.Context, req *request, id string) (*hubcore.Installation, error) {
	if rr, ok := g.hub.Store().(recentReader); ok && !req.fresh {
		if in, found := rr.RecentInstallation(ctx, id); found {
			req.remembered = true
			return in, nil
		}
	}
	return g.load(ctx, id)
}

// write stores a new or replacing installation through the policy.
func (g *Gate) write(ctx context.Context, req *request, in *hubcore.Installation, ops []hubcore.PatchOp) (int, any, error) {
	stored, err := g.loadForWrite(ctx, req, in.InstallationID)
	if err != nil {
		return 0, nil, err
	}
	return g.writeOver(ctx, req, in, stored, ops)
}

func (g *Gate) writeOver(ctx context.Context, req *request, in, stored *hubcore.Installation, ops []hubcore.PatchOp) (int, any, error) {
	op := policy.OpCreate
	switch {
	case ops != nil:
		op = policy.OpPatch
	case stored != nil:
		op = policy.OpReplace
	}
	// Signing in again on a signed-off device restores what the user had
	// been granted: the stored tags come back, through the policy again.
	if stored != nil && parked(stored) && ops == nil {
		d, err := g.decide(ctx, mustInput(policy.InputFor(policy.OpRead, nil, stored, nil, req.user)), stored)
		if err == nil && tag.Equal(stored.UserID, d.UserID) {
			in.Tags = append(in.Tags, stored.Tags...)
		}
	}
	if err := systemTagIn(in); err != nil {
		return 0, nil, err
	}
	input, err := policy.InputFor(op, in, stored, ops, req.user)
	if err != nil {
		return 0, nil, err
	}
	d, err := g.decide(ctx, input, stored)
	if err != nil {
		return 0, nil, err
	}
	out := in.Clone()
	removed := d.ApplyInstallation(out)
	// The write is conditional on what the decision saw (the version read
	// and the time it was written, or absence), so a concurrent change,
	// a delete and re-create included, makes the request decide again.
	cond := hubcore.CondOn(stored)
	put := g.hub.PutInstallation
	if ops != nil {
		put = g.hub.PutPatched
	}
	saved, err := put(ctx, out, cond)
	if err != nil {
		return 0, nil, err
	}
	g.metrics.registrations.WithLabelValues(op).Inc()
	return http.StatusOK, grantResponse(saved, in, removed), nil
}

// systemTagIn refuses a request naming a system tag. The hub derives
// those; a device asking for one sent an invalid request whatever the
// policy would keep, so it gets 400 and nothing is stored, rather than a
// 200 that silently drops the tag.
func systemTagIn(in *hubcore.Installation) error {
	check := func(field string, tags []string) error {
		for i, t := range tags {
			if tag.IsSystem(t) {
				return &hubcore.Error{Code: hubcore.CodeInvalid, Field: fmt.Sprintf("%s[%d]", field, i),
					Reason: fmt.Sprintf("tag %q: tags starting with '$' are reserved for the system", t)}
			}
		}
		return nil
	}
	if err := check("tags", in.Tags); err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(in.Templates)) {
		if t := in.Templates[name]; t != nil {
			if err := check("templates."+name+".tags", t.Tags); err != nil {
				return err
			}
		}
	}
	return nil
}

// grantResponse tells the device what it now holds and what was dropped,
// so an app can show the user why a subscription did not take.
func grantResponse(saved, requested *hubcore.Installation, removedTemplates []string) any {
	var dropped []string
	for _, t := range requested.Tags {
		if !slices.ContainsFunc(saved.Tags, func(x string) bool { return tag.Equal(x, t) }) {
			dropped = append(dropped, t)
		}
	}
	return struct {
		Installation     *hubcore.Installation `json:"installation"`
		DroppedTags      []string              `json:"droppedTags,omitempty"`
		DroppedTemplates []string              `json:"droppedTemplates,omitempty"`
	}{saved, dropped, removedTemplates}
}

func (g *Gate) getInstallation(ctx context.Context, req *request) (int, any, error) {
	stored, err := g.load(ctx, req.id)
	if err != nil {
		return 0, nil, err
	}
	if stored == nil {
		return 0, nil, &hubcore.Error{Code: hubcore.CodeNotFound, Reason: "no installation " + req.id}
	}
	if _, err := g.decide(ctx, mustInput(policy.InputFor(policy.OpRead, nil, stored, nil, req.user)), stored); err != nil {
		return 0, nil, err
	}
	return http.StatusOK, stored, nil
}

// deleteInstallation signs the device off: the installation stays, with
// its handle marked dead, so that signing in again restores the user's
// subscriptions. ?forget=true deletes it for good.
func (g *Gate) deleteInstallation(ctx context.Context, req *request) (int, any, error) {
	stored, err := g.load(ctx, req.id)
	if err != nil {
		return 0, nil, err
	}
	if stored == nil {
		return http.StatusNoContent, nil, nil
	}
	if _, err := g.decide(ctx, mustInput(policy.InputFor(policy.OpDelete, nil, stored, nil, req.user)), stored); err != nil {
		return 0, nil, err
	}
	if parked(stored) && !tag.Equal(stored.UserID, req.user.UserID) {
		return 0, nil, forbidden("this installation belongs to another user")
	}
	if req.r.URL.Query().Get("forget") == "true" {
		err := g.hub.Store().DeleteInstallation(ctx, stored.InstallationID, hubcore.CondOn(stored))
		if hubcore.CodeOf(err) == hubcore.CodeNotFound {
			err = nil
		}
		return http.StatusNoContent, nil, err
	}
	signedOff := stored.Clone()
	signedOff.PushChannelExpired = true
	if _, err := g.hub.Store().PutInstallation(ctx, signedOff, hubcore.CondOn(stored)); err != nil {
		return 0, nil, err
	}
	g.metrics.registrations.WithLabelValues("signoff").Inc()
	return http.StatusNoContent, nil, nil
}

func mustInput(in policy.Input, err error) policy.Input {
	if err != nil {
		// Encoding hub core types cannot fail; an input that cannot be
		// built is denied by the policy seeing an empty one.
		return policy.Input{}
	}
	return in
}

// newRegistration starts the seeds' register flow: a fresh id, which the
// device then PUTs its handle and tags to.
func (g *Gate) newRegistration(ctx context.Context, req *request) (int, any, error) {
	return http.StatusOK, map[string]string{"id": g.regIDs.issue(time.Now())}, nil
}

// registerBody is what the seeds' RegisterController receives.
type registerBody struct {
	Platform string   `json:"platform"`
	Handle   string   `json:"handle"`
	Tags     []string `json:"tags"`
}

// putRegister stores the device's handle and tags at an issued id as an
// installation (the modern model, with an owner), or answers 410 when the
// id is unknown or expired so the device restarts the flow.
func (g *Gate) putRegister(ctx context.Context, req *request) (int, any, error) {
	var body registerBody
	if err := json.Unmarshal(req.body, &body); err != nil {
		return 0, nil, &hubcore.Error{Code: hubcore.CodeInvalid, Reason: "malformed JSON: " + err.Error()}
	}
	stored, err := g.load(ctx, req.id)
	if err != nil {
		return 0, nil, err
	}
	if stored == nil && !g.regIDs.valid(req.id, time.Now()) {
		return 0, nil, &hubcore.Error{Code: hubcore.CodeGone, Reason: "registration id " + req.id + " is unknown or expired; request a new one"}
	}
	p, err := hubcore.ParsePlatform(body.Platform)
	if err != nil {
		return 0, nil, err
	}
	in := &hubcore.Installation{InstallationID: req.id, Platform: p, Tags: body.Tags}
	if p == hubcore.Browser {
		var ch struct{ Endpoint, P256DH, Auth string }
		if err := json.Unmarshal([]byte(body.Handle), &ch); err != nil {
			return 0, nil, &hubcore.Error{Code: hubcore.CodeInvalid, Field: "handle", Reason: "a browser handle is the subscription JSON {endpoint, p256dh, auth}"}
		}
		in.PushChannel = hubcore.PushChannel{Endpoint: ch.Endpoint, P256DH: ch.P256DH, Auth: ch.Auth}
	} else {
		in.PushChannel = hubcore.PushChannel{Handle: body.Handle}
	}
	return g.writeOver(ctx, req, in, stored, nil)
}

// etag formats a version as the weak ETag the SDKs expect.
func etag(v int64) string { return `W/"` + strconv.FormatInt(v, 10) + `"` }

// Interface guards.
var (
	_ caddy.Provisioner           = (*Gate)(nil)
	_ caddy.CleanerUpper          = (*Gate)(nil)
	_ caddyhttp.MiddlewareHandler = (*Gate)(nil)
)

func (g *Gate) newVerifier(ctx caddy.Context) (tokenVerifier, error) {
	if g.OIDC == nil || g.OIDC.Issuer == "" {
		return nil, fmt.Errorf("pushgate_gate: an oidc issuer is required")
	}
	repl := caddy.NewReplacer()
	cfg := oidcauth.Config{
		Issuer:     repl.ReplaceAll(g.OIDC.Issuer, ""),
		ClientIDs:  g.OIDC.ClientIDs,
		Audiences:  g.OIDC.Audiences,
		UserClaim:  g.OIDC.UserClaim,
		Algorithms: g.OIDC.Algorithms,
	}
	v, err := oidcauth.New(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pushgate_gate: oidc: %v", err)
	}
	return v, nil
}
