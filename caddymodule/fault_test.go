package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/internal/nhwire"
	"github.com/pushgate/pushgate/internal/redistest"
	"github.com/pushgate/pushgate/redisstore"
)

// faultKey is the SAS key of the fault tests' hub.
const faultKey = "ZmF1bHQtdGVzdHMta2V5LW9ubHktMDEyMzQ1Njc4OWFiY2Q="

// faultOp is one write a client made to one installation, and what
// pushgate answered.
type faultOp struct {
	kind   string // put, patch, delete
	tag    string // the tag a put sets or a patch adds
	status int    // 0: no answer
	class  opClass
	start  time.Time
	end    time.Time
}

// opClass is what a write's answer says about its effect.
type opClass int

const (
	// applied: acknowledged (2xx); it took effect, in its place in the
	// installation's history.
	applied opClass = iota
	// noop: a definite refusal (a PATCH of an absent installation, 404);
	// it took no effect, and it tells that the installation was absent.
	noop
	// unknown: no acknowledgement (503); it may or may not have taken
	// effect, but if it did, then in its place in the history (it was
	// answered before the next write to the installation began).
	unknown
)

// faultRun is the shared record of a load: every client's writes and the
// time of every answer, for the outage and recovery figures.
type faultRun struct {
	mu      sync.Mutex
	ops     map[string][]*faultOp // per installation, in order: one client owns an id
	answers []*faultOp            // every request, in completion order
	bad     []string              // answers that are wrong whatever the phase
}

func (r *faultRun) record(id string, op *faultOp) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if id != "" {
		r.ops[id] = append(r.ops[id], op)
	}
	r.answers = append(r.answers, op)
}

// firstApplied waits, until deadline, for an applied write for which
// after holds, and returns the one that ended first (nil if none came).
func (r *faultRun) firstApplied(deadline time.Time, after func(*faultOp) bool) *faultOp {
	for {
		var first *faultOp
		r.mu.Lock()
		for _, a := range r.answers {
			if a.class == applied && after(a) && (first == nil || a.end.Before(first.end)) {
				first = a
			}
		}
		r.mu.Unlock()
		if first != nil || time.Now().After(deadline) {
			return first
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *faultRun) fail(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.bad) < 20 {
		r.bad = append(r.bad, fmt.Sprintf(format, args...))
	}
}

// nhClient talks to pushgate_nh on a running Caddy with a full-rights SAS
// token, answering within 10 s or not at all.
type nhClient struct {
	tc    *testCaddy
	hc    *http.Client
	token string
}

func newNHClient(t *testing.T, tc *testCaddy) *nhClient {
	t.Helper()
	// A client-side bound that the server's fail-fast must beat: nothing
	// in pushgate should hold a request while Redis is away.
	hc := &http.Client{Timeout: 10 * time.Second, Transport: tc.Client.Transport}
	tok := nhwire.Sign(tc.Base+"/", "DefaultFullSharedAccessSignature", []byte(faultKey), time.Now().Add(2*time.Hour))
	c := &nhClient{tc: tc, hc: hc, token: tok}
	// Caddy gets its internal certificate in the background; until then a
	// handshake fails. Wait for it, so that the load sees only pushgate.
	for deadline := time.Now().Add(30 * time.Second); ; {
		status, _, _, err := c.do("GET", "/"+faultHub+"/installations/warm-up"+v, "")
		if err == nil && status == http.StatusNotFound {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server is not ready after 30 s: %d %v", status, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *nhClient) do(method, path, body string, hdr ...string) (int, string, http.Header, error) {
	req, err := http.NewRequest(method, c.tc.Base+path, strings.NewReader(body))
	if err != nil {
		return 0, "", nil, err
	}
	req.Header.Set("Authorization", c.token)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := c.hc.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, string(b), res.Header, err
}

const faultHub = "faults"

// hubRedisOptions returns the options of the running fault hub's Redis
// client, as go-redis completed them.
func hubRedisOptions(t *testing.T) *redis.Options {
	t.Helper()
	app, err := caddy.ActiveContext().App("pushgate")
	if err != nil {
		t.Fatal(err)
	}
	h, ok := app.(*App).Hub(faultHub)
	if !ok {
		t.Fatalf("no hub %s", faultHub)
	}
	st, ok := h.Core.Store().(*redisstore.Store)
	if !ok {
		t.Fatalf("hub %s is not stored in Redis", faultHub)
	}
	rc, ok := st.Client().(*redis.Client)
	if !ok {
		t.Fatalf("the store's client is a %T", st.Client())
	}
	return rc.Options()
}

// faultCaddyfile serves the NH API over a hub in Redis at redisAddr, with
// extra hub options (one per line).
func faultCaddyfile(redisAddr string, hubOptions ...string) string {
	var extra string
	for _, o := range hubOptions {
		extra += "\n\t\t\t" + o
	}
	return fmt.Sprintf(`{
	pushgate {
		hub %s {
			redis %s%s
			shards 4
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
		hub %s
		rule DefaultFullSharedAccessSignature %s Listen Send Manage
	}
}
`, faultHub, redisAddr, extra, faultHub, faultKey)
}

// TestRedisKilledUnderLoad kills Redis (SIGKILL; AOF with appendfsync
// always) while clients write installations through the Notification Hubs
// API, keeps them writing through the outage, restarts Redis on the same
// port and directory, and checks that
//   - every request during the outage was answered 503 with the API's
//     error body, before the client's 10 s timeout (latencies are logged);
//   - pushgate answers 2xx again once Redis is back (the delay is logged),
//     and every request begun after the first success succeeds;
//   - every acknowledged write is in the store: each installation's state
//     is one that its history of acknowledged and unacknowledged writes
//     can produce, with every acknowledged one applied;
//   - the store's indexes agree with its records (fsck);
//   - the delivery engine, whose broker lives in the same Redis, survived:
//     a send submitted after the recovery completes.
func TestRedisKilledUnderLoad(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{AppendOnly: true, AppendFsync: "always"})
	tc := startCaddy(t, faultCaddyfile(srv.Addr))
	c := newNHClient(t, tc)
	if o := hubRedisOptions(t); o.DialTimeout != redisstore.DefaultDialTimeout || o.DialerRetries != 1 || o.MaxRetries != redisstore.DefaultMaxRetries {
		t.Fatalf("the store's client has DialTimeout %v, DialerRetries %d, MaxRetries %d: not pushgate's defaults", o.DialTimeout, o.DialerRetries, o.MaxRetries)
	}

	const clients, idsPerClient = 8, 6
	run := &faultRun{ops: map[string][]*faultOp{}}
	var stop atomic.Bool
	var wg sync.WaitGroup
	for ci := 0; ci < clients; ci++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(ci), 7))
			for n := 0; !stop.Load(); n++ {
				id := fmt.Sprintf("c%d-i%d", ci, rng.IntN(idsPerClient))
				op := &faultOp{tag: fmt.Sprintf("w%d-%d", ci, n)}
				var method, body string
				switch p := rng.IntN(100); {
				case p < 45:
					op.kind, method = "put", "PUT"
					body = fmt.Sprintf(`{"installationId":%q,"platform":"fcmv1","pushChannel":"tok-%s","tags":[%q]}`, id, id, op.tag)
				case p < 80:
					op.kind, method = "patch", "PATCH"
					body = fmt.Sprintf(`[{"op":"add","path":"/tags","value":%q}]`, op.tag)
				default:
					op.kind, method = "delete", "DELETE"
				}
				op.start = time.Now()
				status, resBody, _, err := c.do(method, "/"+faultHub+"/installations/"+id+v, body, "Content-Type", "application/json")
				op.end = time.Now()
				op.status = status
				switch {
				case err != nil:
					op.class = unknown
					run.fail("%s %s: no answer after %v: %v", method, id, op.end.Sub(op.start), err)
				case status >= 200 && status < 300:
					op.class = applied
				case status == http.StatusNotFound && op.kind == "patch":
					op.class = noop
				case status == http.StatusServiceUnavailable:
					op.class = unknown
					if !strings.HasPrefix(resBody, "<Error><Code>503</Code><Detail>") {
						run.fail("%s %s: 503 without the API's error body: %q", method, id, resBody)
					}
				default:
					op.class = unknown
					run.fail("%s %s: %d %s", method, id, status, resBody)
				}
				run.record(id, op)
			}
		}()
	}
	stopLoad := func() {
		stop.Store(true)
		wg.Wait()
	}
	defer stopLoad()

	time.Sleep(1500 * time.Millisecond)
	killedAt := time.Now()
	srv.Kill()
	downAt := time.Now() // Redis is gone from here on
	time.Sleep(2 * time.Second)
	// A send during the outage is refused as quickly as a registration.
	sendStart := time.Now()
	status, body, _, err := c.do("POST", "/"+faultHub+"/messages"+v, `{"msg":"during the outage"}`)
	if err != nil || status != http.StatusServiceUnavailable {
		t.Errorf("a send during the outage: %d %s %v (want 503)", status, body, err)
	}
	sendOutage := time.Since(sendStart)
	restartAt := time.Now()
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	readyAt := time.Now() // Redis answers PING: it has replayed its AOF

	// Run on until the first success after the restart, and 2 s more.
	firstOK := run.firstApplied(readyAt.Add(15*time.Second), func(a *faultOp) bool { return a.end.After(restartAt) })
	if firstOK == nil {
		stopLoad()
		t.Fatalf("no write succeeded within 15 s of Redis answering again")
	}
	time.Sleep(2 * time.Second)
	stopLoad()

	for _, b := range run.bad {
		t.Error(b)
	}

	// Phases: before the kill, the outage (begun after Redis was gone and
	// answered before it was restarted), and after the first success.
	var before, outage, after []time.Duration
	var acked, unacked, noops, afterFailures int
	for _, a := range run.answers {
		switch a.class {
		case applied:
			acked++
		case unknown:
			unacked++
		case noop:
			noops++
		}
		d := a.end.Sub(a.start)
		switch {
		case a.end.Before(killedAt):
			before = append(before, d)
		case a.start.After(downAt) && a.end.Before(restartAt):
			outage = append(outage, d)
			if a.status != http.StatusServiceUnavailable {
				t.Errorf("%s during the outage: %d, want 503", a.kind, a.status)
			}
		case a.start.After(firstOK.end):
			after = append(after, d)
			if a.class == unknown {
				afterFailures++
			}
		}
	}
	if len(outage) == 0 || len(before) == 0 || len(after) == 0 {
		t.Fatalf("a phase without requests: %d before, %d during the outage, %d after", len(before), len(outage), len(after))
	}
	if afterFailures > 0 {
		t.Errorf("%d requests begun after the first success (at +%v) failed", afterFailures, firstOK.end.Sub(readyAt))
	}
	t.Logf("requests: %d acknowledged writes, %d unacknowledged, %d definite no-ops (PATCH of an absent installation)", acked, unacked, noops)
	t.Logf("latency before the kill: %s", latencies(before))
	t.Logf("latency during the outage (all 503): %s; a send: %v", latencies(outage), sendOutage.Round(time.Microsecond))
	t.Logf("latency after recovery: %s", latencies(after))
	t.Logf("recovery: Redis restarted and answering PING after %v (AOF replay); first 2xx %v after that",
		readyAt.Sub(restartAt).Round(time.Millisecond), max(0, firstOK.end.Sub(readyAt)).Round(time.Millisecond))

	// Every installation's state is one its history can produce.
	checked := 0
	for id, ops := range run.ops {
		status, body, _, err := c.do("GET", "/"+faultHub+"/installations/"+id+v, "")
		if err != nil || (status != 200 && status != 404) {
			t.Fatalf("GET %s: %d %s %v", id, status, body, err)
		}
		var tags []string
		present := status == 200
		if present {
			var in struct {
				Tags []string `json:"tags"`
			}
			if err := json.Unmarshal([]byte(body), &in); err != nil {
				t.Fatalf("GET %s: %v: %s", id, err, body)
			}
			tags = in.Tags
		}
		if why := explain(ops, present, tags); why != "" {
			t.Errorf("installation %s: stored state %v (tags %v) is not one its writes can produce: %s\n%s", id, present, tags, why, history(ops))
		}
		checked++
	}
	t.Logf("%d installations checked against their histories", checked)

	// The indexes agree with the records.
	var out bytes.Buffer
	if err := fsckHub(context.Background(), redis.UniversalOptions{Addrs: []string{srv.Addr}}, faultHub, &out); err != nil {
		t.Errorf("fsck after the outage: %v", err)
	} else {
		t.Log(strings.TrimSpace(out.String()))
	}

	// The engine kept running through the outage: a send made now is
	// delivered (to the log) and its outcome reaches a final state.
	inst := `{"installationId":"send-target","platform":"apns","pushChannel":"` + apnsToken + `","tags":["fault-send"],
"templates":{"t":{"body":"{\"aps\":{\"alert\":\"$(msg)\"}}"}}}`
	if status, body, _, err := c.do("PUT", "/"+faultHub+"/installations/send-target"+v, inst); err != nil || status != 200 {
		t.Fatalf("PUT send-target: %d %s %v", status, body, err)
	}
	status, body, hdr, err := c.do("POST", "/"+faultHub+"/messages"+v, `{"msg":"after the outage"}`, "ServiceBusNotification-Tags", "fault-send")
	if err != nil || status != 201 {
		t.Fatalf("send after recovery: %d %s %v", status, body, err)
	}
	loc, err := url.Parse(hdr.Get("Location"))
	if err != nil || loc.Path == "" {
		t.Fatalf("send Location %q", hdr.Get("Location"))
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		status, body, _, err := c.do("GET", loc.Path+v, "")
		if err == nil && status == 200 && strings.Contains(body, "<State>Completed</State>") {
			if !strings.Contains(body, "<ApnsOutcomeCounts><Outcome><Name>Success</Name><Count>1</Count></Outcome></ApnsOutcomeCounts>") {
				t.Errorf("send after recovery: %s", body)
			}
			break
		}
		if err == nil && status == 200 && (strings.Contains(body, "<State>Abandoned</State>") || strings.Contains(body, "<State>NoTargetFound</State>")) {
			t.Fatalf("send after recovery: %s", body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("send after recovery not completed within 30 s: %d %s %v", status, body, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// explain returns "" when a state (present with tags, or absent) is one
// that ops can produce, and why not otherwise.
//
// An acknowledged write took effect; an unacknowledged one may have; a
// refused PATCH (404) took none and shows the installation was absent. A
// PUT sets the tags to its own tag, a PATCH adds its tag to a present
// installation, a DELETE removes it. So the state is decided by the last
// PUT or DELETE that took effect (or by the initial absence): call it R.
// R is the last acknowledged one or any unacknowledged one after it, and
// must agree with what later answers showed (a PATCH acknowledged after a
// DELETE, or refused after a PUT, rules it out). Then an absent state needs
// R to be a DELETE (or the beginning); a present one needs R to be a PUT
// whose tag it carries, every PATCH acknowledged after R, and otherwise
// only tags of unacknowledged PATCHes after R.
func explain(ops []*faultOp, present bool, tags []string) string {
	lastAcked := -1 // index of the last acknowledged PUT or DELETE
	for i, op := range ops {
		if op.class == applied && op.kind != "patch" {
			lastAcked = i
		}
	}
	candidates := []int{lastAcked} // -1: the beginning, when nothing was reset
	for i := lastAcked + 1; i < len(ops); i++ {
		if ops[i].class == unknown && ops[i].kind != "patch" {
			candidates = append(candidates, i)
		}
	}
	var reasons []string
	for _, r := range candidates {
		absent := r < 0 || ops[r].kind == "delete"
		consistent := true
		for _, op := range ops[r+1:] {
			if op.kind == "patch" && ((absent && op.class == applied) || (!absent && op.class == noop)) {
				consistent = false
			}
		}
		if !consistent {
			continue
		}
		if absent {
			if !present {
				return ""
			}
			reasons = append(reasons, fmt.Sprintf("reset %d leaves it absent", r))
			continue
		}
		if !present {
			reasons = append(reasons, fmt.Sprintf("reset %d (%s) leaves it present", r, ops[r].tag))
			continue
		}
		want := map[string]bool{}  // tags that must be there
		maybe := map[string]bool{} // tags that may be there
		want[ops[r].tag] = true
		for _, op := range ops[r+1:] {
			if op.kind == "patch" {
				switch op.class {
				case applied:
					want[op.tag] = true
				case unknown:
					maybe[op.tag] = true
				}
			}
		}
		ok := true
		have := map[string]bool{}
		for _, t := range tags {
			have[t] = true
			if !want[t] && !maybe[t] {
				ok = false
				reasons = append(reasons, fmt.Sprintf("after reset %d (%s) tag %s cannot be there", r, ops[r].tag, t))
			}
		}
		for t := range want {
			if !have[t] {
				ok = false
				reasons = append(reasons, fmt.Sprintf("after reset %d (%s) acknowledged tag %s is missing", r, ops[r].tag, t))
			}
		}
		if ok {
			return ""
		}
	}
	if len(reasons) == 0 {
		return "no reset is consistent with the answers"
	}
	return strings.Join(reasons, "; ")
}

func history(ops []*faultOp) string {
	var b strings.Builder
	class := map[opClass]string{applied: "acked", noop: "refused", unknown: "unacked"}
	for i, op := range ops {
		fmt.Fprintf(&b, "  %d %s %s: %d %s\n", i, op.kind, op.tag, op.status, class[op.class])
	}
	return b.String()
}

// latencies summarizes durations: count, p50, p99 and max.
func latencies(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	q := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))].Round(time.Microsecond) }
	return fmt.Sprintf("n=%d p50=%v p99=%v max=%v", len(s), q(0.50), q(0.99), s[len(s)-1].Round(time.Microsecond))
}

// TestRedisFrozen stops Redis (SIGSTOP) under load: it accepts connections
// but answers nothing, as a hung server or a network that drops packets
// does. Requests must be answered 503, not 500, after the configured read
// timeout rather than hang, and succeed again after SIGCONT. Writes whose
// answer timed out are not checked against the store: Redis still holds
// them and runs them when it continues, after the client was told 503
// (see the Faults section of docs/BENCHMARKS.md).
func TestRedisFrozen(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	tc := startCaddy(t, faultCaddyfile(srv.Addr, "redis_read_timeout 300ms", "redis_dial_timeout 300ms", "redis_max_retries 0"))
	c := newNHClient(t, tc)
	if o := hubRedisOptions(t); o.ReadTimeout != 300*time.Millisecond || o.DialTimeout != 300*time.Millisecond || o.MaxRetries != 0 {
		t.Fatalf("the store's client has ReadTimeout %v, DialTimeout %v, MaxRetries %d: not the Caddyfile's", o.ReadTimeout, o.DialTimeout, o.MaxRetries)
	}

	run := &faultRun{ops: map[string][]*faultOp{}}
	var stop atomic.Bool
	var wg sync.WaitGroup
	for ci := 0; ci < 4; ci++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; !stop.Load(); n++ {
				id := fmt.Sprintf("f%d-%d", ci, n%4)
				op := &faultOp{kind: "put", tag: fmt.Sprintf("w%d-%d", ci, n), start: time.Now()}
				body := fmt.Sprintf(`{"installationId":%q,"platform":"fcmv1","pushChannel":"tok-%s","tags":[%q]}`, id, id, op.tag)
				status, resBody, _, err := c.do("PUT", "/"+faultHub+"/installations/"+id+v, body)
				op.end, op.status = time.Now(), status
				switch {
				case err != nil:
					op.class = unknown
					run.fail("PUT %s: no answer after %v: %v", id, op.end.Sub(op.start), err)
				case status == http.StatusOK:
					op.class = applied
				case status == http.StatusServiceUnavailable && strings.HasPrefix(resBody, "<Error><Code>503</Code><Detail>"):
					op.class = unknown
				default:
					op.class = unknown
					run.fail("PUT %s: %d %s", id, status, resBody)
				}
				run.record(id, op)
			}
		}()
	}
	stopLoad := func() {
		stop.Store(true)
		wg.Wait()
	}
	defer stopLoad()

	time.Sleep(time.Second)
	srv.Pause()
	pausedAt := time.Now()
	time.Sleep(2 * time.Second)
	resumeAt := time.Now()
	srv.Resume()
	firstOK := run.firstApplied(resumeAt.Add(15*time.Second), func(a *faultOp) bool { return a.start.After(resumeAt) })
	if firstOK == nil {
		stopLoad()
		t.Fatal("no write begun after SIGCONT succeeded within 15 s")
	}
	time.Sleep(time.Second)
	stopLoad()
	for _, b := range run.bad {
		t.Error(b)
	}
	var frozen, after []time.Duration
	var afterFailures int
	for _, a := range run.answers {
		d := a.end.Sub(a.start)
		switch {
		case a.start.After(pausedAt) && a.end.Before(resumeAt):
			frozen = append(frozen, d)
			if a.status != http.StatusServiceUnavailable {
				t.Errorf("PUT while Redis was frozen: %d, want 503", a.status)
			}
		case a.start.After(firstOK.end):
			after = append(after, d)
			if a.class != applied {
				afterFailures++
			}
		}
	}
	if len(frozen) == 0 || len(after) == 0 {
		t.Fatalf("%d requests answered while Redis was frozen, %d after", len(frozen), len(after))
	}
	if afterFailures > 0 {
		t.Errorf("%d requests begun after the first success failed", afterFailures)
	}
	t.Logf("latency while frozen (read timeout 300ms, all 503): %s", latencies(frozen))
	t.Logf("first 2xx of a request begun after SIGCONT: %v after it", firstOK.end.Sub(resumeAt).Round(time.Millisecond))
	var out bytes.Buffer
	if err := fsckHub(context.Background(), redis.UniversalOptions{Addrs: []string{srv.Addr}}, faultHub, &out); err != nil {
		t.Errorf("fsck after the freeze: %v", err)
	}
}

// partitionProxy stands between pushgate and Redis on loopback and can cut
// the path the way a network partition does: established connections go
// silent (nothing is forwarded, nothing is closed) and new connections are
// not completed (the listener's accept queue is one connection long and
// is no longer drained, so further SYNs are dropped and dials time out).
type partitionProxy struct {
	Addr   string
	target string
	ln     net.Listener

	mu     sync.Mutex
	cut    bool
	healed chan struct{}
	conns  []net.Conn
}

func startPartitionProxy(t *testing.T, target string) *partitionProxy {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	// Backlog 0: Linux queues one completed connection, then drops SYNs.
	if err := syscall.Listen(fd, 0); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "partition-proxy")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	p := &partitionProxy{Addr: ln.Addr().String(), target: target, ln: ln}
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		if p.cut {
			close(p.healed)
			p.cut = false
		}
		p.mu.Unlock()
	})
	go p.serve()
	return p
}

func (p *partitionProxy) serve() {
	for {
		p.mu.Lock()
		healed := p.healed
		cut := p.cut
		p.mu.Unlock()
		if cut {
			<-healed
			continue
		}
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			// Accepted as the cut began: it is one of the silent ones.
			p.conns = append(p.conns, c)
			p.mu.Unlock()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

// pipe copies until the connection ends; during a cut it holds what it
// read, and drops it when the cut heals (the connections are closed then).
func (p *partitionProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			dst.Close()
			return
		}
		p.mu.Lock()
		cut := p.cut
		p.mu.Unlock()
		if cut {
			continue
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			src.Close()
			return
		}
	}
}

// Cut partitions pushgate from Redis.
func (p *partitionProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	p.healed = make(chan struct{})
}

// Heal ends the partition; connections from before it are closed, as TCP
// connections that outlived a long partition are (their peers gave up).
func (p *partitionProxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.cut = false
	close(p.healed)
}

// TestRedisPartitioned cuts the network between pushgate and Redis:
// commands on open connections get no answer and new connections are
// never completed, so requests meet read and dial timeouts rather than a
// refused connection. They must be answered 503 (a timed-out dial is not
// the caller giving up), within the configured timeouts, and succeed again
// after the partition heals.
func TestRedisPartitioned(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	proxy := startPartitionProxy(t, srv.Addr)
	tc := startCaddy(t, faultCaddyfile(proxy.Addr, "redis_read_timeout 300ms", "redis_dial_timeout 300ms"))
	c := newNHClient(t, tc)

	var mu sync.Mutex
	type answer struct {
		status     int
		start, end time.Time
	}
	var answers []answer
	var stop atomic.Bool
	var wg sync.WaitGroup
	for ci := 0; ci < 4; ci++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; !stop.Load(); n++ {
				id := fmt.Sprintf("p%d-%d", ci, n%4)
				body := fmt.Sprintf(`{"installationId":%q,"platform":"fcmv1","pushChannel":"tok-%s","tags":["w%d"]}`, id, id, n)
				start := time.Now()
				status, resBody, _, err := c.do("PUT", "/"+faultHub+"/installations/"+id+v, body)
				end := time.Now()
				if err != nil {
					t.Errorf("PUT %s: no answer after %v: %v", id, end.Sub(start), err)
					return
				}
				if status != http.StatusOK && !(status == http.StatusServiceUnavailable && strings.HasPrefix(resBody, "<Error><Code>503</Code><Detail>")) {
					t.Errorf("PUT %s: %d %s", id, status, resBody)
				}
				mu.Lock()
				answers = append(answers, answer{status, start, end})
				mu.Unlock()
			}
		}()
	}
	defer func() { stop.Store(true); wg.Wait() }()

	time.Sleep(time.Second)
	proxy.Cut()
	cutAt := time.Now()
	time.Sleep(3 * time.Second)
	healAt := time.Now()
	proxy.Heal()
	time.Sleep(3 * time.Second)
	stop.Store(true)
	wg.Wait()

	var during []time.Duration
	var firstOK time.Time
	for _, a := range answers {
		if a.start.After(cutAt) && a.end.Before(healAt) {
			during = append(during, a.end.Sub(a.start))
			if a.status != http.StatusServiceUnavailable {
				t.Errorf("PUT during the partition: %d, want 503", a.status)
			}
		}
		if a.status == http.StatusOK && a.start.After(healAt) && (firstOK.IsZero() || a.end.Before(firstOK)) {
			firstOK = a.end
		}
	}
	if len(during) == 0 || firstOK.IsZero() {
		t.Fatalf("%d answers during the partition; a success after it: %v", len(during), !firstOK.IsZero())
	}
	late := 0
	for _, a := range answers {
		if a.start.After(firstOK) && a.status != http.StatusOK {
			late++
		}
	}
	if late > 0 {
		t.Errorf("%d requests begun after the first success failed", late)
	}
	t.Logf("latency during the partition (read/dial timeouts 300ms, all 503): %s", latencies(during))
	t.Logf("first 2xx of a request begun after the heal: %v after it", firstOK.Sub(healAt).Round(time.Millisecond))
}

// TestFaultHistoryCheck checks the oracle of TestRedisKilledUnderLoad on
// histories whose answer is known, so that it is seen to reject the
// states a lost or reordered write would leave.
func TestFaultHistoryCheck(t *testing.T) {
	op := func(kind, tag string, class opClass) *faultOp { return &faultOp{kind: kind, tag: tag, class: class} }
	put := func(tag string, c opClass) *faultOp { return op("put", tag, c) }
	patch := func(tag string, c opClass) *faultOp { return op("patch", tag, c) }
	del := func(c opClass) *faultOp { return op("delete", "", c) }
	cases := []struct {
		name    string
		ops     []*faultOp
		present bool
		tags    []string
		ok      bool
	}{
		{"nothing written, absent", nil, false, nil, true},
		{"nothing written, present", nil, true, []string{"x"}, false},
		{"acked put", []*faultOp{put("a", applied)}, true, []string{"a"}, true},
		{"acked put lost", []*faultOp{put("a", applied)}, false, nil, false},
		{"acked put, older state", []*faultOp{put("a", applied), put("b", applied)}, true, []string{"a"}, false},
		{"acked patch lost", []*faultOp{put("a", applied), patch("p", applied)}, true, []string{"a"}, false},
		{"acked patch kept", []*faultOp{put("a", applied), patch("p", applied)}, true, []string{"a", "p"}, true},
		{"acked delete undone", []*faultOp{put("a", applied), del(applied)}, true, []string{"a"}, false},
		{"unacked put applied", []*faultOp{put("a", applied), put("b", unknown)}, true, []string{"b"}, true},
		{"unacked put not applied", []*faultOp{put("a", applied), put("b", unknown)}, true, []string{"a"}, true},
		{"unacked delete applied", []*faultOp{put("a", applied), del(unknown)}, false, nil, true},
		{"unacked patch either way", []*faultOp{put("a", applied), patch("p", unknown), patch("q", applied)}, true, []string{"a", "q"}, true},
		{"unacked patch applied", []*faultOp{put("a", applied), patch("p", unknown), patch("q", applied)}, true, []string{"a", "p", "q"}, true},
		{"patch of an earlier put survives a later put", []*faultOp{put("a", applied), patch("p", applied), put("b", applied)}, true, []string{"b", "p"}, false},
		{"unacked put reordered after an acked one", []*faultOp{put("b", unknown), put("a", applied)}, true, []string{"b"}, false},
		{"tag of another write", []*faultOp{put("a", applied)}, true, []string{"a", "zzz"}, false},
		// A 404 PATCH shows the installation was absent then, so an unacked
		// PUT before it did not apply, and one after it may have.
		{"refused patch rules out an earlier unacked put", []*faultOp{put("a", unknown), patch("p", noop)}, true, []string{"a"}, false},
		{"unacked put after a refused patch", []*faultOp{patch("p", noop), put("a", unknown)}, true, []string{"a"}, true},
		// An acked PATCH shows it was present, so an unacked DELETE before
		// it did not apply.
		{"acked patch rules out an earlier unacked delete", []*faultOp{put("a", applied), del(unknown), patch("p", applied)}, false, nil, false},
	}
	for _, c := range cases {
		why := explain(c.ops, c.present, c.tags)
		if (why == "") != c.ok {
			t.Errorf("%s: explain = %q, want accepted=%v\n%s", c.name, why, c.ok, history(c.ops))
		}
	}
}

// TestRedisClientOptionErrors: the Redis client options refuse values that
// would leave the client without a bound (testdata/adapt/redis_client
// has the accepted forms).
func TestRedisClientOptionErrors(t *testing.T) {
	for opt, want := range map[string]string{
		"redis_dial_timeout 0s":    "must be positive",
		"redis_read_timeout -1s":   "is negative",
		"redis_read_timeout":       "wrong argument count",
		"redis_dial_timeout 1s 2s": "wrong argument count",
		"redis_max_retries -1":     "not a non-negative integer",
		"redis_max_retries many":   "not a non-negative integer",
	} {
		src := "{\n\tpushgate {\n\t\thub h {\n\t\t\tredis 127.0.0.1:6379\n\t\t\t" + opt + "\n\t\t}\n\t}\n}\n"
		_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error containing %q", opt, err, want)
		}
	}
}
