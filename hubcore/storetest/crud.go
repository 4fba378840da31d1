package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/pushgate/pushgate/hubcore"
)

func richInstallation(id string) *hubcore.Installation {
	in := Installation(id, hubcore.APNS, 1, "lang_en", "Team_Blue")
	in.UserID = "user-42"
	in.PushVariables = map[string]string{"city": "Oslo"}
	in.Templates = map[string]*hubcore.Template{
		"alert":         TemplateFor(hubcore.APNS, "loud"),
		"Template Name": {Body: `{"aps":{"badge":"#(n)"}}`},
	}
	return in
}

func testInstallationCRUD(h *harness) {
	in := h.prepInst(richInstallation("dev-1"))
	got, err := h.s.PutInstallation(h.ctx, in, hubcore.Always)
	if err != nil {
		h.t.Fatalf("create: %v", err)
	}
	if got.Version != 1 {
		h.t.Errorf("create: Version %d; want 1", got.Version)
	}
	h.sameInst("create result", got, in)

	// Read your writes, with templates compiled.
	g := h.get("dev-1")
	if g.Version != 1 {
		h.t.Errorf("get: Version %d; want 1", g.Version)
	}
	h.sameInst("get", g, in)

	// The store hands out copies: changing them changes nothing stored.
	g.Tags[0] = "mutated"
	g.PushVariables["city"] = "mutated"
	in.Tags[1] = "mutated_input"
	h.sameInst("get after mutating a returned copy and the input", h.get("dev-1"), h.prepInst(richInstallation("dev-1")))

	// Replace.
	repl := h.prepInst(richInstallation("dev-1"))
	repl.Tags = []string{"only"}
	delete(repl.Templates, "alert")
	got, err = h.s.PutInstallation(h.ctx, repl, hubcore.Always)
	if err != nil {
		h.t.Fatalf("replace: %v", err)
	}
	if got.Version != 2 {
		h.t.Errorf("replace: Version %d; want 2", got.Version)
	}
	g = h.get("dev-1")
	if g.Version != 2 {
		h.t.Errorf("get after replace: Version %d; want 2", g.Version)
	}
	h.sameInst("get after replace", g, repl)

	// Delete, then it is gone, and deleting again is NotFound.
	if err := h.s.DeleteInstallation(h.ctx, "dev-1", hubcore.Always); err != nil {
		h.t.Fatalf("delete: %v", err)
	}
	_, err = h.s.GetInstallation(h.ctx, "dev-1")
	h.wantCode("get after delete", err, hubcore.CodeNotFound)
	h.wantCode("delete again", h.s.DeleteInstallation(h.ctx, "dev-1", hubcore.Always), hubcore.CodeNotFound)
	_, err = h.s.GetRegistration(h.ctx, hubcore.ProjectionID("dev-1", ""))
	h.wantCode("projected registration after delete", err, hubcore.CodeNotFound)

	// Re-creating after a delete starts at Version 1 again.
	if got := h.put(richInstallation("dev-1")); got.Version != 1 {
		h.t.Errorf("re-create after delete: Version %d; want 1", got.Version)
	}
	_, err = h.s.GetInstallation(h.ctx, "never-written")
	h.wantCode("get of an unknown id", err, hubcore.CodeNotFound)
}

func testInstallationIDCase(h *harness) {
	h.put(Installation("ABC", hubcore.FCMV1, 1, "a"))
	g := h.get("abc")
	if g.InstallationID != "ABC" || g.Version != 1 {
		h.t.Errorf("get(abc) = %s v%d; want ABC v1", g.InstallationID, g.Version)
	}
	// Writing "abc" replaces "ABC": one installation, the latest spelling.
	got := h.put(Installation("abc", hubcore.FCMV1, 2, "b"))
	if got.Version != 2 {
		h.t.Errorf("put(abc) over ABC: Version %d; want 2", got.Version)
	}
	g = h.get("aBc")
	if g.InstallationID != "abc" || g.Version != 2 || len(g.Tags) != 1 || g.Tags[0] != "b" {
		h.t.Errorf("get(aBc) = %s v%d %v; want abc v2 [b]", g.InstallationID, g.Version, g.Tags)
	}
	page, err := h.s.ListInstallations(h.ctx, hubcore.ListQuery{}, hubcore.PageRequest{})
	if err != nil || len(page.Items) != 1 {
		h.t.Errorf("list: %d items, %v; want the one installation", len(page.Items), err)
	}
	n, err := h.s.Count(h.ctx, hubcore.AudienceQuery{Platform: hubcore.FCMV1})
	if err != nil || n != 1 {
		h.t.Errorf("broadcast count %d, %v; want 1", n, err)
	}
	if err := h.s.DeleteInstallation(h.ctx, "ABC", hubcore.Cond{Version: 2}); err != nil {
		h.t.Errorf("delete(ABC) at version 2: %v", err)
	}
	_, err = h.s.GetInstallation(h.ctx, "abc")
	h.wantCode("get after delete under another spelling", err, hubcore.CodeNotFound)
}

func testInstallationConditions(h *harness) {
	_, err := h.s.PutInstallation(h.ctx, h.prepInst(Installation("c1", hubcore.APNS, 1)), hubcore.Cond{Version: 1})
	h.wantConflict("put with If-Match 1 on an absent installation", err, 0)
	_, err = h.s.PutInstallation(h.ctx, h.prepInst(Installation("c1", hubcore.APNS, 1)), hubcore.Cond{Exists: true})
	h.wantCode("put with If-Match * on an absent installation", err, hubcore.CodeNotFound)
	if _, err := h.s.GetInstallation(h.ctx, "c1"); hubcore.CodeOf(err) != hubcore.CodeNotFound {
		h.t.Fatalf("a failed conditional put created the installation (get: %v)", err)
	}

	created, err := h.s.PutInstallation(h.ctx, h.prepInst(Installation("c1", hubcore.APNS, 1)), hubcore.Cond{Absent: true})
	if err != nil || created.Version != 1 {
		h.t.Fatalf("put with If-None-Match * on an absent installation: %v", err)
	}
	_, err = h.s.PutInstallation(h.ctx, h.prepInst(Installation("C1", hubcore.APNS, 1, "w")), hubcore.Cond{Absent: true})
	h.wantConflict("put with If-None-Match * on an existing installation", err, 1)
	got, err := h.s.PutInstallation(h.ctx, h.prepInst(Installation("c1", hubcore.APNS, 1, "x")), hubcore.Cond{Version: 1})
	if err != nil || got.Version != 2 {
		h.t.Fatalf("put at the current version: %v (version %v)", err, got)
	}
	_, err = h.s.PutInstallation(h.ctx, h.prepInst(Installation("c1", hubcore.APNS, 1, "y")), hubcore.Cond{Version: 1})
	h.wantConflict("put at a stale version", err, 2)
	if g := h.get("c1"); len(g.Tags) != 1 || g.Tags[0] != "x" {
		h.t.Errorf("a conflicting put changed the installation: %v", g.Tags)
	}
	got, err = h.s.PutInstallation(h.ctx, h.prepInst(Installation("C1", hubcore.APNS, 1, "z")), hubcore.Cond{Exists: true})
	if err != nil || got.Version != 3 {
		h.t.Fatalf("put with If-Match * on an existing installation: %v", err)
	}

	h.wantConflict("delete at a stale version", h.s.DeleteInstallation(h.ctx, "c1", hubcore.Cond{Version: 2}), 3)
	h.get("c1")
	if err := h.s.DeleteInstallation(h.ctx, "c1", hubcore.Cond{Version: 3}); err != nil {
		h.t.Fatalf("delete at the current version: %v", err)
	}
	h.wantCode("delete * of an absent installation", h.s.DeleteInstallation(h.ctx, "c1", hubcore.Cond{Exists: true}), hubcore.CodeNotFound)
	h.wantCode("delete at a version of an absent installation", h.s.DeleteInstallation(h.ctx, "c1", hubcore.Cond{Version: 3}), hubcore.CodeNotFound)

	// Deleting through the projected native registration honours the
	// installation's version, which projected registrations carry.
	h.put(Installation("c2", hubcore.APNS, 2))
	pid := hubcore.ProjectionID("c2", "")
	if r := h.getReg(pid); r.Version != 1 {
		h.t.Errorf("projected registration Version %d; want the installation's 1", r.Version)
	}
	h.wantConflict("delete projected at a stale version", h.s.DeleteRegistration(h.ctx, pid, hubcore.Cond{Version: 7}), 1)
	if err := h.s.DeleteRegistration(h.ctx, pid, hubcore.Cond{Version: 1}); err != nil {
		h.t.Errorf("delete projected at the current version: %v", err)
	}
}

// testInstallationIncarnations: an id deleted and created again starts at
// version 1 again, so a precondition taken from the first incarnation
// (hubcore.CondOn) must not hold for the second: it also names the time
// the version was written.
func testInstallationIncarnations(h *harness) {
	first := h.put(Installation("inc", hubcore.APNS, 1, "first"))
	if err := h.s.DeleteInstallation(h.ctx, "inc", hubcore.CondOn(first)); err != nil {
		h.t.Fatalf("delete on the record as read: %v", err)
	}
	h.clock.Advance(time.Millisecond)
	second := h.put(Installation("inc", hubcore.APNS, 2, "second"))
	if second.Version != first.Version {
		h.t.Fatalf("re-created at version %d, first at %d: the case this test is about needs them equal", second.Version, first.Version)
	}
	_, err := h.s.PutInstallation(h.ctx, h.prepInst(Installation("inc", hubcore.APNS, 3, "late")), hubcore.CondOn(first))
	h.wantConflict("put on the first incarnation over the second", err, second.Version)
	h.wantConflict("delete on the first incarnation of the second", h.s.DeleteInstallation(h.ctx, "inc", hubcore.CondOn(first)), second.Version)
	_, err = h.s.PutInstallation(h.ctx, h.prepInst(Installation("inc", hubcore.APNS, 3, "late")), hubcore.CondOn(nil))
	h.wantConflict("create over the second incarnation", err, second.Version)
	if g := h.get("inc"); len(g.Tags) != 1 || g.Tags[0] != "second" || g.Version != second.Version {
		h.t.Fatalf("refused writes changed the installation: %+v", g)
	}
	got, err := h.s.PutInstallation(h.ctx, h.prepInst(Installation("inc", hubcore.APNS, 3, "third")), hubcore.CondOn(h.get("inc")))
	if err != nil || got.Version != second.Version+1 {
		h.t.Fatalf("put on the record as read: %+v, %v", got, err)
	}
	if err := h.s.DeleteInstallation(h.ctx, "inc", hubcore.CondOn(got)); err != nil {
		h.t.Fatalf("delete on the record as written: %v", err)
	}
}

// addTagPatch returns a patch adding one tag.
func addTagPatch(h *harness, t string) []hubcore.PatchOp {
	ops, err := hubcore.ParsePatch([]byte(fmt.Sprintf(`[{"op":"add","path":"/tags","value":%q}]`, t)))
	if err != nil {
		h.t.Fatalf("ParsePatch: %v", err)
	}
	return ops
}

func testUpdateInstallation(h *harness) {
	called := false
	_, err := h.s.UpdateInstallation(h.ctx, "absent", func(in *hubcore.Installation) (*hubcore.Installation, error) {
		called = true
		return in, nil
	})
	h.wantCode("update of an absent installation", err, hubcore.CodeNotFound)
	if called {
		h.t.Error("fn was called for an absent installation")
	}

	h.put(richInstallation("u1"))
	ops := addTagPatch(h, "added")
	got, err := h.s.UpdateInstallation(h.ctx, "U1", func(in *hubcore.Installation) (*hubcore.Installation, error) {
		out, err := hubcore.ApplyPatch(in, ops, h.lim)
		if err != nil {
			return nil, err
		}
		out.Stamp(h.clock.Now(), h.lim)
		return out, nil
	})
	if err != nil {
		h.t.Fatalf("update: %v", err)
	}
	if got.Version != 2 {
		h.t.Errorf("update: Version %d; want 2", got.Version)
	}
	want := h.prepInst(richInstallation("u1"))
	want.Tags = append(want.Tags, "added")
	h.sameInst("update result", got, want)
	h.sameInst("get after update", h.get("u1"), want)
	// The new tag is indexed at once.
	if n, err := h.s.Count(h.ctx, hubcore.AudienceQuery{Expr: parseExpr(h, "ADDED"), Platform: hubcore.APNS}); err != nil || n != 1 {
		h.t.Errorf("audience of the added tag: %d, %v; want 1", n, err)
	}

	// fn's error is returned as is, and fn's changes to its argument are
	// not written.
	sentinel := errors.New("policy says no")
	_, err = h.s.UpdateInstallation(h.ctx, "u1", func(in *hubcore.Installation) (*hubcore.Installation, error) {
		in.Tags = append(in.Tags, "sneaky")
		in.UserID = "mallory"
		return nil, sentinel
	})
	if err != sentinel {
		h.t.Errorf("fn's error: got %v; want it returned as is", err)
	}
	h.sameInst("after a failed update", h.get("u1"), want)
	hubErr := &hubcore.Error{Code: hubcore.CodeForbidden, Reason: "no"}
	_, err = h.s.UpdateInstallation(h.ctx, "u1", func(*hubcore.Installation) (*hubcore.Installation, error) { return nil, hubErr })
	if err != hubErr {
		h.t.Errorf("fn's *hubcore.Error: got %v; want it returned as is", err)
	}

	// fn returning nothing, or another installation, is a caller bug the
	// store refuses.
	_, err = h.s.UpdateInstallation(h.ctx, "u1", func(*hubcore.Installation) (*hubcore.Installation, error) { return nil, nil })
	h.wantCode("fn returning nil", err, hubcore.CodeInvalid)
	_, err = h.s.UpdateInstallation(h.ctx, "u1", func(in *hubcore.Installation) (*hubcore.Installation, error) {
		out := in.Clone()
		out.InstallationID = "other"
		return out, nil
	})
	h.wantCode("fn changing the id", err, hubcore.CodeInvalid)
	if _, err := h.s.GetInstallation(h.ctx, "other"); hubcore.CodeOf(err) != hubcore.CodeNotFound {
		h.t.Errorf("an update wrote another installation (get: %v)", err)
	}
	if g := h.get("u1"); g.Version != 2 {
		h.t.Errorf("refused updates changed the version to %d", g.Version)
	}
}

func testUpdateInstallationConcurrent(h *harness) {
	const n = 50
	lim := hubcore.Limits{MaxTags: 100}
	h.put(Installation("hot", hubcore.FCMV1, 1))
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ops := addTagPatch(h, fmt.Sprintf("t%02d", i))
			_, err := h.s.UpdateInstallation(h.ctx, "hot", func(in *hubcore.Installation) (*hubcore.Installation, error) {
				out, err := hubcore.ApplyPatch(in, ops, lim)
				if err != nil {
					return nil, err
				}
				out.Stamp(h.clock.Now(), lim)
				return out, nil
			})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			h.t.Errorf("concurrent update: %v", err)
		}
	}
	g := h.get("hot")
	have := map[string]bool{}
	for _, t := range g.Tags {
		have[t] = true
	}
	for i := 0; i < n; i++ {
		if t := fmt.Sprintf("t%02d", i); !have[t] {
			h.t.Errorf("tag %s lost by a concurrent update", t)
		}
	}
	if len(g.Tags) != n || g.Version != n+1 {
		h.t.Errorf("%d tags at version %d; want %d at %d", len(g.Tags), g.Version, n, n+1)
	}
}

func testRegistrationCRUD(h *harness) {
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		id, err := h.s.NewRegistrationID(h.ctx)
		if err != nil {
			h.t.Fatalf("NewRegistrationID: %v", err)
		}
		if err := hubcore.ValidateRegistrationID(id); err != nil {
			h.t.Fatalf("NewRegistrationID returned an invalid id: %v", err)
		}
		if seen[id] {
			h.t.Fatalf("NewRegistrationID repeated %s", id)
		}
		seen[id] = true
	}

	r := h.prepReg(Registration("123-234-1", hubcore.APNS, 1, "news", "Sports"))
	got, err := h.s.PutRegistration(h.ctx, r, hubcore.Always)
	if err != nil {
		h.t.Fatalf("create at a client-chosen id: %v", err)
	}
	if got.Version != 1 {
		h.t.Errorf("create: Version %d; want 1", got.Version)
	}
	h.sameReg("create result", got, r)
	g := h.getReg("123-234-1")
	if g.Version != 1 {
		h.t.Errorf("get: Version %d; want 1", g.Version)
	}
	h.sameReg("get", g, r)

	// A template registration replaces it.
	tr := Registration("123-234-1", hubcore.APNS, 1, "news")
	tr.Template = &hubcore.Template{Body: `{"aps":{"alert":"$(m)"}}`, Priority: "10"}
	tr.TemplateName = "t1"
	tr.PushVariables = map[string]string{"v": "1"}
	h.prepReg(tr)
	got, err = h.s.PutRegistration(h.ctx, tr, hubcore.Always)
	if err != nil {
		h.t.Fatalf("update: %v", err)
	}
	if got.Version != 2 {
		h.t.Errorf("update: Version %d; want 2", got.Version)
	}
	g = h.getReg("123-234-1")
	h.sameReg("get after update", g, tr)
	if g.Version != 2 || g.Template == nil || g.Template.Compiled() == nil {
		h.t.Errorf("get after update: version %d, template %v", g.Version, g.Template)
	}

	if err := h.s.DeleteRegistration(h.ctx, "123-234-1", hubcore.Always); err != nil {
		h.t.Fatalf("delete: %v", err)
	}
	_, err = h.s.GetRegistration(h.ctx, "123-234-1")
	h.wantCode("get after delete", err, hubcore.CodeNotFound)
	h.wantCode("delete again", h.s.DeleteRegistration(h.ctx, "123-234-1", hubcore.Always), hubcore.CodeNotFound)
	_, err = h.s.GetRegistration(h.ctx, "never-1-1")
	h.wantCode("get of an unknown id", err, hubcore.CodeNotFound)

	// Projected ids cannot be written as registrations.
	p := h.prepReg(Registration("x-1", hubcore.APNS, 2))
	for _, id := range []string{hubcore.ProjectionID("dev", ""), hubcore.ProjectionID("dev", "alert"), "inst~"} {
		p.RegistrationID = id
		_, err = h.s.PutRegistration(h.ctx, p, hubcore.Always)
		h.wantCode("put at projected id "+id, err, hubcore.CodeInvalid)
	}
}

func testRegistrationConditions(h *harness) {
	_, err := h.s.PutRegistration(h.ctx, h.prepReg(Registration("1-1-1", hubcore.GCM, 1)), hubcore.Cond{Version: 1})
	h.wantConflict("put with If-Match 1 on an absent registration", err, 0)
	_, err = h.s.PutRegistration(h.ctx, h.prepReg(Registration("1-1-1", hubcore.GCM, 1)), hubcore.Cond{Exists: true})
	h.wantCode("put with If-Match * on an absent registration", err, hubcore.CodeNotFound)
	h.wantCode("delete of an absent registration", h.s.DeleteRegistration(h.ctx, "1-1-1", hubcore.Cond{Exists: true}), hubcore.CodeNotFound)

	h.putReg(Registration("1-1-1", hubcore.GCM, 1, "a"))
	got, err := h.s.PutRegistration(h.ctx, h.prepReg(Registration("1-1-1", hubcore.GCM, 1, "b")), hubcore.Cond{Version: 1})
	if err != nil || got.Version != 2 {
		h.t.Fatalf("put at the current version: %v", err)
	}
	_, err = h.s.PutRegistration(h.ctx, h.prepReg(Registration("1-1-1", hubcore.GCM, 1, "c")), hubcore.Cond{Version: 1})
	h.wantConflict("put at a stale version", err, 2)
	if g := h.getReg("1-1-1"); len(g.Tags) != 1 || g.Tags[0] != "b" {
		h.t.Errorf("a conflicting put changed the registration: %v", g.Tags)
	}
	if _, err := h.s.PutRegistration(h.ctx, h.prepReg(Registration("1-1-1", hubcore.GCM, 1, "d")), hubcore.Cond{Exists: true}); err != nil {
		h.t.Fatalf("put with If-Match * on an existing registration: %v", err)
	}
	h.wantConflict("delete at a stale version", h.s.DeleteRegistration(h.ctx, "1-1-1", hubcore.Cond{Version: 2}), 3)
	if err := h.s.DeleteRegistration(h.ctx, "1-1-1", hubcore.Cond{Version: 3}); err != nil {
		h.t.Errorf("delete at the current version: %v", err)
	}
}

func testRegistrationIssuedAndGone(h *harness) {
	_, err := h.s.PutRegistration(h.ctx, h.prepReg(Registration("999-1-1", hubcore.APNS, 1)), hubcore.Cond{Issued: true})
	h.wantCode("put with Issued at a never-issued id", err, hubcore.CodeGone)

	id, err := h.s.NewRegistrationID(h.ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	got, err := h.s.PutRegistration(h.ctx, h.prepReg(Registration(id, hubcore.APNS, 1)), hubcore.Cond{Issued: true})
	if err != nil || got.Version != 1 {
		h.t.Fatalf("put with Issued at an issued id: %v", err)
	}
	got, err = h.s.PutRegistration(h.ctx, h.prepReg(Registration(id, hubcore.APNS, 1, "x")), hubcore.Cond{Issued: true})
	if err != nil || got.Version != 2 {
		h.t.Fatalf("put with Issued at an existing id: %v", err)
	}
	// An existing registration needs no issue record either.
	h.putReg(Registration("5-5-5", hubcore.FCMV1, 5))
	if _, err := h.s.PutRegistration(h.ctx, h.prepReg(Registration("5-5-5", hubcore.FCMV1, 5)), hubcore.Cond{Issued: true}); err != nil {
		h.t.Errorf("put with Issued at an existing client-chosen id: %v", err)
	}

	// After a delete the id is gone for RegistrationIDTTL, whatever the
	// condition, then usable again.
	if err := h.s.DeleteRegistration(h.ctx, id, hubcore.Always); err != nil {
		h.t.Fatal(err)
	}
	for _, c := range []hubcore.Cond{hubcore.Always, {Issued: true}, {Exists: true}} {
		_, err = h.s.PutRegistration(h.ctx, h.prepReg(Registration(id, hubcore.APNS, 1)), c)
		h.wantCode(fmt.Sprintf("put %+v at a deleted id", c), err, hubcore.CodeGone)
	}
	h.clock.Advance(hubcore.RegistrationIDTTL - time.Minute)
	_, err = h.s.PutRegistration(h.ctx, h.prepReg(Registration(id, hubcore.APNS, 1)), hubcore.Always)
	h.wantCode("put at a deleted id just before the TTL", err, hubcore.CodeGone)
	h.clock.Advance(2 * time.Minute)
	got, err = h.s.PutRegistration(h.ctx, h.prepReg(Registration(id, hubcore.APNS, 1)), hubcore.Always)
	if err != nil || got.Version != 1 {
		h.t.Errorf("put at a deleted id after the TTL: %v; want a create at version 1", err)
	}

	// An issued id is forgotten after the TTL too.
	id2, _ := h.s.NewRegistrationID(h.ctx)
	h.clock.Advance(hubcore.RegistrationIDTTL + time.Minute)
	_, err = h.s.PutRegistration(h.ctx, h.prepReg(Registration(id2, hubcore.APNS, 1)), hubcore.Cond{Issued: true})
	h.wantCode("put with Issued at an id issued more than the TTL ago", err, hubcore.CodeGone)
}

func testProjectedRegistrations(h *harness) {
	in := h.put(richInstallation("Proj-1"))
	regs := in.Registrations()
	if len(regs) != 3 {
		h.t.Fatalf("fixture has %d registrations", len(regs))
	}
	for _, want := range regs {
		got := h.getReg(want.RegistrationID)
		h.sameReg("projected "+want.RegistrationID, got, &want)
		if got.Version != in.Version {
			h.t.Errorf("projected %s: Version %d; want the installation's %d", want.RegistrationID, got.Version, in.Version)
		}
	}
	// The installation id part compares case-insensitively.
	h.getReg(hubcore.ProjectionID("PROJ-1", ""))
	h.getReg(hubcore.ProjectionID("proj-1", "alert"))
	for _, id := range []string{hubcore.ProjectionID("Proj-1", "nope"), hubcore.ProjectionID("nobody", ""), hubcore.ProjectionID("nobody", "alert")} {
		_, err := h.s.GetRegistration(h.ctx, id)
		h.wantCode("get "+id, err, hubcore.CodeNotFound)
	}

	// Deleting a projected template registration removes the template.
	alertID := hubcore.ProjectionID("Proj-1", "alert")
	h.wantConflict("delete projected template at a stale version", h.s.DeleteRegistration(h.ctx, alertID, hubcore.Cond{Version: 9}), 1)
	if err := h.s.DeleteRegistration(h.ctx, alertID, hubcore.Always); err != nil {
		h.t.Fatalf("delete projected template: %v", err)
	}
	g := h.get("proj-1")
	if _, ok := g.Templates["alert"]; ok || len(g.Templates) != 1 || g.Version != 2 {
		h.t.Errorf("after deleting the projected template: templates %v, version %d; want only \"Template Name\" at 2", g.Templates, g.Version)
	}
	_, err := h.s.GetRegistration(h.ctx, alertID)
	h.wantCode("get deleted projected template", err, hubcore.CodeNotFound)
	h.wantCode("delete it again", h.s.DeleteRegistration(h.ctx, alertID, hubcore.Always), hubcore.CodeNotFound)
	// Its tags left the index: "loud" was only on that template.
	if n, err := h.s.Count(h.ctx, hubcore.AudienceQuery{Expr: parseExpr(h, "loud"), Template: true}); err != nil || n != 0 {
		h.t.Errorf("template send to a removed template's tag: %d, %v", n, err)
	}
	page, err := h.s.ListInstallations(h.ctx, hubcore.ListQuery{Tag: "loud"}, hubcore.PageRequest{})
	if err != nil || len(page.Items) != 0 {
		h.t.Errorf("installations listed under a removed template's tag: %d, %v", len(page.Items), err)
	}

	// Deleting the native projected registration deletes the installation.
	if err := h.s.DeleteRegistration(h.ctx, hubcore.ProjectionID("proj-1", ""), hubcore.Cond{Exists: true}); err != nil {
		h.t.Fatalf("delete projected native: %v", err)
	}
	_, err = h.s.GetInstallation(h.ctx, "Proj-1")
	h.wantCode("installation after deleting its native registration", err, hubcore.CodeNotFound)
	// Projected ids leave no tombstone: the installation can come back.
	if got := h.put(richInstallation("Proj-1")); got.Version != 1 {
		h.t.Errorf("re-create: version %d", got.Version)
	}
}

func testExpiry(h *harness) {
	now := h.clock.Now()
	short := Installation("short", hubcore.APNS, 1, "x")
	short.ExpirationTime = now.Add(time.Hour)
	h.put(short)
	h.put(Installation("long", hubcore.APNS, 2, "x"))
	rs := Registration("8-8-8", hubcore.APNS, 3, "x")
	rs.ExpirationTime = now.Add(time.Hour)
	h.putReg(rs)
	h.putReg(Registration("9-9-9", hubcore.APNS, 4, "x"))

	q := hubcore.AudienceQuery{Expr: parseExpr(h, "x"), Platform: hubcore.APNS}
	if n, err := h.s.Count(h.ctx, q); err != nil || n != 4 {
		h.t.Fatalf("before expiry: count %d, %v; want 4", n, err)
	}
	h.clock.Advance(time.Hour)

	_, err := h.s.GetInstallation(h.ctx, "short")
	h.wantCode("get of an expired installation", err, hubcore.CodeNotFound)
	_, err = h.s.GetRegistration(h.ctx, hubcore.ProjectionID("short", ""))
	h.wantCode("get of an expired installation's projection", err, hubcore.CodeNotFound)
	_, err = h.s.GetRegistration(h.ctx, "8-8-8")
	h.wantCode("get of an expired registration", err, hubcore.CodeNotFound)
	_, err = h.s.UpdateInstallation(h.ctx, "short", func(in *hubcore.Installation) (*hubcore.Installation, error) { return in, nil })
	h.wantCode("update of an expired installation", err, hubcore.CodeNotFound)
	h.wantCode("delete of an expired installation", h.s.DeleteInstallation(h.ctx, "short", hubcore.Always), hubcore.CodeNotFound)
	h.wantCode("delete of an expired registration", h.s.DeleteRegistration(h.ctx, "8-8-8", hubcore.Always), hubcore.CodeNotFound)

	h.checkListed(hubcore.ListQuery{}, []string{"long"}, []string{hubcore.ProjectionID("long", ""), "9-9-9"})
	h.checkListed(hubcore.ListQuery{Tag: "x"}, []string{"long"}, []string{hubcore.ProjectionID("long", ""), "9-9-9"})
	h.checkAudience("after expiry", q, []string{hubcore.ProjectionID("long", ""), "9-9-9"})
	var buf bytes.Buffer
	if err := h.s.Export(h.ctx, &buf); err != nil {
		h.t.Fatal(err)
	}
	if n := len(nonEmptyLines(buf.String())); n != 2 {
		h.t.Errorf("export after expiry: %d lines; want 2", n)
	}

	// An expired registration's id is gone like a deleted one's.
	_, err = h.s.PutRegistration(h.ctx, h.prepReg(Registration("8-8-8", hubcore.APNS, 3)), hubcore.Always)
	h.wantCode("put at an expired registration's id", err, hubcore.CodeGone)
	// An expired installation is absent: conditional writes see nothing,
	// an unconditional one creates it afresh.
	_, err = h.s.PutInstallation(h.ctx, h.prepInst(Installation("short", hubcore.APNS, 1)), hubcore.Cond{Version: 1})
	h.wantConflict("put at version 1 over an expired installation", err, 0)
	if got := h.put(Installation("short", hubcore.APNS, 1)); got.Version != 1 {
		h.t.Errorf("put over an expired installation: version %d; want 1", got.Version)
	}
	h.clock.Advance(hubcore.RegistrationIDTTL)
	if got := h.putReg(Registration("8-8-8", hubcore.APNS, 3)); got.Version != 1 {
		h.t.Errorf("put at an expired id after the TTL: version %d; want 1", got.Version)
	}
}
