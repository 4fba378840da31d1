package caddymodule

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/internal/nhwire"
	"github.com/pushgate/pushgate/internal/redistest"
	"github.com/pushgate/pushgate/redisstore"
)

// The shape of the concurrent run. Few installations and many clients, so
// that most operations overlap others on the same installation; a low tag
// limit, so that PATCHes also meet the limit.
const (
	linIDs     = 8
	linClients = 24
	linMinOps  = 10_000
	linMaxTags = 4
	// linDirectFactor multiplies the operations of the run without HTTP,
	// which is several times faster.
	linDirectFactor = 3
	linKey          = "bGluZWFyaXphYmlsaXR5LXRlc3Qta2V5LTAxMjM0NTY3OA=="
	linRuleName     = "DefaultFullSharedAccessSignature"
	// linRequestTimeout ends a request whose outcome then counts as
	// unknown; it is far above any expected latency.
	linRequestTimeout = 20 * time.Second
	// linCheckTimeout bounds the checker; a history that cannot be decided
	// in that time fails the test rather than passing unchecked.
	linCheckTimeout = 2 * time.Minute
	// linExplainBudget bounds the search for the installations that broke
	// linearizability, once the whole history has been judged.
	linExplainBudget = time.Minute
)

// Environment overrides, for longer runs and for keeping the evidence.
const (
	linEnvOps  = "PUSHGATE_LINEARIZE_OPS" // operations per store (at least linMinOps)
	linEnvOut  = "PUSHGATE_LINEARIZE_OUT" // directory for the history and visualizations of a violation
	linEnvSeed = "PUSHGATE_LINEARIZE_SEED"
)

// TestLinearizeInstallations has many clients PUT, PATCH, DELETE and GET a
// few shared installations concurrently, records every operation's call
// and return times and results, and checks the history for
// linearizability with porcupine against the model in
// linearize_model_test.go. Three runs: through pushgate_nh served by Caddy
// on a hub stored in a real redis-server; the same on the embedded store
// (which shows the harness is not tied to Redis); and the same clients on
// the hub's Go API over Redis, without HTTP, where far more operations
// overlap. The Redis runs end with the store's consistency check (fsck):
// records and their tag index agree after the concurrent writes.
func TestLinearizeInstallations(t *testing.T) {
	ops := linMinOps
	if s := os.Getenv(linEnvOps); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < linMinOps {
			t.Fatalf("%s=%q: want an integer of at least %d", linEnvOps, s, linMinOps)
		}
		ops = n
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(linEnvSeed); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", linEnvSeed, s, err)
		}
		seed = n
	}
	t.Logf("seed %d (%s; the interleaving is not reproducible, the operation mix is)", seed, linEnvSeed)

	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t, redistest.Options{})
		runLinearize(t, linCaddy(t, "redis "+srv.Addr), ops, seed)
		linFsck(t, srv.Addr, "lin")
	})
	t.Run("memory", func(t *testing.T) {
		runLinearize(t, linCaddy(t, "data_dir "+filepath.ToSlash(t.TempDir())), ops, seed)
	})
	// The same clients on the hub's Go API, without HTTP in between: many
	// more operations overlap per millisecond, which is what reaches the
	// narrowest races in the store.
	t.Run("redis-direct", func(t *testing.T) {
		srv := redistest.Start(t, redistest.Options{})
		st, err := redisstore.New(context.Background(), redisstore.Options{Redis: redis.UniversalOptions{Addrs: []string{srv.Addr}}, Hub: "lin"})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		runLinearize(t, linDirect(hubcore.NewHub(st, hubcore.HubOptions{Limits: hubcore.Limits{MaxTags: linMaxTags}})), linDirectFactor*ops, seed)
		linFsck(t, srv.Addr, "lin")
	})
}

// linFsck runs the store's consistency check: after the concurrent writes,
// every record and its tag index still agree.
func linFsck(t *testing.T, addr, hub string) {
	var out bytes.Buffer
	if err := fsckHub(context.Background(), redis.UniversalOptions{Addrs: []string{addr}}, hub, &out); err != nil {
		t.Errorf("fsck after the run: %v", err)
	} else {
		t.Logf("fsck: %s", strings.TrimSpace(out.String()))
	}
}

// linExec performs one installation request: through Caddy (linCaddy) or
// on the hub directly (linDirect). err is a failure whose outcome is
// unknown (transport, timeout).
type linExec func(ctx context.Context, method, id, body string) (status int, resp []byte, err error)

// linCaddy serves a hub on store (a hub option line) through pushgate_nh
// and returns requests to it, signed with a Full rule.
func linCaddy(t *testing.T, store string) linExec {
	tc := startCaddy(t, fmt.Sprintf(`{
	pushgate {
		hub lin {
			%s
			max_tags %d
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
		hub lin
		rule %s %s Listen Send Manage
	}
}`, store, linMaxTags, linRuleName, linKey))
	auth := nhwire.Sign(fmt.Sprintf("https://localhost:%d/", tc.HTTPS), linRuleName, []byte(linKey), time.Now().Add(2*time.Hour))
	return func(ctx context.Context, method, id, body string) (int, []byte, error) {
		req, err := http.NewRequestWithContext(ctx, method, tc.Base+"/lin/installations/"+id+"?api-version=2020-06", strings.NewReader(body))
		if err != nil {
			return 0, nil, err
		}
		req.Header.Set("Authorization", auth)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		res, err := tc.Client.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		return res.StatusCode, b, err
	}
}

// linDirect answers as pushgate_nh does (same hub calls, same statuses
// through statusOf, 404 for PATCH on absent, 204 for DELETE on absent),
// without HTTP.
func linDirect(h *hubcore.Hub) linExec {
	return func(ctx context.Context, method, id, body string) (int, []byte, error) {
		var err error
		status := http.StatusOK
		switch method {
		case http.MethodGet:
			var in *hubcore.Installation
			if in, err = h.Store().GetInstallation(ctx, id); err == nil {
				b, err := in.MarshalJSON()
				return status, b, err
			}
		case http.MethodPut:
			var in *hubcore.Installation
			if in, err = hubcore.DecodeInstallation([]byte(body)); err == nil {
				_, err = h.PutInstallation(ctx, in, hubcore.Always)
			}
		case http.MethodPatch:
			var ops []hubcore.PatchOp
			if ops, err = hubcore.ParsePatch([]byte(body)); err == nil {
				_, err = h.PatchInstallation(ctx, id, ops, hubcore.Cond{})
			}
		case http.MethodDelete:
			status = http.StatusNoContent
			if err = h.Store().DeleteInstallation(ctx, id, hubcore.Always); hubcore.CodeOf(err) == hubcore.CodeNotFound {
				err = nil
			}
		}
		if err != nil {
			return statusOf(err), []byte(err.Error()), nil
		}
		return status, nil, nil
	}
}

// linRecorder runs the clients and collects the history.
type linRecorder struct {
	t      *testing.T
	exec   linExec
	t0     time.Time
	seq    atomic.Int64 // operation numbers: every written value is unique
	client atomic.Int64 // porcupine client ids; a client whose outcome is unknown continues under a new one

	mu       sync.Mutex
	hist     []porcupine.Operation
	statuses map[linKind]map[int]int // status → count; 0 is a transport error
	lat      map[linKind][]time.Duration
	errs     []string // 5xx and transport errors, for the report
}

func runLinearize(t *testing.T, exec linExec, ops int, seed uint64) {
	r := &linRecorder{
		t: t, exec: exec, t0: time.Now(),
		statuses: map[linKind]map[int]int{},
		lat:      map[linKind][]time.Duration{},
	}
	r.client.Store(linClients)

	started := time.Now()
	var wg sync.WaitGroup
	var next atomic.Int64
	for c := range linClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(c)))
			client := c
			for next.Add(1) <= int64(ops) {
				if !r.one(rng, client) {
					client = int(r.client.Add(1) - 1)
				}
			}
		}()
	}
	wg.Wait()
	// A final read of each installation, after everything else: it pins
	// the end state of every partition.
	final := int(r.client.Add(1) - 1)
	for i := range linIDs {
		r.do(final, linInput{kind: linGet, key: hubcore.InstallationKey(linID(i))}, http.MethodGet, linID(i), "")
	}
	elapsed := time.Since(started)
	r.report(elapsed)

	// The checker.
	model := linModel(linMaxTags)
	checkStart := time.Now()
	res := porcupine.CheckOperationsTimeout(model, r.hist, linCheckTimeout)
	t.Logf("porcupine: %d operations in %d partitions: %v in %v", len(r.hist), len(model.Partition(r.hist)), linResultName(res), time.Since(checkStart).Round(time.Millisecond))
	switch res {
	case porcupine.Illegal:
		t.Errorf("the history of %d operations is NOT linearizable", len(r.hist))
		r.explain(model)
	case porcupine.Unknown:
		t.Errorf("porcupine could not decide the history within %v; the check proves nothing", linCheckTimeout)
	}

	// The checker must be able to fail on this very history: swap what two
	// reads saw, the earlier one now seeing a later state. It must be
	// found.
	if res == porcupine.Ok {
		r.doctored(model)
	}
}

// linID is the i-th installation's id as the clients know it.
func linID(i int) string { return fmt.Sprintf("lin-%d", i) }

// one performs one random operation; it reports false when its outcome is
// unknown (the client is then replaced, as a crashed client would be).
func (r *linRecorder) one(rng *rand.Rand, client int) bool {
	i := rng.IntN(linIDs)
	id := linID(i)
	if rng.IntN(4) == 0 {
		id = strings.ToUpper(id) // the same installation: ids compare case-insensitively
	}
	in := linInput{key: hubcore.InstallationKey(id)}
	n := r.seq.Add(1)
	handle := fmt.Sprintf("%064x", i+1)
	var method, body string
	switch p := rng.IntN(100); {
	case p < 28:
		in.kind, method = linGet, http.MethodGet
	case p < 50:
		in.kind, method = linPut, http.MethodPut
		tags := []string{fmt.Sprintf("p%d", n), fmt.Sprintf("q%d", n)}
		in.tags, in.mark = joinTags(tags), fmt.Sprintf("m%d", n)
		body = linInstallation(id, handle, tags, in.mark)
	case p < 76:
		in.kind, method = linPatch, http.MethodPatch
		in.tag = fmt.Sprintf("a%d", n)
		ops := []map[string]string{{"op": "add", "path": "/tags", "value": in.tag}}
		if rng.IntN(2) == 0 {
			in.mark = fmt.Sprintf("m%d", n)
			ops = append(ops, map[string]string{"op": "replace", "path": "/templates/t/body", "value": linBody(in.mark)})
		}
		b, _ := json.Marshal(ops)
		body = string(b)
	case p < 94:
		in.kind, method = linDelete, http.MethodDelete
	case p < 97:
		in.kind, method = linBadPut, http.MethodPut
		body = linInstallation(id, handle, []string{"$InstallationId:{" + id + "}"}, fmt.Sprintf("m%d", n))
	default:
		in.kind, method = linBadPatch, http.MethodPatch
		body = fmt.Sprintf(`[{"op":"add","path":"/tags/-","value":"b%d"}]`, n)
	}
	return r.do(client, in, method, id, body)
}

func linBody(mark string) string { return `{"aps":{"alert":"$(msg)","m":"` + mark + `"}}` }

func linInstallation(id, handle string, tags []string, mark string) string {
	b, _ := json.Marshal(map[string]any{
		"installationId": id, "platform": "apns", "pushChannel": handle, "tags": tags,
		"templates": map[string]any{"t": map[string]string{"body": linBody(mark)}},
	})
	return string(b)
}

// do sends one request and records it; it reports whether its outcome is
// known.
func (r *linRecorder) do(client int, in linInput, method, id, body string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), linRequestTimeout)
	defer cancel()
	call := time.Since(r.t0).Nanoseconds()
	status, resp, err := r.exec(ctx, method, id, body)
	ret := time.Since(r.t0).Nanoseconds()

	out := linOutput{}
	var problem string
	switch {
	case err != nil:
		out.unknown = true
		problem = fmt.Sprintf("%s %s: %v", method, id, err)
	default:
		out.status = status
		if out.status >= 500 {
			// A server error leaves the outcome open: the write may have
			// been made before the failure.
			out.unknown = true
			problem = fmt.Sprintf("%s %s: %d %s", method, id, out.status, resp)
		}
	}
	if !out.unknown && in.kind == linGet && out.status == 200 {
		out.tags, out.mark, problem = linParse(resp, id)
	}
	op := porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret}
	if out.unknown {
		op.Return = linInfinity
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	r.hist = append(r.hist, op)
	if r.statuses[in.kind] == nil {
		r.statuses[in.kind] = map[int]int{}
	}
	r.statuses[in.kind][out.status]++
	r.lat[in.kind] = append(r.lat[in.kind], time.Duration(ret-call))
	if problem != "" {
		r.errs = append(r.errs, problem)
	}
	return !out.unknown
}

// linParse reads the tags and the template marker of a GET body.
func linParse(body []byte, id string) (tags, mark, problem string) {
	var got struct {
		InstallationID string   `json:"installationId"`
		Tags           []string `json:"tags"`
		Templates      map[string]struct {
			Body string `json:"body"`
		} `json:"templates"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		return "", "", fmt.Sprintf("GET %s: unreadable body %q: %v", id, body, err)
	}
	var tb struct {
		APS struct {
			M string `json:"m"`
		} `json:"aps"`
	}
	if err := json.Unmarshal([]byte(got.Templates["t"].Body), &tb); err != nil || tb.APS.M == "" {
		// Recorded as read: the model finds no write with this marker.
		return joinTags(got.Tags), "unreadable:" + got.Templates["t"].Body, fmt.Sprintf("GET %s: template body %q", id, got.Templates["t"].Body)
	}
	if hubcore.InstallationKey(got.InstallationID) != hubcore.InstallationKey(id) {
		problem = fmt.Sprintf("GET %s: answered installation %q", id, got.InstallationID)
	}
	return joinTags(got.Tags), tb.APS.M, problem
}

// report logs the run's figures and fails on server errors and on too
// many unknown outcomes (each weakens the check).
func (r *linRecorder) report(elapsed time.Duration) {
	t := r.t
	unknown := 0
	for _, op := range r.hist {
		if op.Output.(linOutput).unknown {
			unknown++
		}
	}
	t.Logf("%d operations by %d clients on %d installations in %v (%.0f ops/s); %d with unknown outcome",
		len(r.hist), linClients, linIDs, elapsed.Round(time.Millisecond), float64(len(r.hist))/elapsed.Seconds(), unknown)
	for k := linPut; k <= linBadPatch; k++ {
		lat := slices.Clone(r.lat[k])
		slices.Sort(lat)
		var codes []string
		for _, s := range slices.Sorted(maps.Keys(r.statuses[k])) {
			codes = append(codes, fmt.Sprintf("%d×%d", s, r.statuses[k][s]))
		}
		if len(lat) == 0 {
			continue
		}
		t.Logf("  %-10s %5d  p50 %v  p99 %v  max %v  statuses %s", k, len(lat),
			lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)*99/100].Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond),
			strings.Join(codes, " "))
	}
	for i, e := range r.errs {
		if i == 20 {
			t.Errorf("… and %d more", len(r.errs)-20)
			break
		}
		t.Errorf("server error or transport failure: %s", e)
	}
	if unknown*100 > len(r.hist) {
		t.Errorf("%d of %d operations have an unknown outcome; the check is too weak to mean anything", unknown, len(r.hist))
	}
	// The run must have reached every outcome the model distinguishes, or
	// part of the model was never exercised.
	for _, w := range []struct {
		k      linKind
		status int
	}{{linGet, 200}, {linGet, 404}, {linPut, 200}, {linPatch, 200}, {linPatch, 404}, {linPatch, 400}, {linDelete, 204}, {linBadPut, 400}, {linBadPatch, 400}} {
		if r.statuses[w.k][w.status] == 0 {
			t.Errorf("no %s answered %d: the run did not exercise that case", w.k, w.status)
		}
	}
}

func linResultName(r porcupine.CheckResult) string {
	switch r {
	case porcupine.Ok:
		return "linearizable"
	case porcupine.Illegal:
		return "NOT linearizable"
	}
	return "undecided"
}

// explain finds the installations whose history is not linearizable and
// writes each one's history and porcupine's visualization, so the
// violation can be studied.
func (r *linRecorder) explain(model porcupine.Model) {
	t := r.t
	dir := os.Getenv(linEnvOut)
	if dir == "" {
		var err error
		// Not t.TempDir: the evidence must outlive the test.
		if dir, err = os.MkdirTemp("", "pushgate-linearize-"); err != nil {
			t.Fatal(err)
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The whole history was judged not linearizable; find which
	// installations are, within a budget (a partition with many unknown
	// outcomes can take long to decide, and the verdict is already in).
	deadline := time.Now().Add(linExplainBudget)
	one := model
	one.Partition = nil
	for _, part := range model.Partition(r.hist) {
		key := part[0].Input.(linInput).key
		base := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+"-"+key)
		lines := linHistoryText(model, part)
		left := time.Until(deadline)
		if left <= 0 {
			t.Logf("installation %s not examined (explanation budget spent)", key)
			continue
		}
		if res := porcupine.CheckOperationsTimeout(one, part, left); res != porcupine.Illegal {
			if res == porcupine.Unknown {
				t.Logf("installation %s undecided within the explanation budget", key)
			}
			continue
		}
		if err := os.WriteFile(base+".txt", []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Errorf("writing the history of %s: %v", key, err)
		}
		res, info := porcupine.CheckOperationsVerbose(one, part, max(time.Until(deadline), 10*time.Second))
		// The longest linearizable prefix ends near the violation; the
		// operations around that point are what to look at first.
		longest := 0
		for _, p := range info.PartialLinearizations() {
			for _, l := range p {
				longest = max(longest, len(l))
			}
		}
		vis := "no visualization (undecided in time)"
		if res == porcupine.Illegal {
			vis = "visualization " + base + ".html"
			if err := porcupine.VisualizePath(one, info, base+".html"); err != nil {
				t.Errorf("visualizing %s: %v", key, err)
			}
		}
		t.Errorf("installation %s is NOT linearizable: %d operations, at most %d linearizable; history %s.txt, %s",
			key, len(part), longest, base, vis)
		lo, hi := max(0, longest-15), min(len(lines), longest+15)
		t.Logf("operations %d–%d of %s by call time:\n%s", lo, hi, key, strings.Join(lines[lo:hi], "\n"))
	}
}

// linHistoryText is a partition's history by call time, one operation a
// line, with times in microseconds since the run started.
func linHistoryText(model porcupine.Model, part []porcupine.Operation) []string {
	ops := slices.Clone(part)
	slices.SortFunc(ops, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) })
	lines := make([]string, len(ops))
	for i, op := range ops {
		ret := "∞"
		if op.Return != linInfinity {
			ret = strconv.FormatInt(op.Return/1000, 10)
		}
		lines[i] = fmt.Sprintf("client %3d  [%d, %s]µs  %s", op.ClientId, op.Call/1000, ret, model.DescribeOperation(op.Input, op.Output))
	}
	return lines
}

// doctored checks that the checker rejects this history with one injected
// bug: two reads of one installation, the first returning before the
// second is called, where the second saw a strict superset of the tags the
// first saw (the same PUT's epoch, later PATCHes). Tags are unique per
// write and only grow within an epoch, so after swapping what the two
// reads saw, the earlier read sees a state that can only come after the
// one the later read sees: a stale read, which must be Illegal.
func (r *linRecorder) doctored(model porcupine.Model) {
	t := r.t
	for _, part := range model.Partition(r.hist) {
		var reads []int
		for i, op := range part {
			in, out := op.Input.(linInput), op.Output.(linOutput)
			if in.kind == linGet && !out.unknown && out.status == 200 {
				reads = append(reads, i)
			}
		}
		slices.SortFunc(reads, func(a, b int) int { return cmp.Compare(part[a].Call, part[b].Call) })
		for a, i := range reads {
			for _, j := range reads[a+1:] {
				first, second := part[i], part[j]
				if first.Return >= second.Call || !linStrictSubset(first.Output.(linOutput).tags, second.Output.(linOutput).tags) {
					continue
				}
				bad := slices.Clone(part)
				bad[i].Output, bad[j].Output = second.Output, first.Output
				one := model
				one.Partition = nil
				res := porcupine.CheckOperationsTimeout(one, bad, linCheckTimeout)
				if res != porcupine.Illegal {
					t.Errorf("doctored history of %s (reads swapped: %q then %q) was judged %s; the checker cannot catch a stale read",
						part[0].Input.(linInput).key, second.Output.(linOutput).tags, first.Output.(linOutput).tags, linResultName(res))
				} else {
					t.Logf("doctored history of %s (a stale read injected) is rejected, as it must be", part[0].Input.(linInput).key)
				}
				return
			}
		}
	}
	t.Errorf("no two sequential reads of one installation saw a growing tag set; the run is too small to test the checker on")
}

// linStrictSubset reports whether tag set a (comma-joined) is a strict
// subset of b.
func linStrictSubset(a, b string) bool {
	if a == "" || len(a) >= len(b) {
		return false
	}
	in := map[string]bool{}
	for _, s := range strings.Split(b, ",") {
		in[s] = true
	}
	for _, s := range strings.Split(a, ",") {
		if !in[s] {
			return false
		}
	}
	return true
}
