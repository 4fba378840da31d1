package caddymodule

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/pushgate/pushgate/internal/oidcauth/idptest"
)

// TestGateWithRealIdP runs Caddy in-process with the gate in front of a
// stand-in backend, and a real OpenID provider (oidc-provider, started by
// idptest) issuing the tokens: an ID token from the authorization-code
// flow and an RFC 9068 access token.
func TestGateWithRealIdP(t *testing.T) {
	idp := idptest.Start(t)
	policyDir, err := filepath.Abs("../policy/examples/per_user")
	if err != nil {
		t.Fatal(err)
	}
	tester := caddytest.NewTester(t)
	dataDir := t.TempDir()
	config := func(policyDir string) string {
		return fmt.Sprintf(`{
	admin localhost:2999
	http_port 9080
	https_port 9443
	grace_period 1ns
	skip_install_trust
	pushgate {
		hub itest {
			data_dir %s
		}
	}
}
localhost:9443 {
	tls internal
	pushgate_gate {
		hub itest
		policy %s
		oidc {
			issuer %s
			client_id %s
			audience api://pushgate
		}
	}
	respond "upstream {header.X-Pushgate-User}" 200
}`, dataDir, policyDir, idp.Issuer, idptest.MobileClientID)
	}
	tester.InitServer(config(policyDir), "caddyfile")

	send := func(method, path, token, body string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(method, "https://localhost:9443"+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := tester.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b), res.Header
	}
	inst := `{"installationId":"e2e1","platform":"fcmv1","pushChannel":"tok:e2e","tags":["event:comment","sports","lang:en"]}`

	idTok := idp.IDToken(t, "alice")
	status, body, _ := send("PUT", "/push/installations/e2e1", idTok, inst)
	if status != 200 || !strings.Contains(body, `"userId:alice"`) || !strings.Contains(body, `"droppedTags":["sports"]`) {
		t.Fatalf("PUT with an ID token: %d %s", status, body)
	}
	accessTok := idp.AccessToken(t, "alice", "api://pushgate")
	status, body, _ = send("GET", "/push/installations/e2e1", accessTok, "")
	if status != 200 || !strings.Contains(body, `"userId":"alice"`) {
		t.Fatalf("GET with an access token: %d %s", status, body)
	}
	bobTok := idp.AccessToken(t, "bob", "api://pushgate")
	if status, body, _ = send("PUT", "/push/installations/e2e1", bobTok, inst); status != 403 {
		t.Fatalf("bob taking over alice's installation: %d %s", status, body)
	}
	wrongAud := idp.AccessToken(t, "alice", "api://elsewhere")
	status, _, hdr := send("GET", "/push/installations/e2e1", wrongAud, "")
	if status != 401 || !strings.Contains(hdr.Get("WWW-Authenticate"), "invalid_token") {
		t.Fatalf("wrong audience: %d %v", status, hdr)
	}
	// Everything else reaches the upstream, with no identity a client sent.
	req, _ := http.NewRequest("GET", "https://localhost:9443/feed", nil)
	req.Header.Set("X-Pushgate-User", "admin")
	res, err := tester.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if string(b) != "upstream " {
		t.Fatalf("pass-through: %q", b)
	}

	// A reload with another policy: the store is shared, not reopened (the
	// installation is still there), and the new policy decides at once.
	opens := storeOpens.Load()
	topics, _ := filepath.Abs("../policy/examples/topics")
	tester.InitServer(config(topics), "caddyfile")
	if storeOpens.Load() != opens {
		t.Fatal("the reload reopened the store instead of sharing it")
	}
	status, body, _ = send("PUT", "/push/installations/e2e1", accessTok, `{"installationId":"e2e1","platform":"fcmv1","pushChannel":"tok:e2e","tags":["topic:news","event:comment"]}`)
	if status != 200 || !strings.Contains(body, `"tags":["topic:news","userId:alice"]`) {
		t.Fatalf("after the reload the topics policy must decide: %d %s", status, body)
	}
}
