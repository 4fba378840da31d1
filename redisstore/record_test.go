package redisstore

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/tagexpr"
	"github.com/pushgate/pushgate/hubcore/tagexpr/tagexprtest"
)

func sampleRecords() []*record {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	return []*record{
		{},
		{slot: 127, version: 1 << 40, platform: hubcore.APNS, id: "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
			channel: hubcore.PushChannel{Handle: strings.Repeat("ab", 32)}, lastUpdate: t0,
			expiration: t0.Add(time.Hour), lastActive: time.Unix(-5, 7).UTC(),
			userID: "u1", tags: []string{"userId:u1", "Lang:DE"}, vars: []kv{{"a", "1"}, {"b", ""}},
			tmpls: []tmplEntry{{hash: 42}, {hash: 7, inline: "\x05alert\x01x\x00\x00\x00\x00"}}},
		{reg: true, expired: true, platform: hubcore.APNS, id: "3F2504E0-4F89-11D3-9A0C-0305E82C3301",
			channel: hubcore.PushChannel{Handle: strings.Repeat("AB", 32)}},
		{platform: hubcore.APNS, id: "x", channel: hubcore.PushChannel{Handle: "aB" + strings.Repeat("0", 62)}},
		{platform: hubcore.Browser, id: "b-1", channel: hubcore.PushChannel{Endpoint: "https://push.example/x", P256DH: "BBB", Auth: "kY9"}},
		{platform: hubcore.Baidu, id: "c", channel: hubcore.PushChannel{Handle: "123", BaiduUserID: "u"}},
	}
}

func normalize(r *record) *record {
	c := *r
	if c.platform == "" {
		c.platform = hubcore.APNS
	}
	if len(c.tags) == 0 {
		c.tags = nil
	}
	if len(c.vars) == 0 {
		c.vars = nil
	}
	if len(c.tmpls) == 0 {
		c.tmpls = nil
	}
	for i, t := range c.tmpls {
		if t.inline != "" {
			c.tmpls[i].hash = 0
		}
	}
	return &c
}

func TestRecordRoundTrip(t *testing.T) {
	for i, want := range sampleRecords() {
		if want.platform == "" {
			want.platform = hubcore.APNS
		}
		b := encodeRecord(nil, want)
		var got record
		if err := decodeRecord(string(b), &got); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if g, w := normalize(&got), normalize(want); !reflect.DeepEqual(g, w) {
			t.Errorf("record %d:\n got %+v\nwant %+v", i, g, w)
		}
	}
}

func TestPackedForms(t *testing.T) {
	if _, _, ok := packGUID("3f2504e0-4f89-11d3-9a0c-0305e82c330"); ok {
		t.Error("short GUID packed")
	}
	if _, _, ok := packGUID("3f2504e0-4F89-11d3-9a0c-0305e82c3301"); ok {
		t.Error("mixed-case GUID packed: its case would be lost")
	}
	for _, s := range []string{"", "a", "abc", "0g", "aA"} {
		if hexCase(s) != handleRaw {
			t.Errorf("hexCase(%q) packs", s)
		}
	}
}

// FuzzDecodeRecord: any input decodes or fails cleanly, and what decodes
// re-encodes to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	for _, r := range sampleRecords() {
		if r.platform == "" {
			r.platform = hubcore.FCMV1
		}
		f.Add(encodeRecord(nil, r))
	}
	f.Add([]byte{1})
	f.Add([]byte{1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		var r record
		if err := decodeRecord(string(b), &r); err != nil {
			return
		}
		again := encodeRecord(nil, &r)
		var r2 record
		if err := decodeRecord(string(again), &r2); err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if !reflect.DeepEqual(normalize(&r), normalize(&r2)) {
			t.Fatalf("round trip changed the record:\n%+v\n%+v", r, r2)
		}
	})
}

func FuzzDecodeTemplate(f *testing.F) {
	f.Add(encodeTemplate("alert", &hubcore.Template{Body: "x", Headers: map[string]string{"a": "b"}, Tags: []string{"t"}}))
	f.Fuzz(func(t *testing.T, s string) {
		c, err := decodeTemplate(s)
		if err != nil {
			return
		}
		if got := encodeTemplate(c.name, &c.t); got != s {
			// Headers are written sorted; unsorted input re-encodes sorted.
			c2, err := decodeTemplate(got)
			if err != nil || c2.name != c.name || c2.t.Body != c.t.Body || !reflect.DeepEqual(c2.t.Headers, c.t.Headers) {
				t.Fatalf("template round trip changed it")
			}
		}
	})
}

func FuzzCursor(f *testing.F) {
	s := &Store{l: newLayout("h", 4, 8)}
	f.Add(s.encodeCursor(listPos{sh: 3, iid: 1 << 30, sub: 2}))
	f.Add("c1.")
	f.Add("garbage")
	f.Fuzz(func(t *testing.T, c string) {
		p, err := decodeCursor("h", 4, c)
		if err != nil {
			return
		}
		if p.sh < 0 || p.sh >= 4 || p.iid < 0 || p.sub < 0 {
			t.Fatalf("decoded an out-of-range position %+v", p)
		}
		if again := s.encodeCursor(p); again != c {
			if p2, err := decodeCursor("h", 4, again); err != nil || p2 != p {
				t.Fatalf("cursor does not round-trip: %q -> %+v", c, p)
			}
		}
	})
}

func TestCursor(t *testing.T) {
	s := &Store{l: newLayout("h", 4, 8)}
	p := listPos{sh: 2, iid: 12345, sub: 3}
	c := s.encodeCursor(p)
	if got, err := decodeCursor("h", 4, c); err != nil || got != p {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	if _, err := decodeCursor("other", 4, c); err == nil {
		t.Error("a cursor of another hub was accepted")
	}
	if _, err := decodeCursor("h", 2, c); err == nil {
		t.Error("a cursor naming a shard the hub lacks was accepted")
	}
}

// TestKleene checks the rebuilt tree against tagexpr's evaluator on
// random expressions and tag sets (with no unknowns, three-valued logic is
// two-valued), and that unknown inputs never turn a possible match false.
func TestKleene(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	tags := tagexprtest.Tags(r, 12)
	for i := 0; i < 2000; i++ {
		e, kx := randomExpr(t, r, tags)
		vals := make([]kval, len(kx.tags))
		for k := 0; k < 8; k++ {
			present := map[string]bool{}
			for j, tg := range kx.tags {
				if r.IntN(2) == 0 {
					present[tg] = true
					vals[j] = kTrue
				} else {
					vals[j] = kFalse
				}
			}
			want := e.Eval(memberFunc(func(f string) bool { return present[f] }))
			if got := kx.eval(vals); (got == kTrue) != want || got == kUnknown {
				t.Fatalf("%q with %v: kleene %v, Eval %v", e.String(), present, got, want)
			}
			// Making a present tag unknown never yields false when true.
			for j := range vals {
				if vals[j] == kTrue {
					vals[j] = kUnknown
				}
			}
			if want && kx.eval(vals) == kFalse {
				t.Fatalf("%q: unknowns made a match false", e.String())
			}
		}
	}
}

type memberFunc func(string) bool

func (f memberFunc) Has(s string) bool { return f(s) }

// TestMembEquivalence checks the resolver's registration membership
// against Installation.Registrations and TagSet, which it stands in for.
func TestMembEquivalence(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	tags := tagexprtest.Tags(r, 16)
	var user []string
	for _, tg := range tags {
		if tg[0] != '$' {
			user = append(user, tg)
		}
	}
	for i := 0; i < 300; i++ {
		in := &hubcore.Installation{
			InstallationID: tagexprtest.RandomCase(r, fmt.Sprintf("inst-%d", r.IntN(1000))),
			Platform:       hubcore.FCMV1,
			PushChannel:    hubcore.PushChannel{Handle: "x"},
			Tags:           tagexprtest.RandomSet(r, user, 0.3),
		}
		if r.IntN(2) == 0 {
			in.UserID = fmt.Sprintf("U%d=x", r.IntN(1000))
		}
		in.Templates = map[string]*hubcore.Template{}
		for k := r.IntN(3); k > 0; k-- {
			name := []string{"Template Name", user[r.IntN(len(user))], "t2"}[r.IntN(3)]
			in.Templates[name] = &hubcore.Template{Body: `{"a":"$(m)"}`, Tags: tagexprtest.RandomSet(r, user, 0.2)}
		}
		if err := in.Validate(hubcore.Limits{}); err != nil {
			t.Fatal(err)
		}
		rec, nt := recordOfInstallation(in, 1, nil)
		var cs []*tmplContent
		for _, e := range rec.tmpls {
			c, err := decodeTemplate(nt[e.hash])
			if err != nil {
				t.Fatal(err)
			}
			cs = append(cs, c)
		}
		regs := in.Registrations()
		var m memb
		for k := 0; k < 10; k++ {
			e, err := tagexpr.Parse(tagexprtest.RandomExpr(r, tags, 3), tagexpr.Limits{MaxDepth: 3})
			if err != nil {
				t.Fatal(err)
			}
			m.setRecord(rec)
			if got, want := e.Eval(&m), e.EvalSet(regs[0].TagSet()); got != want {
				t.Fatalf("native of %+v, %s: %v want %v", in, e, got, want)
			}
			for j, c := range cs {
				m.setRecord(rec)
				m.addTemplate(c)
				if got, want := e.Eval(&m), e.EvalSet(regs[j+1].TagSet()); got != want {
					t.Fatalf("template %s of %+v, %s: %v want %v", c.name, in, e, got, want)
				}
			}
		}
		// indexTags is IndexTags without the installation tag.
		var want []string
		for _, tg := range in.IndexTags() {
			if _, ok := installationTag(tg); !ok {
				want = append(want, tg)
			}
		}
		if got := indexTags(rec, cs); !reflect.DeepEqual(got, want) {
			t.Fatalf("indexTags %v; want %v", got, want)
		}
	}
}
