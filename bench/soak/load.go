package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushgate/pushgate/internal/devissuer"
	"github.com/pushgate/pushgate/internal/nhwire"
	fcmfake "github.com/pushgate/pushgate/internal/pnsfake/fcm"
)

// The kinds of request the soak makes, in the order the progress lines
// print them.
const (
	kPut     = "put"     // device: PUT installation through the gate
	kPatch   = "patch"   // device: PATCH tags
	kGet     = "get"     // device: GET own installation
	kDelete  = "delete"  // device: sign off, or ?forget=true
	kDenied  = "denied"  // device: PUT with another user's userId tag (403 expected)
	kReg     = "reg"     // device: the register flow (POST, PUT, DELETE ?forget)
	kSend    = "send"    // backend: send to one user
	kBroad   = "broad"   // backend: send to a tag expression over many users
	kDetails = "details" // backend: a send's outcome
	kNHGet   = "nhget"   // backend: read an installation the gate wrote
	kAtom    = "atom"    // backend: Atom registrations (create id, PUT, GET, DELETE)
)

var kinds = []string{kPut, kPatch, kGet, kDelete, kDenied, kReg, kSend, kBroad, kDetails, kNHGet, kAtom}

// weights is the mix of operations (not requests: the register flow and
// Atom creation take several requests).
var weights = []struct {
	kind string
	w    int
}{
	{kPut, 20}, {kPatch, 20}, {kGet, 18}, {kDelete, 4}, {kDenied, 2}, {kReg, 2},
	{kSend, 14}, {kBroad, 1}, {kDetails, 5}, {kNHGet, 8}, {kAtom, 6},
}

const apiVersion = "api-version=2020-06"

// The templates devices register, per platform: what a template send
// renders for each.
const (
	apnsTemplate = `{"aps":{"alert":"$(msg)"}}`
	fcmTemplate  = `{"message":{"notification":{"title":"$(msg)"}}}`
)

// Tags devices ask for. The per-user policy keeps event:* and lang:*,
// drops the rest (topic:news, always asked for, must always be dropped)
// and injects userId:{user}.
var (
	eventTags = []string{"event:comment", "event:like", "event:follow"}
	langTags  = []string{"lang:en", "lang:de", "lang:fr"}
)

const droppedTag = "topic:news"

// broadExprs reach many users' devices at once.
var broadExprs = []string{"event:like && lang:en", "(event:comment || event:follow) && lang:de", "lang:fr && !event:like"}

// stats counts requests and errors by kind; errors keeps the first few
// descriptions.
type stats struct {
	requests map[string]*atomic.Int64
	errors   map[string]*atomic.Int64
	latency  map[string]*latency
	mu       sync.Mutex
	samples  []string     // the first errors
	last     []string     // and the latest
	sent     atomic.Int64 // sends accepted (201)
}

const maxErrorSamples = 20

func newStats() *stats {
	s := &stats{requests: map[string]*atomic.Int64{}, errors: map[string]*atomic.Int64{}, latency: map[string]*latency{}}
	for _, k := range kinds {
		s.requests[k], s.errors[k], s.latency[k] = new(atomic.Int64), new(atomic.Int64), new(latency)
	}
	return s
}

// latency sums and bounds the answered requests' times, for the summary
// (figures to read, not to judge: the machine may be shared).
type latency struct {
	n, sum, max atomic.Int64 // count, nanoseconds
}

func (l *latency) add(d time.Duration) {
	l.n.Add(1)
	l.sum.Add(int64(d))
	for m := l.max.Load(); int64(d) > m && !l.max.CompareAndSwap(m, int64(d)); m = l.max.Load() {
	}
}

func (l *latency) mean() time.Duration {
	if n := l.n.Load(); n > 0 {
		return time.Duration(l.sum.Load() / n)
	}
	return 0
}

func (s *stats) fail(kind, format string, args ...any) {
	s.errors[kind].Add(1)
	msg := kind + ": " + strings.TrimSpace(fmt.Sprintf(format, args...))
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.samples) < maxErrorSamples {
		s.samples = append(s.samples, msg)
		return
	}
	if s.last = append(s.last, msg); len(s.last) > 5 {
		s.last = s.last[1:]
	}
}

func (s *stats) totals() (req, errs int64) {
	for _, k := range kinds {
		req += s.requests[k].Load()
		errs += s.errors[k].Load()
	}
	return req, errs
}

type deviceState int

const (
	absent    deviceState = iota // never registered, or forgotten
	active                       // registered
	signedOff                    // DELETE without forget: kept, handle marked dead
)

type device struct {
	id       string
	platform string
	handle   string
	state    deviceState
}

type user struct {
	name    string
	token   string
	expires time.Time
	devices []*device
}

// client is one concurrent user of the server, with its own connection.
// It owns its users outright, so it knows the state of each of their
// devices and hence the one right answer to every request it makes.
type client struct {
	n      int
	e      *env
	hc     *http.Client
	rng    *rand.Rand
	st     *stats
	pace   <-chan struct{}
	sas    string
	users  []*user
	atom   []string // live registration ids created through the Atom API
	sends  []string // recent notification ids
	seq    int
	issued int
}

func newClient(n int, cfg *Config, e *env, st *stats, pace <-chan struct{}, sas string) *client {
	c := &client{n: n, e: e, hc: e.client(), rng: rand.New(rand.NewPCG(uint64(n), 0x50a6)), st: st, pace: pace, sas: sas}
	for u := n; u < cfg.Users; u += cfg.Clients {
		us := &user{name: fmt.Sprintf("u%d", u)}
		for d := 0; d < cfg.DevicesPerUser; d++ {
			i := u*cfg.DevicesPerUser + d
			dv := &device{id: fmt.Sprintf("soak-u%d-d%d", u, d)}
			if i%2 == 0 {
				dv.platform, dv.handle = "apns", fmt.Sprintf("%064x", i+1)
			} else {
				dv.platform, dv.handle = "fcmv1", fcmfake.Token(fmt.Sprintf("soak-%d", i))
			}
			us.devices = append(us.devices, dv)
		}
		c.users = append(c.users, us)
	}
	return c
}

// loop runs operations until ctx ends.
func (c *client) loop(ctx context.Context) {
	total := 0
	for _, w := range weights {
		total += w.w
	}
	for i := 0; ctx.Err() == nil; i++ {
		// Every kind once first, so that even a short run makes each.
		kind := ""
		if i < len(kinds) {
			kind = kinds[i]
		} else {
			r := c.rng.IntN(total)
			for _, w := range weights {
				if r < w.w {
					kind = w.kind
					break
				}
				r -= w.w
			}
		}
		c.op(ctx, kind)
		// A device reconnects now and then: a new TLS connection, so that
		// per-connection state on the server is soaked too.
		if c.seq++; c.seq%500 == 0 {
			c.hc.CloseIdleConnections()
		}
	}
	c.hc.CloseIdleConnections()
}

func (c *client) op(ctx context.Context, kind string) {
	u := c.users[c.rng.IntN(len(c.users))]
	d := u.devices[c.rng.IntN(len(u.devices))]
	switch kind {
	case kPut:
		c.put(ctx, u, d)
	case kPatch:
		c.patch(ctx, u, d)
	case kGet:
		c.get(ctx, u, d)
	case kDelete:
		c.delete(ctx, u, d, c.rng.IntN(4) == 0)
	case kDenied:
		c.denied(ctx, u, d)
	case kReg:
		c.register(ctx, u)
	case kSend:
		c.sendUser(ctx, u)
	case kBroad:
		c.send(ctx, kBroad, broadExprs[c.rng.IntN(len(broadExprs))], "", `{"msg":"news for many"}`)
	case kDetails:
		c.details(ctx)
	case kNHGet:
		c.nhGet(ctx, u, d)
	case kAtom:
		c.atomOp(ctx)
	}
}

// response is what do returns: the status and body, when the request
// reached the server.
type response struct {
	status int
	header http.Header
	body   []byte
}

// do makes one request and checks its status against want; anything else,
// and any transport error while the run is on, is an error of kind.
func (c *client) do(ctx context.Context, kind, method, path string, body []byte, hdr []string, want ...int) (*response, bool) {
	if c.pace != nil {
		select {
		case <-c.pace:
		case <-ctx.Done():
			return nil, false
		}
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.e.base+path, rd)
	if err != nil {
		c.st.fail(kind, "%s %s: %v", method, path, err)
		return nil, false
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	c.st.requests[kind].Add(1)
	start := time.Now()
	res, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			c.st.fail(kind, "%s %s: %v", method, path, err)
		} else {
			c.st.requests[kind].Add(-1) // cut off by the end of the run
		}
		return nil, false
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		if ctx.Err() == nil {
			c.st.fail(kind, "%s %s: reading the body: %v", method, path, err)
		}
		return nil, false
	}
	c.st.latency[kind].add(time.Since(start))
	if !slices.Contains(want, res.StatusCode) {
		if ctx.Err() != nil {
			// The end of the run cancelled the request on its way: the
			// server may have answered for a client that was gone.
			c.st.requests[kind].Add(-1)
			return nil, false
		}
		c.st.fail(kind, "%s %s: status %d, want %v: %.300s", method, path, res.StatusCode, want, b)
		return nil, false
	}
	return &response{status: res.StatusCode, header: res.Header, body: b}, true
}

func (c *client) bearer(u *user) string {
	if time.Until(u.expires) < 2*time.Minute {
		tok, err := c.e.tokens.Mint(u.name, nil, time.Hour, devissuer.ClientID, devissuer.IDToken)
		if err != nil {
			panic(fmt.Sprintf("minting a token: %v", err)) // the issuer's own key: cannot fail
		}
		u.token, u.expires = tok, time.Now().Add(time.Hour)
	}
	return "Bearer " + u.token
}

func (c *client) deviceHeaders(u *user) []string {
	return []string{"Authorization", c.bearer(u), "Content-Type", "application/json"}
}

// installationBody is a device's PUT body with the tags it asks for.
func installationBody(d *device, tags []string) []byte {
	tpl := apnsTemplate
	if d.platform == "fcmv1" {
		tpl = fcmTemplate
	}
	b, _ := json.Marshal(map[string]any{
		"installationId": d.id, "platform": d.platform, "pushChannel": d.handle, "tags": tags,
		"templates": map[string]any{"t": map[string]string{"body": tpl}},
	})
	return b
}

type grant struct {
	Installation struct {
		InstallationID     string   `json:"installationId"`
		UserID             string   `json:"userId"`
		Tags               []string `json:"tags"`
		PushChannelExpired bool     `json:"pushChannelExpired"`
	} `json:"installation"`
	DroppedTags []string `json:"droppedTags"`
}

func hasTag(tags []string, t string) bool {
	return slices.ContainsFunc(tags, func(x string) bool { return strings.EqualFold(x, t) })
}

func (c *client) put(ctx context.Context, u *user, d *device) {
	tags := []string{eventTags[c.rng.IntN(len(eventTags))], langTags[c.rng.IntN(len(langTags))], droppedTag}
	if c.rng.IntN(2) == 0 {
		tags = append(tags, eventTags[c.rng.IntN(len(eventTags))])
	}
	res, ok := c.do(ctx, kPut, http.MethodPut, "/push/installations/"+d.id, installationBody(d, tags), c.deviceHeaders(u), http.StatusOK)
	if !ok {
		return
	}
	var g grant
	if err := json.Unmarshal(res.body, &g); err != nil {
		c.st.fail(kPut, "%s: response %q: %v", d.id, res.body, err)
		return
	}
	in := g.Installation
	switch {
	case in.UserID != u.name || in.InstallationID != d.id:
		c.st.fail(kPut, "%s: stored for user %q as %q, want %q as %q", d.id, in.UserID, in.InstallationID, u.name, d.id)
	case !hasTag(in.Tags, "userId:"+u.name):
		c.st.fail(kPut, "%s: the policy's userId:%s tag is missing: %v", d.id, u.name, in.Tags)
	case hasTag(in.Tags, droppedTag) || !hasTag(g.DroppedTags, droppedTag):
		c.st.fail(kPut, "%s: %s not dropped: tags %v, dropped %v", d.id, droppedTag, in.Tags, g.DroppedTags)
	case in.PushChannelExpired:
		c.st.fail(kPut, "%s: still signed off after a PUT", d.id)
	default:
		for _, t := range tags[:2] {
			if !hasTag(in.Tags, t) {
				c.st.fail(kPut, "%s: granted tag %s missing: %v", d.id, t, in.Tags)
				return
			}
		}
		d.state = active
	}
}

func (c *client) patch(ctx context.Context, u *user, d *device) {
	t := eventTags[c.rng.IntN(len(eventTags))]
	op, remove := fmt.Sprintf(`[{"op":"add","path":"/tags","value":%q}]`, t), c.rng.IntN(2) == 0
	if remove {
		op = fmt.Sprintf(`[{"op":"remove","path":"/tags/%s"}]`, t)
	}
	want := http.StatusOK
	if d.state == absent {
		want = http.StatusNotFound
	}
	res, ok := c.do(ctx, kPatch, http.MethodPatch, "/push/installations/"+d.id, []byte(op), c.deviceHeaders(u), want)
	if !ok || want != http.StatusOK {
		return
	}
	var g grant
	if err := json.Unmarshal(res.body, &g); err != nil {
		c.st.fail(kPatch, "%s: response %q: %v", d.id, res.body, err)
		return
	}
	// A tag patch leaves a signed-off device signed off: only a new
	// pushChannel (or a PUT) marks the handle live again.
	if hasTag(g.Installation.Tags, t) == remove || !hasTag(g.Installation.Tags, "userId:"+u.name) || g.Installation.PushChannelExpired != (d.state == signedOff) {
		c.st.fail(kPatch, "%s (state %d): after %s: tags %v, pushChannelExpired %v", d.id, d.state, op, g.Installation.Tags, g.Installation.PushChannelExpired)
	}
}

func (c *client) get(ctx context.Context, u *user, d *device) {
	want := http.StatusOK
	if d.state == absent {
		want = http.StatusNotFound
	}
	res, ok := c.do(ctx, kGet, http.MethodGet, "/push/installations/"+d.id, nil, c.deviceHeaders(u), want)
	if !ok || want != http.StatusOK {
		return
	}
	var in struct {
		UserID             string `json:"userId"`
		PushChannelExpired bool   `json:"pushChannelExpired"`
	}
	if err := json.Unmarshal(res.body, &in); err != nil || in.UserID != u.name || in.PushChannelExpired != (d.state == signedOff) {
		c.st.fail(kGet, "%s (state %d): %s", d.id, d.state, res.body)
	}
}

func (c *client) delete(ctx context.Context, u *user, d *device, forget bool) {
	path := "/push/installations/" + d.id
	if forget {
		path += "?forget=true"
	}
	if _, ok := c.do(ctx, kDelete, http.MethodDelete, path, nil, c.deviceHeaders(u), http.StatusNoContent); !ok {
		return
	}
	switch {
	case forget:
		d.state = absent
	case d.state == active:
		d.state = signedOff
	}
}

// denied asks for another user's userId tag: the policy must refuse it
// with 403 and leave the installation as it was.
func (c *client) denied(ctx context.Context, u *user, d *device) {
	other := fmt.Sprintf("userId:u%d-other", c.n)
	c.do(ctx, kDenied, http.MethodPut, "/push/installations/"+d.id, installationBody(d, []string{"event:comment", other}), c.deviceHeaders(u), http.StatusForbidden)
}

// register runs the seeds' flow: a new id, the handle and tags at it,
// then a forgetting DELETE so that the registry does not grow.
func (c *client) register(ctx context.Context, u *user) {
	res, ok := c.do(ctx, kReg, http.MethodPost, "/push/register", nil, c.deviceHeaders(u), http.StatusOK)
	if !ok {
		return
	}
	var r struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(res.body, &r); err != nil || r.ID == "" {
		c.st.fail(kReg, "POST /push/register: %s", res.body)
		return
	}
	c.issued++
	handle := fcmfake.Token(fmt.Sprintf("soak-reg-%d-%d", c.n, c.issued))
	body, _ := json.Marshal(map[string]any{"platform": "fcmv1", "handle": handle, "tags": []string{"event:comment", droppedTag}})
	if _, ok := c.do(ctx, kReg, http.MethodPut, "/push/register/"+r.ID, body, c.deviceHeaders(u), http.StatusOK); !ok {
		return
	}
	c.do(ctx, kReg, http.MethodDelete, "/push/register/"+r.ID+"?forget=true", nil, c.deviceHeaders(u), http.StatusNoContent)
}

func (c *client) nhHeaders(extra ...string) []string {
	return append([]string{"Authorization", c.sas}, extra...)
}

func (c *client) sendUser(ctx context.Context, u *user) {
	switch c.rng.IntN(4) {
	case 0:
		c.send(ctx, kSend, "userId:"+u.name+" && event:comment", "", `{"msg":"a comment"}`)
	case 1:
		c.send(ctx, kSend, "userId:"+u.name, "apple", `{"aps":{"alert":"native"}}`)
	default:
		c.send(ctx, kSend, "userId:"+u.name, "", `{"msg":"hello"}`)
	}
}

// send posts a notification through the backend API and remembers its id
// for the outcome reads.
func (c *client) send(ctx context.Context, kind, expr, format, body string) {
	hdr := c.nhHeaders("Content-Type", "application/json;charset=utf-8", nhwire.HeaderTags, expr)
	if format != "" {
		hdr = append(hdr, nhwire.HeaderFormat, format)
	}
	res, ok := c.do(ctx, kind, http.MethodPost, "/"+c.e.hub+"/messages?"+apiVersion, []byte(body), hdr, http.StatusCreated)
	if !ok {
		return
	}
	c.st.sent.Add(1)
	loc, err := url.Parse(res.header.Get("Location"))
	if err != nil || !strings.Contains(loc.Path, "/messages/") {
		c.st.fail(kind, "send: Location %q", res.header.Get("Location"))
		return
	}
	c.sends = append(c.sends, loc.Path[strings.LastIndex(loc.Path, "/")+1:])
	if len(c.sends) > 64 {
		c.sends = c.sends[1:]
	}
}

func (c *client) details(ctx context.Context) {
	if len(c.sends) == 0 {
		c.sendUser(ctx, c.users[0])
		return
	}
	id := c.sends[c.rng.IntN(len(c.sends))]
	res, ok := c.do(ctx, kDetails, http.MethodGet, "/"+c.e.hub+"/messages/"+id+"?"+apiVersion, nil, c.nhHeaders(), http.StatusOK)
	if ok && !bytes.Contains(res.body, []byte("<NotificationId>"+id+"</NotificationId>")) {
		c.st.fail(kDetails, "%s: %.300s", id, res.body)
	}
}

// nhGet reads a device's installation through the backend API: what the
// gate wrote, owner included, is what a backend sees.
func (c *client) nhGet(ctx context.Context, u *user, d *device) {
	want := http.StatusOK
	if d.state == absent {
		want = http.StatusNotFound
	}
	res, ok := c.do(ctx, kNHGet, http.MethodGet, "/"+c.e.hub+"/installations/"+d.id+"?"+apiVersion, nil, c.nhHeaders(), want)
	if !ok || want != http.StatusOK {
		return
	}
	var in struct {
		UserID string   `json:"userId"`
		Tags   []string `json:"tags"`
	}
	if err := json.Unmarshal(res.body, &in); err != nil || in.UserID != u.name || !hasTag(in.Tags, "userId:"+u.name) {
		c.st.fail(kNHGet, "%s: %.300s", d.id, res.body)
	}
}

const atomEntry = `<?xml version="1.0" encoding="utf-8"?><entry xmlns="http://www.w3.org/2005/Atom"><content type="application/xml">` +
	`<%[1]s xmlns:i="http://www.w3.org/2001/XMLSchema-instance" xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect">` +
	`<Tags>%[2]s</Tags><%[3]s>%[4]s</%[3]s><BodyTemplate><![CDATA[%[5]s]]></BodyTemplate></%[1]s></content></entry>`

// atomOp keeps a few registrations per client alive through the Atom
// API: it creates one (a registration id, then a PUT) while there are
// fewer than four, and otherwise reads or deletes one.
func (c *client) atomOp(ctx context.Context) {
	if len(c.atom) >= 4 && c.rng.IntN(3) != 0 {
		i := c.rng.IntN(len(c.atom))
		id := c.atom[i]
		path := "/" + c.e.hub + "/registrations/" + id + "?" + apiVersion
		if c.rng.IntN(2) == 0 {
			res, ok := c.do(ctx, kAtom, http.MethodGet, path, nil, c.nhHeaders(), http.StatusOK)
			if ok && !bytes.Contains(res.body, []byte("<RegistrationId>"+id+"</RegistrationId>")) {
				c.st.fail(kAtom, "GET %s: %.300s", id, res.body)
			}
			return
		}
		if _, ok := c.do(ctx, kAtom, http.MethodDelete, path, nil, c.nhHeaders(), http.StatusOK); ok {
			c.atom = slices.Delete(c.atom, i, i+1)
		}
		return
	}
	res, ok := c.do(ctx, kAtom, http.MethodPost, "/"+c.e.hub+"/registrationIDs?"+apiVersion, nil, c.nhHeaders(), http.StatusCreated)
	if !ok {
		return
	}
	loc, err := url.Parse(res.header.Get("Location"))
	if err != nil || !strings.Contains(strings.ToLower(loc.Path), "/registrationids/") {
		c.st.fail(kAtom, "registration id: Location %q", res.header.Get("Location"))
		return
	}
	id := loc.Path[strings.LastIndex(loc.Path, "/")+1:]
	c.issued++
	tags := fmt.Sprintf("%s,%s,userId:backend-%d", eventTags[c.rng.IntN(len(eventTags))], langTags[c.rng.IntN(len(langTags))], c.n)
	var entry string
	if c.issued%2 == 0 {
		entry = fmt.Sprintf(atomEntry, "AppleTemplateRegistrationDescription", tags, "DeviceToken", fmt.Sprintf("%064x", uint64(1)<<60|uint64(c.n)<<32|uint64(c.issued)), apnsTemplate)
	} else {
		entry = fmt.Sprintf(atomEntry, "FcmV1TemplateRegistrationDescription", tags, "FcmV1RegistrationId", fcmfake.Token(fmt.Sprintf("soak-atom-%d-%d", c.n, c.issued)), fcmTemplate)
	}
	res, ok = c.do(ctx, kAtom, http.MethodPut, "/"+c.e.hub+"/registrations/"+id+"?"+apiVersion, []byte(entry),
		c.nhHeaders("Content-Type", "application/atom+xml;type=entry;charset=utf-8"), http.StatusOK)
	if !ok {
		return
	}
	if res.header.Get("ETag") == "" || !bytes.Contains(res.body, []byte("<RegistrationId>"+id+"</RegistrationId>")) {
		c.st.fail(kAtom, "PUT %s: ETag %q, body %.300s", id, res.header.Get("ETag"), res.body)
		return
	}
	c.atom = append(c.atom, id)
}
