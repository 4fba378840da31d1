package caddymodule

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddytest"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

var updateGolden = flag.Bool("update", false, "rewrite the expected JSON of the adapt tests")

// TestCaddyfileAdapt checks that each testdata/adapt/*.caddyfiletest
// adapts to the JSON below its "----------" line (Caddy's own convention).
// Run with -update to regenerate after an intended change, and review the
// diff.
func TestCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob("testdata/adapt/*.caddyfiletest")
	if err != nil || len(files) == 0 {
		t.Fatalf("no adapt tests: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			caddyfile, want, ok := strings.Cut(string(data), "----------\n")
			if !ok {
				t.Fatal("no ---------- separator")
			}
			if *updateGolden {
				out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
				if err != nil {
					t.Fatal(err)
				}
				var pretty bytes.Buffer
				if err := json.Indent(&pretty, out, "", "\t"); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(f, []byte(caddyfile+"----------\n"+pretty.String()+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if !caddytest.CompareAdapt(t, f, caddyfile, "caddyfile", strings.TrimRight(want, "\n")) {
				t.Error("adapted JSON differs (see the diff above)")
			}
		})
	}
}

func TestCaddyfileErrors(t *testing.T) {
	cases := map[string]string{
		"hub twice in gate":  "{\n\tpushgate {\n\t\thub a\n\t}\n}\n:80 {\n\tpushgate_gate {\n\t\thub\n\t}\n}\n",
		"unknown gate opt":   ":80 {\n\tpushgate_gate {\n\t\thub a\n\t\tfrobnicate\n\t}\n}\n",
		"unknown hub opt":    "{\n\tpushgate {\n\t\thub a {\n\t\t\tcolour blue\n\t\t}\n\t}\n}\n",
		"bad max_tags":       "{\n\tpushgate {\n\t\thub a {\n\t\t\tmax_tags lots\n\t\t}\n\t}\n}\n",
		"gate without hub":   ":80 {\n\tpushgate_gate {\n\t\tpolicy p\n\t}\n}\n",
		"sentinel no addrs":  "{\n\tpushgate {\n\t\thub a {\n\t\t\tredis_master m\n\t\t}\n\t}\n}\n",
		"oidc issuer twice":  ":80 {\n\tpushgate_gate {\n\t\thub a\n\t\toidc {\n\t\t\tissuer a b\n\t\t}\n\t}\n}\n",
		"bad max_body":       ":80 {\n\tpushgate_gate {\n\t\thub a\n\t\tmax_body huge\n\t}\n}\n",
		"unknown global opt": "{\n\tpushgate {\n\t\tcolour blue\n\t}\n}\n",
		"unknown delivery":   "{\n\tpushgate {\n\t\thub a {\n\t\t\tdelivery {\n\t\t\t\tturbo\n\t\t\t}\n\t\t}\n\t}\n}\n",
		"unknown apns opt":   "{\n\tpushgate {\n\t\thub a {\n\t\t\tdelivery {\n\t\t\t\tapns {\n\t\t\t\t\tcolour blue\n\t\t\t\t}\n\t\t\t}\n\t\t}\n\t}\n}\n",
		"bad rate":           "{\n\tpushgate {\n\t\thub a {\n\t\t\tdelivery {\n\t\t\t\tfcm {\n\t\t\t\t\trate fast\n\t\t\t\t}\n\t\t\t}\n\t\t}\n\t}\n}\n",
		"bad window":         "{\n\tpushgate {\n\t\thub a {\n\t\t\tdelivery {\n\t\t\t\twindow soon\n\t\t\t}\n\t\t}\n\t}\n}\n",
	}
	for name, cf := range cases {
		if _, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), nil); err == nil {
			t.Errorf("%s: adapted without error", name)
		}
	}
}
