package storetest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/pushgate/pushgate/hubcore"
)

func testFeedback(h *harness) {
	p := hubcore.ProjectionID
	token := Channel(hubcore.APNS, 1).Handle
	i1 := Installation("i1", hubcore.APNS, 1, "x")
	i1.Templates = map[string]*hubcore.Template{"alert": TemplateFor(hubcore.APNS)}
	h.put(i1)
	i2 := Installation("i2", hubcore.APNS, 1, "x") // the same device token, lower case
	i2.PushChannel.Handle = strings.ToLower(token)
	h.put(i2)
	h.put(Installation("i3", hubcore.APNS, 3, "x"))
	h.put(Installation("f1", hubcore.FCMV1, 1, "x"))
	r1 := Registration("r-1", hubcore.APNS, 1, "x")
	r1.PushChannel.Handle = strings.ToLower(token[:10]) + token[10:]
	h.putReg(r1)
	h.putReg(Registration("r-2", hubcore.APNS, 4, "x"))
	w1 := Installation("w1", hubcore.Browser, 5, "x")
	h.put(w1)

	apnsX := hubcore.AudienceQuery{Expr: parseExpr(h, "x"), Platform: hubcore.APNS}
	h.checkAudience("before feedback", apnsX, []string{p("i1", ""), p("i2", ""), p("i3", ""), "r-1", "r-2"})

	at := h.clock.Now().Add(-time.Minute)
	n, err := h.s.ExpireHandle(h.ctx, hubcore.APNS, strings.ToLower(token), at)
	if err != nil || n != 3 {
		h.t.Fatalf("ExpireHandle: %d, %v; want 3 (i1, i2, r-1)", n, err)
	}
	for _, id := range []string{"i1", "i2"} {
		g := h.get(id)
		if !g.PushChannelExpired || !g.LastActiveOn.Equal(at) || g.Version != 2 {
			h.t.Errorf("%s after ExpireHandle: expired %v, lastActiveOn %v, version %d; want true, %v, 2", id, g.PushChannelExpired, g.LastActiveOn, g.Version, at)
		}
	}
	if g := h.get("i3"); g.PushChannelExpired || g.Version != 1 {
		h.t.Errorf("i3 was touched by another handle's feedback")
	}
	_, err = h.s.GetRegistration(h.ctx, "r-1")
	h.wantCode("registration with an expired handle", err, hubcore.CodeNotFound)
	_, err = h.s.PutRegistration(h.ctx, h.prepReg(Registration("r-1", hubcore.APNS, 1)), hubcore.Always)
	h.wantCode("put at a registration id deleted by feedback", err, hubcore.CodeGone)

	h.checkAudience("after feedback", apnsX, []string{p("i3", ""), "r-2"})
	h.checkAudience("template send after feedback", hubcore.AudienceQuery{Template: true}, nil)
	// Expired handles are still listed.
	h.checkListed(hubcore.ListQuery{Handle: token}, []string{"i1", "i2"}, []string{p("i1", ""), p("i1", "alert"), p("i2", "")})

	if n, err := h.s.ExpireHandle(h.ctx, hubcore.APNS, token, at); err != nil || n != 0 {
		h.t.Errorf("ExpireHandle again: %d, %v; want 0", n, err)
	}
	if n, err := h.s.ExpireHandle(h.ctx, hubcore.FCMV1, Channel(hubcore.APNS, 3).Handle, at); err != nil || n != 0 {
		h.t.Errorf("ExpireHandle on another platform: %d, %v; want 0", n, err)
	}
	if n, err := h.s.ExpireHandle(h.ctx, hubcore.Browser, w1.PushChannel.Endpoint, at); err != nil || n != 1 {
		h.t.Errorf("ExpireHandle of a Web Push endpoint: %d, %v; want 1", n, err)
	}
	if g := h.get("w1"); !g.PushChannelExpired {
		h.t.Error("w1 not expired by its endpoint")
	}
	if n, _ := h.s.Count(h.ctx, hubcore.AudienceQuery{Platform: hubcore.Browser}); n != 0 {
		h.t.Errorf("browser audience after feedback: %d", n)
	}

	// A PUT with a new handle brings i1 back.
	fresh := Installation("i1", hubcore.APNS, 10, "x")
	fresh.Templates = map[string]*hubcore.Template{"alert": TemplateFor(hubcore.APNS)}
	if got := h.put(fresh); got.PushChannelExpired {
		h.t.Error("a PUT with a new handle kept pushChannelExpired")
	}
	// A PATCH of pushChannel brings i2 back.
	ops, err := hubcore.ParsePatch([]byte(fmt.Sprintf(`[{"op":"replace","path":"/pushChannel","value":%q}]`, Channel(hubcore.APNS, 11).Handle)))
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.s.UpdateInstallation(h.ctx, "i2", func(in *hubcore.Installation) (*hubcore.Installation, error) {
		if !in.PushChannelExpired {
			return nil, fmt.Errorf("UpdateInstallation handed fn a copy without pushChannelExpired")
		}
		out, err := hubcore.ApplyPatch(in, ops, h.lim)
		if err != nil {
			return nil, err
		}
		out.Stamp(h.clock.Now(), h.lim)
		return out, nil
	}); err != nil {
		h.t.Fatal(err)
	}
	h.checkAudience("after new handles", apnsX, []string{p("i1", ""), p("i2", ""), p("i3", ""), "r-2"})
	h.checkAudience("template send after new handles", hubcore.AudienceQuery{Template: true}, []string{p("i1", "alert")})
	// The old handle no longer finds them.
	h.checkListed(hubcore.ListQuery{Handle: token}, []string{}, []string{})
	h.checkListed(hubcore.ListQuery{Handle: Channel(hubcore.APNS, 10).Handle}, []string{"i1"}, nil)
}

func testEditTags(h *harness) {
	lim := h.lim
	if lim.MaxTags <= 0 {
		lim.MaxTags = hubcore.DefaultLimits().MaxTags
	}
	for i, p := range []hubcore.Platform{hubcore.APNS, hubcore.FCMV1, hubcore.Browser} {
		in := Installation(fmt.Sprintf("alice-%d", i), p, i, "fan")
		in.UserID = "alice"
		h.put(in)
	}
	bob := Installation("bob-0", hubcore.APNS, 10, "fan")
	bob.UserID = "bob"
	bob.Templates = map[string]*hubcore.Template{"alert": TemplateFor(hubcore.APNS, "loud")}
	h.put(bob)
	aliceQ := parseExpr(h, "$UserId:{alice}")
	band := parseExpr(h, "band:x")

	n, err := h.s.EditTags(h.ctx, aliceQ, []string{"band:x"}, nil)
	if err != nil || n != 3 {
		h.t.Fatalf("EditTags add to alice: %d, %v; want 3", n, err)
	}
	for i := 0; i < 3; i++ {
		g := h.get(fmt.Sprintf("alice-%d", i))
		if fmt.Sprint(g.Tags) != "[fan band:x]" || g.Version != 2 {
			h.t.Errorf("alice-%d after EditTags: %v v%d; want [fan band:x] v2", i, g.Tags, g.Version)
		}
	}
	if g := h.get("bob-0"); len(g.Tags) != 1 || g.Version != 1 {
		h.t.Errorf("bob-0 touched: %v v%d", g.Tags, g.Version)
	}
	if c, _ := h.s.Count(h.ctx, hubcore.AudienceQuery{Expr: band, Platform: hubcore.APNS}); c != 1 {
		h.t.Errorf("APNs audience of band:x: %d; want 1", c)
	}
	h.checkListed(hubcore.ListQuery{Tag: "BAND:X"}, []string{"alice-0", "alice-1", "alice-2"}, nil)

	// Adding a tag already there changes nothing.
	if n, err := h.s.EditTags(h.ctx, aliceQ, []string{"BAND:X"}, nil); err != nil || n != 0 {
		h.t.Errorf("EditTags adding a present tag: %d, %v; want 0", n, err)
	}
	// Remove, case-insensitively.
	if n, err := h.s.EditTags(h.ctx, band, nil, []string{"Band:X"}); err != nil || n != 3 {
		h.t.Errorf("EditTags remove: %d, %v; want 3", n, err)
	}
	if c, _ := h.s.Count(h.ctx, hubcore.AudienceQuery{Expr: band, Platform: hubcore.APNS}); c != 0 {
		h.t.Errorf("audience of a removed tag: %d", c)
	}
	if g := h.get("alice-0"); fmt.Sprint(g.Tags) != "[fan]" || g.Version != 3 {
		h.t.Errorf("alice-0 after removal: %v v%d", g.Tags, g.Version)
	}
	// Matching is on an installation's own and implicit tags: a template's
	// tag does not select it.
	if n, err := h.s.EditTags(h.ctx, parseExpr(h, "loud"), []string{"y"}, nil); err != nil || n != 0 {
		h.t.Errorf("EditTags on a template tag: %d, %v; want 0", n, err)
	}
	// Add and remove at once; nil selects everyone.
	if n, err := h.s.EditTags(h.ctx, nil, []string{"all"}, []string{"fan"}); err != nil || n != 4 {
		h.t.Errorf("EditTags(nil): %d, %v; want 4", n, err)
	}
	if g := h.get("bob-0"); fmt.Sprint(g.Tags) != "[all]" {
		h.t.Errorf("bob-0 after EditTags(nil): %v", g.Tags)
	}

	// Bad tags to add: refused before anything changes.
	for _, bad := range [][]string{{"bad tag"}, {"$UserId:{x}"}, {""}} {
		_, err := h.s.EditTags(h.ctx, nil, bad, nil)
		h.wantCode(fmt.Sprintf("EditTags add %q", bad), err, hubcore.CodeInvalid)
	}
	if g := h.get("bob-0"); g.Version != 2 {
		h.t.Errorf("refused edits changed bob-0 (version %d)", g.Version)
	}

	// An installation that would exceed MaxTags is skipped, the others are
	// edited, and the error says so.
	full := Installation("full", hubcore.FCMV1, 20)
	for i := 0; i < lim.MaxTags; i++ {
		full.Tags = append(full.Tags, fmt.Sprintf("f%d", i))
	}
	full.Tags[0] = "all"
	h.put(full)
	n, err = h.s.EditTags(h.ctx, parseExpr(h, "all"), []string{"extra"}, nil)
	if he := h.wantCode("EditTags over MaxTags", err, hubcore.CodeLimit); he != nil && !strings.Contains(he.Error(), "full") {
		h.t.Errorf("EditTags over MaxTags: error %q does not name the installation", he.Error())
	}
	if n != 4 {
		h.t.Errorf("EditTags over MaxTags: %d changed; want the 4 others", n)
	}
	if g := h.get("full"); len(g.Tags) != lim.MaxTags || g.Version != 1 {
		h.t.Errorf("the installation over the limit changed: %d tags v%d", len(g.Tags), g.Version)
	}
	if g := h.get("alice-1"); fmt.Sprint(g.Tags) != "[all extra]" {
		h.t.Errorf("alice-1 not edited alongside the failure: %v", g.Tags)
	}

	// Expired installations are not edited.
	gone := Installation("gone", hubcore.APNS, 30, "all")
	gone.ExpirationTime = h.clock.Now().Add(time.Minute)
	h.put(gone)
	h.clock.Advance(time.Minute)
	if n, err := h.s.EditTags(h.ctx, parseExpr(h, "all"), nil, []string{"extra"}); err != nil || n != 4 {
		h.t.Errorf("EditTags remove extra: %d, %v; want 4", n, err)
	}
}

func nonEmptyLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

// exportSet exports the store and returns its records, normalised for
// comparison (Version and LastUpdate dropped), sorted.
func (h *harness) exportSet(s hubcore.Store) []string {
	h.t.Helper()
	var buf bytes.Buffer
	if err := s.Export(h.ctx, &buf); err != nil {
		h.t.Fatalf("Export: %v", err)
	}
	var out []string
	for i, line := range nonEmptyLines(buf.String()) {
		var rec hubcore.ExportRecord
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			h.t.Fatalf("export line %d does not parse: %v\n%s", i+1, err, line)
		}
		switch {
		case rec.Installation != nil:
			out = append(out, "I "+instJSON(rec.Installation))
		case rec.Registration != nil:
			out = append(out, "R "+regJSON(rec.Registration))
		}
	}
	sort.Strings(out)
	return out
}

func exportFixture(h *harness) {
	for i, p := range hubcore.Platforms {
		in := Installation(fmt.Sprintf("E-%d", i), p, i, "t1", fmt.Sprintf("p%d", i))
		if i%2 == 0 {
			in.UserID = fmt.Sprintf("user-%d", i)
			in.PushVariables = map[string]string{"k": "v"}
			in.Templates = map[string]*hubcore.Template{"alert": TemplateFor(p, "x"), "Other One": TemplateFor(p)}
		}
		if i == 3 {
			in.ExpirationTime = h.clock.Now().Add(24 * time.Hour)
		}
		h.put(in)
		r := Registration(fmt.Sprintf("%d-0-1", i), p, 100+i, "t1")
		if i%2 == 1 {
			r.Template, r.TemplateName = TemplateFor(p), "tt"
			r.PushVariables = map[string]string{"a": "b"}
		}
		h.putReg(r)
	}
	if _, err := h.s.ExpireHandle(h.ctx, hubcore.FCMV1, Channel(hubcore.FCMV1, 1).Handle, h.clock.Now()); err != nil {
		h.t.Fatal(err)
	}
	gone := Installation("expired", hubcore.APNS, 99)
	gone.ExpirationTime = h.clock.Now().Add(time.Second)
	h.put(gone)
	h.clock.Advance(time.Second)
}

func testExportImport(h *harness) {
	exportFixture(h)
	first := h.exportSet(h.s)
	if len(first) != 2*len(hubcore.Platforms) {
		h.t.Fatalf("export has %d records; want %d", len(first), 2*len(hubcore.Platforms))
	}
	var buf bytes.Buffer
	if err := h.s.Export(h.ctx, &buf); err != nil {
		h.t.Fatal(err)
	}
	lines := len(nonEmptyLines(buf.String()))

	other := h.newStore()
	n, err := other.Import(h.ctx, bytes.NewReader(buf.Bytes()))
	if err != nil || n != int64(lines) {
		h.t.Fatalf("Import: %d, %v; want %d", n, err, lines)
	}
	second := h.exportSet(other)
	if strings.Join(first, "\n") != strings.Join(second, "\n") {
		h.t.Errorf("export → import → export changed the records:\nfirst:\n%s\nsecond:\n%s", strings.Join(first, "\n"), strings.Join(second, "\n"))
	}
	// The imported store works: reads, audiences, the expired handle.
	oh := &harness{t: h.t, ctx: h.ctx, s: other, clock: h.clock, opts: h.opts, lim: h.lim}
	oh.sameInst("imported E-0", oh.get("e-0"), h.get("E-0"))
	if g := oh.get("E-1"); !g.PushChannelExpired {
		h.t.Error("import lost pushChannelExpired")
	}
	oh.checkAudience("imported audience", hubcore.AudienceQuery{Expr: parseExpr(h, "x"), Template: true},
		[]string{hubcore.ProjectionID("E-0", "alert"), hubcore.ProjectionID("E-2", "alert"), hubcore.ProjectionID("E-4", "alert"), hubcore.ProjectionID("E-6", "alert")})
	oh.checkAudience("imported native audience", hubcore.AudienceQuery{Expr: parseExpr(h, "t1"), Platform: hubcore.GCM}, []string{hubcore.ProjectionID("E-2", ""), "2-0-1"})

	// Importing again replaces: same content, versions bumped.
	if n, err := other.Import(h.ctx, bytes.NewReader(buf.Bytes())); err != nil || n != int64(lines) {
		h.t.Fatalf("second Import: %d, %v", n, err)
	}
	if g := oh.get("E-0"); g.Version != 2 {
		h.t.Errorf("re-imported installation at version %d; want 2", g.Version)
	}
	if third := h.exportSet(other); strings.Join(first, "\n") != strings.Join(third, "\n") {
		h.t.Error("importing twice changed the records")
	}
	// Import writes over a registration tombstone.
	if err := other.DeleteRegistration(h.ctx, "0-0-1", hubcore.Always); err != nil {
		h.t.Fatal(err)
	}
	if _, err := other.Import(h.ctx, bytes.NewReader(buf.Bytes())); err != nil {
		h.t.Errorf("Import over a tombstone: %v", err)
	}
	oh.getReg("0-0-1")
}

func testImportMalformed(h *harness) {
	good := func(id string) string {
		b, err := json.Marshal(hubcore.ExportRecord{Installation: h.prepInst(Installation(id, hubcore.APNS, len(id), "t"))})
		if err != nil {
			h.t.Fatal(err)
		}
		return string(b)
	}
	goodReg := func(id string) string {
		b, err := json.Marshal(hubcore.ExportRecord{Registration: h.prepReg(Registration(id, hubcore.GCM, 7, "t"))})
		if err != nil {
			h.t.Fatal(err)
		}
		return string(b)
	}
	bad := []struct {
		name string
		line string
	}{
		{"not JSON", `{"installation":`},
		{"neither record", `{}`},
		{"both records", `{"installation":{"installationId":"z","platform":"apns","pushChannel":"` + APNSToken(1) + `"},"registration":{"registrationId":"1-1-1","platform":"gcm","pushChannel":"x"}}`},
		{"invalid installation", `{"installation":{"installationId":"z","platform":"apns","pushChannel":"not-hex"}}`},
		{"invalid registration", `{"registration":{"registrationId":"1-1-1","platform":"apns","pushChannel":"zz"}}`},
		{"registration without id", `{"registration":{"platform":"gcm","pushChannel":"tok"}}`},
		{"projected registration id", `{"registration":{"registrationId":"inst~z","platform":"gcm","pushChannel":"tok"}}`},
		{"unknown platform", `{"installation":{"installationId":"z","platform":"pigeon","pushChannel":"x"}}`},
		{"a JSON array", `[1,2]`},
	}
	for i, c := range bad {
		s := h.newStore()
		input := strings.Join([]string{good(fmt.Sprintf("ok-a%d", i)), "", goodReg(fmt.Sprintf("%d-9-9", i)), c.line, good(fmt.Sprintf("ok-b%d", i))}, "\n") + "\n"
		n, err := s.Import(h.ctx, strings.NewReader(input))
		if err == nil {
			h.t.Errorf("%s: Import accepted %q", c.name, c.line)
			continue
		}
		if !strings.Contains(err.Error(), "line 4") {
			h.t.Errorf("%s: error %q does not name line 4", c.name, err)
		}
		if code := hubcore.CodeOf(err); code != hubcore.CodeInvalid && code != hubcore.CodeLimit && code != hubcore.CodeUnsupported {
			h.t.Errorf("%s: error code %q; want invalid", c.name, code)
		}
		if n != 2 {
			h.t.Errorf("%s: Import reported %d written; want 2", c.name, n)
		}
		if _, err := s.GetInstallation(h.ctx, fmt.Sprintf("ok-a%d", i)); err != nil {
			h.t.Errorf("%s: the line before the bad one was not written: %v", c.name, err)
		}
		if _, err := s.GetRegistration(h.ctx, fmt.Sprintf("%d-9-9", i)); err != nil {
			h.t.Errorf("%s: the registration before the bad line was not written: %v", c.name, err)
		}
		if _, err := s.GetInstallation(h.ctx, fmt.Sprintf("ok-b%d", i)); hubcore.CodeOf(err) != hubcore.CodeNotFound {
			h.t.Errorf("%s: the line after the bad one was written (get: %v)", c.name, err)
		}
	}
	// An entry that expired before the import is skipped, not counted.
	old := Installation("old", hubcore.APNS, 1)
	old.ExpirationTime = h.clock.Now().Add(-time.Hour)
	b, _ := json.Marshal(hubcore.ExportRecord{Installation: old})
	n, err := h.s.Import(h.ctx, strings.NewReader(string(b)+"\n"+good("new")))
	if err != nil || n != 1 {
		h.t.Errorf("Import with an expired entry: %d, %v; want 1", n, err)
	}
	if _, err := h.s.GetInstallation(h.ctx, "old"); hubcore.CodeOf(err) != hubcore.CodeNotFound {
		h.t.Errorf("an expired entry was imported (get: %v)", err)
	}
}
