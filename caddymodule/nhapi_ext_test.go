package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/fanout"
	"github.com/pushgate/pushgate/internal/nhwire"
	"github.com/pushgate/pushgate/memstore"
)

const xp = "/orders/x-pushgate/"

var (
	extListenToken = func() string { return token("DefaultListenSharedAccessSignature", nhListenKey) }
	extSendToken   = func() string { return token("SendOnly", nhSendKey) }
)

// extInstallation is an installation of the seeds below.
func extInstallation(id, platform, handle, userID string, tags ...string) string {
	m := map[string]any{"installationId": id, "platform": platform, "pushChannel": handle, "tags": tags,
		"templates": map[string]any{"t": map[string]any{"body": `{"message":{"data":{"m":"$(msg)"}}}`}}}
	if platform == "apns" {
		m["templates"] = map[string]any{"t": map[string]any{"body": `{"aps":{"alert":"$(msg)"}}`}}
	}
	if userID != "" {
		m["userId"] = userID
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func apnsHandle(i int) string { return fmt.Sprintf("%064X", i+1) }

// seedExt writes eight installations: even ones tagged news, those below
// four of user u1, odd ones on FCM, the rest on APNs; and one Atom
// registration tagged news. It returns the ids by tag news and by u1.
func (e *nhEnv) seedExt() (news, u1 []string) {
	e.t.Helper()
	for i := 0; i < 8; i++ {
		id := fmt.Sprintf("inst-%d", i)
		tags := []string{"lang_en", fmt.Sprintf("n%d", i)}
		if i%2 == 0 {
			tags = append(tags, "news")
			news = append(news, id)
		}
		user := ""
		if i < 4 {
			user = "u1"
			u1 = append(u1, id)
		}
		platform, handle := "apns", apnsHandle(i)
		if i%2 == 1 {
			platform, handle = "fcmv1", fmt.Sprintf("fcm-token-%d", i)
		}
		e.want(e.do("PUT", "/orders/installations/"+id+v, fullToken(), extInstallation(id, platform, handle, user, tags...)), 200, "seed "+id)
	}
	e.want(e.do("POST", "/orders/registrations"+v, fullToken(), appleEntry("news,reg_only")), 200, "seed registration")
	return news, u1
}

// export is the hub's export, checked for shape.
func (e *nhEnv) export() string {
	e.t.Helper()
	res := e.want(e.do("GET", xp+"export"+v, fullToken(), ""), 200, "export")
	if ct := res.header.Get("Content-Type"); ct != "application/x-ndjson" {
		e.t.Fatalf("export Content-Type %q", ct)
	}
	for i, line := range strings.Split(strings.TrimSuffix(res.body, "\n"), "\n") {
		if line == "" {
			continue
		}
		var rec hubcore.ExportRecord
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			e.t.Fatalf("export line %d %q: %v", i+1, line, err)
		}
	}
	return res.body
}

// wantError checks a 4xx: the NH error body, a detail naming what was
// wrong, and an export unchanged by the request.
func (e *nhEnv) wantError(res nhResp, status int, what, detail, before string) {
	e.t.Helper()
	e.want(res, status, what)
	if !strings.Contains(res.body, detail) {
		e.t.Errorf("%s: detail %q lacks %q", what, res.body, detail)
	}
	if now := e.export(); now != before {
		e.t.Fatalf("%s changed what is stored:\nbefore %s\nafter  %s", what, before, now)
	}
}

type extListPage struct {
	Installations []struct {
		InstallationID string   `json:"installationId"`
		Platform       string   `json:"platform"`
		UserID         string   `json:"userId"`
		Tags           []string `json:"tags"`
	} `json:"installations"`
	ContinuationToken *string `json:"continuationToken"`
}

// listAll pages through x-pushgate/installations with $top=top, sending
// the continuation token back alternately in the query and the header;
// it returns the ids in order and the number of pages.
func (e *nhEnv) listAll(filter string, top int) ([]string, int) {
	e.t.Helper()
	var ids []string
	cont := ""
	for pages := 1; ; pages++ {
		q := v + "&$top=" + strconv.Itoa(top) + filter
		var hdr []string
		switch {
		case cont != "" && pages%2 == 0:
			q += "&continuationtoken=" + cont
		case cont != "":
			hdr = []string{nhwire.ContinuationHeader, cont}
		}
		res := e.want(e.do("GET", xp+"installations"+q, fullToken(), "", hdr...), 200, "list "+filter)
		if ct := res.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			e.t.Fatalf("list Content-Type %q", ct)
		}
		var pg extListPage
		if err := json.Unmarshal([]byte(res.body), &pg); err != nil {
			e.t.Fatalf("list body %q: %v", res.body, err)
		}
		if len(pg.Installations) > top {
			e.t.Fatalf("page of %d with $top=%d", len(pg.Installations), top)
		}
		for _, in := range pg.Installations {
			ids = append(ids, in.InstallationID)
		}
		cont = res.header.Get(nhwire.ContinuationHeader)
		if pg.ContinuationToken == nil {
			if cont != "" {
				e.t.Fatalf("header token %q without a body token", cont)
			}
			return ids, pages
		}
		if got, _ := url.QueryUnescape(cont); got != *pg.ContinuationToken || *pg.ContinuationToken == "" {
			e.t.Fatalf("header token %q, body token %q", cont, *pg.ContinuationToken)
		}
		if pages > 50 {
			e.t.Fatal("paging does not end")
		}
	}
}

func TestNHExtListInstallations(t *testing.T) {
	e := newNHEnv(t)
	news, u1 := e.seedExt()
	all := []string{"inst-0", "inst-1", "inst-2", "inst-3", "inst-4", "inst-5", "inst-6", "inst-7"}

	for _, c := range []struct {
		filter string
		top    int
		want   []string
		pages  int
	}{
		{"&tag=news", 2, news, 2},
		{"&tag=NEWS", 3, news, 2}, // tags compare case-insensitively
		{"&userId=u1", 1, u1, 4},
		{"", 3, all, 3},
		{"&platform=fcmv1", 1000, []string{"inst-1", "inst-3", "inst-5", "inst-7"}, 1},
		{"&tag=news&platform=apns", 1, news, 4},
		{"&tag=" + url.QueryEscape("$InstallationId:{inst-5}"), 5, []string{"inst-5"}, 1},
		{"&tag=nobody", 5, nil, 1},
	} {
		ids, pages := e.listAll(c.filter, c.top)
		sort.Strings(ids)
		if !slices.Equal(ids, c.want) {
			t.Errorf("%q: listed %v, want %v", c.filter, ids, c.want)
		}
		// A full last page may need one more (empty) request to learn
		// the end, so allow one extra page.
		if pages != c.pages && pages != c.pages+1 {
			t.Errorf("%q: %d pages with $top=%d, want %d", c.filter, pages, c.top, c.pages)
		}
	}
	res := e.want(e.do("GET", xp+"installations"+v+"&tag=n3", fullToken(), ""), 200, "one")
	var pg extListPage
	if err := json.Unmarshal([]byte(res.body), &pg); err != nil || len(pg.Installations) != 1 {
		t.Fatalf("tag=n3: %s", res.body)
	}
	if in := pg.Installations[0]; in.InstallationID != "inst-3" || in.Platform != "fcmv1" || in.UserID != "u1" || !slices.Contains(in.Tags, "n3") {
		t.Errorf("tag=n3: %+v", in)
	}

	before := e.export()
	for _, c := range []struct{ name, query, detail string }{
		{"tag and user", "&tag=news&userId=u1", "not both"},
		{"empty tag", "&tag=", "empty tag"},
		{"bad tag", "&tag=" + url.QueryEscape("a b"), "tag: invalid tag"},
		{"long tag", "&tag=" + strings.Repeat("t", 121), "longer than 120"},
		{"empty user", "&userId=", "userId"},
		{"bad user", "&userId=" + url.QueryEscape("a b"), "userId"},
		{"bad platform", "&platform=pager", "platform"},
		{"$top zero", "&$top=0", "$top"},
		{"$top over", "&$top=1001", "$top: 1001 is over the largest page, 1000"},
		{"$top word", "&$top=ten", "$top"},
		{"bad cursor", "&continuationtoken=garbage", "continuationtoken"},
	} {
		e.wantError(e.do("GET", xp+"installations"+v+c.query, fullToken(), ""), 400, c.name, c.detail, before)
	}
	e.wantError(e.do("GET", xp+"installations"+v, extListenToken(), ""), 403, "listen lists", "Manage claim is required", before)
	e.wantError(e.do("GET", xp+"installations"+v, extSendToken(), ""), 403, "send lists", "Manage claim is required", before)
	e.wantError(e.do("GET", xp+"installations"+v, "", ""), 401, "no token", "MissingToken", before)
	e.wantError(e.do("GET", "/nohub/x-pushgate/installations"+v, fullToken(), ""), 404, "unknown hub", "no hub", before)
	e.wantError(e.do("GET", xp+"frobs"+v, fullToken(), ""), 404, "unknown extension", "x-pushgate/frobs", before)
	res = e.do("POST", xp+"installations"+v, fullToken(), "")
	e.wantError(res, 405, "POST list", "POST is not allowed", before)
	if res.header.Get("Allow") != "GET" {
		t.Errorf("Allow %q", res.header.Get("Allow"))
	}
}

type audienceAnswer struct {
	Expression *string `json:"expression"`
	Broadcast  bool    `json:"broadcast"`
	Format     string  `json:"format"`
	Targets    int64   `json:"targets"`
	Plan       struct {
		Estimated bool           `json:"estimated"`
		Universe  int64          `json:"universe"`
		Estimate  int64          `json:"estimate"`
		Steps     []audienceStep `json:"steps"`
	} `json:"plan"`
	Explain string `json:"explain"`
}

func (e *nhEnv) audience(method, query, body string) audienceAnswer {
	e.t.Helper()
	res := e.want(e.do(method, xp+"audience"+v+query, fullToken(), body), 200, "audience "+query+body)
	var a audienceAnswer
	if err := json.Unmarshal([]byte(res.body), &a); err != nil {
		e.t.Fatalf("audience body %q: %v", res.body, err)
	}
	return a
}

func TestNHExtAudience(t *testing.T) {
	e := newNHEnv(t)
	e.seedExt()
	before := e.export()

	// Templates: each installation has one; the Atom registration is
	// native. news is on inst-0, 2, 4, 6.
	a := e.audience("GET", "&expression=news", "")
	if a.Targets != 4 || a.Format != "template" || a.Broadcast || a.Expression == nil || *a.Expression != "news" {
		t.Errorf("news: %+v", a)
	}
	if len(a.Plan.Steps) != 1 || a.Plan.Steps[0].Scan != "tag" || a.Plan.Steps[0].Tag != "news" || !a.Plan.Estimated ||
		a.Plan.Steps[0].Estimate < 4 || !strings.Contains(a.Explain, `scan tag "news"`) {
		t.Errorf("news plan: %+v\n%s", a.Plan, a.Explain)
	}
	// Native APNs: the even installations (APNs) and the registration.
	a = e.audience("GET", "&format=apple&expression="+url.QueryEscape("news && !n2"), "")
	if a.Targets != 4 || a.Format != "apple" {
		t.Errorf("apple news && !n2: %+v", a)
	}
	if len(a.Plan.Steps) != 1 || a.Plan.Steps[0].KeepIf == "" || !slices.Contains(a.Plan.Steps[0].Probe, "n2") {
		t.Errorf("apple plan: %+v", a.Plan)
	}
	// The body form, and a broadcast.
	a = e.audience("POST", "", `{"expression":"lang_en && (n1 || n3)","format":"fcmV1"}`)
	if a.Targets != 2 || a.Format != "fcmv1" {
		t.Errorf("fcmv1 body: %+v", a)
	}
	a = e.audience("POST", "&format=template", "")
	if a.Targets != 8 || !a.Broadcast || a.Expression != nil || len(a.Plan.Steps) != 1 || a.Plan.Steps[0].Scan != "all" ||
		!strings.Contains(a.Explain, "broadcast") {
		t.Errorf("broadcast: %+v", a)
	}
	if a := e.audience("GET", "&expression="+url.QueryEscape("news && !news"), ""); a.Targets != 0 || len(a.Plan.Steps) != 0 {
		t.Errorf("never true: %+v", a)
	}

	for _, c := range []struct{ name, method, query, body, detail string }{
		{"bad expression", "GET", "&expression=" + url.QueryEscape("news &&"), "", "expression: "},
		{"bad expression in body", "POST", "", `{"expression":"(news"}`, "expression: "},
		{"empty expression", "GET", "&expression=", "", "expression: the expression is empty"},
		{"both", "POST", "&expression=news", `{"expression":"news"}`, "not both"},
		{"bad json", "POST", "", `{"expression":`, "body: malformed JSON"},
		{"unknown field", "POST", "", `{"expresion":"news"}`, "unknown field"},
		{"trailing data", "POST", "", `{"expression":"news"} {}`, "data after the object"},
		{"bad format", "GET", "&format=pager&expression=news", "", "format: "},
		{"long expression", "GET", "&expression=" + strings.Repeat("a||", 300) + "a", "", "expression: "},
	} {
		e.wantError(e.do(c.method, xp+"audience"+v+c.query, fullToken(), c.body), 400, c.name, c.detail, before)
	}
	e.wantError(e.do("GET", xp+"audience"+v+"&expression=news", extSendToken(), ""), 403, "send counts", "Manage claim", before)
	e.wantError(e.do("DELETE", xp+"audience"+v, fullToken(), ""), 405, "DELETE audience", "not allowed", before)
}

func TestNHExtEditTags(t *testing.T) {
	e := newNHEnv(t)
	news, _ := e.seedExt()
	// One installation already at the limit of 60 tags, carrying news.
	full := []string{"news"}
	for i := 1; i < 60; i++ {
		full = append(full, fmt.Sprintf("f%d", i))
	}
	e.want(e.do("PUT", "/orders/installations/full"+v, fullToken(), extInstallation("full", "apns", apnsHandle(99), "", full...)), 200, "full")
	before := e.export()

	bigAdd := make([]string, 61)
	for i := range bigAdd {
		bigAdd[i] = fmt.Sprintf("a%d", i)
	}
	bigAddJSON, _ := json.Marshal(bigAdd)
	for _, c := range []struct{ name, body, detail string }{
		{"bad expression", `{"expression":"news &&","add":["x"]}`, "expression: "},
		{"no expression", `{"add":["x"]}`, "expression: a tag expression"},
		{"blank expression", `{"expression":"  ","add":["x"]}`, "expression: a tag expression"},
		{"bad json", `{"expression":"news","add":[`, "body: malformed JSON"},
		{"not json", `expression=news`, "body: malformed JSON"},
		{"misspelt field", `{"expression":"news","remvoe":["x"]}`, `unknown field "remvoe"`},
		{"add not a list", `{"expression":"news","add":"x"}`, "body: malformed JSON"},
		{"nothing to do", `{"expression":"news"}`, "add and remove are both empty"},
		{"system tag added", `{"expression":"news","add":["$UserId:{bob}"]}`, "add[0]: \"$UserId:{bob}\" is a system tag"},
		{"system tag removed", `{"expression":"news","remove":["ok","$InstallationId:{inst-0}"]}`, "remove[1]: "},
		{"invalid tag", `{"expression":"news","add":["ok","a b"]}`, "add[1]: invalid tag"},
		{"empty tag", `{"expression":"news","add":[""]}`, "add[0]: invalid tag"},
		{"long tag", `{"expression":"news","add":["` + strings.Repeat("t", 121) + `"]}`, "longer than 120"},
		{"too many", `{"expression":"news","add":` + string(bigAddJSON) + `}`, "add: 61 tags; an installation holds at most 60"},
		{"add and remove", `{"expression":"news","add":["promo"],"remove":["PROMO"]}`, `remove[0]: "PROMO" is also in add`},
	} {
		e.wantError(e.do("POST", xp+"tags"+v, fullToken(), c.body), 400, c.name, c.detail, before)
	}
	e.wantError(e.do("POST", xp+"tags"+v, fullToken(), strings.Repeat(" ", nhExtMaxBody+1)), 413, "oversize", "larger than 1 MB", before)
	e.wantError(e.do("POST", xp+"tags"+v, extListenToken(), `{"expression":"news","add":["x"]}`), 403, "listen edits", "Manage claim", before)
	e.wantError(e.do("POST", xp+"tags"+v, extSendToken(), `{"expression":"news","add":["x"]}`), 403, "send edits", "Manage claim", before)
	e.wantError(e.do("POST", "/nohub/x-pushgate/tags"+v, fullToken(), `{"expression":"news","add":["x"]}`), 404, "unknown hub", "no hub", before)
	e.wantError(e.do("GET", xp+"tags"+v, fullToken(), ""), 405, "GET tags", "not allowed", before)

	// The edit: news installations gain promo and lose lang_en; "full"
	// would break the limit, so it is left alone and reported.
	res := e.want(e.do("POST", xp+"tags"+v, fullToken(), `{"expression":"news && !nobody","add":["promo"],"remove":["LANG_EN"]}`), 200, "edit")
	var out struct {
		Modified int64  `json:"modified"`
		Skipped  string `json:"skipped"`
	}
	if err := json.Unmarshal([]byte(res.body), &out); err != nil {
		t.Fatalf("edit body %q: %v", res.body, err)
	}
	if out.Modified != int64(len(news)) || !strings.Contains(out.Skipped, "full") {
		t.Fatalf("edit: %s (want %d modified, full skipped)", res.body, len(news))
	}
	promo, _ := e.listAll("&tag=promo", 100)
	sort.Strings(promo)
	if !slices.Equal(promo, news) {
		t.Errorf("promo on %v, want %v", promo, news)
	}
	langEN, _ := e.listAll("&tag=lang_en", 100)
	sort.Strings(langEN)
	if want := []string{"inst-1", "inst-3", "inst-5", "inst-7"}; !slices.Equal(langEN, want) {
		t.Errorf("lang_en on %v, want %v", langEN, want)
	}
	in, err := e.store.GetInstallation(context.Background(), "full")
	if err != nil || len(in.Tags) != 60 || slices.Contains(in.Tags, "promo") {
		t.Errorf("full after the edit: %v %v", in.Tags, err)
	}
	// Again: nothing left to change.
	res = e.want(e.do("POST", xp+"tags"+v, fullToken(), `{"expression":"news && promo","add":["promo"]}`), 200, "edit again")
	if !strings.HasPrefix(res.body, `{"modified":0`) {
		t.Errorf("edit again: %s", res.body)
	}
}

func TestNHExtExportImport(t *testing.T) {
	src := newNHEnv(t)
	src.seedExt()
	exported := src.export()
	lines := strings.Split(strings.TrimSuffix(exported, "\n"), "\n")
	if len(lines) != 9 || strings.Count(exported, `{"registration":`) != 1 {
		t.Fatalf("export of 8 installations and 1 registration:\n%s", exported)
	}
	for _, tok := range []string{extListenToken(), extSendToken()} {
		src.want(src.do("GET", xp+"export"+v, tok, ""), 403, "export without Manage")
	}

	// The round trip.
	dst := newNHEnv(t)
	res := dst.want(dst.do("POST", xp+"import"+v, fullToken(), exported, "Content-Type", "application/x-ndjson"), 200, "import")
	if res.body != `{"imported":9}`+"\n" {
		t.Errorf("import answer %q", res.body)
	}
	if got := dst.export(); got != exported {
		t.Fatalf("export after import differs:\nsource %s\nimported %s", exported, got)
	}
	// Importing it again replaces, and changes nothing visible but versions.
	dst.want(dst.do("POST", xp+"import"+v, fullToken(), exported), 200, "import again")
	if got, _ := dst.listAll("", 100); len(got) != 8 {
		t.Errorf("after a second import: %v", got)
	}

	// Bad imports into a hub with content: 400 naming the line, nothing
	// written, not even the good lines before the bad one.
	bad := newNHEnv(t)
	bad.want(bad.do("PUT", "/orders/installations/keep"+v, fullToken(), extInstallation("keep", "fcmv1", "keep-token", "", "k")), 200, "keep")
	before := bad.export()
	good := lines[0] + "\n" + lines[1] + "\n"
	for _, c := range []struct{ name, body, detail string }{
		{"bad json", good + `{"installation":` + "\n", "line 3: "},
		{"not a record", good + `[1,2]` + "\n", "line 3: "},
		{"both kinds", good + `{"installation":{},"registration":{}}` + "\n", "line 3: an export record has exactly one"},
		{"neither kind", good + `{}` + "\n", "line 3: "},
		{"bad platform", good + "\n\n" + `{"installation":{"installationId":"z","platform":"pager","pushChannel":"x"}}` + "\n" + lines[2], "line 5: installation.platform"},
		{"system tag", good + `{"installation":{"installationId":"z","platform":"fcmv1","pushChannel":"x","tags":["$UserId:{x}"]}}`, "line 3: "},
		{"registration without id", good + `{"registration":{"platform":"fcmv1","pushChannel":"x"}}`, "line 3: "},
		{"crlf and bad last line", strings.ReplaceAll(good, "\n", "\r\n") + "nope", "line 3: "},
	} {
		res := bad.do("POST", xp+"import"+v, fullToken(), c.body)
		bad.wantError(res, 400, c.name, c.detail, before)
		if !strings.Contains(res.body, "nothing was imported") {
			t.Errorf("%s: %s", c.name, res.body)
		}
	}
	bad.api.ImportMaxBytes = int64(len(exported) - 1)
	bad.wantError(bad.do("POST", xp+"import"+v, fullToken(), exported), 413, "oversize import", "larger than", before)
	bad.api.ImportMaxBytes = int64(len(exported))
	bad.want(bad.do("POST", xp+"import"+v, fullToken(), exported), 200, "import at the limit")
	bad.api.ImportMaxBytes = 0
	for _, tok := range []string{extListenToken(), extSendToken()} {
		bad.want(bad.do("POST", xp+"import"+v, tok, exported), 403, "import without Manage")
	}
	bad.want(bad.do("PUT", xp+"import"+v, fullToken(), exported), 405, "PUT import")
	// An empty body imports nothing and is fine.
	if res := bad.want(bad.do("POST", xp+"import"+v, fullToken(), ""), 200, "empty import"); res.body != `{"imported":0}`+"\n" {
		t.Errorf("empty import %q", res.body)
	}
}

// expiringSender fails one handle for good, as a push service answers a
// device that uninstalled the app, and accepts the rest.
func expiringSender(dead map[string]bool) hubcore.Sender {
	return hubcore.SenderFunc(func(_ context.Context, d *hubcore.Delivery) error {
		if dead[d.Channel.Key(d.Platform)] {
			return &hubcore.PushError{Outcome: hubcore.OutcomeExpiredChannel, Status: 410, Reason: "Unregistered", ExpireHandle: true}
		}
		return nil
	})
}

// useSenders gives the env's hub an engine that delivers through s.
func (e *nhEnv) useSenders(s hubcore.Sender) {
	e.t.Helper()
	senders := map[hubcore.Platform]hubcore.Sender{}
	for _, p := range hubcore.Platforms {
		senders[p] = s
	}
	en, err := fanout.New(fanout.Config{Store: e.store, Broker: memstore.NewBroker(memstore.BrokerOptions{}), Senders: senders,
		ParseExpr: e.api.hub.Core.ParseExpression, Poll: 20 * time.Millisecond})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = en.Run(ctx) }()
	e.t.Cleanup(func() { cancel(); <-done })
	e.api.hub.Engine = en
}

func TestNHExtFeedback(t *testing.T) {
	e := newNHEnv(t)
	deadAPNs, deadFCM := apnsHandle(1), "fcm-dead"
	e.useSenders(expiringSender(map[string]bool{deadAPNs: true, deadFCM: true}))
	for _, in := range []string{
		extInstallation("dead-apns", "apns", deadAPNs, "", "fb"),
		extInstallation("dead-fcm", "fcmv1", deadFCM, "", "fb"),
		extInstallation("live", "apns", apnsHandle(2), "", "fb"),
	} {
		var m map[string]any
		_ = json.Unmarshal([]byte(in), &m)
		e.want(e.do("PUT", "/orders/installations/"+m["installationId"].(string)+v, fullToken(), in), 200, "installation")
	}

	// Before any feedback: the listing is empty, not an error.
	res := e.want(e.do("GET", xp+"feedback"+v, fullToken(), ""), 200, "empty feedback")
	if res.body != "" || res.header.Get(nhwire.ContinuationHeader) != "" {
		t.Fatalf("empty feedback: %q", res.body)
	}

	res = e.want(e.do("POST", "/orders/messages"+v, fullToken(), `{"msg":"hi"}`, "ServiceBusNotification-Tags", "fb"), 201, "send")
	if d := e.waitDetails(res.header.Get("Location")); !strings.Contains(d, "<Name>ExpiredChannel</Name><Count>1</Count>") {
		t.Fatalf("details: %s", d)
	}

	// The container URL, got with a Send key.
	res = e.want(e.do("GET", "/orders/feedbackcontainer"+v, extSendToken(), ""), 200, "feedbackcontainer")
	if ct := res.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("feedbackcontainer Content-Type %q", ct)
	}
	cu, err := url.Parse(res.body)
	if err != nil || cu.Scheme != "https" || cu.Host != nhHost || cu.Path != "/orders/x-pushgate/feedback" || cu.Query().Get("sas") == "" {
		t.Fatalf("container URL %q: %v", res.body, err)
	}
	capTok := cu.Query().Get("sas")
	capPath := cu.Path + "?" + cu.RawQuery

	// Read it without an Authorization header, a page at a time; events
	// may trail the outcome by a moment.
	var docs []string
	for deadline := time.Now().Add(10 * time.Second); ; {
		docs = nil
		cont := ""
		for pages := 0; ; pages++ {
			p := capPath + "&$top=1"
			if cont != "" {
				p += "&continuationtoken=" + cont
			}
			res := e.want(e.do("GET", p, "", ""), 200, "feedback by URL")
			if ct := res.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/xml") {
				t.Fatalf("feedback Content-Type %q", ct)
			}
			if n := strings.Count(res.body, "<PnsFeedback "); n > 1 {
				t.Fatalf("$top=1 gave %d documents", n)
			}
			if res.body != "" {
				docs = append(docs, res.body)
			}
			if cont = res.header.Get(nhwire.ContinuationHeader); cont == "" || pages > 10 {
				break
			}
		}
		if len(docs) >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(docs) != 2 {
		t.Fatalf("feedback documents %q, want 2", docs)
	}
	joined := strings.Join(docs, "")
	for _, want := range []string{
		`<PnsFeedback xmlns:i="http://www.w3.org/2001/XMLSchema-instance" xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect">`,
		"<NotificationSystemError>ExpiredChannel</NotificationSystemError><Platform>apple</Platform><PnsHandle>" + deadAPNs + "</PnsHandle>",
		"<Platform>fcmv1</Platform><PnsHandle>" + deadFCM + "</PnsHandle>",
		"<InstallationId>dead-apns</InstallationId>", "<InstallationId>dead-fcm</InstallationId>",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("feedback lacks %s:\n%s", want, joined)
		}
	}
	if strings.Contains(joined, apnsHandle(2)) {
		t.Errorf("feedback names the live handle:\n%s", joined)
	}
	// The whole listing with the normal header too, and with the token
	// of a Manage key's URL.
	res = e.want(e.do("GET", xp+"feedback"+v, fullToken(), ""), 200, "feedback by header")
	if res.body != strings.Join(docs, "") {
		t.Errorf("by header %q, by URL %q", res.body, joined)
	}
	full := e.want(e.do("GET", "/orders/feedbackcontainer", fullToken(), ""), 200, "full container")
	fu, _ := url.Parse(full.body)
	if res := e.want(e.do("GET", fu.Path+"?"+fu.RawQuery, "", ""), 200, "full key URL"); res.body != joined {
		t.Errorf("full key URL read %q", res.body)
	}

	// Listen keys get neither.
	e.want(e.do("GET", "/orders/feedbackcontainer"+v, extListenToken(), ""), 403, "listen container")
	e.want(e.do("GET", xp+"feedback"+v, extListenToken(), ""), 403, "listen feedback")
	// Paging errors.
	for q, detail := range map[string]string{"&$top=0": "$top", "&$top=1001": "$top", "&continuationtoken=zz": "continuationtoken"} {
		res := e.want(e.do("GET", capPath+q, "", ""), 400, "feedback "+q)
		if !strings.Contains(res.body, detail) {
			t.Errorf("%s: %s", q, res.body)
		}
	}

	// The URL's token works on nothing else: not in the query of another
	// route, not as the Authorization header of another route.
	esc := url.QueryEscape(capTok)
	for _, p := range []string{
		"/orders/feedbackcontainer?sas=" + esc,
		xp + "installations?sas=" + esc,
		xp + "export?sas=" + esc,
		"/orders/registrations?sas=" + esc,
		"/orders/installations/live?sas=" + esc,
		"/other/x-pushgate/feedback?sas=" + esc,
		xp + "feedback/more?sas=" + esc,
	} {
		res := e.want(e.do("GET", p, "", ""), 401, "query token on "+p)
		if !strings.Contains(res.body, "MissingToken") {
			t.Errorf("%s: %s", p, res.body)
		}
	}
	e.want(e.do("POST", xp+"feedback?sas="+esc, "", ""), 401, "query token with POST")
	// Nor does any token in the query, even one for the whole namespace.
	wide := url.QueryEscape(fullToken())
	for _, p := range []string{xp + "export?sas=" + wide, xp + "installations?sas=" + wide, "/orders/registrations?sas=" + wide} {
		e.want(e.do("GET", p, "", ""), 401, "namespace token in the query of "+p)
	}
	for _, p := range []string{"/orders/feedbackcontainer", xp + "installations", "/orders/installations/live", "/orders/messages/abc"} {
		res := e.want(e.do("GET", p, capTok, ""), 401, "URL token as header on "+p)
		if !strings.Contains(res.body, "40104") {
			t.Errorf("%s: %s", p, res.body)
		}
	}

	// Tampered: each field changed, the signature no longer matches (or
	// the name no longer exists).
	fields := map[string]string{}
	for _, kv := range strings.Split(strings.TrimPrefix(capTok, "SharedAccessSignature "), "&") {
		k, val, _ := strings.Cut(kv, "=")
		fields[k] = val
	}
	se, _ := strconv.ParseInt(fields["se"], 10, 64)
	rebuild := func(k, val string) string {
		f := map[string]string{}
		for a, b := range fields {
			f[a] = b
		}
		f[k] = val
		return "SharedAccessSignature sr=" + f["sr"] + "&sig=" + f["sig"] + "&se=" + f["se"] + "&skn=" + f["skn"]
	}
	if rebuild("se", fields["se"]) != capTok {
		t.Fatalf("token %q does not rebuild", capTok)
	}
	for name, tok := range map[string]string{
		"later expiry":  rebuild("se", strconv.FormatInt(se+24*3600, 10)),
		"wider sr":      rebuild("sr", url.QueryEscape("https://"+nhHost+"/")),
		"other rule":    rebuild("skn", "DefaultFullSharedAccessSignature"),
		"flipped sig":   rebuild("sig", "A"+fields["sig"][1:]),
		"truncated sig": rebuild("sig", fields["sig"][:10]),
	} {
		e.want(e.do("GET", xp+"feedback?sas="+url.QueryEscape(tok), "", ""), 401, "tampered: "+name)
	}

	// Expiry: fine for the hour, refused after it.
	clock := e.api.now
	e.api.now = func() time.Time { return clock().Add(50 * time.Minute) }
	e.want(e.do("GET", capPath, "", ""), 200, "URL within the hour")
	e.api.now = func() time.Time { return clock().Add(2 * time.Hour) }
	res = e.want(e.do("GET", capPath, "", ""), 401, "URL after expiry")
	if !strings.Contains(res.body, "ExpiredToken") {
		t.Errorf("expired URL: %s", res.body)
	}
	e.api.now = clock
}

// TestNHExtOverCaddy runs the extensions behind a real Caddy over HTTPS:
// an export larger than the server's write buffer arrives streamed (no
// Content-Length), an import of it is accepted, and the feedback container URL, fetched as a client would,
// answers without an Authorization header.
func TestNHExtOverCaddy(t *testing.T) {
	const key = "ZXh0LW92ZXItY2FkZHkta2V5LWZvci10ZXN0cy0wMTIzNDU="
	tc := startCaddy(t, fmt.Sprintf(`{
	pushgate {
		hub ext {
			data_dir %s
			delivery {
				log_only
			}
		}
	}
}
localhost:HTTPS_PORT {
	bind 127.0.0.1
	tls internal
	pushgate_nh {
		hub ext
		rule DefaultFullSharedAccessSignature %s Listen Send Manage
	}
}`, t.TempDir(), key))
	auth := nhwire.Sign(tc.Base+"/", "DefaultFullSharedAccessSignature", []byte(key), time.Now().Add(time.Hour))
	call := func(method, path, body, auth string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(method, path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(path, "https://") {
			req.URL, _ = url.Parse(tc.Base + path)
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		res, err := tc.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatalf("%s %s: reading the body: %v", method, path, err)
		}
		return res, string(b)
	}

	const count = 40 // about 12 KB of export, well over net/http's 4 KB buffer
	for i := 0; i < count; i++ {
		id := fmt.Sprintf("c-%d", i)
		if res, body := call("PUT", "/ext/installations/"+id+v, extInstallation(id, "fcmv1", "tok-"+id, "", "t"), auth); res.StatusCode != 200 {
			t.Fatalf("PUT %s: %d %s", id, res.StatusCode, body)
		}
	}
	res, exported := call("GET", "/ext/x-pushgate/export"+v, "", auth)
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/x-ndjson" || strings.Count(exported, "\n") != count {
		t.Fatalf("export: %d %v\n%s", res.StatusCode, res.Header, exported)
	}
	if res.ContentLength != -1 {
		t.Errorf("export has a Content-Length (%d): it was buffered, not streamed", res.ContentLength)
	}
	if res, body := call("POST", "/ext/x-pushgate/import"+v, exported, auth); res.StatusCode != 200 || body != fmt.Sprintf(`{"imported":%d}`+"\n", count) {
		t.Fatalf("import: %d %s", res.StatusCode, body)
	}

	res, u := call("GET", "/ext/feedbackcontainer"+v, "", auth)
	if res.StatusCode != 200 || !strings.HasPrefix(u, tc.Base+"/ext/x-pushgate/feedback?sas=") {
		t.Fatalf("feedbackcontainer: %d %s", res.StatusCode, u)
	}
	if res, body := call("GET", u, "", ""); res.StatusCode != 200 || body != "" {
		t.Fatalf("GET the container URL: %d %s", res.StatusCode, body)
	}
	if res, _ := call("GET", "/ext/x-pushgate/export?"+strings.SplitN(u, "?", 2)[1], "", ""); res.StatusCode != 401 {
		t.Fatalf("the container URL's token opened the export: %d", res.StatusCode)
	}
}

// FuzzNHExtImportLine checks that the import's advance check and the
// store's own import agree on every line: a line the check passes must not
// fail in the store (or an import would stop half-written), and a line it
// refuses must be one the store refuses too (or a valid export would be
// turned away).
func FuzzNHExtImportLine(f *testing.F) {
	for _, s := range []string{
		`{"installation":{"installationId":"a","platform":"fcmv1","pushChannel":"t","tags":["x"]}}`,
		`{"installation":{"installationId":"a","platform":"apns","pushChannel":"` + apnsHandle(1) + `","pushChannelExpired":true,"lastActiveOn":"2024-01-01T00:00:00Z"}}`,
		`{"installation":{"installationId":"a","platform":"pager","pushChannel":"t"}}`,
		`{"registration":{"registrationId":"r1","platform":"fcmv1","pushChannel":"t","tags":["a","b"]}}`,
		`{"registration":{"platform":"fcmv1","pushChannel":"t"}}`,
		`{"installation":{},"registration":{}}`,
		`{}`, `[]`, `null`, `{"installation":null}`, `{"installation":{"templates":{"t":{"body":"$(x"}}}}`,
	} {
		f.Add(s)
	}
	lim := hubcore.Limits{}
	f.Fuzz(func(t *testing.T, line string) {
		if strings.ContainsAny(line, "\r\n") || len(strings.TrimSpace(line)) == 0 {
			return // one non-blank line: the split into lines is bufio's
		}
		checkErr := checkImportLine([]byte(strings.TrimSpace(line)), lim)
		st, err := memstore.Open(memstore.Options{Limits: lim})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		_, importErr := st.Import(context.Background(), strings.NewReader(line))
		if (checkErr == nil) != (importErr == nil) {
			t.Fatalf("line %q: check says %v, the store says %v", line, checkErr, importErr)
		}
	})
}
