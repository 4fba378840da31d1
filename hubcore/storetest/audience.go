package storetest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/tag"
	"github.com/pushgate/pushgate/hubcore/tagexpr"
	"github.com/pushgate/pushgate/hubcore/tagexpr/tagexprtest"
)

func parseExpr(h *harness, src string) *tagexpr.Expr {
	h.t.Helper()
	e, err := tagexpr.Parse(src, tagexpr.Limits{})
	if err != nil {
		h.t.Fatalf("parse %q: %v", src, err)
	}
	return e
}

// resolve runs Resolve with the given batch size, checking the batch
// bounds, and returns every target.
func (h *harness) resolve(q hubcore.AudienceQuery, batch int) ([]hubcore.Target, error) {
	var all []hubcore.Target
	err := h.s.Resolve(h.ctx, q, batch, func(ts []hubcore.Target) error {
		if len(ts) == 0 {
			return errors.New("fn called with an empty batch")
		}
		if len(ts) > batch {
			return fmt.Errorf("batch of %d targets; at most %d asked for", len(ts), batch)
		}
		all = append(all, ts...)
		return nil
	})
	return all, err
}

func targetIDs(ts []hubcore.Target) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = normRegID(t.RegistrationID)
	}
	return out
}

// checkAudience resolves q and compares the targets' registration ids with
// want, and Count with their number.
func (h *harness) checkAudience(what string, q hubcore.AudienceQuery, want []string) {
	h.t.Helper()
	ts, err := h.resolve(q, 2)
	if err != nil {
		h.t.Errorf("%s: Resolve: %v", what, err)
		return
	}
	if err := sameIDs(targetIDs(ts), foldAll(want, normRegID)); err != nil {
		h.t.Errorf("%s: Resolve: %v", what, err)
	}
	n, err := h.s.Count(h.ctx, q)
	if err != nil || n != int64(len(want)) {
		h.t.Errorf("%s: Count = %d, %v; want %d", what, n, err, len(want))
	}
}

func testAudienceBasics(h *harness) {
	p := hubcore.ProjectionID
	a := Installation("a", hubcore.APNS, 1, "news")
	a.UserID = "alice"
	a.PushVariables = map[string]string{"name": "Alice"}
	a.Templates = map[string]*hubcore.Template{"alert": TemplateFor(hubcore.APNS, "loud"), "quiet": TemplateFor(hubcore.APNS)}
	h.put(a)
	b := Installation("b", hubcore.FCMV1, 2, "news", "sports")
	b.Templates = map[string]*hubcore.Template{"alert": TemplateFor(hubcore.FCMV1)}
	h.put(b)
	h.put(Installation("c", hubcore.APNS, 3, "sports"))
	r := Registration("r-1", hubcore.APNS, 4, "news")
	h.putReg(r)
	rt := Registration("r-2", hubcore.WNS, 5, "news")
	rt.Template, rt.TemplateName = TemplateFor(hubcore.WNS), "alert"
	h.putReg(rt)

	apns := func(e string) hubcore.AudienceQuery {
		q := hubcore.AudienceQuery{Platform: hubcore.APNS}
		if e != "" {
			q.Expr = parseExpr(h, e)
		}
		return q
	}
	tmpl := func(e string) hubcore.AudienceQuery {
		q := hubcore.AudienceQuery{Template: true}
		if e != "" {
			q.Expr = parseExpr(h, e)
		}
		return q
	}
	h.checkAudience("apns broadcast", apns(""), []string{p("a", ""), p("c", ""), "r-1"})
	h.checkAudience("fcmv1 broadcast", hubcore.AudienceQuery{Platform: hubcore.FCMV1}, []string{p("b", "")})
	h.checkAudience("gcm broadcast", hubcore.AudienceQuery{Platform: hubcore.GCM}, nil)
	h.checkAudience("template broadcast", tmpl(""), []string{p("a", "alert"), p("a", "quiet"), p("b", "alert"), "r-2"})
	h.checkAudience("template send to one template by name", tmpl("alert"), []string{p("a", "alert"), p("b", "alert")})
	h.checkAudience("template send to a template's tag", tmpl("LOUD"), []string{p("a", "alert")})
	h.checkAudience("template send, tags across templates", tmpl("loud && quiet"), nil)
	h.checkAudience("template send, negation", tmpl("news && !alert"), []string{p("a", "quiet"), "r-2"})
	h.checkAudience("template send narrowed to a platform", hubcore.AudienceQuery{Template: true, Platform: hubcore.FCMV1}, []string{p("b", "alert")})
	h.checkAudience("native send ignores template tags", apns("loud"), nil)
	h.checkAudience("native and", apns("news && !sports"), []string{p("a", ""), "r-1"})
	h.checkAudience("negation only", apns("!news"), []string{p("c", "")})
	h.checkAudience("user tag", apns("$UserId:{alice}"), []string{p("a", "")})
	h.checkAudience("installation tag", apns("$InstallationId:{A} || $InstallationId:{c}"), []string{p("a", ""), p("c", "")})
	h.checkAudience("unknown tag", apns("nobody"), nil)
	h.checkAudience("contradiction", apns("news && !news"), nil)

	// Targets carry what a send needs.
	ts, err := h.resolve(tmpl("loud"), 10)
	if err != nil || len(ts) != 1 {
		h.t.Fatalf("resolve: %v %v", ts, err)
	}
	tg := ts[0]
	if !strings.EqualFold(tg.InstallationID, "a") || tg.Platform != hubcore.APNS || tg.Channel.Key(hubcore.APNS) != Channel(hubcore.APNS, 1).Key(hubcore.APNS) ||
		tg.TemplateName != "alert" || tg.Template == nil || tg.Template.Compiled() == nil || tg.PushVariables["name"] != "Alice" {
		h.t.Errorf("template target: %+v", tg)
	}
	ts, err = h.resolve(apns("news"), 10)
	if err != nil {
		h.t.Fatal(err)
	}
	for _, tg := range ts {
		if tg.Template != nil || tg.TemplateName != "" || tg.Platform != hubcore.APNS {
			h.t.Errorf("native target %+v", tg)
		}
		if tg.RegistrationID == "r-1" && (tg.InstallationID != "" || tg.Channel.Handle != Channel(hubcore.APNS, 4).Handle) {
			h.t.Errorf("stored registration target %+v", tg)
		}
	}

	// fn's error stops Resolve and is returned.
	sentinel := errors.New("stop")
	calls := 0
	err = h.s.Resolve(h.ctx, tmpl(""), 1, func([]hubcore.Target) error {
		calls++
		return sentinel
	})
	if !errors.Is(err, sentinel) || calls != 1 {
		h.t.Errorf("Resolve after fn failed: %v after %d calls; want the error after 1", err, calls)
	}

	// Invalid queries.
	_, err = h.resolve(hubcore.AudienceQuery{}, 10)
	h.wantCode("native Resolve without a platform", err, hubcore.CodeInvalid)
	_, err = h.s.Count(h.ctx, hubcore.AudienceQuery{})
	h.wantCode("native Count without a platform", err, hubcore.CodeInvalid)
	err = h.s.Resolve(h.ctx, apns(""), 0, func([]hubcore.Target) error { return nil })
	h.wantCode("Resolve with batch 0", err, hubcore.CodeInvalid)

	// Plan reflects the store: a plan for a tag carries the expression.
	e := parseExpr(h, "news && sports")
	plan, err := h.s.Plan(h.ctx, e)
	if err != nil || plan.Expr != e || len(plan.Steps) == 0 {
		h.t.Errorf("Plan: %+v, %v", plan, err)
	}
	if plan, err := h.s.Plan(h.ctx, nil); err != nil || plan.Expr != nil || len(plan.Steps) != 1 {
		h.t.Errorf("Plan(nil): %+v, %v", plan, err)
	}
}

// model is the test's own record of what it wrote, from which the
// brute-force audiences are computed.
type model struct {
	insts map[string]*hubcore.Installation // by InstallationKey
	regs  map[string]*hubcore.Registration
}

type modelTarget struct {
	reg      hubcore.Registration
	set      tag.Set
	expired  bool // handle expired: never a target
	platform hubcore.Platform
}

func (m *model) targets(now time.Time) []modelTarget {
	var out []modelTarget
	for _, in := range m.insts {
		if in.Expired(now) {
			continue
		}
		for _, r := range in.Registrations() {
			out = append(out, modelTarget{reg: r, set: r.TagSet(), expired: in.PushChannelExpired, platform: r.Platform})
		}
	}
	for _, r := range m.regs {
		if r.Expired(now) {
			continue
		}
		out = append(out, modelTarget{reg: *r, set: r.TagSet(), platform: r.Platform})
	}
	return out
}

func bruteForce(all []modelTarget, q hubcore.AudienceQuery) map[string]*modelTarget {
	want := map[string]*modelTarget{}
	for i := range all {
		mt := &all[i]
		if mt.expired || mt.reg.IsTemplate() != q.Template {
			continue
		}
		if q.Platform != "" && mt.platform != q.Platform {
			continue
		}
		if q.Expr == nil || q.Expr.EvalSet(mt.set) {
			want[normRegID(mt.reg.RegistrationID)] = mt
		}
	}
	return want
}

// testAudienceProperty resolves random expressions against a random
// population and compares every answer with brute force over the
// registrations the test wrote.
func testAudienceProperty(h *harness) {
	seed := h.opts.Seed
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	tags := tagexprtest.Tags(r, 48)
	var userTags []string
	for _, t := range tags {
		if !tag.IsSystem(t) {
			userTags = append(userTags, t)
		}
	}
	m := &model{insts: map[string]*hubcore.Installation{}, regs: map[string]*hubcore.Registration{}}
	now := h.clock.Now()
	nInst, nReg := h.opts.Installations, h.opts.Registrations

	instTags := tagexprtest.RandomRecords(r, nInst, userTags)
	for i := 0; i < nInst; i++ {
		// Ids inst-N and user ids uN=x are what tagexprtest.Tags puts in its
		// system tags, so expressions over them reach someone.
		p := hubcore.Platforms[r.IntN(len(hubcore.Platforms))]
		in := Installation(tagexprtest.RandomCase(r, fmt.Sprintf("inst-%d", i)), p, i, instTags[i].Tags...)
		if r.IntN(2) == 0 {
			in.UserID = fmt.Sprintf("u%d=x", r.IntN(1000))
		}
		if r.IntN(3) == 0 {
			in.Templates = map[string]*hubcore.Template{}
			for k := r.IntN(3); k >= 0; k-- {
				name := []string{"Template Name", "t2", userTags[r.IntN(len(userTags))]}[r.IntN(3)]
				in.Templates[name] = TemplateFor(p, tagexprtest.RandomSet(r, userTags, 0.05)...)
			}
		}
		if r.IntN(10) == 0 {
			in.ExpirationTime = now.Add(time.Hour) // gone by the time we query
		}
		m.insts[hubcore.InstallationKey(in.InstallationID)] = h.put(in)
	}
	regTags := tagexprtest.RandomRecords(r, nReg, userTags)
	for i := 0; i < nReg; i++ {
		p := hubcore.Platforms[r.IntN(len(hubcore.Platforms))]
		rg := Registration(fmt.Sprintf("%d-42-1", i), p, 1000000+i, regTags[i].Tags...)
		if r.IntN(3) == 0 {
			rg.Template = TemplateFor(p)
			if r.IntN(2) == 0 {
				rg.TemplateName = "t2"
			}
		}
		if r.IntN(10) == 0 {
			rg.ExpirationTime = now.Add(time.Hour)
		}
		m.regs[rg.RegistrationID] = h.putReg(rg)
	}
	// Churn, so that index maintenance is exercised: rewrite some
	// installations with other tags, delete some, expire some handles.
	keys := make([]string, 0, len(m.insts))
	for key := range m.insts {
		keys = append(keys, key)
	}
	sort.Strings(keys) // map order would make the seed meaningless
	for i, key := range keys {
		in := m.insts[key]
		i++
		switch {
		case i%17 == 0:
			if err := h.s.DeleteInstallation(h.ctx, key, hubcore.Always); err != nil {
				h.t.Fatal(err)
			}
			delete(m.insts, key)
		case i%11 == 0:
			c := in.Clone()
			c.Tags = tagexprtest.RandomSet(r, userTags, 0.2)
			c.UserID = ""
			c.ExpirationTime = time.Time{}
			m.insts[key] = h.put(c)
		case i%13 == 0:
			ch := in.PushChannel
			n, err := h.s.ExpireHandle(h.ctx, in.Platform, ch.Key(in.Platform), now)
			if err != nil || n != 1 {
				h.t.Fatalf("ExpireHandle: %d, %v", n, err)
			}
			in.PushChannelExpired = true
		}
	}
	h.clock.Advance(2 * time.Hour)
	all := m.targets(h.clock.Now())

	var queries, targets, empty, small int
	check := func(what string, q hubcore.AudienceQuery) {
		h.t.Helper()
		want := bruteForce(all, q)
		queries++
		targets += len(want)
		if len(want) == 0 {
			empty++
		}
		if len(want) > 0 && len(want) < 20 {
			small++
		}
		batch := 1 + r.IntN(64)
		ts, err := h.resolve(q, batch)
		if err != nil {
			h.t.Fatalf("%s: Resolve: %v", what, err)
		}
		got := targetIDs(ts)
		wantIDs := make([]string, 0, len(want))
		for id := range want {
			wantIDs = append(wantIDs, id)
		}
		if err := sameIDs(got, wantIDs); err != nil {
			plan, _ := h.s.Plan(h.ctx, q.Expr)
			h.t.Fatalf("%s (seed %d): Resolve differs from brute force: %v\nplan:\n%s", what, seed, err, tagexpr.Explain(plan))
		}
		for _, tg := range ts {
			mt := want[normRegID(tg.RegistrationID)]
			if tg.Platform != mt.platform || tg.Channel.Key(tg.Platform) != mt.reg.PushChannel.Key(mt.platform) ||
				hubcore.InstallationKey(tg.InstallationID) != hubcore.InstallationKey(mt.reg.InstallationID) ||
				tg.TemplateName != mt.reg.TemplateName || (tg.Template == nil) != (mt.reg.Template == nil) ||
				(tg.Template != nil && tg.Template.Compiled() == nil) {
				h.t.Fatalf("%s: target %+v does not describe registration %s", what, tg, mt.reg.RegistrationID)
			}
		}
		n, err := h.s.Count(h.ctx, q)
		if err != nil || n != int64(len(ts)) {
			h.t.Fatalf("%s: Count = %d, %v; Resolve gave %d", what, n, err, len(ts))
		}
		// Cut into parts, the audience is the same: parts are disjoint and
		// their union is the whole.
		parts := 2 + r.IntN(6)
		seen := make(map[string]int, len(ts))
		for part := 0; part < parts; part++ {
			pq := q
			pq.Part, pq.Parts = part, parts
			pts, err := h.resolve(pq, batch)
			if err != nil {
				h.t.Fatalf("%s, part %d/%d: Resolve: %v", what, part, parts, err)
			}
			for _, id := range targetIDs(pts) {
				if prev, dup := seen[id]; dup {
					h.t.Fatalf("%s: target %s in parts %d and %d of %d", what, id, prev, part, parts)
				}
				seen[id] = part
			}
			pn, err := h.s.Count(h.ctx, pq)
			if err != nil || pn != int64(len(pts)) {
				h.t.Fatalf("%s, part %d/%d: Count = %d, %v; Resolve gave %d", what, part, parts, pn, err, len(pts))
			}
		}
		if len(seen) != len(ts) {
			h.t.Fatalf("%s: the %d parts hold %d targets; the whole has %d", what, parts, len(seen), len(ts))
		}
	}
	for _, bad := range []hubcore.AudienceQuery{{Template: true, Part: 1}, {Template: true, Part: 3, Parts: 3}, {Template: true, Part: -1, Parts: 2}, {Template: true, Parts: -1}} {
		if _, err := h.resolve(bad, 10); hubcore.CodeOf(err) != hubcore.CodeInvalid {
			h.t.Errorf("Resolve of part %d/%d: %v; want CodeInvalid", bad.Part, bad.Parts, err)
		}
		if _, err := h.s.Count(h.ctx, bad); hubcore.CodeOf(err) != hubcore.CodeInvalid {
			h.t.Errorf("Count of part %d/%d: %v; want CodeInvalid", bad.Part, bad.Parts, err)
		}
	}
	check("template broadcast", hubcore.AudienceQuery{Template: true})
	for _, p := range hubcore.Platforms {
		check("broadcast to "+string(p), hubcore.AudienceQuery{Platform: p})
	}
	for k := 0; k < h.opts.Expressions; k++ {
		src := tagexprtest.RandomExpr(r, tags, 3)
		e, err := tagexpr.Parse(src, tagexpr.Limits{MaxDepth: 3})
		if err != nil {
			h.t.Fatalf("generated expression %q does not parse: %v", src, err)
		}
		check(fmt.Sprintf("template send to %q", src), hubcore.AudienceQuery{Expr: e, Template: true})
		p := hubcore.Platforms[r.IntN(len(hubcore.Platforms))]
		check(fmt.Sprintf("%s send to %q", p, src), hubcore.AudienceQuery{Expr: e, Platform: p})
	}
	// So that a change to the generators that empties every audience shows.
	h.t.Logf("seed %d: %d registrations; %d queries, %d targets, %d empty audiences, %d under 20", seed, len(all), queries, targets, empty, small)
}
