package caddymodule

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

// The Caddyfile fuzz targets feed arbitrary text to the parsers of the
// pushgate global option, the delivery block and the two handler
// directives. The property: no input panics, and whatever parses is a
// config that survives the trip to JSON (the form Caddy runs) unchanged
// and passes the checks that need no network or files. Provision is not
// called: it opens stores and listens.

// fuzzInputMax bounds an input; longer ones only slow the fuzzer down
// without reaching new code.
const fuzzInputMax = 16 << 10

// caddyfileTokens lexes src as Caddy's adapter does (no imports, no
// environment substitution, which belong to the parser above the
// directives). Text that does not lex never reaches a directive.
func caddyfileTokens(src string) (*caddyfile.Dispenser, bool) {
	if len(src) > fuzzInputMax {
		return nil, false
	}
	toks, err := caddyfile.Tokenize([]byte(src), "Caddyfile")
	if err != nil || len(toks) == 0 {
		return nil, false
	}
	return caddyfile.NewDispenser(toks), true
}

// seedFromAdaptTests adds to f every block in testdata/adapt/*.caddyfiletest
// that starts with the directive or option name, matcher removed, plus
// extra seeds.
func seedFromAdaptTests(f *testing.F, name string, extra ...string) {
	files, err := filepath.Glob("testdata/adapt/*.caddyfiletest")
	if err != nil || len(files) == 0 {
		f.Fatalf("no adapt tests to seed from: %v", err)
	}
	n := 0
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		caddyfileText, _, _ := strings.Cut(string(data), "----------\n")
		for _, block := range blocksNamed(caddyfileText, name) {
			f.Add(block)
			n++
		}
	}
	for _, s := range extra {
		f.Add(s)
		n++
	}
	if n == 0 {
		f.Fatalf("no seed for %s", name)
	}
}

// blocksNamed returns the blocks of text that open with a line starting
// with name, up to the brace that closes them. A matcher after a
// directive's name is dropped, as Caddy's adapter removes it before the
// directive sees its tokens.
func blocksNamed(text, name string) []string {
	lines := strings.Split(text, "\n")
	var out []string
	for i := 0; i < len(lines); i++ {
		fields := strings.Fields(lines[i])
		if len(fields) == 0 || fields[0] != name {
			continue
		}
		if len(fields) > 1 && (strings.HasPrefix(fields[1], "/") || strings.HasPrefix(fields[1], "@") || fields[1] == "*") {
			fields = append(fields[:1], fields[2:]...)
		}
		block := []string{strings.Join(fields, " ")}
		depth := strings.Count(lines[i], "{") - strings.Count(lines[i], "}")
		for j := i + 1; depth > 0 && j < len(lines); j++ {
			block = append(block, lines[j])
			depth += strings.Count(lines[j], "{") - strings.Count(lines[j], "}")
		}
		out = append(out, strings.Join(block, "\n"))
	}
	return out
}

// jsonRoundTrip checks that v, marshalled, reads back into fresh and
// marshals to the same bytes: the JSON config Caddy runs says exactly what
// the Caddyfile said.
func jsonRoundTrip[T any](t *testing.T, v *T) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("a parsed config does not marshal to JSON: %v\n%+v", err, v)
	}
	var again T
	if err := json.Unmarshal(b, &again); err != nil {
		t.Fatalf("the config's JSON does not read back: %v\n%s", err, b)
	}
	b2, err := json.Marshal(&again)
	if err != nil || !bytes.Equal(b, b2) {
		t.Fatalf("the config changes on a JSON round trip (%v):\n%s\n%s", err, b, b2)
	}
	return b
}

func checkPacing(t *testing.T, where string, p Pacing) {
	t.Helper()
	if math.IsNaN(p.Rate) || math.IsInf(p.Rate, 0) || p.Rate < 0 || p.Burst < 0 {
		t.Fatalf("%s: parsed a pacing that is not a finite non-negative rate and burst: %+v", where, p)
	}
}

// checkDelivery holds a parsed delivery block to what the parser
// promises: non-negative numbers and durations, finite rates.
func checkDelivery(t *testing.T, dc *DeliveryConfig) {
	t.Helper()
	if dc.Workers < 0 || dc.Concurrency < 0 || dc.Parts < 0 {
		t.Fatalf("negative worker, concurrency or part count: %+v", dc)
	}
	if dc.ReclaimAfter < 0 || dc.Window < 0 || dc.Grace < 0 {
		t.Fatalf("a negative duration parsed: %+v", dc)
	}
	if dc.APNS != nil {
		if dc.APNS.Conns < 0 {
			t.Fatalf("negative apns conns: %+v", dc.APNS)
		}
		checkPacing(t, "apns", dc.APNS.Pacing)
	}
	if dc.FCM != nil {
		if dc.FCM.Conns < 0 {
			t.Fatalf("negative fcm conns: %+v", dc.FCM)
		}
		checkPacing(t, "fcm", dc.FCM.Pacing)
	}
	if dc.WNS != nil {
		checkPacing(t, "wns", dc.WNS.Pacing)
	}
	if dc.WebPush != nil {
		checkPacing(t, "webpush", dc.WebPush.Pacing)
	}
	if _, err := engineKey("store", dc, caddy.NewReplacer()); err != nil {
		t.Fatalf("no engine key for a parsed delivery config: %v", err)
	}
}

// FuzzCaddyfileGlobalOption fuzzes the pushgate global option (the app:
// hubs, stores, delivery, dev_issuer).
func FuzzCaddyfileGlobalOption(f *testing.F) {
	seedFromAdaptTests(f, "pushgate",
		"pushgate {\n\tdev_issuer 127.0.0.1:8444\n\thub demo\n}",
		"pushgate {\n\thub \"a b\" {\n\t\tredis_master m\n\t\tredis {$NOPE}\n\t}\n}",
		"pushgate {\n\thub x {\n\t\tdelivery {\n\t\t\tfcm {\n\t\t\t\trate 1e308\n\t\t\t}\n\t\t}\n\t}\n}",
		"pushgate {\n\thub x {\n\t\tttl 1d\n\t\tshards 0\n\t\tdata_dir `C:\\x`\n\t}\n}",
		"0 { hub \"\"", // found by the fuzzer: an empty hub name parsed
		"pushgate {\n\thub x {\n\t\tttl -1h\n\t}\n}",
	)
	f.Fuzz(func(t *testing.T, src string) {
		d, ok := caddyfileTokens(src)
		if !ok {
			return
		}
		v, err := parseGlobalOption(d, nil)
		if err != nil {
			return
		}
		app, ok := v.(httpcaddyfile.App)
		if !ok || app.Name != "pushgate" {
			t.Fatalf("the option did not produce the pushgate app: %#v", v)
		}
		var a App
		if err := json.Unmarshal(app.Value, &a); err != nil {
			t.Fatalf("the option's app JSON does not read back: %v\n%q", err, app.Value)
		}
		jsonRoundTrip(t, &a)
		repl := caddy.NewReplacer()
		for _, hc := range a.Hubs {
			if hc == nil || hc.Name == "" {
				t.Fatalf("a hub without a name parsed: %s", app.Value)
			}
			if hc.MaxTags < 0 || hc.MaxTemplates < 0 || hc.TTL < 0 {
				t.Fatalf("hub %q: negative limits parsed: %+v", hc.Name, hc)
			}
			if hc.Redis != nil && (len(hc.Redis.Addrs) == 0 || hc.Redis.DB < 0 || hc.Redis.Shards < 0) {
				t.Fatalf("hub %q: a Redis config without addresses or with negative numbers parsed: %+v", hc.Name, hc.Redis)
			}
			if _, err := hc.poolKey(repl); err != nil {
				t.Fatalf("hub %q: no store key: %v", hc.Name, err)
			}
			if hc.Delivery != nil {
				checkDelivery(t, hc.Delivery)
			}
		}
	})
}

// FuzzCaddyfileDelivery fuzzes a hub's delivery block on its own, so the
// fuzzer spends its inputs on the largest grammar.
func FuzzCaddyfileDelivery(f *testing.F) {
	seedFromAdaptTests(f, "delivery",
		"delivery {\n\tlog_only\n}",
		"delivery {\n\tapns {\n\t\trate NaN\n\t}\n}",
		"delivery {\n\twebpush {\n\t\tburst 9223372036854775807\n\t\trate Inf\n\t}\n}",
		"delivery {\n\twns {\n\t\tclient_id a\n\t} \n\twindow 1h30m\n}",
		"delivery {\n\tgrace -10s\n}",
	)
	f.Fuzz(func(t *testing.T, src string) {
		d, ok := caddyfileTokens(src)
		if !ok || !d.Next() {
			return
		}
		dc, err := parseDelivery(d)
		if err != nil {
			return
		}
		if dc == nil {
			t.Fatal("parseDelivery returned neither a config nor an error")
		}
		jsonRoundTrip(t, dc)
		checkDelivery(t, dc)
	})
}

// FuzzCaddyfileGate fuzzes the pushgate_gate directive.
func FuzzCaddyfileGate(f *testing.F) {
	seedFromAdaptTests(f, "pushgate_gate",
		"pushgate_gate {\n\thub h\n\toidc {\n\t\tissuer a\n\t\tissuer b\n\t}\n}",
		"pushgate_gate {\n\thub h\n\tmax_body 1EiB\n\tprefix //\n}",
	)
	f.Fuzz(func(t *testing.T, src string) {
		d, ok := caddyfileTokens(src)
		if !ok {
			return
		}
		g := new(Gate)
		if err := g.UnmarshalCaddyfile(d); err != nil {
			return
		}
		if g.Hub == "" {
			t.Fatalf("a gate without a hub parsed: %+v", g)
		}
		if g.MaxBodyBytes < 0 {
			t.Fatalf("a negative max_body parsed: %d", g.MaxBodyBytes)
		}
		jsonRoundTrip(t, g)
	})
}

// FuzzCaddyfileNH fuzzes the pushgate_nh directive, then runs the
// handler's own configuration check (setup: rules, keys, rights,
// throttles) on what parsed.
func FuzzCaddyfileNH(f *testing.F) {
	seedFromAdaptTests(f, "pushgate_nh",
		"pushgate_nh {\n\thub h\n\trule r k Listen\n}",
		"pushgate_nh {\n\thub /h/\n\trule r {env.NOPE} listen SEND\n\tmax_body 1\n}",
	)
	f.Fuzz(func(t *testing.T, src string) {
		d, ok := caddyfileTokens(src)
		if !ok {
			return
		}
		n := new(NHAPI)
		if err := n.UnmarshalCaddyfile(d); err != nil {
			return
		}
		if n.Hub == "" || len(n.Rules) == 0 {
			t.Fatalf("a pushgate_nh without a hub or rules parsed: %+v", n)
		}
		for _, r := range n.Rules {
			if _, err := parseRights(r.Rights); err != nil {
				t.Fatalf("rule %q parsed with bad rights: %v", r.Name, err)
			}
		}
		b := jsonRoundTrip(t, n)
		// setup is Provision without the app: it checks and builds the
		// rules. It may refuse (an empty key, a hub with slashes), never
		// panic, and must not refuse the same config differently after
		// the JSON trip.
		var fromJSON NHAPI
		if err := json.Unmarshal(b, &fromJSON); err != nil {
			t.Fatal(err)
		}
		errDirect := n.setup(&Hub{Name: n.Hub}, caddy.NewReplacer())
		errJSON := fromJSON.setup(&Hub{Name: fromJSON.Hub}, caddy.NewReplacer())
		if (errDirect == nil) != (errJSON == nil) {
			t.Fatalf("setup differs after the JSON trip: %v vs %v\n%s", errDirect, errJSON, b)
		}
	})
}
