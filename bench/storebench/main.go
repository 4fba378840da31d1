// Command storebench loads a realistic population of installations into
// redisstore and measures what docs/BENCHMARKS.md reports: Redis
// memory per installation, upsert throughput against redis-benchmark SADD
// on the same server, and audience resolution against plain Redis set
// commands over the same data, all in one run.
//
//	go run ./bench/storebench -n 1000000            # starts its own redis-server
//	go run ./bench/storebench -n 100000 -addr 127.0.0.1:6379 -flush
//
// Only loopback addresses are accepted: the tool flushes and floods the
// server it is pointed at.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/tagexpr"
	"github.com/pushgate/pushgate/internal/redistest"
	"github.com/pushgate/pushgate/redisstore"
)

func main() {
	var (
		n        = flag.Int("n", 1_000_000, "installations to load")
		shards   = flag.Int("shards", 16, "index shards")
		buckets  = flag.Int("buckets", 1024, "buckets per shard")
		addr     = flag.String("addr", "", "loopback address of a Redis to use (default: start a redis-server)")
		flush    = flag.Bool("flush", false, "FLUSHALL the server at -addr first (required with -addr)")
		conc     = flag.Int("c", 64, "concurrent clients while loading")
		runs     = flag.Int("runs", 15, "timed runs per query")
		seed     = flag.Uint64("seed", 1, "data seed")
		baseline = flag.Bool("baseline", true, "also load the plain-set baseline and run redis-benchmark")
		load     = flag.Bool("load", true, "load the data (false: query what an earlier run with -addr left)")
		cpuprof  = flag.String("cpuprofile", "", "write a CPU profile of the queries to this file")
		only     = flag.String("only", "", "time only the queries whose expression is this (e.g. \"a && b\")")
	)
	flag.Parse()
	noLoad = !*load
	onlyQuery = *only
	cpuProfile = *cpuprof
	if err := run(*n, *shards, *buckets, *addr, *flush, *conc, *runs, *seed, *baseline); err != nil {
		fmt.Fprintln(os.Stderr, "storebench:", err)
		os.Exit(1)
	}
}

func run(n, shards, buckets int, addr string, flush bool, conc, runs int, seed uint64, baseline bool) error {
	ctx := context.Background()
	if addr == "" {
		dir, err := os.MkdirTemp("", "storebench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		srv, err := redistest.StartServer(dir, redistest.Options{})
		if err != nil {
			return err
		}
		defer srv.Stop()
		addr = srv.Addr
	} else {
		if err := loopbackOnly(addr); err != nil {
			return err
		}
		if !flush && !noLoad {
			return errors.New("-addr needs -flush: the benchmark measures memory from an empty server")
		}
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: conc + 8})
	defer rdb.Close()
	if !noLoad {
		if err := rdb.FlushAll(ctx).Err(); err != nil {
			return err
		}
	}
	info, _ := rdb.Info(ctx, "server").Result()
	fmt.Printf("redis: %s\n", pick(info, "redis_version", "os", "arch_bits"))
	fmt.Printf("go: GOMAXPROCS=%s n=%d shards=%d buckets=%d clients=%d seed=%d\n", os.Getenv("GOMAXPROCS"), n, shards, buckets, conc, seed)

	st, err := redisstore.New(ctx, redisstore.Options{
		Redis:   redis.UniversalOptions{Addrs: []string{addr}, PoolSize: conc + 8},
		Hub:     "bench",
		Shards:  shards,
		Buckets: buckets,
	})
	if err != nil {
		return err
	}
	defer st.Close()
	cfg, _ := rdb.ConfigGet(ctx, "hash-max-listpack-*").Result()
	fmt.Printf("config: %v\n", cfg)

	gen := newGenerator(seed)
	var upserts float64
	if !noLoad {
		var err error
		if upserts, err = loadStore(ctx, st, rdb, gen, n, conc); err != nil {
			return err
		}
	}
	return queries(ctx, st, rdb, gen, addr, n, runs, baseline, upserts)
}

// timeRuns times f runs times after one untimed run that warms caches and
// connections.
func timeRuns(runs int, f func() (time.Duration, error)) ([]time.Duration, error) {
	var ts []time.Duration
	for r := 0; r < runs+1; r++ {
		d, err := f()
		if err != nil {
			return nil, err
		}
		if r > 0 {
			ts = append(ts, d)
		}
	}
	return ts, nil
}

// alternate times a and b in turns, settling before each, so that both
// meet the same machine and neither runs on caches the other left hot or
// pays for the other's garbage.
func alternate(runs int, a, b func() (time.Duration, error)) (as, bs []time.Duration, err error) {
	for r := 0; r < runs+1; r++ {
		settle()
		da, err := a()
		if err != nil {
			return nil, nil, err
		}
		settle()
		db, err := b()
		if err != nil {
			return nil, nil, err
		}
		if r > 0 {
			as, bs = append(as, da), append(bs, db)
		}
	}
	return as, bs, nil
}

// settle collects garbage and pauses before a timed call, so that neither
// side of a comparison pays for the other's garbage collection.
func settle() {
	runtime.GC()
	time.Sleep(2 * time.Millisecond)
}

// noLoad skips loading: queries run on data an earlier run left.
var noLoad bool

// cpuProfile, when set, is where the queries' CPU profile goes.
var cpuProfile string

// onlyQuery, when set, is the one expression to time.
var onlyQuery string

func loadStore(ctx context.Context, st *redisstore.Store, rdb *redis.Client, gen *generator, n, conc int) (float64, error) {
	mem0 := usedMemory(ctx, rdb)
	fmt.Printf("\n== load %d installations (%d concurrent clients) ==\n", n, conc)
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, conc)
	start := time.Now()
	now := time.Now()
	lim := hubcore.Limits{}
	for c := 0; c < conc; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				in := gen.installation(i)
				if err := in.Validate(lim); err != nil {
					errc <- err
					return
				}
				in.Stamp(now, lim)
				if _, err := st.PutInstallation(ctx, in, hubcore.Always); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return 0, err
	}
	loadDur := time.Since(start)
	upserts := float64(n) / loadDur.Seconds()
	mem1 := usedMemory(ctx, rdb)
	perInst := float64(mem1-mem0) / float64(n)
	fmt.Printf("loaded in %v: %.0f upserts/s\n", loadDur.Round(time.Millisecond), upserts)
	fmt.Printf("used_memory: %d -> %d bytes: %.1f bytes per installation (index included)\n", mem0, mem1, perInst)
	return upserts, breakdown(ctx, rdb, n)
}

func queries(ctx context.Context, st *redisstore.Store, rdb *redis.Client, gen *generator, addr string, n, runs int, baseline bool, upserts float64) error {

	fmt.Printf("\n== resolution (%d runs each; median, p90; template sends: one target per matching template) ==\n", runs)
	q := func(src string) hubcore.AudienceQuery {
		e, err := tagexpr.Parse(src, tagexpr.Limits{})
		if err != nil {
			panic(err)
		}
		return hubcore.AudienceQuery{Expr: e, Template: true}
	}
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	resolve := func(aq hubcore.AudienceQuery) (int64, error) {
		var k int64
		err := st.Resolve(ctx, aq, 1000, func(b []hubcore.Target) error {
			k += int64(len(b))
			return nil
		})
		return k, err
	}
	if baseline {
		if k, _ := rdb.Exists(ctx, "base:all").Result(); k == 0 {
			fmt.Printf("\n== baseline: the same memberships as plain Redis sets of installation ids ==\n")
			if err := loadBaseline(ctx, rdb, gen, n); err != nil {
				return err
			}
		}
	}
	user := gen.userOf(n / 2)
	for _, c := range []struct {
		name, expr string
		base       []string // the baseline command, if any
	}{
		{"userId:" + user, "userId:" + user, nil},
		{"a && b", "a && b", []string{"SINTER", "base:a", "base:b"}},
		{"!muted", "!muted", []string{"SDIFF", "base:all", "base:muted"}},
	} {
		if onlyQuery != "" && c.expr != onlyQuery {
			continue
		}
		aq := q(c.expr)
		var count int64
		res := func() (time.Duration, error) {
			t0 := time.Now()
			k, err := resolve(aq)
			count = k
			return time.Since(t0), err
		}
		if !baseline || c.base == nil {
			ts, err := timeRuns(runs, res)
			if err != nil {
				return err
			}
			med, p90 := stats(ts)
			fmt.Printf("%-32s %8d targets  median %10v  p90 %10v  %12.0f targets/s\n", c.name, count, med.Round(time.Microsecond), p90.Round(time.Microsecond), float64(count)/med.Seconds())
			continue
		}
		var members int
		args := make([]any, len(c.base))
		for i, a := range c.base {
			args[i] = a
		}
		base := func() (time.Duration, error) {
			t0 := time.Now()
			v, err := rdb.Do(ctx, args...).StringSlice()
			members = len(v)
			return time.Since(t0), err
		}
		// Each query with a baseline is timed against it twice: back to back
		// (all runs of one, then of the other: each finds its own data in
		// the CPU caches) and alternating (run by run, after a GC and a
		// pause, so that both meet the same machine and neither finds its
		// data hot). On a shared machine the two orders bracket the ratio.
		label := strings.Join(c.base, " ")
		for _, order := range []string{"back to back", "alternating"} {
			var ts, bs []time.Duration
			var err error
			if order == "back to back" {
				if ts, err = timeRuns(runs, res); err == nil {
					bs, err = timeRuns(runs, base)
				}
			} else {
				ts, bs, err = alternate(runs, res, base)
			}
			if err != nil {
				return err
			}
			if order == "alternating" {
				fmt.Printf("-- %s: query and baseline take turns, %d runs each, a GC and a 2 ms pause before each --\n", order, runs)
			} else {
				fmt.Printf("-- %s: %d runs of the query, then %d of the baseline --\n", order, runs, runs)
			}
			med, p90 := stats(ts)
			bmed, bp90 := stats(bs)
			fmt.Printf("%-32s %8d targets  median %10v  p90 %10v  %12.0f targets/s\n", c.name, count, med.Round(time.Microsecond), p90.Round(time.Microsecond), float64(count)/med.Seconds())
			fmt.Printf("%-32s %8d members  median %10v  p90 %10v\n", label, members, bmed.Round(time.Microsecond), bp90.Round(time.Microsecond))
			fmt.Printf("%s (%s): Resolve %v / %s %v = %.2fx\n", c.name, order, med.Round(time.Microsecond), c.base[0], bmed.Round(time.Microsecond), float64(med)/float64(bmed))
		}
	}
	plan, _ := st.Plan(ctx, q("a && b").Expr)
	fmt.Print(tagexpr.Explain(plan))

	if upserts == 0 {
		return nil
	}
	return redisBenchmark(addr, upserts)
}

// loopbackOnly refuses anything but a loopback address.
func loopbackOnly(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%s is not a loopback address; storebench only runs against a local server", addr)
	}
	return nil
}

func usedMemory(ctx context.Context, rdb *redis.Client) int64 {
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0
	}
	v, _ := strconv.ParseInt(pick(info, "used_memory"), 10, 64)
	return v
}

// pick returns the values of INFO fields, space-separated.
func pick(info string, fields ...string) string {
	var out []string
	for _, line := range strings.Split(info, "\r\n") {
		for _, f := range fields {
			if v, ok := strings.CutPrefix(line, f+":"); ok {
				if len(fields) == 1 {
					return v
				}
				out = append(out, f+"="+v)
			}
		}
	}
	return strings.Join(out, " ")
}

func stats(ts []time.Duration) (med, p90 time.Duration) {
	sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
	return ts[len(ts)/2], ts[len(ts)*9/10]
}

// breakdown attributes memory to the kinds of keys (MEMORY USAGE of every
// key: an estimate that excludes allocator overhead outside the objects).
func breakdown(ctx context.Context, rdb *redis.Client, n int) error {
	kinds := map[string]*[3]int64{} // keys, bytes, entries
	var cursor uint64
	var total int64
	for {
		keys, next, err := rdb.Scan(ctx, cursor, "{pg:bench:*", 1000).Result()
		if err != nil {
			return err
		}
		pipe := rdb.Pipeline()
		cmds := make([]*redis.IntCmd, len(keys))
		for i, k := range keys {
			cmds[i] = pipe.MemoryUsage(ctx, k, 0)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
		for i, k := range keys {
			kind := k[strings.IndexByte(k, '}')+1:]
			if j := strings.IndexByte(kind[1:], ':'); j >= 0 {
				kind = kind[:j+2]
			}
			if kinds[kind] == nil {
				kinds[kind] = &[3]int64{}
			}
			kinds[kind][0]++
			kinds[kind][1] += cmds[i].Val()
			total += cmds[i].Val()
		}
		if next == 0 {
			break
		}
		cursor = next
	}
	names := make([]string, 0, len(kinds))
	for k := range kinds {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool { return kinds[names[i]][1] > kinds[names[j]][1] })
	fmt.Printf("MEMORY USAGE by key kind (bytes per installation; sum %.1f):\n", float64(total)/float64(n))
	for _, k := range names {
		v := kinds[k]
		fmt.Printf("  %-6s %8d keys %12d bytes %7.1f B/inst\n", k, v[0], v[1], float64(v[1])/float64(n))
	}
	return nil
}

func loadBaseline(ctx context.Context, rdb *redis.Client, gen *generator, n int) error {
	mem0 := usedMemory(ctx, rdb)
	const batch = 1000
	for i := 0; i < n; i += batch {
		pipe := rdb.Pipeline()
		for j := i; j < min(i+batch, n); j++ {
			id, tags := gen.baselineMembership(j)
			pipe.SAdd(ctx, "base:all", id)
			for _, t := range tags {
				switch t {
				case "a", "b", "muted":
					pipe.SAdd(ctx, "base:"+t, id)
				}
			}
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
	}
	mem1 := usedMemory(ctx, rdb)
	ca, _ := rdb.SCard(ctx, "base:a").Result()
	cb, _ := rdb.SCard(ctx, "base:b").Result()
	cm, _ := rdb.SCard(ctx, "base:muted").Result()
	fmt.Printf("plain sets: all=%d a=%d b=%d muted=%d (%d bytes for these four sets)\n", n, ca, cb, cm, mem1-mem0)
	return nil
}

// redisBenchmark runs redis-benchmark's SADD on the same server and prints
// the store's upsert rate as a ratio of it.
func redisBenchmark(addr string, upserts float64) error {
	host, port, _ := net.SplitHostPort(addr)
	fmt.Printf("\n== redis-benchmark SADD on the same server ==\n")
	for _, pipeline := range []string{"1", "16"} {
		args := []string{"-h", host, "-p", port, "-c", "50", "-n", "500000", "-r", "10000000", "-P", pipeline, "-q", "SADD", "benchset", "__rand_int__"}
		out, err := exec.Command("redis-benchmark", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("redis-benchmark: %v: %s", err, out)
		}
		line := lastLine(string(out))
		fmt.Printf("redis-benchmark %s\n  %s\n", strings.Join(args, " "), line)
		if rps := parseRPS(line); rps > 0 {
			fmt.Printf("  store upserts/s / SADD/s (-P %s) = %.0f / %.0f = %.3f\n", pipeline, upserts, rps, upserts/rps)
		}
	}
	return nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(strings.ReplaceAll(s, "\r", "\n")), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], "requests per second") {
			return strings.TrimSpace(lines[i])
		}
	}
	return strings.TrimSpace(lines[len(lines)-1])
}

func parseRPS(line string) float64 {
	f := strings.Fields(line)
	for i, w := range f {
		if w == "requests" && i > 0 {
			v, _ := strconv.ParseFloat(f[i-1], 64)
			return v
		}
	}
	return 0
}

// --- data ---

// generator makes installation i deterministically from the seed, so that
// the baseline sets can be rebuilt with the same memberships.
type generator struct {
	seed   uint64
	langs  []string
	oses   []string
	bodies map[hubcore.Platform]*hubcore.Template
}

func newGenerator(seed uint64) *generator {
	return &generator{
		seed:  seed,
		langs: []string{"en", "de", "fr", "es", "it", "pt", "nl", "sv", "no", "da", "fi", "pl", "cs", "tr", "ru", "uk", "ja", "ko", "zh", "ar"},
		oses:  []string{"ios16", "ios17", "ios18", "android12", "android13", "android14", "android15", "ipados17"},
		bodies: map[hubcore.Platform]*hubcore.Template{
			hubcore.APNS: {
				Body:    `{"aps":{"alert":{"title":"$(title)","body":"$(body)"},"sound":"default","badge":"#(badge)"}}`,
				Headers: map[string]string{"apns-push-type": "alert", "apns-priority": "10"},
			},
			hubcore.FCMV1: {
				Body: `{"message":{"notification":{"title":"$(title)","body":"$(body)"},"android":{"priority":"high"}}}`,
			},
		},
	}
}

func (g *generator) rng(i int) *rand.Rand { return rand.New(rand.NewPCG(g.seed, uint64(i))) }

// userOf maps installation i to its user: users own 1, 2 or 3 devices
// (about 55%, 30%, 15%), in consecutive blocks of installation indexes.
func (g *generator) userOf(i int) string {
	// A block of 100 installations holds 61 users: 33×1 + 17×2 + 11×3.
	const block = 100
	b, k := i/block, i%block
	var u int
	switch {
	case k < 33:
		u = k
	case k < 33+34:
		u = 33 + (k-33)/2
	default:
		u = 50 + (k-67)/3
	}
	return "u" + strconv.Itoa(b*61+u)
}

const tokenAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

func (g *generator) installation(i int) *hubcore.Installation {
	r := g.rng(i)
	var id [16]byte
	for k := range id {
		id[k] = byte(r.Uint32())
	}
	guid := fmt.Sprintf("%x-%x-%x-%x-%x", id[0:4], id[4:6], id[6:8], id[8:10], id[10:16])
	in := &hubcore.Installation{InstallationID: guid, UserID: g.userOf(i)}
	if r.IntN(2) == 0 {
		in.Platform = hubcore.APNS
		var tok [32]byte
		for k := range tok {
			tok[k] = byte(r.Uint32())
		}
		in.PushChannel.Handle = fmt.Sprintf("%x", tok)
	} else {
		// An FCM registration token: 22 characters, ":APA91b", 134 more.
		b := make([]byte, 0, 163)
		for k := 0; k < 22; k++ {
			b = append(b, tokenAlphabet[r.IntN(len(tokenAlphabet))])
		}
		b = append(b, ":APA91b"...)
		for k := 0; k < 134; k++ {
			b = append(b, tokenAlphabet[r.IntN(len(tokenAlphabet))])
		}
		in.Platform = hubcore.FCMV1
		in.PushChannel.Handle = string(b)
	}
	in.Tags = g.tags(r, i)
	in.Templates = map[string]*hubcore.Template{"alert": g.bodies[in.Platform].Clone()}
	return in
}

func (g *generator) tags(r *rand.Rand, i int) []string {
	tags := []string{
		"userId:" + g.userOf(i),
		"lang:" + g.langs[r.IntN(len(g.langs))],
		"team:t" + strconv.Itoa(r.IntN(1000)),
		"os:" + g.oses[r.IntN(len(g.oses))],
	}
	if r.IntN(2) == 0 {
		tags = append(tags, "event:comment")
	} else {
		tags = append(tags, "event:digest")
	}
	if r.IntN(10) == 0 {
		tags = append(tags, "muted")
	}
	if r.IntN(10) == 0 {
		tags = append(tags, "a")
	}
	if r.IntN(100) == 0 {
		tags = append(tags, "b")
	}
	return tags
}

// baselineMembership returns installation i's id and tags exactly as
// installation(i) generates them.
func (g *generator) baselineMembership(i int) (string, []string) {
	in := g.installation(i)
	return in.InstallationID, in.Tags
}
