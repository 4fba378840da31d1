package redisstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/tagexpr"
)

// tagStats answers the planner from counts read from every shard.
type tagStats struct {
	card     map[string]int64
	universe int64
}

func (t *tagStats) Cardinality(f string) int64 { return t.card[f] }
func (t *tagStats) Universe() int64            { return t.universe }

// installationTag returns the folded id of a $InstallationId:{…} tag.
func installationTag(folded string) (string, bool) {
	const p = "$installationid:{"
	if strings.HasPrefix(folded, p) && strings.HasSuffix(folded, "}") {
		return folded[len(p) : len(folded)-1], true
	}
	return "", false
}

// statsCache keeps recent planning statistics (see Options.StatsTTL).
type statsCache struct {
	ttl      time.Duration
	mu       sync.Mutex
	card     map[string]statEntry
	universe statEntry
}

type statEntry struct {
	n  int64
	at time.Time
}

// statsCacheMax bounds the tags remembered; past it the cache starts over.
const statsCacheMax = 10_000

// cached fills st from the cache and returns the tags it lacks, and
// whether the universe is fresh.
func (c *statsCache) cached(st *tagStats, tags []string, now time.Time) (missing []string, universe bool) {
	if c.ttl < 0 {
		return tags, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	fresh := func(e statEntry) bool { return !e.at.IsZero() && now.Sub(e.at) < c.ttl }
	for _, t := range tags {
		if e, ok := c.card[t]; ok && fresh(e) {
			st.card[t] = e.n
		} else {
			missing = append(missing, t)
		}
	}
	if fresh(c.universe) {
		st.universe = c.universe.n
		return missing, true
	}
	return missing, false
}

func (c *statsCache) store(st *tagStats, tags []string, universe bool, now time.Time) {
	if c.ttl < 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.card == nil || len(c.card)+len(tags) > statsCacheMax {
		c.card = make(map[string]statEntry)
	}
	for _, t := range tags {
		c.card[t] = statEntry{st.card[t], now}
	}
	if universe {
		c.universe = statEntry{st.universe, now}
	}
}

// stats returns the universe and the count of each tag, from the cache when
// fresh, otherwise read in one pipeline over every shard: tier 1 from the
// length of its packed bucket value, tiers 2 and 3 from the shard's tag
// directory.
func (s *Store) stats(ctx context.Context, tags []string) (*tagStats, error) {
	st := &tagStats{card: make(map[string]int64, len(tags))}
	now := time.Now()
	tags, haveUniverse := s.sc.cached(st, tags, now)
	if len(tags) == 0 && haveUniverse {
		return st, nil
	}
	if err := s.readStats(ctx, st, tags, !haveUniverse); err != nil {
		return nil, err
	}
	s.sc.store(st, tags, !haveUniverse, now)
	return st, nil
}

func (s *Store) readStats(ctx context.Context, st *tagStats, tags []string, withUniverse bool) error {
	pipe := s.rdb.Pipeline()
	var metas []*redis.StringCmd
	type tc struct {
		tag   string
		small *redis.IntCmd
		dir   *redis.StringCmd
	}
	var tcs []tc
	for sh := 0; sh < s.l.shards; sh++ {
		if withUniverse {
			metas = append(metas, pipe.HGet(ctx, s.l.meta(sh), "n"))
		}
		for _, t := range tags {
			if _, ok := installationTag(t); ok {
				continue
			}
			k := s.l.tagKeys(sh, t)
			tcs = append(tcs, tc{t, pipe.HStrLen(ctx, k.small, k.f6), pipe.HGet(ctx, s.l.dir(sh), k.f8)})
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return unavailable(err)
	}
	for _, m := range metas {
		n, _ := m.Int64()
		st.universe += n
	}
	for _, t := range tcs {
		n := t.small.Val() / 4
		d, _ := t.dir.Int64()
		st.card[t.tag] += n + d
	}
	for _, t := range tags {
		if _, ok := installationTag(t); ok {
			st.card[t] = 1
		}
	}
	return nil
}

// Plan plans e with the store's current index sizes.
func (s *Store) Plan(ctx context.Context, e *tagexpr.Expr) (*tagexpr.Plan, error) {
	var tags []string
	if e != nil {
		tags = e.FoldedTags()
	}
	st, err := s.stats(ctx, tags)
	if err != nil {
		return nil, err
	}
	return tagexpr.NewPlan(e, st), nil
}

func checkQuery(q hubcore.AudienceQuery) error {
	if err := q.CheckParts(); err != nil {
		return err
	}
	if !q.Template && q.Platform == "" {
		return invalid("platform", "a native send needs a platform")
	}
	if q.Platform != "" {
		if _, err := hubcore.ParsePlatform(string(q.Platform)); err != nil {
			return err
		}
	}
	return nil
}

// Resolve streams the targets of an audience to fn in batches.
func (s *Store) Resolve(ctx context.Context, q hubcore.AudienceQuery, batch int, fn func([]hubcore.Target) error) error {
	if batch < 1 {
		return invalid("batch", "batch must be at least 1")
	}
	if err := checkQuery(q); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := make(chan []hubcore.Target, 4)
	var werr error
	go func() {
		werr = s.execute(ctx, q, func(w *worker) visitor {
			return &targetSink{s: s, q: q, w: w, batch: batch, out: out, ctx: ctx}
		})
		close(out)
	}()
	var fnErr error
	for b := range out {
		if fnErr != nil {
			continue // drain, so the workers can finish
		}
		if err := fn(b); err != nil {
			fnErr = err
			cancel()
		}
	}
	if fnErr != nil {
		return fnErr
	}
	return werr
}

// Count returns how many targets Resolve would produce.
func (s *Store) Count(ctx context.Context, q hubcore.AudienceQuery) (int64, error) {
	if err := checkQuery(q); err != nil {
		return 0, err
	}
	var n atomic.Int64
	err := s.execute(ctx, q, func(w *worker) visitor {
		return &countSink{q: q, w: w, n: &n}
	})
	return n.Load(), err
}

// visitor receives each record a plan step reaches (live, carrying the
// step's driver and none of the earlier ones).
type visitor interface {
	// expect says that about n records are coming, so that a sink can
	// size its buffer once.
	expect(n int)
	visit(sh int, r *record, cs []*tmplContent) error
	flush() error
}

// resolveConcurrency bounds the shards resolved at once when a step has
// many candidates: enough to overlap round trips and decoding, few enough
// not to flood Redis.
const resolveConcurrency = 8

// scanChunk is how many bitmap bytes (8 iids each) one scan reads.
const scanChunk = 8192

// smallFetch is the candidate count up to which a step fetches the records
// right after the first scan, a group of shards per pipeline: selective
// audiences then cost three round trips (statistics, scan, records)
// whatever the shard count.
const smallFetch = 4096

// execute runs e's plan, calling the visitor made by mk (one per shard)
// for every record reached. Each step first scans the first chunk of every
// shard, in a few concurrent groups of shards; a group whose candidates
// are few reads their records in one more pipeline, otherwise each shard
// streams its candidates and further chunks concurrently.
//
// A query for one part of several (q.Parts > 0) runs on the shards sh with
// sh % Parts == Part only; the worker slices are indexed by position, each
// worker knowing its shard.
func (s *Store) execute(ctx context.Context, q hubcore.AudienceQuery, mk func(*worker) visitor) error {
	plan, err := s.Plan(ctx, q.Expr)
	if err != nil {
		return err
	}
	kx, err := newKexpr(plan.Expr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	now := s.now()
	var ws []*worker
	var vs []visitor
	for sh := 0; sh < s.l.shards; sh++ {
		if q.Parts > 0 && sh%q.Parts != q.Part {
			continue
		}
		w := &worker{s: s, sh: sh, now: now, kx: kx, expr: plan.Expr}
		ws = append(ws, w)
		vs = append(vs, mk(w))
	}
	if len(ws) == 0 {
		return nil
	}
	for i := range plan.Steps {
		if err := s.runStep(ctx, plan, i, ws, vs); err != nil {
			return err
		}
	}
	for _, v := range vs {
		if err := v.flush(); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) runStep(ctx context.Context, plan *tagexpr.Plan, i int, ws []*worker, vs []visitor) error {
	d := plan.Steps[i].Driver
	var earlier []string
	for _, p := range plan.Steps[:i] {
		earlier = append(earlier, p.Driver)
	}
	if id, ok := installationTag(d); ok {
		sh := hashOf(hInstallation, id).shard(s.l.shards)
		k := -1
		for i, w := range ws {
			if w.sh == sh {
				k = i
			}
		}
		if k < 0 {
			return nil // the installation is in another part
		}
		sl, err := s.locate(ctx, hInstallation, id)
		if err != nil || sl.rec == nil {
			return err
		}
		return ws[k].process(ctx, sl.raw, d, earlier, vs[k])
	}
	// Phase 1: the first chunk of every shard, in fetchGroupCount groups
	// run concurrently; a group whose candidates are few reads their
	// records at once, so that Redis serves one group's scan or reads while
	// the client decodes another's.
	scans := make([]*scan, len(ws))
	for sh, w := range ws {
		scans[sh] = w.newScan(d, earlier)
	}
	if err := s.scanAndFetch(ctx, ws, vs, scans, d, earlier); err != nil {
		return err
	}
	// Phase 2, large or continued: each shard streams on its own.
	var pending []int
	for sh, sc := range scans {
		if len(sc.cands) > 0 || sc.more() {
			pending = append(pending, sh)
		}
	}
	if len(pending) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, resolveConcurrency)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for _, sh := range pending {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			if err := ws[sh].stream(ctx, scans[sh], vs[sh]); err != nil {
				once.Do(func() { first = err; cancel() })
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// scanAndFetch runs the first scan of every shard and, for the groups of
// shards whose candidates are few (smallFetch over all groups), reads and
// processes their records, leaving the rest to stream.
func (s *Store) scanAndFetch(ctx context.Context, ws []*worker, vs []visitor, scans []*scan, d string, earlier []string) error {
	groups := min(fetchGroupCount, len(ws))
	errs := make([]error, groups)
	var wg sync.WaitGroup
	for g := 0; g < groups; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []*scan
			for sh := g; sh < len(ws); sh += groups {
				mine = append(mine, scans[sh])
			}
			if errs[g] = s.runScans(ctx, mine); errs[g] != nil {
				return
			}
			total := 0
			for _, sc := range mine {
				total += len(sc.cands)
			}
			if total > smallFetch/groups {
				return // many candidates: they stream
			}
			var reads map[int][]bucketRead
			errs[g] = s.runPipe(ctx, func(pipe redis.Pipeliner) {
				reads = make(map[int][]bucketRead)
				for sh := g; sh < len(ws); sh += groups {
					if len(scans[sh].cands) > 0 {
						reads[sh] = ws[sh].queueReads(ctx, pipe, scans[sh].cands)
					}
				}
			})
			if errs[g] != nil {
				return
			}
			for sh := g; sh < len(ws); sh += groups {
				if rs := reads[sh]; rs != nil {
					if err := ws[sh].processReads(ctx, rs, d, earlier, vs[sh]); err != nil {
						errs[g] = err
						return
					}
				}
				scans[sh].cands = nil
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// bitmapScans counts scans run by runBitmapScans, so that tests can tell
// that they exercised it.
var bitmapScans atomic.Int64

// runBitmapScans runs, without Lua, the scans whose driver and probes are
// all bitmaps (tier 3) in this shard — the usual case for the large tags of
// a selective conjunction such as a && b. The scan script would read the
// same ranges; a script call costs some 20 times the commands inside it,
// so one transaction of plain STRLEN/GETRANGE per shard is cheaper.
// The transaction also checks that every key is a bitmap; the scans where
// one is not are returned, for the script. On a Cluster one transaction
// cannot span the shards' slots, so there the script reads them all.
func (s *Store) runBitmapScans(ctx context.Context, scans []*scan) ([]*scan, error) {
	if _, cluster := s.rdb.(*redis.ClusterClient); cluster {
		return scans, nil
	}
	// A bitmap is a string key that is never empty, so its length says both
	// that it exists and, for the driver, how far the scan goes.
	type bcmds struct {
		lens   []*redis.IntCmd
		ranges []*redis.StringCmd
	}
	pipe := s.rdb.TxPipeline()
	var todo []*scan
	var cmds []bcmds
	for _, sc := range scans {
		if sc.args[0] != "t" {
			continue
		}
		off, _ := sc.args[2].(int)
		n, _ := sc.args[3].(int)
		var c bcmds
		for i := 3; i < len(sc.keys); i += 3 { // the bitmap of the driver, then of each probe
			c.lens = append(c.lens, pipe.StrLen(ctx, sc.keys[i]))
			c.ranges = append(c.ranges, pipe.GetRange(ctx, sc.keys[i], int64(off), int64(off+n-1)))
		}
		todo = append(todo, sc)
		cmds = append(cmds, c)
	}
	if len(todo) == 0 {
		return scans, nil
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, unavailable(err)
	}
	var rest []*scan
	done := make(map[*scan]bool, len(todo))
	for k, sc := range todo {
		c := cmds[k]
		all := true
		for _, l := range c.lens {
			all = all && l.Val() > 0
		}
		if !all {
			continue
		}
		res := []any{int64(3), c.ranges[0].Val(), c.lens[0].Val()}
		for _, r := range c.ranges[1:] {
			res = append(res, int64(3), r.Val())
		}
		if err := sc.take(res); err != nil {
			return nil, err
		}
		bitmapScans.Add(1)
		done[sc] = true
	}
	for _, sc := range scans {
		if !done[sc] {
			rest = append(rest, sc)
		}
	}
	return rest, nil
}

// fetchGroupCount is how many groups of shards a step's first scans and,
// when selective, record reads are split into.
const fetchGroupCount = 4

// runScans runs the current chunk of each scan in one pipeline and
// computes the candidates.
func (s *Store) runScans(ctx context.Context, scans []*scan) error {
	scans, err := s.runBitmapScans(ctx, scans)
	if err != nil || len(scans) == 0 {
		return err
	}
	for attempt := 0; ; attempt++ {
		pipe := s.rdb.Pipeline()
		cmds := make([]*redis.Cmd, len(scans))
		for k, sc := range scans {
			cmds[k] = scanScript.EvalSha(ctx, pipe, sc.keys, sc.args...)
		}
		_, err := pipe.Exec(ctx)
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") && attempt == 0 {
			if err := s.loadScripts(ctx); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return unavailable(err)
		}
		for k, sc := range scans {
			res, err := cmds[k].Slice()
			if err != nil {
				return unavailable(err)
			}
			if err := sc.take(res); err != nil {
				return err
			}
		}
		return nil
	}
}

// runPipe builds and runs a pipeline, loading the scripts and running it
// again if Redis had lost them (EVALSHA in a pipeline cannot fall back to
// EVAL by itself).
func (s *Store) runPipe(ctx context.Context, build func(redis.Pipeliner)) error {
	for attempt := 0; ; attempt++ {
		pipe := s.rdb.Pipeline()
		build(pipe)
		if len(pipe.Cmds()) == 0 {
			return nil
		}
		_, err := pipe.Exec(ctx)
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") && attempt == 0 {
			if err := s.loadScripts(ctx); err != nil {
				return err
			}
			continue
		}
		if err != nil && !errors.Is(err, redis.Nil) {
			return unavailable(err)
		}
		return nil
	}
}

// loadScripts loads the scripts on every primary, for pipelines, where
// EVALSHA cannot fall back to EVAL by itself.
func (s *Store) loadScripts(ctx context.Context) error {
	for _, sc := range []*redis.Script{applyScript, scanScript} {
		if err := sc.Load(ctx, s.rdb).Err(); err != nil {
			return unavailable(err)
		}
	}
	return nil
}

// worker executes plan steps in one shard, reusing its buffers.
type worker struct {
	s     *Store
	sh    int
	now   time.Time
	kx    *kexpr
	expr  *tagexpr.Expr
	rec   record
	m     memb
	idx   memb
	kv    []kval
	kf    []uint64   // per kexpr tag, the lanes where it is false
	dense [][]uint64 // per probe, its set-tier members as chunk masks
	// Memos of the store's shared template caches for one execution: the
	// workers of a Resolve run concurrently, and the shared caches' lock,
	// taken twice per target, was where they met.
	cmemo map[uint64]*tmplContent
	tmemo []compMemo
	cs    []*tmplContent
}

// contents is Store.contents through the worker's memo. The slice it
// returns is reused by the next call.
func (w *worker) contents(ctx context.Context, es []tmplEntry) ([]*tmplContent, error) {
	w.cs = w.cs[:0]
	for _, e := range es {
		c := w.cmemo[e.hash]
		if c == nil || e.inline != "" {
			cs, err := w.s.contents(ctx, w.sh, es)
			if err != nil {
				return nil, err
			}
			if w.cmemo == nil {
				w.cmemo = map[uint64]*tmplContent{}
			}
			for i, e := range es {
				if e.inline == "" {
					w.cmemo[e.hash] = cs[i]
				}
			}
			return cs, nil
		}
		w.cs = append(w.cs, c)
	}
	return w.cs, nil
}

// compiled is Store.compiled through the worker's memo. A send uses a
// few templates, so the memo is a short list (a map's hashing of the
// platform string cost more than the search).
func (w *worker) compiled(e tmplEntry, c *tmplContent, p hubcore.Platform, reg bool) (*hubcore.Template, error) {
	if e.inline != "" {
		return w.s.compiled(w.sh, e, c, p, reg)
	}
	for _, m := range w.tmemo {
		if m.hash == e.hash && m.reg == reg && m.p == p {
			return m.t, nil
		}
	}
	t, err := w.s.compiled(w.sh, e, c, p, reg)
	if err != nil {
		return nil, err
	}
	if len(w.tmemo) < tmemoMax {
		w.tmemo = append(w.tmemo, compMemo{e.hash, p, reg, t})
	}
	return t, nil
}

// tmemoMax bounds a worker's list of compiled templates.
const tmemoMax = 16

type compMemo struct {
	hash uint64
	p    hubcore.Platform
	reg  bool
	t    *hubcore.Template
}

// probe is a tag whose index entries a scan reads alongside the driver.
type probe struct {
	tag     string
	kxIndex int  // index in kexpr tags, -1 if not in the expression
	earlier bool // an earlier step's driver
	tier    int
	members map[int64]bool // tiers 1 and 2
	data    string         // tier 3: bitmap chunk, or one '0'/'1' per driver member
}

// scan is one step's progress through one shard.
type scan struct {
	w        *worker
	d        string
	earlier  []string
	probes   []*probe
	driverKX int
	keys     []string
	args     []any
	off      int
	dtier    int64
	dlen     int64
	cands    []int64
}

func (w *worker) newScan(d string, earlier []string) *scan {
	s := w.s
	sc := &scan{w: w, d: d, earlier: earlier, driverKX: -1}
	byTag := map[string]*probe{}
	add := func(t string, kxi int, e bool) {
		if t == d {
			return
		}
		if _, ok := installationTag(t); ok {
			return
		}
		p := byTag[t]
		if p == nil {
			p = &probe{tag: t, kxIndex: -1}
			byTag[t] = p
			sc.probes = append(sc.probes, p)
		}
		if kxi >= 0 {
			p.kxIndex = kxi
		}
		p.earlier = p.earlier || e
	}
	if w.kx != nil {
		for j, t := range w.kx.tags {
			add(t, j, false)
			if t == d {
				sc.driverKX = j
			}
		}
	}
	for _, e := range earlier {
		add(e, -1, true)
	}
	// A universe scan has no driver keys; the universe key stands in, as
	// every key must be in the shard's slot.
	u := s.l.universe(w.sh)
	sc.keys = []string{u, u, u, u}
	sc.args = []any{"u", "", 0, scanChunk, len(sc.probes)}
	if d != "" {
		tk := s.l.tagKeys(w.sh, d)
		sc.keys[1], sc.keys[2], sc.keys[3] = tk.small, tk.set, tk.bitmap
		sc.args[0], sc.args[1] = "t", tk.f6
	}
	for _, p := range sc.probes {
		tk := s.l.tagKeys(w.sh, p.tag)
		sc.keys = append(sc.keys, tk.small, tk.set, tk.bitmap)
		sc.args = append(sc.args, tk.f6)
	}
	if w.kx != nil && len(w.kv) < len(w.kx.tags) {
		w.kv = make([]kval, len(w.kx.tags))
	}
	return sc
}

// more reports whether the driver has chunks after the current one.
func (sc *scan) more() bool { return sc.dtier == 3 && int64(sc.off+scanChunk) < sc.dlen }

// take reads one scan reply into the candidates that survive pruning.
func (sc *scan) take(res []any) error {
	w := sc.w
	if len(res) != 3+2*len(sc.probes) {
		return unavailable(fmt.Errorf("scan script returned %d values", len(res)))
	}
	sc.dtier, _ = res[0].(int64)
	ddata, _ := res[1].(string)
	sc.dlen, _ = res[2].(int64)
	for j, p := range sc.probes {
		t, _ := res[3+2*j].(int64)
		data, _ := res[4+2*j].(string)
		p.tier, p.data, p.members = int(t), data, nil
		if p.tier == 1 || p.tier == 2 {
			p.members = make(map[int64]bool, len(data)/4)
			for k := 0; k+4 <= len(data); k += 4 {
				p.members[int64(binary.BigEndian.Uint32([]byte(data[k:k+4])))] = true
			}
		}
	}
	sc.cands = sc.cands[:0]
	if sc.dtier == 3 {
		sc.takeWords(ddata)
		return nil
	}
	// A set driver: each member is looked up in the probes; a bitmap
	// probe's data then holds one '0'/'1' per driver member.
	keep := func(iid int64, pos int) {
		if w.kx != nil {
			for j := range w.kv {
				w.kv[j] = kUnknown
			}
		}
		for _, p := range sc.probes {
			var has bool
			switch p.tier {
			case 1, 2:
				has = p.members[iid]
			case 3:
				has = pos < len(p.data) && p.data[pos] == '1'
			}
			if has && p.earlier {
				return // reached by an earlier step
			}
			if !has && p.kxIndex >= 0 {
				w.kv[p.kxIndex] = kFalse
			}
		}
		if w.kx != nil && w.kx.eval(w.kv) == kFalse {
			return
		}
		sc.cands = append(sc.cands, iid)
	}
	if sc.dtier == 1 || sc.dtier == 2 {
		n := len(ddata) / 4
		for k := 0; k < n; k++ {
			keep(int64(binary.BigEndian.Uint32([]byte(ddata[4*k:4*k+4]))), k)
		}
		sort.Slice(sc.cands, func(a, b int) bool { return sc.cands[a] < sc.cands[b] })
	}
	return nil
}

// takeWords is take for a bitmap driver, 64 candidates at a time: each
// probe becomes one mask per 64-bit word of the chunk, the expression is
// evaluated on the masks (kleene.go's evalWords) and only the survivors
// are visited bit by bit. A selective conjunction's driver has a few set
// bits per word, so evaluating per candidate cost more than the scan.
func (sc *scan) takeWords(ddata string) {
	w := sc.w
	nw := (len(ddata) + 7) / 8
	// Set-tier probes are spread into dense masks over the chunk once.
	if cap(w.dense) < len(sc.probes) {
		w.dense = make([][]uint64, len(sc.probes))
	}
	w.dense = w.dense[:len(sc.probes)]
	for j, p := range sc.probes {
		if p.tier != 1 && p.tier != 2 {
			continue
		}
		m := w.dense[j]
		if cap(m) < nw {
			m = make([]uint64, nw)
		}
		m = m[:nw]
		clear(m)
		for iid := range p.members {
			if b := iid - int64(sc.off)*8; b >= 0 && b < int64(nw)*64 {
				m[b/64] |= 1 << (63 - b%64)
			}
		}
		w.dense[j] = m
	}
	if w.kx != nil && len(w.kf) < len(w.kx.tags) {
		w.kf = make([]uint64, len(w.kx.tags))
	}
	// Tags that are not probes (the driver, installation tags) stay
	// unknown; each probe's entry is rewritten for every word.
	clear(w.kf)
	base := int64(sc.off) * 8
	for i := 0; i < nw; i++ {
		d := beWord(ddata, 8*i)
		if d == 0 {
			continue
		}
		for j, p := range sc.probes {
			var has uint64
			switch p.tier {
			case 1, 2:
				has = w.dense[j][i]
			case 3:
				has = beWord(p.data, 8*i)
			}
			if p.earlier {
				d &^= has // reached by an earlier step
			}
			if p.kxIndex >= 0 {
				w.kf[p.kxIndex] = ^has
			}
		}
		if w.kx != nil && d != 0 {
			f, _ := w.kx.root.evalWords(w.kf)
			d &^= f
		}
		for d != 0 {
			z := bits.LeadingZeros64(d)
			sc.cands = append(sc.cands, base+int64(64*i+z))
			d &^= 1 << (63 - z)
		}
	}
}

// beWord reads the big-endian word at s[i:i+8], zero-padded past the end,
// so that bit 63 is the bitmap bit 8*i (Redis numbers a byte's bits from
// its most significant).
func beWord(s string, i int) uint64 {
	if i+8 <= len(s) {
		return binary.BigEndian.Uint64([]byte(s[i : i+8]))
	}
	var b [8]byte
	if i < len(s) {
		copy(b[:], s[i:])
	}
	return binary.BigEndian.Uint64(b[:])
}

// stream processes a shard's pending candidates and then its remaining
// chunks, one at a time.
func (w *worker) stream(ctx context.Context, sc *scan, v visitor) error {
	for {
		if len(sc.cands) > 0 {
			if err := w.fetchAndProcess(ctx, sc.cands, sc.d, sc.earlier, v); err != nil {
				return err
			}
			sc.cands = sc.cands[:0]
		}
		if !sc.more() {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		sc.off += scanChunk
		sc.args[2] = sc.off
		if err := w.s.runScans(ctx, []*scan{sc}); err != nil {
			return err
		}
	}
}

// denseBucket is the candidate count from which a whole bucket is read
// (HVALS) rather than its candidates one by one (HMGET).
const denseBucket = recordsPerBucket / 3

// fetchBuckets bounds the buckets read in one pipeline.
const fetchBuckets = 128

// slotFields are the bucket fields of the slots, boxed once.
var slotFields = func() (f [recordsPerBucket]any) {
	for i := range f {
		f[i] = strconv.Itoa(i)
	}
	return f
}()

// bucketRead is one queued read of a record bucket's candidates.
type bucketRead struct {
	iids  []int64
	vals  *redis.StringSliceCmd // HVALS, for dense buckets
	mvals *redis.SliceCmd       // HMGET of the candidates' slots
	one   *redis.StringCmd      // HGET of a lone candidate's slot
}

// queueReads queues on pipe the reads of sorted candidates' records.
func (w *worker) queueReads(ctx context.Context, pipe redis.Pipeliner, cands []int64) []bucketRead {
	nb := 0
	for i, iid := range cands {
		if i == 0 || bucketOf(iid) != bucketOf(cands[i-1]) {
			nb++
		}
	}
	reads := make([]bucketRead, 0, nb)
	for len(cands) > 0 {
		b := bucketOf(cands[0])
		k := 1
		for k < len(cands) && bucketOf(cands[k]) == b {
			k++
		}
		reads = append(reads, bucketRead{iids: cands[:k]})
		br := &reads[len(reads)-1]
		cands = cands[k:]
		key := w.s.l.recBucket(w.sh, b)
		switch {
		case len(br.iids) >= denseBucket:
			br.vals = pipe.HVals(ctx, key)
		case len(br.iids) == 1:
			// The usual read of a selective audience, whose candidates are
			// spread one per bucket: HGET's reply is the string itself.
			br.one = redis.NewStringCmd(ctx, "hget", key, slotFields[slotOf(br.iids[0])])
			_ = pipe.Process(ctx, br.one) // queued; errors come with Exec
		default:
			fields := make([]string, len(br.iids))
			for j, iid := range br.iids {
				fields[j] = strconv.Itoa(int(slotOf(iid)))
			}
			br.mvals = pipe.HMGet(ctx, key, fields...)
		}
	}
	return reads
}

// fetchAndProcess reads the records of sorted candidate iids, a few
// buckets per round trip, and processes them.
func (w *worker) fetchAndProcess(ctx context.Context, cands []int64, d string, earlier []string, v visitor) error {
	for len(cands) > 0 {
		// Cut after fetchBuckets buckets.
		n, buckets := 0, 0
		for n < len(cands) && buckets < fetchBuckets {
			b := bucketOf(cands[n])
			for n < len(cands) && bucketOf(cands[n]) == b {
				n++
			}
			buckets++
		}
		var reads []bucketRead
		batch := cands[:n]
		cands = cands[n:]
		if err := w.s.runPipe(ctx, func(pipe redis.Pipeliner) { reads = w.queueReads(ctx, pipe, batch) }); err != nil {
			return err
		}
		if err := w.processReads(ctx, reads, d, earlier, v); err != nil {
			return err
		}
	}
	return nil
}

// processReads processes the records of executed bucket reads.
func (w *worker) processReads(ctx context.Context, reads []bucketRead, d string, earlier []string, v visitor) error {
	n := 0
	for i := range reads {
		n += len(reads[i].iids)
	}
	v.expect(n)
	for i := range reads {
		br := &reads[i]
		if br.vals != nil {
			var want [recordsPerBucket]bool
			for _, iid := range br.iids {
				want[slotOf(iid)] = true
			}
			for _, raw := range br.vals.Val() {
				if raw == spillMarker || len(raw) < 2 {
					continue // spilled records are read by slot below
				}
				if sl := raw[1] % recordsPerBucket; want[sl] {
					want[sl] = false
					if err := w.process(ctx, raw, d, earlier, v); err != nil {
						return err
					}
				}
			}
			// Spilled records: their bucket value is only the marker.
			var rest []int64
			for _, iid := range br.iids {
				if want[slotOf(iid)] {
					rest = append(rest, iid)
				}
			}
			if len(rest) > 0 {
				raws, err := w.s.fetchRecords(ctx, w.sh, rest)
				if err != nil {
					return err
				}
				for _, raw := range raws {
					if raw != "" {
						if err := w.process(ctx, raw, d, earlier, v); err != nil {
							return err
						}
					}
				}
			}
			continue
		}
		if br.one != nil {
			if err := w.processRaw(ctx, br.one.Val(), br.iids[0], d, earlier, v); err != nil {
				return err
			}
			continue
		}
		for j, x := range br.mvals.Val() {
			raw, _ := x.(string)
			if err := w.processRaw(ctx, raw, br.iids[j], d, earlier, v); err != nil {
				return err
			}
		}
	}
	return nil
}

// processRaw processes the bucket value read for iid: its record, or the
// marker of a record spilled to its own key, or nothing.
func (w *worker) processRaw(ctx context.Context, raw string, iid int64, d string, earlier []string, v visitor) error {
	if raw == spillMarker {
		raws, err := w.s.fetchRecords(ctx, w.sh, []int64{iid})
		if err != nil {
			return err
		}
		raw = raws[0]
	}
	if raw == "" {
		return nil
	}
	return w.process(ctx, raw, d, earlier, v)
}

// process decodes one candidate record and hands it to the visitor when it
// is live, carries the driver and none of the earlier drivers.
func (w *worker) process(ctx context.Context, raw, d string, earlier []string, v visitor) error {
	sh := w.sh
	r := &w.rec
	if err := decodeRecord(raw, r); err != nil {
		return unavailable(fmt.Errorf("shard %d: %w", sh, err))
	}
	if expiredAt(r, w.now) {
		return nil
	}
	var cs []*tmplContent
	if len(r.tmpls) > 0 {
		var err error
		if cs, err = w.contents(ctx, r.tmpls); err != nil {
			return err
		}
	}
	w.idx.setRecord(r)
	w.idx.extra = w.idx.extra[:0]
	for _, c := range cs {
		w.idx.addTemplate(c)
	}
	if d != "" && !w.idx.Has(d) {
		return nil
	}
	for _, e := range earlier {
		if w.idx.Has(e) {
			return nil
		}
	}
	return v.visit(sh, r, cs)
}

// memb is the tag set of one registration of a record (or, with every
// template's tags added, the record's index tags), answering
// tagexpr.Membership without folding or building strings: tags are kept
// as written and compared case-insensitively with the folded probe, and
// the implicit tags are matched by their parts.
type memb struct {
	base  []string // own tags, as written
	id    string   // installation id; "" for a registration record
	user  string   // user id, "" when none
	extra []string // folded template tags and template name
}

func (m *memb) setRecord(r *record) {
	m.base = r.tags
	m.id, m.user = "", ""
	if !r.reg {
		m.id, m.user = r.id, r.userID
	}
	m.extra = m.extra[:0]
}

func (m *memb) addTemplate(c *tmplContent) {
	m.extra = append(m.extra, c.ftags...)
	if c.fname != "" {
		m.extra = append(m.extra, c.fname)
	}
}

// foldEq reports whether t folds to f (f is folded).
func foldEq(t, f string) bool {
	if len(t) != len(f) {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != f[i] {
			return false
		}
	}
	return true
}

// Has implements tagexpr.Membership.
func (m *memb) Has(f string) bool {
	if len(f) > 0 && f[0] == '$' {
		if m.id == "" {
			return false
		}
		if v, ok := installationTag(f); ok {
			return foldEq(m.id, v)
		}
		const p = "$userid:{"
		if m.user != "" && strings.HasPrefix(f, p) && strings.HasSuffix(f, "}") {
			return foldEq(m.user, f[len(p):len(f)-1])
		}
		return false
	}
	for _, t := range m.base {
		if foldEq(t, f) {
			return true
		}
	}
	for _, t := range m.extra {
		if t == f {
			return true
		}
	}
	return false
}

// --- sinks ---

// expand calls emit for each registration of r that matches q: the native
// registration or the templates, per the query, whose own tags satisfy the
// expression. It is Installation.Registrations followed by EvalSet on each
// registration's TagSet, without building them.
func (w *worker) expand(sh int, r *record, cs []*tmplContent, q hubcore.AudienceQuery, emit func(name string, i int) error) error {
	if r.reg {
		if (len(r.tmpls) > 0) != q.Template || q.Platform != "" && r.platform != q.Platform {
			return nil
		}
		w.m.setRecord(r)
		if w.expr == nil || w.expr.Eval(&w.m) {
			if len(cs) > 0 {
				return emit(cs[0].name, 0)
			}
			return emit("", -1)
		}
		return nil
	}
	if r.expired || q.Platform != "" && r.platform != q.Platform {
		return nil
	}
	w.m.setRecord(r)
	if !q.Template {
		if w.expr == nil || w.expr.Eval(&w.m) {
			return emit("", -1)
		}
		return nil
	}
	for i, c := range cs {
		w.m.extra = w.m.extra[:0]
		w.m.addTemplate(c)
		if w.expr == nil || w.expr.Eval(&w.m) {
			if err := emit(c.name, i); err != nil {
				return err
			}
		}
	}
	return nil
}

type countSink struct {
	q hubcore.AudienceQuery
	w *worker
	n *atomic.Int64
	k int64
}

func (c *countSink) visit(sh int, r *record, cs []*tmplContent) error {
	return c.w.expand(sh, r, cs, c.q, func(string, int) error { c.k++; return nil })
}

func (c *countSink) expect(int) {}

func (c *countSink) flush() error { c.n.Add(c.k); return nil }

type targetSink struct {
	s     *Store
	q     hubcore.AudienceQuery
	w     *worker
	batch int
	out   chan<- []hubcore.Target
	ctx   context.Context
	buf   []hubcore.Target
	full  bool              // a full batch was sent
	sfx   map[string]string // template name -> projection id suffix
	hint  int               // records expected next, to size a new buf
}

func (t *targetSink) expect(n int) { t.hint = n }

func (t *targetSink) visit(sh int, r *record, cs []*tmplContent) error {
	var vars map[string]string
	made := false
	return t.w.expand(sh, r, cs, t.q, func(name string, i int) error {
		if !made {
			vars, made = varsMap(r.vars), true
		}
		tg := hubcore.Target{Platform: r.platform, Channel: r.channel, PushVariables: vars, TemplateName: name}
		if r.reg {
			tg.RegistrationID = r.id
		} else {
			tg.InstallationID = r.id
			tg.RegistrationID = t.projectionID(r.id, name)
		}
		if i >= 0 {
			ct, err := t.w.compiled(r.tmpls[i], cs[i], r.platform, r.reg)
			if err != nil {
				return err
			}
			tg.Template = ct
		}
		if t.buf == nil {
			// As many as are expected (most shards of a selective send
			// emit a few targets), a whole batch once a shard has filled
			// one.
			c := min(t.batch, max(t.hint, 16))
			if t.full {
				c = t.batch
			}
			t.buf = make([]hubcore.Target, 0, c)
		}
		t.buf = append(t.buf, tg)
		if len(t.buf) >= t.batch {
			return t.flush()
		}
		return nil
	})
}

// projectionID is hubcore.ProjectionID with the template name's hash
// computed once per name.
func (t *targetSink) projectionID(id, name string) string {
	if name == "" {
		return hubcore.ProjectionID(id, "")
	}
	if t.sfx == nil {
		t.sfx = map[string]string{}
	}
	sfx, ok := t.sfx[name]
	if !ok {
		p := hubcore.ProjectionID("", name)
		sfx = p[strings.LastIndexByte(p, '~'):]
		t.sfx[name] = sfx
	}
	return "inst~" + id + sfx
}

func (t *targetSink) flush() error {
	if len(t.buf) == 0 {
		return nil
	}
	select {
	case t.out <- t.buf:
	case <-t.ctx.Done():
		return t.ctx.Err()
	}
	// A fresh slice: the one sent may still be in fn's hands.
	t.full = t.full || len(t.buf) >= t.batch
	t.buf = nil
	return nil
}
