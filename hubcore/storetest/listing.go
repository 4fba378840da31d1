package storetest

import (
	"fmt"
	"strings"

	"github.com/pushgate/pushgate/hubcore"
)

// maxPages stops a listing whose cursor never ends.
const maxPages = 10000

func (h *harness) listInst(q hubcore.ListQuery, limit int) []*hubcore.Installation {
	h.t.Helper()
	var all []*hubcore.Installation
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > maxPages {
			h.t.Fatalf("ListInstallations(%+v): more than %d pages", q, maxPages)
		}
		page, err := h.s.ListInstallations(h.ctx, q, hubcore.PageRequest{Cursor: cursor, Limit: limit})
		if err != nil {
			h.t.Fatalf("ListInstallations(%+v): %v", q, err)
		}
		if limit > 0 && len(page.Items) > limit {
			h.t.Fatalf("ListInstallations(%+v): page of %d items; limit %d", q, len(page.Items), limit)
		}
		all = append(all, page.Items...)
		if page.Next == "" {
			return all
		}
		cursor = page.Next
	}
}

func (h *harness) listRegs(q hubcore.ListQuery, limit int) []*hubcore.Registration {
	h.t.Helper()
	var all []*hubcore.Registration
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > maxPages {
			h.t.Fatalf("ListRegistrations(%+v): more than %d pages", q, maxPages)
		}
		page, err := h.s.ListRegistrations(h.ctx, q, hubcore.PageRequest{Cursor: cursor, Limit: limit})
		if err != nil {
			h.t.Fatalf("ListRegistrations(%+v): %v", q, err)
		}
		if limit > 0 && len(page.Items) > limit {
			h.t.Fatalf("ListRegistrations(%+v): page of %d items; limit %d", q, len(page.Items), limit)
		}
		all = append(all, page.Items...)
		if page.Next == "" {
			return all
		}
		cursor = page.Next
	}
}

func instKeys(ins []*hubcore.Installation) []string {
	out := make([]string, len(ins))
	for i, in := range ins {
		out[i] = hubcore.InstallationKey(in.InstallationID)
	}
	return out
}

func regKeys(rs []*hubcore.Registration) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = normRegID(r.RegistrationID)
	}
	return out
}

func foldAll(ids []string, f func(string) string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = f(id)
	}
	return out
}

// checkListed lists q both ways, in pages of 2, and compares the ids.
func (h *harness) checkListed(q hubcore.ListQuery, wantInst, wantRegs []string) {
	h.t.Helper()
	if wantInst != nil {
		if err := sameIDs(instKeys(h.listInst(q, 2)), foldAll(wantInst, hubcore.InstallationKey)); err != nil {
			h.t.Errorf("ListInstallations(%+v): %v", q, err)
		}
	}
	if wantRegs != nil {
		if err := sameIDs(regKeys(h.listRegs(q, 2)), foldAll(wantRegs, normRegID)); err != nil {
			h.t.Errorf("ListRegistrations(%+v): %v", q, err)
		}
	}
}

// listingFixture writes a small population for the listing tests.
func listingFixture(h *harness) (apnsToken string) {
	a1 := Installation("A1", hubcore.APNS, 1, "news", "Sports")
	a1.UserID = "alice"
	a1.Templates = map[string]*hubcore.Template{"alert": TemplateFor(hubcore.APNS, "loud")}
	h.put(a1)
	a2 := Installation("a2", hubcore.FCMV1, 2, "NEWS")
	a2.UserID = "alice"
	h.put(a2)
	b1 := Installation("b1", hubcore.Browser, 3, "weather")
	b1.UserID = "bob"
	h.put(b1)
	h.put(Installation("c1", hubcore.WNS, 4))
	// r1 has a1's APNs token in lower case: the same handle.
	r1 := Registration("r-1", hubcore.APNS, 1, "news")
	r1.PushChannel.Handle = strings.ToLower(r1.PushChannel.Handle)
	h.putReg(r1)
	r2 := Registration("r-2", hubcore.GCM, 5, "sports")
	r2.Template = TemplateFor(hubcore.GCM)
	h.putReg(r2)
	return Channel(hubcore.APNS, 1).Handle
}

func testListInstallations(h *harness) {
	token := listingFixture(h)
	all := h.listInst(hubcore.ListQuery{}, 0)
	if err := sameIDs(instKeys(all), []string{"a1", "a2", "b1", "c1"}); err != nil {
		h.t.Errorf("list all: %v", err)
	}
	for _, in := range all {
		if in.Version != 1 {
			h.t.Errorf("listed %s at version %d", in.InstallationID, in.Version)
		}
		for name, tp := range in.Templates {
			if tp.Compiled() == nil {
				h.t.Errorf("listed %s with template %s not compiled", in.InstallationID, name)
			}
		}
		if hubcore.InstallationKey(in.InstallationID) == "a1" {
			h.sameInst("listed a1", in, h.get("a1"))
		}
	}
	cases := []struct {
		q    hubcore.ListQuery
		want []string
	}{
		{hubcore.ListQuery{Tag: "news"}, []string{"a1", "a2"}},
		{hubcore.ListQuery{Tag: "NeWs"}, []string{"a1", "a2"}},
		{hubcore.ListQuery{Tag: "sports"}, []string{"a1"}},
		{hubcore.ListQuery{Tag: "loud"}, []string{"a1"}},  // a template's tag
		{hubcore.ListQuery{Tag: "alert"}, []string{"a1"}}, // a template's name
		{hubcore.ListQuery{Tag: "nothing"}, []string{}},
		{hubcore.ListQuery{Tag: "$UserId:{alice}"}, []string{"a1", "a2"}},
		{hubcore.ListQuery{Tag: "$userid:{ALICE}"}, []string{"a1", "a2"}},
		{hubcore.ListQuery{Tag: "$InstallationId:{a1}"}, []string{"a1"}},
		{hubcore.ListQuery{UserID: "alice"}, []string{"a1", "a2"}},
		{hubcore.ListQuery{UserID: "bob"}, []string{"b1"}},
		{hubcore.ListQuery{UserID: "carol"}, []string{}},
		{hubcore.ListQuery{Handle: token}, []string{"a1"}},
		{hubcore.ListQuery{Handle: strings.ToLower(token)}, []string{"a1"}},
		{hubcore.ListQuery{Handle: strings.ToLower(token), Platform: hubcore.APNS}, []string{"a1"}},
		{hubcore.ListQuery{Handle: token, Platform: hubcore.FCMV1}, []string{}},
		{hubcore.ListQuery{Handle: Channel(hubcore.FCMV1, 2).Handle}, []string{"a2"}},
		{hubcore.ListQuery{Handle: Channel(hubcore.Browser, 3).Endpoint}, []string{"b1"}},
		{hubcore.ListQuery{Handle: Channel(hubcore.WNS, 4).Handle}, []string{"c1"}},
		{hubcore.ListQuery{Tag: "news", Platform: hubcore.FCMV1}, []string{"a2"}},
		{hubcore.ListQuery{UserID: "alice", Platform: hubcore.APNS}, []string{"a1"}},
		{hubcore.ListQuery{Platform: hubcore.WNS}, []string{"c1"}},
	}
	for _, c := range cases {
		for _, limit := range []int{1, 0} {
			if err := sameIDs(instKeys(h.listInst(c.q, limit)), c.want); err != nil {
				h.t.Errorf("ListInstallations(%+v) limit %d: %v", c.q, limit, err)
			}
		}
	}
	for _, q := range invalidQueries() {
		_, err := h.s.ListInstallations(h.ctx, q, hubcore.PageRequest{})
		h.wantCode(fmt.Sprintf("ListInstallations(%+v)", q), err, hubcore.CodeInvalid)
	}
}

func invalidQueries() []hubcore.ListQuery {
	return []hubcore.ListQuery{
		{Tag: "bad tag"},
		{Tag: "$Nope:{x}"},
		{Tag: "a", UserID: "b"},
		{Tag: "a", Handle: "b"},
		{UserID: "b", Handle: "c"},
	}
}

func testListRegistrations(h *harness) {
	token := listingFixture(h)
	p := hubcore.ProjectionID
	all := h.listRegs(hubcore.ListQuery{}, 0)
	want := []string{p("a1", ""), p("a1", "alert"), p("a2", ""), p("b1", ""), p("c1", ""), "r-1", "r-2"}
	if err := sameIDs(regKeys(all), foldAll(want, normRegID)); err != nil {
		h.t.Errorf("list all: %v", err)
	}
	for _, r := range all {
		if r.Template != nil && r.Template.Compiled() == nil {
			h.t.Errorf("listed %s with its template not compiled", r.RegistrationID)
		}
		if r.RegistrationID == "r-2" {
			h.sameReg("listed r-2", r, h.getReg("r-2"))
		}
		if normRegID(r.RegistrationID) == normRegID(p("a1", "alert")) {
			h.sameReg("listed projection", r, h.getReg(p("a1", "alert")))
		}
	}
	cases := []struct {
		q    hubcore.ListQuery
		want []string
	}{
		{hubcore.ListQuery{Tag: "NEWS"}, []string{p("a1", ""), p("a1", "alert"), p("a2", ""), "r-1"}},
		{hubcore.ListQuery{Tag: "loud"}, []string{p("a1", "alert")}},
		{hubcore.ListQuery{Tag: "alert"}, []string{p("a1", "alert")}},
		{hubcore.ListQuery{Tag: "sports"}, []string{p("a1", ""), p("a1", "alert"), "r-2"}},
		{hubcore.ListQuery{Tag: "$UserId:{alice}"}, []string{p("a1", ""), p("a1", "alert"), p("a2", "")}},
		{hubcore.ListQuery{Tag: "$InstallationId:{C1}"}, []string{p("c1", "")}},
		{hubcore.ListQuery{UserID: "alice"}, []string{p("a1", ""), p("a1", "alert"), p("a2", "")}},
		{hubcore.ListQuery{Handle: strings.ToLower(token)}, []string{p("a1", ""), p("a1", "alert"), "r-1"}},
		{hubcore.ListQuery{Handle: token, Platform: hubcore.APNS}, []string{p("a1", ""), p("a1", "alert"), "r-1"}},
		{hubcore.ListQuery{Handle: token, Platform: hubcore.GCM}, []string{}},
		{hubcore.ListQuery{Handle: Channel(hubcore.GCM, 5).Handle}, []string{"r-2"}},
		{hubcore.ListQuery{Handle: Channel(hubcore.Browser, 3).Endpoint}, []string{p("b1", "")}},
		{hubcore.ListQuery{Platform: hubcore.GCM}, []string{"r-2"}},
		{hubcore.ListQuery{Tag: "news", Platform: hubcore.APNS}, []string{p("a1", ""), p("a1", "alert"), "r-1"}},
	}
	for _, c := range cases {
		for _, limit := range []int{1, 0} {
			if err := sameIDs(regKeys(h.listRegs(c.q, limit)), foldAll(c.want, normRegID)); err != nil {
				h.t.Errorf("ListRegistrations(%+v) limit %d: %v", c.q, limit, err)
			}
		}
	}
	for _, q := range invalidQueries() {
		_, err := h.s.ListRegistrations(h.ctx, q, hubcore.PageRequest{})
		h.wantCode(fmt.Sprintf("ListRegistrations(%+v)", q), err, hubcore.CodeInvalid)
	}
}

// testPaging lists a few hundred entries in small pages while entries are
// written and deleted between pages: every entry that existed throughout is
// listed exactly once.
func testPaging(h *harness) {
	n := h.opts.Paging
	var wantInst, wantRegs []string
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("P-%04d", i)
		in := Installation(id, hubcore.Platforms[i%len(hubcore.Platforms)], i, "paged")
		if i%3 == 0 {
			in.Templates = map[string]*hubcore.Template{"one": TemplateFor(in.Platform), "two": TemplateFor(in.Platform, "extra")}
		}
		h.put(in)
		wantInst = append(wantInst, id)
		for _, r := range in.Registrations() {
			wantRegs = append(wantRegs, r.RegistrationID)
		}
		if i%4 == 0 {
			rid := fmt.Sprintf("%d-7-1", i)
			h.putReg(Registration(rid, hubcore.FCMV1, 100000+i, "paged"))
			wantRegs = append(wantRegs, rid)
		}
	}
	for _, q := range []hubcore.ListQuery{{}, {Tag: "paged"}} {
		for _, limit := range []int{1, 7, 50} {
			if err := sameIDs(instKeys(h.listInst(q, limit)), foldAll(wantInst, hubcore.InstallationKey)); err != nil {
				h.t.Errorf("ListInstallations(%+v) in pages of %d: %v", q, limit, err)
			}
			if err := sameIDs(regKeys(h.listRegs(q, limit)), foldAll(wantRegs, normRegID)); err != nil {
				h.t.Errorf("ListRegistrations(%+v) in pages of %d: %v", q, limit, err)
			}
		}
	}

	// Churn between pages: delete one entry already listed and one not yet
	// listed, add a new one; the stable entries are listed once each.
	stable := map[string]bool{}
	for _, id := range wantInst {
		stable[hubcore.InstallationKey(id)] = true
	}
	seen := map[string]int{}
	cursor := ""
	churn := 0
	for pages := 0; pages < maxPages; pages++ {
		page, err := h.s.ListInstallations(h.ctx, hubcore.ListQuery{}, hubcore.PageRequest{Cursor: cursor, Limit: 9})
		if err != nil {
			h.t.Fatalf("ListInstallations under churn: %v", err)
		}
		for _, in := range page.Items {
			seen[hubcore.InstallationKey(in.InstallationID)]++
		}
		if len(page.Items) > 0 {
			last := hubcore.InstallationKey(page.Items[0].InstallationID)
			if stable[last] {
				delete(stable, last)
				_ = h.s.DeleteInstallation(h.ctx, last, hubcore.Always)
			}
		}
		ahead := fmt.Sprintf("p-%04d", n-1-churn)
		if stable[ahead] {
			delete(stable, ahead)
			_ = h.s.DeleteInstallation(h.ctx, ahead, hubcore.Always)
		}
		h.put(Installation(fmt.Sprintf("new-%d", churn), hubcore.APNS, 500000+churn))
		churn++
		if page.Next == "" {
			break
		}
		cursor = page.Next
	}
	for id := range stable {
		if seen[id] != 1 {
			h.t.Errorf("under churn, %s (present throughout) was listed %d times", id, seen[id])
		}
	}
	for id, c := range seen {
		if c > 1 {
			h.t.Errorf("under churn, %s was listed %d times", id, c)
		}
	}
}

func testPageRequests(h *harness) {
	for i := 0; i < 150; i++ {
		h.put(Installation(fmt.Sprintf("pr-%03d", i), hubcore.FCMV1, i))
	}
	page, err := h.s.ListInstallations(h.ctx, hubcore.ListQuery{}, hubcore.PageRequest{})
	if err != nil || len(page.Items) != hubcore.DefaultPageSize || page.Next == "" {
		h.t.Errorf("Limit 0: %d items, next %q, %v; want DefaultPageSize and more", len(page.Items), page.Next, err)
	}
	rpage, err := h.s.ListRegistrations(h.ctx, hubcore.ListQuery{}, hubcore.PageRequest{})
	if err != nil || len(rpage.Items) != hubcore.DefaultPageSize || rpage.Next == "" {
		h.t.Errorf("registrations, Limit 0: %d items, %v; want DefaultPageSize", len(rpage.Items), err)
	}
	page, err = h.s.ListInstallations(h.ctx, hubcore.ListQuery{}, hubcore.PageRequest{Limit: hubcore.MaxPageSize * 10})
	if err != nil || len(page.Items) != 150 || page.Next != "" {
		h.t.Errorf("Limit above MaxPageSize: %d items, next %q, %v; want it clamped (all 150, last page)", len(page.Items), page.Next, err)
	}
	_, err = h.s.ListInstallations(h.ctx, hubcore.ListQuery{}, hubcore.PageRequest{Limit: -1})
	h.wantCode("ListInstallations with Limit -1", err, hubcore.CodeInvalid)
	_, err = h.s.ListRegistrations(h.ctx, hubcore.ListQuery{}, hubcore.PageRequest{Limit: -1})
	h.wantCode("ListRegistrations with Limit -1", err, hubcore.CodeInvalid)
	for _, c := range []string{"garbage", "!!!", "\x00\xff", strings.Repeat("A", 5000), "eyJ4IjoxfQ"} {
		_, err = h.s.ListInstallations(h.ctx, hubcore.ListQuery{}, hubcore.PageRequest{Cursor: c, Limit: 5})
		h.wantCode(fmt.Sprintf("ListInstallations with cursor %.20q", c), err, hubcore.CodeInvalid)
		_, err = h.s.ListRegistrations(h.ctx, hubcore.ListQuery{}, hubcore.PageRequest{Cursor: c, Limit: 5})
		h.wantCode(fmt.Sprintf("ListRegistrations with cursor %.20q", c), err, hubcore.CodeInvalid)
	}
	// A page that ends exactly at the last entry may carry a cursor; the
	// page after it is then empty and last.
	page, err = h.s.ListInstallations(h.ctx, hubcore.ListQuery{}, hubcore.PageRequest{Limit: 150})
	if err != nil {
		h.t.Fatal(err)
	}
	if page.Next != "" {
		last, err := h.s.ListInstallations(h.ctx, hubcore.ListQuery{}, hubcore.PageRequest{Limit: 150, Cursor: page.Next})
		if err != nil || len(last.Items) != 0 || last.Next != "" {
			h.t.Errorf("page after the end: %d items, next %q, %v", len(last.Items), last.Next, err)
		}
	}
}
