package caddymodule

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/fanout"
	"github.com/pushgate/pushgate/hubcore/payload"
	"github.com/pushgate/pushgate/internal/nhwire"
)

func init() {
	caddy.RegisterModule(NHAPI{})
}

// NHAPI is the backend-facing handler: the Notification Hubs data-plane API
// of one hub, wire-compatible with Azure Notification Hubs so that existing
// backends and the official SDKs manage the registry and send unchanged.
// Requests are authenticated with the hub's shared access signature rules
// before anything is looked up.
//
//	PUT|GET|PATCH|DELETE /{hub}/installations/{id}
//	POST   /{hub}/registrationIDs
//	POST   /{hub}/registrations                  GET /{hub}/registrations[?$filter=…&$top=…]
//	PUT|GET|DELETE /{hub}/registrations/{id}     GET /{hub}/tags/{tag}/registrations
//	POST   /{hub}/messages[?test|?direct]        POST /{hub}/messages/$batch
//	GET    /{hub}/messages/{id}
//	POST   /{hub}/schedulednotifications         DELETE /{hub}/schedulednotifications/{id}
type NHAPI struct {
	// Hub names the hub (configured in the pushgate app); it is the {hub}
	// path segment of every URL.
	Hub string `json:"hub"`
	// Rules are the shared access authorization rules. Keys are usually
	// environment placeholders ({env.NH_FULL_KEY}), replaced at provision.
	Rules []NHRule `json:"rules,omitempty"`
	// MaxBodyBytes bounds a send's body (default 64 KiB, the service's
	// message size limit).
	MaxBodyBytes int64 `json:"max_body_bytes,omitempty"`
	// Throttle limits each rule's request rate (default: no limit); a
	// rule's own Throttle overrides it.
	Throttle *NHThrottle `json:"throttle,omitempty"`
	// ImportMaxBytes bounds the body of the x-pushgate/import extension
	// (default 1 GiB): an import is a whole registry, so it has its own
	// limit, far above MaxBodyBytes.
	ImportMaxBytes int64 `json:"import_max_bytes,omitempty"`

	hub    *Hub
	rules  []nhwire.Rule
	now    func() time.Time
	logger *zap.Logger
	// limiter holds the rules' token buckets; nil until setup.
	limiter *nhLimiter
}

// NHRule is one shared access authorization rule. A rule with a primary and
// a secondary key is two rules with the same name.
type NHRule struct {
	Name string `json:"name"`
	Key  string `json:"key"`
	// Rights are Listen, Send and Manage.
	Rights []string `json:"rights"`
	// Throttle overrides the handler's throttle for this rule; a rate of
	// 0 exempts it.
	Throttle *NHThrottle `json:"throttle,omitempty"`
}

// Bounds of request bodies other than sends.
const (
	nhMaxEntryBody = nhwire.MaxEntryBytes
	nhMaxBatchBody = 1 << 20
	nhMaxTrackID   = 128
)

// CaddyModule returns the Caddy module information.
func (NHAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.pushgate_nh",
		New: func() caddy.Module { return new(NHAPI) },
	}
}

// Provision connects the handler to its hub and resolves the rules' keys.
func (n *NHAPI) Provision(ctx caddy.Context) error {
	n.logger = ctx.Logger()
	appIface, err := ctx.App("pushgate")
	if err != nil {
		return fmt.Errorf("pushgate_nh: %v", err)
	}
	h, ok := appIface.(*App).Hub(n.Hub)
	if !ok {
		return fmt.Errorf("pushgate_nh: hub %q is not configured in the pushgate global options", n.Hub)
	}
	return n.setup(h, caddy.NewReplacer())
}

// setup checks the configuration and builds the rules; Provision and the
// tests share it.
func (n *NHAPI) setup(h *Hub, repl *caddy.Replacer) error {
	if n.Hub == "" || strings.Trim(n.Hub, "/") != n.Hub {
		return fmt.Errorf("pushgate_nh: a hub name without leading or trailing slashes is required")
	}
	if n.MaxBodyBytes <= 0 {
		n.MaxBodyBytes = 64 << 10
	}
	if len(n.Rules) == 0 {
		return fmt.Errorf("pushgate_nh: at least one rule is required")
	}
	n.rules = n.rules[:0]
	for _, r := range n.Rules {
		key := repl.ReplaceAll(r.Key, "")
		if r.Name == "" || key == "" {
			return fmt.Errorf("pushgate_nh: rule %q needs a name and a non-empty key", r.Name)
		}
		rights, err := parseRights(r.Rights)
		if err != nil {
			return fmt.Errorf("pushgate_nh: rule %q: %v", r.Name, err)
		}
		n.rules = append(n.rules, nhwire.Rule{Name: r.Name, Key: []byte(key), Rights: rights})
	}
	var err error
	if n.limiter, err = newNHLimiter(n.Throttle, n.Rules); err != nil {
		return fmt.Errorf("pushgate_nh: %v", err)
	}
	n.hub = h
	if n.now == nil {
		n.now = time.Now
	}
	if n.logger == nil {
		n.logger = zap.NewNop()
	}
	return nil
}

func parseRights(names []string) (nhwire.Rights, error) {
	if len(names) == 0 {
		return 0, fmt.Errorf("no rights (want Listen, Send and/or Manage)")
	}
	var r nhwire.Rights
	for _, s := range names {
		switch strings.ToLower(s) {
		case "listen":
			r |= nhwire.Listen
		case "send":
			r |= nhwire.Send
		case "manage":
			r |= nhwire.Manage
		default:
			return 0, fmt.Errorf("unknown right %q (want Listen, Send or Manage)", s)
		}
	}
	return r, nil
}

// nhReq is one API request on its way through the handler.
type nhReq struct {
	w        http.ResponseWriter
	r        *http.Request
	tracking string
	host     string
	version  string // api-version as sent; "" when absent
	query    url.Values
	status   int
}

// nhRoute is a resolved route: the operation (for the rights check) and
// what answers it.
type nhRoute struct {
	op    nhwire.Operation
	serve func(context.Context, *nhReq) error
}

// ServeHTTP answers every request routed to it; it never passes on.
func (n *NHAPI) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	q := r.URL.Query()
	req := &nhReq{w: w, r: r, tracking: trackingID(r), host: r.Host, query: q, version: queryFold(q, "api-version")}
	w.Header().Set("TrackingId", req.tracking)
	w.Header().Set("x-ms-correlation-request-id", req.tracking)
	status := n.serve(req)
	n.logger.Debug("nh request", zap.String("method", r.Method), zap.String("path", r.URL.Path),
		zap.Int("status", status), zap.String("tracking_id", req.tracking))
	return nil
}

// serve authenticates, routes, authorizes and answers; it returns the
// status sent.
func (n *NHAPI) serve(req *nhReq) int {
	r := req.r
	// Authentication comes before anything that depends on what exists.
	auth, ok := n.credential(req)
	if !ok {
		return n.fail(req, http.StatusUnauthorized, "MissingToken: The authorization header was not provided or was provided more than once.")
	}
	u := &url.URL{Scheme: "https", Host: r.Host, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	if r.TLS == nil {
		u.Scheme = "http"
	}
	rule, err := nhwire.Verify(auth, u, n.rules, n.now())
	if err != nil {
		var se *nhwire.SASError
		detail := "InvalidSignature: The token has an invalid signature."
		if errors.As(err, &se) {
			detail = se.ServiceDetail()
			n.logger.Debug("sas refused", zap.String("reason", string(se.Reason)), zap.String("detail", se.Detail))
		}
		return n.fail(req, http.StatusUnauthorized, detail)
	}
	if status := n.throttle(req, rule.Name); status != 0 {
		return status
	}
	rest, ok := cutHub(r.URL.Path, n.Hub)
	if !ok {
		return n.fail(req, http.StatusNotFound, "No service is hosted at the specified address: there is no hub at "+r.URL.Path+".")
	}
	route, allow := n.route(r.Method, rest, req.query)
	if route == nil {
		if allow != "" {
			req.w.Header().Set("Allow", allow)
			return n.fail(req, http.StatusMethodNotAllowed, r.Method+" is not allowed on "+r.URL.Path+".")
		}
		return n.fail(req, http.StatusNotFound, "No service is hosted at the specified address: "+r.URL.Path+".")
	}
	if need := nhwire.RightsFor(route.op); !rule.Rights.Has(need) {
		return n.fail(req, n.claimStatus(req), need.String()+" claim is required for this operation.")
	}
	if err := route.serve(r.Context(), req); err != nil {
		return n.failErr(req, err)
	}
	return req.status
}

// claimStatus is the status of a missing right: the service answers 401
// for api-versions before 2020-06 and 403 from 2020-06 on (reference §2.4
// step 7, both observed); an absent api-version is read as the current one.
func (n *NHAPI) claimStatus(req *nhReq) int {
	if req.version != "" && req.version < "2020-06" {
		return http.StatusUnauthorized
	}
	return http.StatusForbidden
}

// cutHub returns the path after /{hub}, without a trailing slash, when the
// path is under the hub (compared case-insensitively, as the service does).
func cutHub(path, hub string) (string, bool) {
	p := "/" + hub
	if len(path) < len(p) || !strings.EqualFold(path[:len(p)], p) {
		return "", false
	}
	rest := path[len(p):]
	if rest != "" && rest[0] != '/' {
		return "", false
	}
	rest = strings.TrimSuffix(strings.TrimPrefix(rest, "/"), "/")
	return rest, true
}

// route resolves a method and path (below the hub) to an operation; when
// the path exists but not with this method it returns the allowed methods.
func (n *NHAPI) route(method, rest string, q url.Values) (*nhRoute, string) {
	seg := strings.Split(rest, "/")
	if rest == "" {
		return nil, ""
	}
	coll := strings.ToLower(seg[0])
	one := func(m string, op nhwire.Operation, f func(context.Context, *nhReq) error) map[string]nhRoute {
		return map[string]nhRoute{m: {op, f}}
	}
	var routes map[string]nhRoute
	switch {
	case coll == "installations" && len(seg) == 2:
		id := seg[1]
		routes = map[string]nhRoute{
			http.MethodPut:    {nhwire.OpPutInstallation, func(ctx context.Context, req *nhReq) error { return n.putInstallation(ctx, req, id) }},
			http.MethodGet:    {nhwire.OpReadInstallation, func(ctx context.Context, req *nhReq) error { return n.getInstallation(ctx, req, id) }},
			http.MethodPatch:  {nhwire.OpPatchInstallation, func(ctx context.Context, req *nhReq) error { return n.patchInstallation(ctx, req, id) }},
			http.MethodDelete: {nhwire.OpDeleteInstallation, func(ctx context.Context, req *nhReq) error { return n.deleteInstallation(ctx, req, id) }},
		}
	case coll == "registrationids" && len(seg) == 1:
		routes = one(http.MethodPost, nhwire.OpCreateRegistrationID, n.createRegistrationID)
	case coll == "registrations" && len(seg) == 1:
		listOp := nhwire.OpListRegistrations
		if queryFold(q, "$filter") != "" {
			listOp = nhwire.OpListRegistrationsByChannel
		}
		routes = map[string]nhRoute{
			http.MethodPost: {nhwire.OpCreateRegistration, n.createRegistration},
			http.MethodGet:  {listOp, n.listRegistrations},
		}
	case coll == "registrations" && len(seg) == 2:
		id := seg[1]
		routes = map[string]nhRoute{
			http.MethodPut:    {nhwire.OpUpsertRegistration, func(ctx context.Context, req *nhReq) error { return n.putRegistration(ctx, req, id) }},
			http.MethodGet:    {nhwire.OpReadRegistration, func(ctx context.Context, req *nhReq) error { return n.getRegistration(ctx, req, id) }},
			http.MethodDelete: {nhwire.OpDeleteRegistration, func(ctx context.Context, req *nhReq) error { return n.deleteRegistration(ctx, req, id) }},
		}
	case coll == "tags" && len(seg) == 3 && strings.EqualFold(seg[2], "registrations"):
		t := seg[1]
		routes = one(http.MethodGet, nhwire.OpListRegistrationsByTag, func(ctx context.Context, req *nhReq) error { return n.listByTag(ctx, req, t) })
	case coll == "messages" && len(seg) == 1:
		routes = one(http.MethodPost, nhwire.OpSend, n.send)
	case coll == "messages" && len(seg) == 2 && seg[1] == "$batch":
		routes = one(http.MethodPost, nhwire.OpSend, n.sendBatch)
	case coll == "messages" && len(seg) == 2:
		id := seg[1]
		routes = one(http.MethodGet, nhwire.OpNotificationDetails, func(ctx context.Context, req *nhReq) error { return n.details(ctx, req, id) })
	case coll == "schedulednotifications" && len(seg) == 1:
		routes = one(http.MethodPost, nhwire.OpSchedule, n.schedule)
	case coll == "schedulednotifications" && len(seg) == 2:
		id := seg[1]
		routes = one(http.MethodDelete, nhwire.OpCancelScheduled, func(ctx context.Context, req *nhReq) error { return n.cancelScheduled(ctx, req, id) })
	case coll == "feedbackcontainer" && len(seg) == 1:
		routes = one(http.MethodGet, nhwire.OpFeedbackContainer, n.feedbackContainer)
	case coll == extSegment && len(seg) == 2:
		routes = n.extRoutes(seg[1])
	default:
		return nil, ""
	}
	if rt, ok := routes[method]; ok {
		return &rt, ""
	}
	allow := make([]string, 0, len(routes))
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		if _, ok := routes[m]; ok {
			allow = append(allow, m)
		}
	}
	return nil, strings.Join(allow, ", ")
}

// --- responses ---

// fail answers an error with the service's body.
func (n *NHAPI) fail(req *nhReq, status int, text string) int {
	body := nhwire.EncodeError(status, nhwire.ErrorDetail(text, req.tracking, n.now()))
	h := req.w.Header()
	h.Set("Content-Type", nhwire.ContentTypeXML)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	req.w.WriteHeader(status)
	_, _ = req.w.Write(body)
	return status
}

// failErr answers a hub core error with the status statusOf gives it; a
// server error's cause is logged, not shown.
func (n *NHAPI) failErr(req *nhReq, err error) int {
	status := statusOf(err)
	var tl *bodyTooLarge
	if errors.As(err, &tl) {
		return n.fail(req, http.StatusRequestEntityTooLarge, tl.text)
	}
	if status >= 500 {
		n.logger.Error("nh request failed", zap.String("path", req.r.URL.Path), zap.String("tracking_id", req.tracking), zap.Error(err))
		text := "The server encountered an internal error. Please retry the request."
		if status == http.StatusServiceUnavailable {
			text = "The service is temporarily unavailable. Please retry the request."
		}
		setRetryAfter(req.w, status) // the SDKs' retry policies honour it (reference §1.5)
		return n.fail(req, status, text)
	}
	var he *hubcore.Error
	text := err.Error()
	if errors.As(err, &he) {
		text = he.Error()
		if he.Code == hubcore.CodeConflict && he.Current > 0 {
			req.w.Header().Set("ETag", nhwire.FormatETag(he.Current))
		}
	}
	return n.fail(req, status, text)
}

func (req *nhReq) apiVersion() string {
	if req.version == "" {
		return "2020-06"
	}
	return req.version
}

// hubURL is https://{host}/{hub}/{path} as the client called it.
func (n *NHAPI) hubURL(req *nhReq, path ...string) string {
	parts := make([]string, 0, len(path)+1)
	parts = append(parts, n.Hub)
	for _, p := range path {
		parts = append(parts, url.PathEscape(p))
	}
	return "https://" + req.host + "/" + strings.Join(parts, "/")
}

func (n *NHAPI) withVersion(req *nhReq, u string) string {
	return u + "?api-version=" + url.QueryEscape(req.apiVersion())
}

func (req *nhReq) write(status int, contentType string, body []byte) error {
	h := req.w.Header()
	if contentType != "" {
		h.Set("Content-Type", contentType)
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	req.w.WriteHeader(status)
	req.status = status
	_, _ = req.w.Write(body)
	return nil
}

// bodyTooLarge is a body over its bound: 413, with the service's text.
type bodyTooLarge struct{ text string }

func (e *bodyTooLarge) Error() string { return e.text }

// readBody reads the request body up to max bytes.
func (req *nhReq) readBody(max int64, tooLarge string) ([]byte, error) {
	if req.r.Body == nil {
		return nil, nil
	}
	b, err := io.ReadAll(http.MaxBytesReader(req.w, req.r.Body, max))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, &bodyTooLarge{tooLarge}
		}
		return nil, &hubcore.Error{Code: hubcore.CodeInvalid, Reason: "reading the body: " + err.Error()}
	}
	return b, nil
}

// --- installations ---

func (n *NHAPI) putInstallation(ctx context.Context, req *nhReq, id string) error {
	if err := hubcore.ValidateInstallationID(id); err != nil {
		return err
	}
	body, err := req.readBody(nhMaxEntryBody, "The installation is larger than 1 MB.")
	if err != nil {
		return err
	}
	in, err := hubcore.DecodeInstallation(body)
	if err != nil {
		return err
	}
	if in.InstallationID == "" {
		in.InstallationID = id
	}
	if hubcore.InstallationKey(in.InstallationID) != hubcore.InstallationKey(id) {
		return &hubcore.Error{Code: hubcore.CodeInvalid, Field: "installationId", Reason: "installationId must match the URL"}
	}
	if _, err := n.hub.Core.PutInstallation(ctx, in, hubcore.Always); err != nil {
		return err
	}
	req.w.Header().Set("Content-Location", n.hubURL(req, "installations", id))
	return req.write(http.StatusOK, "", nil)
}

func installationNotFound() error {
	return &hubcore.Error{Code: hubcore.CodeNotFound, Reason: "Installation not found"}
}

func (n *NHAPI) getInstallation(ctx context.Context, req *nhReq, id string) error {
	in, err := n.hub.Core.Store().GetInstallation(ctx, id)
	if hubcore.CodeOf(err) == hubcore.CodeNotFound {
		return installationNotFound()
	}
	if err != nil {
		return err
	}
	b, err := in.MarshalJSON()
	if err != nil {
		return err
	}
	req.w.Header().Set("Content-Location", n.hubURL(req, "installations", in.InstallationID))
	return req.write(http.StatusOK, "application/json; charset=utf-8", b)
}

func (n *NHAPI) patchInstallation(ctx context.Context, req *nhReq, id string) error {
	body, err := req.readBody(nhMaxEntryBody, "The patch is larger than 1 MB.")
	if err != nil {
		return err
	}
	ops, err := hubcore.ParsePatch(body)
	if err != nil {
		return err
	}
	if _, err := n.hub.Core.PatchInstallation(ctx, id, ops, hubcore.Cond{}); err != nil {
		if hubcore.CodeOf(err) == hubcore.CodeNotFound {
			return installationNotFound()
		}
		return err
	}
	return req.write(http.StatusOK, "", nil)
}

func (n *NHAPI) deleteInstallation(ctx context.Context, req *nhReq, id string) error {
	err := n.hub.Core.Store().DeleteInstallation(ctx, id, hubcore.Always)
	if err != nil && hubcore.CodeOf(err) != hubcore.CodeNotFound {
		return err
	}
	return req.write(http.StatusNoContent, "", nil)
}

// --- registrations ---

func (n *NHAPI) createRegistrationID(ctx context.Context, req *nhReq) error {
	id, err := n.hub.Core.Store().NewRegistrationID(ctx)
	if err != nil {
		return err
	}
	// .NET requires exactly /{hub}/registrationids/{id}; JS takes the
	// fourth path segment (reference §4.1, §14.3).
	req.w.Header().Set("Location", n.withVersion(req, n.hubURL(req, "registrationids", id)))
	return req.write(http.StatusCreated, nhwire.ContentTypeXML, nil)
}

func (n *NHAPI) readEntry(req *nhReq) (*hubcore.Registration, error) {
	body, err := req.readBody(nhMaxEntryBody, "The registration is larger than 1 MB.")
	if err != nil {
		return nil, err
	}
	return nhwire.DecodeEntry(body)
}

func (n *NHAPI) createRegistration(ctx context.Context, req *nhReq) error {
	reg, err := n.readEntry(req)
	if err != nil {
		return err
	}
	if reg.RegistrationID, err = n.hub.Core.Store().NewRegistrationID(ctx); err != nil {
		return err
	}
	reg.Version, reg.ExpirationTime = 0, time.Time{}
	saved, err := n.hub.Core.PutRegistration(ctx, reg, hubcore.Cond{Absent: true})
	if err != nil {
		return err
	}
	return n.writeEntry(req, saved)
}

// ifMatch reads If-Match: absent is unconditional, * requires the entry,
// "n" / W/"n" requires version n.
func ifMatch(r *http.Request) (hubcore.Cond, bool, error) {
	v := strings.TrimSpace(r.Header.Get("If-Match"))
	switch v {
	case "":
		return hubcore.Always, false, nil
	case "*":
		return hubcore.Cond{Exists: true}, true, nil
	}
	ver, ok := nhwire.ParseETag(v)
	if !ok || ver <= 0 {
		return hubcore.Cond{}, false, &hubcore.Error{Code: hubcore.CodeInvalid, Field: "If-Match", Reason: fmt.Sprintf("%q is not an ETag (want *, \"n\" or W/\"n\")", v)}
	}
	return hubcore.Cond{Version: ver}, true, nil
}

func registrationNotFound(id string) error {
	return &hubcore.Error{Code: hubcore.CodeNotFound, Reason: "Registration " + id + " not found"}
}

func (n *NHAPI) putRegistration(ctx context.Context, req *nhReq, id string) error {
	if err := hubcore.ValidateRegistrationID(id); err != nil {
		return err
	}
	cond, conditional, err := ifMatch(req.r)
	if err != nil {
		return err
	}
	reg, err := n.readEntry(req)
	if err != nil {
		return err
	}
	reg.RegistrationID, reg.Version, reg.ExpirationTime = id, 0, time.Time{}
	saved, err := n.hub.Core.PutRegistration(ctx, reg, cond)
	if err != nil {
		var he *hubcore.Error
		if conditional && errors.As(err, &he) && he.Code == hubcore.CodeConflict && he.Current == 0 {
			return registrationNotFound(id)
		}
		return err
	}
	return n.writeEntry(req, saved)
}

func (n *NHAPI) getRegistration(ctx context.Context, req *nhReq, id string) error {
	reg, err := n.hub.Core.Store().GetRegistration(ctx, id)
	if hubcore.CodeOf(err) == hubcore.CodeNotFound {
		return registrationNotFound(id)
	}
	if err != nil {
		return err
	}
	return n.writeEntry(req, reg)
}

func (n *NHAPI) deleteRegistration(ctx context.Context, req *nhReq, id string) error {
	cond, _, err := ifMatch(req.r)
	if err != nil {
		return err
	}
	if err := n.hub.Core.Store().DeleteRegistration(ctx, id, cond); err != nil {
		if hubcore.CodeOf(err) == hubcore.CodeNotFound {
			return registrationNotFound(id)
		}
		return err
	}
	return req.write(http.StatusOK, "", nil)
}

func (n *NHAPI) writeEntry(req *nhReq, reg *hubcore.Registration) error {
	coll := n.hubURL(req, "registrations")
	b, err := nhwire.EncodeEntry(reg, nhwire.EntryOptions{CollectionURL: coll, APIVersion: req.apiVersion(), Updated: n.now()})
	if err != nil {
		return err
	}
	h := req.w.Header()
	h.Set("ETag", nhwire.FormatETag(reg.Version))
	h.Set("Content-Location", n.withVersion(req, coll+"/"+url.PathEscape(reg.RegistrationID)))
	return req.write(http.StatusOK, nhwire.ContentTypeEntry, b)
}

// page reads $top and the continuation token (query parameter in any
// case, or the x-ms-continuationtoken header).
func page(req *nhReq) (hubcore.PageRequest, error) {
	var p hubcore.PageRequest
	if v := queryFold(req.query, "$top"); v != "" {
		top, err := strconv.Atoi(v)
		if err != nil || top < 1 {
			return p, &hubcore.Error{Code: hubcore.CodeInvalid, Field: "$top", Reason: fmt.Sprintf("%q is not a positive integer", v)}
		}
		p.Limit = min(top, hubcore.MaxPageSize)
	}
	p.Cursor = queryFold(req.query, "continuationtoken")
	if p.Cursor == "" {
		if h := req.r.Header.Get(nhwire.ContinuationHeader); h != "" {
			if d, err := url.QueryUnescape(h); err == nil {
				p.Cursor = d
			} else {
				p.Cursor = h
			}
		}
	}
	return p, nil
}

// channelFilter is a parsed $filter: one handle, perhaps narrowed to a
// platform, and extra fields (browser keys, Baidu user) to match exactly.
type channelFilter struct {
	q     hubcore.ListQuery
	extra map[string]string
}

// filterFields maps the $filter properties the SDKs use (reference §4.5)
// to the platform they narrow to ("" for ChannelUri: any handle).
var filterFields = map[string]hubcore.Platform{
	"channeluri":           "",
	"devicetoken":          hubcore.APNS,
	"gcmregistrationid":    hubcore.GCM,
	"fcmregistrationid":    hubcore.GCM,
	"fcmv1registrationid":  hubcore.FCMV1,
	"admregistrationid":    hubcore.ADM,
	"baiduchannelid":       hubcore.Baidu,
	"xiaomiregistrationid": hubcore.Xiaomi,
	"endpoint":             hubcore.Browser,
}

func parseFilter(s string) (*channelFilter, error) {
	bad := func(why string) error {
		return &hubcore.Error{Code: hubcore.CodeInvalid, Field: "$filter", Reason: "Notification hubs do not support this query: " + why}
	}
	if len(s) > 8<<10 {
		return nil, bad("too long")
	}
	f := &channelFilter{extra: map[string]string{}}
	for _, clause := range splitAnd(s) {
		name, val, ok := strings.Cut(strings.TrimSpace(clause), " ")
		if !ok {
			return nil, bad(fmt.Sprintf("%q is not <property> eq '<value>'", clause))
		}
		op, val, ok := strings.Cut(strings.TrimSpace(val), " ")
		if !ok || !strings.EqualFold(op, "eq") {
			return nil, bad(fmt.Sprintf("%q is not <property> eq '<value>'", clause))
		}
		// Lenient about quotes: the JS client's Baidu filter lacks the
		// opening one.
		val = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(val), "'"), "'")
		val = strings.ReplaceAll(val, "''", "'")
		lower := strings.ToLower(val)
		if strings.HasPrefix(lower, "https%3a") || strings.HasPrefix(lower, "http%3a") {
			if d, err := url.QueryUnescape(val); err == nil {
				val = d
			}
		}
		key := strings.ToLower(name)
		if p, ok := filterFields[key]; ok {
			if f.q.Handle != "" {
				return nil, bad("more than one handle property")
			}
			f.q.Handle, f.q.Platform = val, p
			continue
		}
		switch key {
		case "p256dh", "auth", "baiduuserid":
			f.extra[key] = val
		default:
			return nil, bad(fmt.Sprintf("unknown property %q", name))
		}
	}
	if f.q.Handle == "" {
		return nil, bad("no handle property (ChannelUri, DeviceToken, …)")
	}
	return f, nil
}

// splitAnd splits a filter on " and " outside quotes.
func splitAnd(s string) []string {
	var out []string
	inQuote, start := false, 0
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\'':
			inQuote = !inQuote
		case !inQuote && i+5 <= len(s) && strings.EqualFold(s[i:i+5], " and "):
			out = append(out, s[start:i])
			start = i + 5
			i += 4
		}
	}
	return append(out, s[start:])
}

func (f *channelFilter) match(r *hubcore.Registration) bool {
	for k, v := range f.extra {
		var got string
		switch k {
		case "p256dh":
			got = r.PushChannel.P256DH
		case "auth":
			got = r.PushChannel.Auth
		case "baiduuserid":
			got = r.PushChannel.BaiduUserID
		}
		if got != v {
			return false
		}
	}
	return true
}

func (n *NHAPI) listRegistrations(ctx context.Context, req *nhReq) error {
	var f *channelFilter
	if s := queryFold(req.query, "$filter"); s != "" {
		var err error
		if f, err = parseFilter(s); err != nil {
			return err
		}
	}
	q := hubcore.ListQuery{}
	if f != nil {
		q = f.q
	}
	return n.list(ctx, req, q, f, n.hubURL(req, "registrations"))
}

func (n *NHAPI) listByTag(ctx context.Context, req *nhReq, t string) error {
	if t == "" {
		return &hubcore.Error{Code: hubcore.CodeInvalid, Field: "tag", Reason: "the tag is empty"}
	}
	return n.list(ctx, req, hubcore.ListQuery{Tag: t}, nil, n.hubURL(req, "tags", t, "registrations"))
}

func (n *NHAPI) list(ctx context.Context, req *nhReq, q hubcore.ListQuery, f *channelFilter, coll string) error {
	pr, err := page(req)
	if err != nil {
		return err
	}
	pg, err := n.hub.Core.Store().ListRegistrations(ctx, q, pr)
	if err != nil {
		return err
	}
	regs := make([]hubcore.Registration, 0, len(pg.Items))
	for _, r := range pg.Items {
		if f == nil || f.match(r) {
			regs = append(regs, *r)
		}
	}
	self := coll
	if req.r.URL.RawQuery != "" {
		self += "?" + req.r.URL.RawQuery
	}
	now := n.now()
	b, err := nhwire.EncodeFeed(regs, nhwire.FeedOptions{SelfURL: self, Updated: now, ContinuationToken: pg.Next,
		Entry: nhwire.EntryOptions{CollectionURL: coll, APIVersion: req.apiVersion(), Updated: now}})
	if err != nil {
		return err
	}
	if pg.Next != "" {
		req.w.Header().Set(nhwire.ContinuationHeader, url.QueryEscape(pg.Next))
	}
	return req.write(http.StatusOK, nhwire.ContentTypeFeed, b)
}

// --- sends ---

// tooLargeText is the service's 413 detail at the default limit.
func (n *NHAPI) tooLargeText() string {
	if n.MaxBodyBytes == 64<<10 {
		return "message size cannot be over 64 Kb"
	}
	return fmt.Sprintf("message size cannot be over %d bytes", n.MaxBodyBytes)
}

// readSend reads a send's headers and body into a fanout send.
func (n *NHAPI) readSend(req *nhReq) (fanout.Send, *nhwire.SendHeaders, error) {
	sh, err := nhwire.ParseSendHeaders(req.r.Header)
	if err != nil {
		return fanout.Send{}, nil, err
	}
	body, err := req.readBody(n.MaxBodyBytes, n.tooLargeText())
	if err != nil {
		return fanout.Send{}, nil, err
	}
	s := fanout.Send{Notification: hubcore.Notification{Format: sh.Format, Body: body, Headers: sh.Headers}}
	switch {
	case sh.DeviceHandle != "":
		ch := hubcore.PushChannel{Handle: sh.DeviceHandle}
		if sh.Format == payload.Browser {
			ch = hubcore.PushChannel{Endpoint: sh.DeviceHandle, P256DH: sh.P256DH, Auth: sh.Auth}
		}
		s.Handles = []hubcore.PushChannel{ch}
	case hasQueryFold(req.query, "direct"):
		return s, nil, &hubcore.Error{Code: hubcore.CodeInvalid, Field: nhwire.HeaderDeviceHandle, Reason: "a direct send needs the " + nhwire.HeaderDeviceHandle + " header"}
	case !sh.HasTags:
		s.Broadcast = true
	case strings.TrimSpace(sh.Tags) != "":
		e, err := n.hub.Core.ParseExpression(sh.Tags)
		if err != nil {
			return s, nil, retargetField(err, nhwire.HeaderTags)
		}
		s.Notification.Expr, s.ExprSource = e, sh.Tags
	}
	// An empty tag header stays an audience of nobody: NoTargetFound.
	return s, sh, nil
}

// retargetField names the header a hub core error came from.
func retargetField(err error, field string) error {
	var he *hubcore.Error
	if errors.As(err, &he) {
		c := *he
		c.Field = field
		return &c
	}
	return err
}

func (n *NHAPI) send(ctx context.Context, req *nhReq) error {
	s, _, err := n.readSend(req)
	if err != nil {
		return err
	}
	if hasQueryFold(req.query, "test") && len(s.Handles) == 0 {
		res, err := n.hub.Engine.TestSend(ctx, s)
		if err != nil {
			return err
		}
		return req.write(http.StatusCreated, nhwire.ContentTypeXML, nhwire.EncodeNotificationOutcome(res))
	}
	return n.submit(ctx, req, s, "messages")
}

func (n *NHAPI) submit(ctx context.Context, req *nhReq, s fanout.Send, coll string) error {
	id, err := n.hub.Engine.Submit(ctx, s)
	if err != nil {
		return err
	}
	loc := n.withVersion(req, n.hubURL(req, coll, id))
	if len(s.Handles) > 0 && coll == "messages" {
		loc += "&direct"
	}
	req.w.Header().Set("Location", loc)
	return req.write(http.StatusCreated, nhwire.ContentTypeXML, nil)
}

func (n *NHAPI) sendBatch(ctx context.Context, req *nhReq) error {
	sh, err := nhwire.ParseSendHeaders(req.r.Header)
	if err != nil {
		return err
	}
	if sh.Format == payload.Template {
		return &hubcore.Error{Code: hubcore.CodeInvalid, Field: nhwire.HeaderFormat, Reason: "a direct batch send needs a native format, not template"}
	}
	if sh.Format == payload.Browser {
		return &hubcore.Error{Code: hubcore.CodeUnsupported, Field: nhwire.HeaderFormat, Reason: "a direct batch send to browsers is not supported (their subscriptions need keys); send to each directly"}
	}
	lim := nhwire.BatchLimits{MaxBody: nhMaxBatchBody, MaxNotification: int(n.MaxBodyBytes)}
	b, err := nhwire.ParseBatch(req.r.Header.Get("Content-Type"), http.MaxBytesReader(req.w, req.r.Body, nhMaxBatchBody+1), lim)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &bodyTooLarge{"The batch is larger than 1 MB."}
		}
		// Oversize is 413 like every other body, not 400; too many
		// handles stays 400.
		if he := (*hubcore.Error)(nil); errors.As(err, &he) && he.Code == hubcore.CodeLimit {
			switch he.Field {
			case "$batch":
				return &bodyTooLarge{"The batch is larger than 1 MB."}
			case "notification":
				return &bodyTooLarge{n.tooLargeText()}
			}
		}
		return err
	}
	if len(b.Devices) == 0 {
		return &hubcore.Error{Code: hubcore.CodeInvalid, Field: "devices", Reason: "the devices part lists no handles"}
	}
	s := fanout.Send{Notification: hubcore.Notification{Format: sh.Format, Body: b.Notification, Headers: sh.Headers}}
	for _, d := range b.Devices {
		s.Handles = append(s.Handles, hubcore.PushChannel{Handle: d})
	}
	return n.submit(ctx, req, s, "messages")
}

func (n *NHAPI) schedule(ctx context.Context, req *nhReq) error {
	s, sh, err := n.readSend(req)
	if err != nil {
		return err
	}
	if sh.ScheduleTime.IsZero() {
		return &hubcore.Error{Code: hubcore.CodeInvalid, Field: nhwire.HeaderScheduleTime, Reason: "a scheduled send needs the " + nhwire.HeaderScheduleTime + " header"}
	}
	s.At = sh.ScheduleTime
	return n.submit(ctx, req, s, "schedulednotifications")
}

func (n *NHAPI) cancelScheduled(ctx context.Context, req *nhReq, id string) error {
	if err := n.hub.Engine.Cancel(ctx, id); err != nil {
		switch hubcore.CodeOf(err) {
		case hubcore.CodeNotFound, hubcore.CodeConflict:
			return &hubcore.Error{Code: hubcore.CodeNotFound, Reason: "no pending scheduled notification " + id}
		}
		return err
	}
	return req.write(http.StatusOK, "", nil)
}

func (n *NHAPI) details(ctx context.Context, req *nhReq, id string) error {
	o, err := n.hub.Engine.Outcome(ctx, id)
	if hubcore.CodeOf(err) == hubcore.CodeNotFound || (err == nil && o.State == fanout.Scheduled) {
		// Still scheduled is 404 too: .NET has no Scheduled state and
		// would fail to read the document (reference §5.7).
		return &hubcore.Error{Code: hubcore.CodeNotFound, Reason: "Notification " + id + " not found"}
	}
	if err != nil {
		return err
	}
	loc := n.withVersion(req, n.hubURL(req, "messages", id))
	return req.write(http.StatusOK, nhwire.ContentTypeXML, nhwire.EncodeNotificationDetails(o, nhwire.DetailsOptions{Location: loc}))
}

// --- helpers ---

// queryFold returns the first value of a query parameter named in any
// case (Java sends ContinuationToken, .NET continuationtoken).
func queryFold(q url.Values, name string) string {
	if v, ok := q[name]; ok && len(v) > 0 {
		return v[0]
	}
	for k, v := range q {
		if strings.EqualFold(k, name) && len(v) > 0 {
			return v[0]
		}
	}
	return ""
}

// hasQueryFold reports a flag's presence, bare (&test) or with a value
// (test=true); an explicit false turns it off.
func hasQueryFold(q url.Values, name string) bool {
	for k, v := range q {
		if strings.EqualFold(k, name) {
			return len(v) == 0 || !strings.EqualFold(v[0], "false")
		}
	}
	return false
}

// trackingID echoes the client's TrackingId when it is a sane token, and
// otherwise makes a random one in the GUID shape the service uses.
func trackingID(r *http.Request) string {
	if v := r.Header.Get("TrackingId"); v != "" && len(v) <= nhMaxTrackID && isToken(v) {
		return v
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*NHAPI)(nil)
	_ caddyhttp.MiddlewareHandler = (*NHAPI)(nil)
)
