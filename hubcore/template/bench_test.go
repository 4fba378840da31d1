package template

import (
	"encoding/json"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// apnsTemplate is the typical ~200-byte APNs template the render target is
// stated for.
const apnsTemplate = `{"aps":{"alert":{"title":"$(title)","body":"{'From ' + $(sender) + ': ' + .(msg,60)}"},"badge":"#(badge)","sound":"default"},"url":"%(link)"}`

const apnsProps = `{"title":"New message","sender":"Alice \"Al\" Smith","msg":"Are we still on for lunch tomorrow? I booked the table at noon, see you there!","badge":"5","link":"https://example.com/m/123?ref=push"}`

const wnsToast = `<toast launch="%(link)"><visual><binding template="ToastGeneric"><text>$(title)</text><text>{'From ' + $(sender) + ': ' + .(msg,60)}</text></binding></visual></toast>`

func benchProps(b *testing.B) PropMap {
	p, err := ParseProps([]byte(apnsProps))
	if err != nil {
		b.Fatal(err)
	}
	return p
}

func BenchmarkCompile(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compile(apnsTemplate, JSON); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRender(b *testing.B) {
	tp := mustCompile(b, apnsTemplate, JSON)
	p := benchProps(b)
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	b.SetBytes(int64(len(apnsTemplate)))
	for b.Loop() {
		var err error
		if buf, err = tp.Render(buf[:0], p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRenderOverlay is the per-device path of a send: message
// properties over the device's push variables, one Overlay per send.
func BenchmarkRenderOverlay(b *testing.B) {
	tp := mustCompile(b, apnsTemplate, JSON)
	msg := benchProps(b)
	delete(msg, "sender")
	devs := []PropMap{{"sender": "Bob"}, {"sender": "Carol", "title": "ignored"}}
	ov := &Overlay{Over: msg}
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		ov.Under = devs[i&1]
		i++
		var err error
		if buf, err = tp.Render(buf[:0], ov); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRenderXML(b *testing.B) {
	tp := mustCompile(b, wnsToast, XML)
	p := benchProps(b)
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	b.SetBytes(int64(len(wnsToast)))
	for b.Loop() {
		var err error
		if buf, err = tp.Render(buf[:0], p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseProps(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseProps([]byte(apnsProps)); err != nil {
			b.Fatal(err)
		}
	}
}

// Baselines: the same payload built the two obvious other ways, for a
// ratio against BenchmarkRender on the same machine.

// replacerTemplate is apnsTemplate with placeholder tokens; the values
// must be escaped, truncated and encoded before substitution.
const replacerTemplate = `{"aps":{"alert":{"title":"{{title}}","body":"From {{sender}}: {{msg}}"},"badge":{{badge}},"sound":"default"},"url":"{{link}}"}`

func jsonContent(s string) string {
	q, _ := json.Marshal(s)
	return string(q[1 : len(q)-1])
}

func ellipsis(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-3]) + "..."
}

func replacerPairs(p PropMap) []string {
	return []string{
		"{{title}}", jsonContent(p["title"]),
		"{{sender}}", jsonContent(p["sender"]),
		"{{msg}}", jsonContent(ellipsis(p["msg"], 60)),
		"{{badge}}", p["badge"],
		"{{link}}", strings.ReplaceAll(url.QueryEscape(p["link"]), "+", "%20"),
	}
}

// BenchmarkBaselineReplacer prepares the values and builds a
// strings.Replacer per render, as a hub substituting per device must.
func BenchmarkBaselineReplacer(b *testing.B) {
	p := benchProps(b)
	b.ReportAllocs()
	for b.Loop() {
		_ = strings.NewReplacer(replacerPairs(p)...).Replace(replacerTemplate)
	}
}

// BenchmarkBaselineReplacerReuse is the floor of the replacer approach:
// values prepared and the replacer built once, only Replace per render.
func BenchmarkBaselineReplacerReuse(b *testing.B) {
	r := strings.NewReplacer(replacerPairs(benchProps(b))...)
	b.ReportAllocs()
	for b.Loop() {
		_ = r.Replace(replacerTemplate)
	}
}

type apnsAlert struct {
	Title string `json:"title"`
	Body  string `json:"body"`
}

type apnsAps struct {
	Alert apnsAlert `json:"alert"`
	Badge int       `json:"badge"`
	Sound string    `json:"sound"`
}

type apnsPayload struct {
	Aps apnsAps `json:"aps"`
	URL string  `json:"url"`
}

func marshalPayload(p PropMap) ([]byte, error) {
	badge, _ := strconv.Atoi(p["badge"])
	v := apnsPayload{
		Aps: apnsAps{
			Alert: apnsAlert{Title: p["title"], Body: "From " + p["sender"] + ": " + ellipsis(p["msg"], 60)},
			Badge: badge,
			Sound: "default",
		},
		URL: strings.ReplaceAll(url.QueryEscape(p["link"]), "+", "%20"),
	}
	return json.Marshal(v)
}

// BenchmarkBaselineJSONMarshal builds the payload as a Go struct and
// marshals it with encoding/json.
func BenchmarkBaselineJSONMarshal(b *testing.B) {
	p := benchProps(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := marshalPayload(p); err != nil {
			b.Fatal(err)
		}
	}
}

// TestBaselinesMatch makes sure the baselines produce the same payload as
// the template, so the benchmark ratio compares like with like.
func TestBaselinesMatch(t *testing.T) {
	tp := mustCompile(t, apnsTemplate, JSON)
	p, err := ParseProps([]byte(apnsProps))
	if err != nil {
		t.Fatal(err)
	}
	ours := render(t, tp, p)
	repl := strings.NewReplacer(replacerPairs(p)...).Replace(replacerTemplate)
	if repl != ours {
		t.Errorf("replacer baseline differs:\n%s\n%s", repl, ours)
	}
	marshalled, err := marshalPayload(p)
	if err != nil {
		t.Fatal(err)
	}
	var a, b any
	if err := json.Unmarshal([]byte(ours), &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(marshalled, &b); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) {
		t.Errorf("json.Marshal baseline differs:\n%s\n%s", marshalled, ours)
	}
}

// TestRenderDoesNotAllocate pins the zero-allocation property of the
// per-device path (allocation counts, not timings).
func TestRenderDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	tp := mustCompile(t, apnsTemplate, JSON)
	xt := mustCompile(t, wnsToast, XML)
	p, _ := ParseProps([]byte(apnsProps))
	ov := &Overlay{Over: p, Under: PropMap{"x": "y"}}
	buf := make([]byte, 0, 1024)
	for name, f := range map[string]func(){
		"json":    func() { buf, _ = tp.Render(buf[:0], p) },
		"overlay": func() { buf, _ = tp.Render(buf[:0], ov) },
		"xml":     func() { buf, _ = xt.Render(buf[:0], p) },
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocs per render, want 0", name, n)
		}
	}
}
