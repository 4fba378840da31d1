package caddymodule

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/payload"
	"github.com/pushgate/pushgate/hubcore/tag"
	"github.com/pushgate/pushgate/hubcore/tagexpr"
	"github.com/pushgate/pushgate/internal/nhwire"
)

// pushgate's extensions of the Notification Hubs API live under
// /{hub}/x-pushgate/: no path of the service starts with "x-", so a future
// service path cannot collide with them. Every one needs Manage except the
// feedback listing, which needs what its container URL needed (Send).
//
//	GET      /{hub}/x-pushgate/installations?tag=…|userId=…[&platform=…][&$top=…][&continuationtoken=…]
//	GET|POST /{hub}/x-pushgate/audience[?expression=…&format=…]   (POST: {"expression","format"})
//	POST     /{hub}/x-pushgate/tags                               {"expression","add":[…],"remove":[…]}
//	GET      /{hub}/x-pushgate/export                             (NDJSON)
//	POST     /{hub}/x-pushgate/import                             (NDJSON)
//	GET      /{hub}/feedbackcontainer                             (the service's route: a URL to the next one)
//	GET      /{hub}/x-pushgate/feedback[?$top=…&continuationtoken=…]
const (
	extSegment = "x-pushgate"
	// nhExtMaxBody bounds the JSON bodies of audience and tags: an
	// expression is at most 16 KiB and the tag lists a few KiB.
	nhExtMaxBody = 1 << 20
	// nhDefaultImportMax is the import body limit when ImportMaxBytes is
	// unset: about three million installations of a typical size, far
	// above max_body because an import is a whole registry.
	nhDefaultImportMax = 1 << 30
	// nhImportMaxLine matches the stores' own bound on one NDJSON line.
	nhImportMaxLine = 16 << 20
	// feedbackTokenParam carries the SAS token of a feedback container
	// URL. It is read on the feedback listing only.
	feedbackTokenParam = "sas"
	// feedbackURLTTL is how long a feedback container URL works.
	feedbackURLTTL = time.Hour
)

// extRoutes are the routes of /{hub}/x-pushgate/{name}; nil for an unknown
// name.
func (n *NHAPI) extRoutes(name string) map[string]nhRoute {
	switch strings.ToLower(name) {
	case "installations":
		return map[string]nhRoute{http.MethodGet: {nhwire.OpListInstallations, n.extListInstallations}}
	case "audience":
		r := nhRoute{nhwire.OpAudience, n.extAudience}
		return map[string]nhRoute{http.MethodGet: r, http.MethodPost: r}
	case "tags":
		return map[string]nhRoute{http.MethodPost: {nhwire.OpEditTags, n.extEditTags}}
	case "export":
		return map[string]nhRoute{http.MethodGet: {nhwire.OpExport, n.extExport}}
	case "import":
		return map[string]nhRoute{http.MethodPost: {nhwire.OpImport, n.extImport}}
	case "feedback":
		return map[string]nhRoute{http.MethodGet: {nhwire.OpFeedbackList, n.extFeedback}}
	}
	return nil
}

// credential returns the SAS token a request carries: its one
// Authorization header or, only on GET of the feedback listing and only
// when there is no such header, the token of a feedback container URL in
// the query. Other routes never look at the query, so a container URL
// leaked from a log opens nothing but the feedback.
func (n *NHAPI) credential(req *nhReq) (string, bool) {
	switch h := req.r.Header.Values("Authorization"); len(h) {
	case 0:
	case 1:
		return h[0], true
	default:
		return "", false
	}
	if req.r.Method != http.MethodGet {
		return "", false
	}
	rest, ok := cutHub(req.r.URL.Path, n.Hub)
	if !ok || !strings.EqualFold(rest, extSegment+"/feedback") {
		return "", false
	}
	v := req.query[feedbackTokenParam]
	if len(v) != 1 || v[0] == "" {
		return "", false
	}
	return v[0], true
}

// requestRule is the rule that signed an already authenticated request.
func (n *NHAPI) requestRule(req *nhReq) (*nhwire.Rule, error) {
	auth, _ := n.credential(req)
	u := &url.URL{Scheme: "https", Host: req.r.Host, Path: req.r.URL.Path, RawPath: req.r.URL.RawPath}
	rule, err := nhwire.Verify(auth, u, n.rules, n.now())
	if err != nil {
		// serve verified the same token a moment ago.
		return nil, fmt.Errorf("re-verifying the request's token: %w", err)
	}
	return rule, nil
}

// --- the feedback container ---

// feedbackContainer answers the service's "feedback container URL" with a
// capability URL into this API instead of a storage container: the
// feedback listing with a SAS token, signed with the key that signed this
// request, valid for an hour and only for that listing's URL (the token's
// resource). Rotating that key revokes the URL.
func (n *NHAPI) feedbackContainer(_ context.Context, req *nhReq) error {
	rule, err := n.requestRule(req)
	if err != nil {
		return err
	}
	resource := n.hubURL(req, extSegment, "feedback")
	tok := nhwire.Sign(resource, rule.Name, rule.Key, n.now().Add(feedbackURLTTL))
	u := resource + "?" + feedbackTokenParam + "=" + url.QueryEscape(tok)
	req.w.Header().Set("Cache-Control", "no-store")
	return req.write(http.StatusOK, "text/plain; charset=utf-8", []byte(u))
}

// extFeedback lists the PNS feedback as the container's blobs hold it: a
// sequence of PnsFeedback documents, one per line, oldest first.
func (n *NHAPI) extFeedback(ctx context.Context, req *nhReq) error {
	p, err := extPage(req)
	if err != nil {
		return err
	}
	evs, next, err := n.hub.Engine.Feedback(ctx, p.Cursor, p.Limit)
	if err != nil {
		return retargetInvalid(err, "continuationtoken")
	}
	var b bytes.Buffer
	for _, ev := range evs {
		b.Write(nhwire.EncodePnsFeedback(ev))
		b.WriteByte('\n')
	}
	if next != "" {
		req.w.Header().Set(nhwire.ContinuationHeader, url.QueryEscape(next))
	}
	req.w.Header().Set("Cache-Control", "no-store")
	return req.write(http.StatusOK, "application/xml; charset=utf-8", b.Bytes())
}

// --- listing installations ---

// extPage is page() with $top held to 1..MaxPageSize instead of clamped:
// the extensions are new, so nothing depends on a silent clamp.
func extPage(req *nhReq) (hubcore.PageRequest, error) {
	p, err := page(req)
	if err != nil {
		return p, err
	}
	if v := queryFold(req.query, "$top"); v != "" {
		if top, _ := strconv.Atoi(v); top > hubcore.MaxPageSize {
			return p, &hubcore.Error{Code: hubcore.CodeLimit, Field: "$top", Reason: fmt.Sprintf("%s is over the largest page, %d", v, hubcore.MaxPageSize)}
		}
	}
	return p, nil
}

// retargetInvalid names the parameter a store's CodeInvalid came from
// (a cursor the store calls "cursor" is our continuationtoken).
func retargetInvalid(err error, field string) error {
	if hubcore.CodeOf(err) == hubcore.CodeInvalid {
		return retargetField(err, field)
	}
	return err
}

// queryParam is queryFold that also reports presence, so that tag= (empty)
// is an error rather than "no tag".
func queryParam(q url.Values, name string) (string, bool) {
	for k, v := range q {
		if strings.EqualFold(k, name) && len(v) > 0 {
			return v[0], true
		}
	}
	return "", false
}

func invalidParam(field, format string, args ...any) error {
	return &hubcore.Error{Code: hubcore.CodeInvalid, Field: field, Reason: fmt.Sprintf(format, args...)}
}

// extListInstallations pages through the installations with a tag, of a
// user, or all of them, narrowed to a platform if asked.
func (n *NHAPI) extListInstallations(ctx context.Context, req *nhReq) error {
	var q hubcore.ListQuery
	t, hasTag := queryParam(req.query, "tag")
	uid, hasUser := queryParam(req.query, "userId")
	switch {
	case hasTag && hasUser:
		return invalidParam("tag", "give tag or userId, not both")
	case hasTag:
		if err := tag.Validate(t); err != nil {
			return invalidParam("tag", "%v", err)
		}
		q.Tag = t
	case hasUser:
		if uid == "" {
			return invalidParam("userId", "the user id is empty")
		}
		if err := hubcore.ValidateUserID(uid); err != nil {
			return err
		}
		q.UserID = uid
	}
	if s, ok := queryParam(req.query, "platform"); ok {
		p, err := hubcore.ParsePlatform(s)
		if err != nil {
			return err
		}
		q.Platform = p
	}
	p, err := extPage(req)
	if err != nil {
		return err
	}
	pg, err := n.hub.Core.Store().ListInstallations(ctx, q, p)
	if err != nil {
		return retargetInvalid(err, "continuationtoken")
	}
	out := struct {
		Installations     []json.RawMessage `json:"installations"`
		ContinuationToken string            `json:"continuationToken,omitempty"`
	}{Installations: make([]json.RawMessage, 0, len(pg.Items)), ContinuationToken: pg.Next}
	for _, in := range pg.Items {
		b, err := in.MarshalJSON()
		if err != nil {
			return err
		}
		out.Installations = append(out.Installations, b)
	}
	if pg.Next != "" {
		req.w.Header().Set(nhwire.ContinuationHeader, url.QueryEscape(pg.Next))
	}
	return writeExtJSON(req, out)
}

func writeExtJSON(req *nhReq, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	req.w.Header().Set("Cache-Control", "no-store")
	return req.write(http.StatusOK, "application/json; charset=utf-8", append(b, '\n'))
}

// readExtJSON decodes a JSON object body strictly: unknown fields and
// trailing data are errors, so that a misspelt "remove" is not silently
// ignored by a bulk edit.
func readExtJSON(req *nhReq, v any) error {
	body, err := req.readBody(nhExtMaxBody, "The body is larger than 1 MB.")
	if err != nil {
		return err
	}
	return decodeExtJSON(body, v)
}

func decodeExtJSON(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return invalidParam("body", "malformed JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return invalidParam("body", "malformed JSON: data after the object")
	}
	return nil
}

// --- audience dry run ---

// audienceRequest is the audience body (or query).
type audienceRequest struct {
	// Expression is a tag expression; absent counts a broadcast.
	Expression *string `json:"expression"`
	// Format is a ServiceBusNotification-Format value (default template):
	// a send's audience is its format's registrations.
	Format string `json:"format"`
}

// audienceStep is one step of the plan, as JSON.
type audienceStep struct {
	// Scan is "tag" (the index set of Tag) or "all" (every record).
	Scan   string   `json:"scan"`
	Tag    string   `json:"tag,omitempty"`
	KeepIf string   `json:"keepIf,omitempty"`
	Probe  []string `json:"probe,omitempty"`
	// Estimate is the candidates the step scans, from index sizes.
	Estimate int64 `json:"estimate"`
}

// extAudience counts exactly whom a send would reach, without sending,
// and shows how the store finds them.
func (n *NHAPI) extAudience(ctx context.Context, req *nhReq) error {
	var ar audienceRequest
	if s, ok := queryParam(req.query, "expression"); ok {
		ar.Expression = &s
	}
	ar.Format, _ = queryParam(req.query, "format")
	if req.r.Method == http.MethodPost {
		raw, err := req.readBody(nhExtMaxBody, "The body is larger than 1 MB.")
		if err != nil {
			return err
		}
		var body audienceRequest
		if len(bytes.TrimSpace(raw)) > 0 {
			if err := decodeExtJSON(raw, &body); err != nil {
				return err
			}
		}
		if body.Expression != nil && ar.Expression != nil {
			return invalidParam("expression", "give the expression in the query or in the body, not both")
		}
		if body.Expression != nil {
			ar.Expression = body.Expression
		}
		if body.Format != "" {
			ar.Format = body.Format
		}
	}
	q := hubcore.AudienceQuery{Template: true}
	format := payload.Template
	if ar.Format != "" {
		f, err := payload.ParseFormat(ar.Format)
		if err != nil {
			return invalidParam("format", "%v", err)
		}
		format = f
	}
	if format != payload.Template {
		p, err := hubcore.PlatformOf(format)
		if err != nil {
			return err
		}
		q = hubcore.AudienceQuery{Platform: p}
	}
	if ar.Expression != nil {
		if strings.TrimSpace(*ar.Expression) == "" {
			return invalidParam("expression", "the expression is empty (leave it out to count a broadcast)")
		}
		e, err := n.hub.Core.ParseExpression(*ar.Expression)
		if err != nil {
			return retargetField(err, "expression")
		}
		q.Expr = e
	}
	dr, err := n.hub.Core.DryRun(ctx, q)
	if err != nil {
		return err
	}
	type plan struct {
		Estimated bool           `json:"estimated"`
		Universe  int64          `json:"universe"`
		Estimate  int64          `json:"estimate"`
		Steps     []audienceStep `json:"steps"`
	}
	out := struct {
		Expression *string `json:"expression,omitempty"`
		Broadcast  bool    `json:"broadcast,omitempty"`
		Format     string  `json:"format"`
		Targets    int64   `json:"targets"`
		Plan       plan    `json:"plan"`
		Explain    string  `json:"explain"`
	}{Expression: ar.Expression, Broadcast: ar.Expression == nil, Format: string(format), Targets: dr.Targets,
		Plan:    plan{Estimated: dr.Plan.Estimated, Universe: dr.Plan.Universe, Estimate: dr.Plan.Estimate, Steps: []audienceStep{}},
		Explain: tagexpr.Explain(dr.Plan)}
	for _, s := range dr.Plan.Steps {
		st := audienceStep{Scan: "all", Estimate: s.Estimate, Probe: s.Probe}
		if s.Driver != "" {
			st.Scan, st.Tag = "tag", s.Driver
		}
		if s.Filter != nil {
			st.KeepIf = s.Filter.String()
		}
		out.Plan.Steps = append(out.Plan.Steps, st)
	}
	return writeExtJSON(req, out)
}

// --- bulk tag edit ---

// tagEditRequest is the body of POST x-pushgate/tags.
type tagEditRequest struct {
	Expression *string  `json:"expression"`
	Add        []string `json:"add"`
	Remove     []string `json:"remove"`
}

// checkEditTags checks one list of a tag edit: user tags only (system tags
// are derived from the installation), each valid, at most max of them.
func checkEditTags(field string, tags []string, max int) error {
	if len(tags) > max {
		return &hubcore.Error{Code: hubcore.CodeLimit, Field: field, Reason: fmt.Sprintf("%d tags; an installation holds at most %d", len(tags), max)}
	}
	for i, t := range tags {
		f := fmt.Sprintf("%s[%d]", field, i)
		if tag.IsSystem(t) {
			return invalidParam(f, "%q is a system tag; system tags are derived from the installation and cannot be edited", t)
		}
		if err := tag.Validate(t); err != nil {
			return invalidParam(f, "%v", err)
		}
	}
	return nil
}

// extEditTags adds and removes tags on every installation whose tags match
// the expression. Installations that the edit would take over a limit are
// left unchanged and reported, the others changed: the edit runs in
// batches, so it is not one transaction either way.
func (n *NHAPI) extEditTags(ctx context.Context, req *nhReq) error {
	var te tagEditRequest
	if err := readExtJSON(req, &te); err != nil {
		return err
	}
	if te.Expression == nil || strings.TrimSpace(*te.Expression) == "" {
		return invalidParam("expression", "a tag expression selecting the installations to edit is required")
	}
	e, err := n.hub.Core.ParseExpression(*te.Expression)
	if err != nil {
		return retargetField(err, "expression")
	}
	if len(te.Add) == 0 && len(te.Remove) == 0 {
		return invalidParam("add", "add and remove are both empty: nothing to do")
	}
	max := n.hub.Core.Limits().MaxTags
	if err := checkEditTags("add", te.Add, max); err != nil {
		return err
	}
	if err := checkEditTags("remove", te.Remove, max); err != nil {
		return err
	}
	adding := tag.NewSet(te.Add...)
	for i, t := range te.Remove {
		if adding.Has(tag.Fold(t)) {
			return invalidParam(fmt.Sprintf("remove[%d]", i), "%q is also in add", t)
		}
	}
	modified, err := n.hub.Core.Store().EditTags(ctx, e, te.Add, te.Remove)
	out := struct {
		Modified int64  `json:"modified"`
		Skipped  string `json:"skipped,omitempty"`
	}{Modified: modified}
	if err != nil {
		// A limit here is about stored installations, not the request:
		// the others were changed, so the answer is a success that says
		// what was left alone.
		if hubcore.CodeOf(err) != hubcore.CodeLimit {
			return err
		}
		out.Skipped = err.Error()
	}
	return writeExtJSON(req, out)
}

// --- export and import ---

// streamWriter sends the response header on the first byte, so that an
// export failing before any output still gets an error answer.
type streamWriter struct {
	req     *nhReq
	name    string // the download's file name
	started bool
	werr    error
}

func (s *streamWriter) start() {
	h := s.req.w.Header()
	h.Set("Content-Type", "application/x-ndjson")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": s.name}))
	s.req.w.WriteHeader(http.StatusOK)
	s.req.status = http.StatusOK
	s.started = true
}

func (s *streamWriter) Write(p []byte) (int, error) {
	if !s.started {
		s.start()
	}
	k, err := s.req.w.Write(p)
	if err != nil && s.werr == nil {
		s.werr = err
	}
	return k, err
}

// extExport streams every live entry as NDJSON (the format Import reads).
func (n *NHAPI) extExport(ctx context.Context, req *nhReq) error {
	sw := &streamWriter{req: req, name: n.Hub + ".ndjson"}
	err := n.hub.Core.Store().Export(ctx, sw)
	switch {
	case err == nil:
		if !sw.started {
			sw.start()
		}
		return nil
	case !sw.started:
		return err
	case sw.werr != nil:
		n.logger.Debug("export: the client went away", zap.String("tracking_id", req.tracking), zap.Error(sw.werr))
		return nil
	}
	// The status is sent: cut the response off so that the client sees a
	// broken transfer instead of a short export that looks complete.
	n.logger.Error("export failed mid-stream", zap.String("tracking_id", req.tracking), zap.Error(err))
	panic(http.ErrAbortHandler)
}

// importLimit is the import body limit.
func (n *NHAPI) importLimit() int64 {
	if n.ImportMaxBytes > 0 {
		return n.ImportMaxBytes
	}
	return nhDefaultImportMax
}

// extImport writes an export into the hub. The stores' Import writes
// line by line and stops at the first bad line with the lines before it
// already written, so the body is first checked whole with the same rules
// (decode, Validate with the hub's limits) while it is spooled to a
// temporary file, and only a body without a bad line reaches the store:
// a bad line is a 400 naming it, with nothing written. Memory stays one
// line; disk holds at most the import limit.
func (n *NHAPI) extImport(ctx context.Context, req *nhReq) error {
	limit := n.importLimit()
	f, err := os.CreateTemp("", "pushgate-import-*.ndjson")
	if err != nil {
		return fmt.Errorf("import: spool file: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if err := n.checkImport(http.MaxBytesReader(req.w, req.r.Body, limit), f, limit); err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("import: spool file: %w", err)
	}
	imported, err := n.hub.Core.Store().Import(ctx, bufio.NewReaderSize(f, 64<<10))
	if err != nil {
		// Only the store can fail here (unavailable, or a rule the check
		// does not know); what it wrote before stays written.
		var he *hubcore.Error
		if errors.As(err, &he) && statusOf(err) < 500 {
			c := *he
			c.Reason = fmt.Sprintf("%s (the %d entries before it were imported)", he.Reason, imported)
			return &c
		}
		return fmt.Errorf("import (%d entries written before the failure): %w", imported, err)
	}
	return writeExtJSON(req, struct {
		Imported int64 `json:"imported"`
	}{imported})
}

// checkImport copies body to spool, checking each line as the stores'
// Import would (blank lines skipped, line numbers counted the same way).
func (n *NHAPI) checkImport(body io.Reader, spool io.Writer, limit int64) error {
	lim := n.hub.Core.Limits()
	w := bufio.NewWriterSize(spool, 64<<10)
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 0, 64<<10), nhImportMaxLine)
	line := 0
	bad := func(err error) error {
		var he *hubcore.Error
		reason := err.Error()
		if errors.As(err, &he) {
			reason = he.Error()
		}
		return &hubcore.Error{Code: hubcore.CodeInvalid, Field: "line " + strconv.Itoa(line),
			Reason: reason + "; nothing was imported", Err: err}
	}
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if t := bytes.TrimSpace(b); len(t) > 0 {
			if err := checkImportLine(t, lim); err != nil {
				return bad(err)
			}
		}
		if _, err := w.Write(b); err != nil {
			return fmt.Errorf("import: spool file: %w", err)
		}
		if err := w.WriteByte('\n'); err != nil {
			return fmt.Errorf("import: spool file: %w", err)
		}
	}
	if err := sc.Err(); err != nil {
		line++
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			return &bodyTooLarge{fmt.Sprintf("The import is larger than %d bytes (import_max_bytes); nothing was imported.", limit)}
		case errors.Is(err, bufio.ErrTooLong):
			return bad(fmt.Errorf("longer than %d bytes", nhImportMaxLine))
		}
		return &hubcore.Error{Code: hubcore.CodeInvalid, Reason: "reading the body: " + err.Error() + "; nothing was imported"}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("import: spool file: %w", err)
	}
	return nil
}

// checkImportLine applies the checks of the stores' Import to one line.
func checkImportLine(b []byte, lim hubcore.Limits) error {
	var rec hubcore.ExportRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		var he *hubcore.Error
		if errors.As(err, &he) {
			return he
		}
		return fmt.Errorf("not an export record: %v", err)
	}
	if rec.Installation != nil {
		return rec.Installation.Validate(lim)
	}
	return rec.Registration.Validate(lim)
}
