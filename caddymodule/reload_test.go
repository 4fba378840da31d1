package caddymodule

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushgate/pushgate/internal/devissuer"
	"github.com/pushgate/pushgate/policy"
)

// The two policies of the reload tests: the per-user example, which keeps
// event:* and lang:* tags, and the same with lang:* no longer allowed.
// A PUT asking for lang:en shows which one decided it.
const (
	reloadPrefixesOld = `allowed_prefixes := {"event:", "lang:"}`
	reloadPrefixesNew = `allowed_prefixes := {"event:"}`
	reloadClientID    = "pushgate-reload-test"
)

// reloadPolicy returns the per-user example policy, or with newer its
// variant that drops lang:* tags.
func reloadPolicy(t *testing.T, newer bool) []byte {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "policy", "examples", "per_user", "policy.rego"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(src), reloadPrefixesOld) {
		t.Fatalf("the per_user example no longer says %s; update the reload tests", reloadPrefixesOld)
	}
	if newer {
		src = []byte(strings.Replace(string(src), reloadPrefixesOld, reloadPrefixesNew, 1))
	}
	return src
}

func writePolicyDir(t *testing.T, newer bool) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "policy.rego"), reloadPolicy(t, newer), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// devIssuer serves a development issuer on loopback for the test alone
// (its key in a temporary directory) and returns it.
func devIssuer(t *testing.T) *devissuer.Issuer {
	t.Helper()
	var is *devissuer.Issuer
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { is.Handler().ServeHTTP(w, r) }))
	t.Cleanup(srv.Close)
	var err error
	if is, err = devissuer.New(t.TempDir(), srv.URL); err != nil {
		t.Fatal(err)
	}
	return is
}

func gateCaddyfile(dataDir, policyDir, issuer string) string {
	return fmt.Sprintf(`{
	pushgate {
		hub reload {
			data_dir %s
		}
	}
}

localhost:HTTPS_PORT {
	bind 127.0.0.1
	tls internal
	pushgate_gate {
		hub reload
		policy %s
		oidc {
			issuer %s
			client_id %s
		}
	}
	respond "upstream" 200
}
`, dataDir, policyDir, issuer, reloadClientID)
}

// gateAnswer is one registration through the gate during a reload test.
type gateAnswer struct {
	start, end time.Time
	status     int
	err        error
	body       string
	newer      bool // decided by the new policy (lang:en dropped)
	// connSince is when the client first used the connection the request
	// went over.
	connSince time.Time
}

// gateLoad registers installations through the gate from several clients,
// each as its own user, until stopped.
type gateLoad struct {
	tc      *testCaddy
	hc      *http.Client
	tokens  []string
	stop    atomic.Bool
	wg      sync.WaitGroup
	mu      sync.Mutex
	answers []gateAnswer
	conns   map[net.Conn]time.Time // first use of each connection
}

func startGateLoad(t *testing.T, tc *testCaddy, is *devissuer.Issuer, clients int) *gateLoad {
	t.Helper()
	l := &gateLoad{tc: tc, hc: &http.Client{Timeout: 10 * time.Second, Transport: tc.Client.Transport}, conns: map[net.Conn]time.Time{}}
	for i := 0; i < clients; i++ {
		tok, err := is.Mint(fmt.Sprintf("user%d", i), nil, time.Hour, reloadClientID, devissuer.IDToken)
		if err != nil {
			t.Fatal(err)
		}
		l.tokens = append(l.tokens, tok)
	}
	// Wait until Caddy has its certificate and the gate its keys, so that
	// the load measures the reload and nothing else.
	for deadline := time.Now().Add(30 * time.Second); ; {
		if a := l.put(0, "warm-up"); a.err == nil && a.status == http.StatusOK {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the gate is not ready after 30 s: %d %v %s", a.status, a.err, a.body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i := range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for n := 0; !l.stop.Load(); n++ {
				a := l.put(i, fmt.Sprintf("u%d-dev%d", i, n%4))
				l.mu.Lock()
				l.answers = append(l.answers, a)
				l.mu.Unlock()
			}
		}()
	}
	return l
}

func (l *gateLoad) Stop() {
	l.stop.Store(true)
	l.wg.Wait()
}

func (l *gateLoad) put(client int, id string) gateAnswer {
	body := fmt.Sprintf(`{"installationId":%q,"platform":"fcmv1","pushChannel":"tok-%s","tags":["event:comment","lang:en"]}`, id, id)
	a := gateAnswer{start: time.Now()}
	req, err := http.NewRequest("PUT", l.tc.Base+"/push/installations/"+id, strings.NewReader(body))
	if err != nil {
		a.err = err
		return a
	}
	req.Header.Set("Authorization", "Bearer "+l.tokens[client])
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) {
			l.mu.Lock()
			since, seen := l.conns[info.Conn]
			if !seen {
				since = time.Now()
				l.conns[info.Conn] = since
			}
			l.mu.Unlock()
			a.connSince = since
		},
	}))
	res, err := l.hc.Do(req)
	if err != nil {
		a.end, a.err = time.Now(), err
		return a
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	a.end, a.status, a.body, a.err = time.Now(), res.StatusCode, string(b), err
	if a.err != nil || a.status != http.StatusOK {
		return a
	}
	var out struct {
		Installation struct {
			Tags []string `json:"tags"`
		} `json:"installation"`
		DroppedTags []string `json:"droppedTags"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		a.err = fmt.Errorf("decoding %q: %v", b, err)
		return a
	}
	kept, dropped := slices.Contains(out.Installation.Tags, "lang:en"), slices.Contains(out.DroppedTags, "lang:en")
	if kept == dropped {
		a.err = fmt.Errorf("lang:en neither kept nor dropped (or both): %s", b)
	}
	a.newer = dropped
	return a
}

// evalTimedOut is the gate's answer (a 503) when the policy's evaluation
// ran out of time, which happens on a starved machine.
const evalTimedOut = `"message":"the policy did not decide in time; retry the request"`

// check fails t for every answer that is not a 200 with one policy's
// decision, and returns the answers. A denial because the evaluation
// failed is logged, not failed: the gate's evaluation timeout (100 ms of
// wall-clock time) is met now and then when the test shares two cores with
// other work, which no reload causes; the log shows when.
func (l *gateLoad) check(t *testing.T) []gateAnswer {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	bad, timeouts := 0, 0
	for _, a := range l.answers {
		switch {
		case a.err == nil && a.status == http.StatusOK:
		case a.err == nil && a.status == http.StatusServiceUnavailable && strings.Contains(a.body, evalTimedOut):
			timeouts++
			t.Logf("PUT at +%v (%v): denied, the policy evaluation failed (timeout)", a.start.Sub(l.answers[0].start).Round(time.Millisecond), a.end.Sub(a.start).Round(time.Millisecond))
		default:
			if bad++; bad <= 10 {
				t.Errorf("PUT at +%v: %d %v %s", a.start.Sub(l.answers[0].start).Round(time.Millisecond), a.status, a.err, a.body)
			}
		}
	}
	if bad > 10 {
		t.Errorf("... %d failed requests in all", bad)
	}
	if timeouts > 0 {
		t.Logf("%d of %d requests denied because the policy evaluation timed out", timeouts, len(l.answers))
	}
	return slices.Clone(l.answers)
}

// TestReloadUnderLoad replaces Caddy's config, with a policy that no longer
// allows lang:* tags, while clients register through the gate: no request
// fails (no 5xx, no connection error), every request answered before the
// reload began was decided by the old policy and every request begun after
// it returned by the new one. The store is shared across the reload.
func TestReloadUnderLoad(t *testing.T) {
	is := devIssuer(t)
	dataDir := t.TempDir()
	oldDir, newDir := writePolicyDir(t, false), writePolicyDir(t, true)
	tc := startCaddy(t, gateCaddyfile(dataDir, oldDir, is.Issuer()))
	opens := storeOpens.Load()

	load := startGateLoad(t, tc, is, 6)
	defer load.Stop()
	time.Sleep(1500 * time.Millisecond)
	reloadStart := time.Now()
	tc.Reload(gateCaddyfile(dataDir, newDir, is.Issuer()))
	reloadEnd := time.Now()
	time.Sleep(1500 * time.Millisecond)
	load.Stop()

	if storeOpens.Load() != opens {
		t.Error("the reload reopened the store instead of sharing it")
	}
	answers := load.check(t)
	var before, spanning, after, drained int
	var lat []time.Duration
	for _, a := range answers {
		if a.err != nil || a.status != http.StatusOK {
			continue
		}
		switch {
		case a.end.Before(reloadStart):
			before++
			if a.newer {
				t.Errorf("a request answered before the reload began was decided by the new policy: %s", a.body)
			}
		case a.start.After(reloadEnd):
			after++
			switch {
			case a.newer:
			case a.connSince.Before(reloadEnd):
				// Caddy's reload returns once the old servers have begun
				// their graceful shutdown; a request the client put on an
				// open connection before the server's GOAWAY reached it is
				// still the old server's to answer.
				drained++
			default:
				t.Errorf("a request begun %v after the reload returned, on a connection opened after it, was decided by the old policy: %s", a.start.Sub(reloadEnd), a.body)
			}
		default:
			spanning++
			lat = append(lat, a.end.Sub(a.start))
		}
	}
	if before == 0 || after == 0 {
		t.Fatalf("%d requests before the reload, %d after", before, after)
	}
	t.Logf("reload took %v; requests: %d before it, %d overlapping it (%s), %d after it (%d of them answered by the old server on its connections)",
		reloadEnd.Sub(reloadStart).Round(time.Millisecond), before, spanning, latencies(lat), after, drained)
}

// TestPolicyFileReloadUnderLoad swaps the policy file (written aside and
// renamed over it, as a deployment or a ConfigMap update does) while
// clients register through the gate, without a Caddy reload: the gate's
// watcher picks the new policy up, no request fails, and once one answer
// came from the new policy every request begun after it gets the new
// policy too (no request goes back to the old one).
func TestPolicyFileReloadUnderLoad(t *testing.T) {
	is := devIssuer(t)
	dir := writePolicyDir(t, false)
	tc := startCaddy(t, gateCaddyfile(t.TempDir(), dir, is.Issuer()))

	load := startGateLoad(t, tc, is, 6)
	defer load.Stop()
	time.Sleep(time.Second)
	tmp := filepath.Join(dir, ".policy.rego.new") // a dot file is not loaded
	if err := os.WriteFile(tmp, reloadPolicy(t, true), 0o600); err != nil {
		t.Fatal(err)
	}
	swapped := time.Now()
	if err := os.Rename(tmp, filepath.Join(dir, "policy.rego")); err != nil {
		t.Fatal(err)
	}
	// Wait for the first answer from the new policy, then run on a while.
	var first time.Time
	for deadline := swapped.Add(15 * time.Second); first.IsZero(); {
		load.mu.Lock()
		for _, a := range load.answers {
			if a.err == nil && a.status == http.StatusOK && a.newer && (first.IsZero() || a.end.Before(first)) {
				first = a.end
			}
		}
		load.mu.Unlock()
		if first.IsZero() {
			if time.Now().After(deadline) {
				load.Stop()
				t.Fatal("the new policy did not decide any request within 15 s of the file swap")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	time.Sleep(time.Second)
	load.Stop()

	answers := load.check(t)
	var before, after int
	for _, a := range answers {
		if a.err != nil || a.status != http.StatusOK {
			continue
		}
		if a.end.Before(swapped) {
			before++
			if a.newer {
				t.Errorf("a request answered before the swap was decided by the new policy: %s", a.body)
			}
		}
		if a.start.After(first) {
			after++
			if !a.newer {
				t.Errorf("a request begun %v after the new policy's first answer was decided by the old one: %s", a.start.Sub(first), a.body)
			}
		}
	}
	if before == 0 || after == 0 {
		t.Fatalf("%d requests before the swap, %d after the new policy's first answer", before, after)
	}
	t.Logf("policy file swapped; the new policy's first answer %v later (the watcher polls every %v); %d requests in all",
		first.Sub(swapped).Round(time.Millisecond), policy.DefaultPollInterval, len(answers))
}
