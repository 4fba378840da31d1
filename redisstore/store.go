package redisstore

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/tag"
)

// Options configure a Store.
type Options struct {
	// Redis says where Redis is. One field decides the topology: Addrs with
	// one address is a standalone server, MasterName selects Sentinel, and
	// several addresses (or IsClusterMode) a Redis Cluster. Reads and writes
	// all go to primaries (ReadOnly, RouteByLatency and RouteRandomly are
	// cleared), which is what read-your-writes needs. DialTimeout,
	// DialerRetries and MaxRetries left zero get this package's defaults
	// (DefaultDialTimeout, one dial attempt, DefaultMaxRetries) instead of
	// go-redis's, so that an outage is reported at once.
	Redis redis.UniversalOptions
	// Hub names the hub; its keys are prefixed {pg:<Hub>:<shard>}.
	Hub string
	// Shards is the number of index shards (default 16). It is fixed when
	// the hub is created, recorded in Redis, and checked on every open: 0
	// adopts the recorded value.
	Shards int
	// Buckets is the number of buckets per shard of the id map, handle map
	// and small-tag index (default 1024, at most 65536), also fixed at
	// creation. A bucket stays a compact listpack up to 128 entries, so
	// Shards×Buckets×64 is the population the layout is sized for (1M with
	// the defaults); beyond twice that the buckets turn into hash tables
	// and memory per installation grows by about 50 bytes per map.
	Buckets int
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Limits are the limits entries are validated with on Import and
	// EditTags.
	Limits hubcore.Limits
	// NoConfig stops New from raising hash-max-listpack-value (see the
	// package documentation), for servers where CONFIG is not allowed or
	// must not be touched.
	NoConfig bool
	// SweepInterval, when positive, runs Sweep in the background at this
	// interval until Close.
	SweepInterval time.Duration
	// MustExist makes New fail, instead of creating the hub, when the hub
	// has never been stored in this Redis (tools such as fsck).
	MustExist bool
	// StatsTTL is how long the set sizes read for planning are reused
	// (default 1 s; negative: never). Plans only choose the order of
	// work, so a plan from sizes a second old returns the same audience;
	// reusing them spares a round trip per send, twice for the send's
	// check and its resolution.
	StatsTTL time.Duration
}

// Store is the Redis implementation of hubcore.Store.
type Store struct {
	rdb  redis.UniversalClient
	l    *layout
	now  func() time.Time
	lim  hubcore.Limits
	pool []iidPool
	tc   tplCache
	sc   statsCache
	loc  locCache

	stop   chan struct{}
	done   chan struct{}
	closed sync.Once
}

var _ hubcore.Store = (*Store)(nil)

// spillThreshold is the largest record kept in its bucket; larger ones get
// their own key so that one big record does not turn a whole bucket into a
// hash table.
const spillThreshold = 1024

// listpackValue is what New raises hash-max-listpack-value to.
const listpackValue = 1024

// New connects to Redis, creates the hub's configuration if it does not
// exist (or checks it against opts if it does) and returns the store.
func New(ctx context.Context, opts Options) (*Store, error) {
	if opts.Hub == "" {
		return nil, errors.New("redisstore: Options.Hub is required")
	}
	for i := 0; i < len(opts.Hub); i++ {
		if c := opts.Hub[i]; c == '{' || c == '}' || c == ':' || c <= ' ' || c >= 0x7f {
			return nil, fmt.Errorf("redisstore: hub name %q: '{', '}', ':', spaces and control characters are not allowed", opts.Hub)
		}
	}
	if opts.Shards < 0 || opts.Shards > 1<<12 {
		return nil, fmt.Errorf("redisstore: Shards %d out of range (1..4096)", opts.Shards)
	}
	if opts.Buckets < 0 || opts.Buckets > 1<<16 {
		return nil, fmt.Errorf("redisstore: Buckets %d out of range (1..65536)", opts.Buckets)
	}
	ro := opts.Redis
	ro.ReadOnly, ro.RouteByLatency, ro.RouteRandomly = false, false, false
	failFast(&ro)
	if ro.Protocol == 0 {
		// The store uses nothing RESP3 adds, and on a RESP3 connection
		// go-redis checks for push notifications before reading every
		// reply: 5 % of the client's CPU in a selective Resolve.
		ro.Protocol = 2
	}
	rdb := redis.NewUniversalClient(&ro)
	s, err := open(ctx, rdb, opts)
	if err != nil {
		rdb.Close()
		return nil, err
	}
	return s, nil
}

// Client defaults that replace go-redis's (see failFast).
const (
	// DefaultDialTimeout bounds connecting to Redis. A Redis that is up
	// answers a dial in milliseconds even across a data centre; the
	// go-redis default of 5 s only delays the 503 of an unreachable one.
	DefaultDialTimeout = 2 * time.Second
	// DefaultMaxRetries is how often a failed command is tried again: once
	// covers a pooled connection the server has closed (a restart, an idle
	// timeout), which is the failure a retry cures; more retries only
	// hold the request while Redis is down.
	DefaultMaxRetries = 1
)

// failFast fills in the client options the caller left zero so that a
// request fails quickly while Redis is down and succeeds again soon after
// it is back. With go-redis's defaults every command made five dial
// attempts 100 ms apart (each up to 5 s) and three retries with backoff,
// so until the pool stopped dialing (after PoolSize failed dials) a
// request took about half a second per command against a refused port
// and could take minutes against an unreachable host. Recovery is bounded
// by go-redis's pool, which probes a failed server once a second.
func failFast(ro *redis.UniversalOptions) {
	if ro.DialTimeout == 0 {
		ro.DialTimeout = DefaultDialTimeout
	}
	if ro.DialerRetries == 0 {
		// The command retry (MaxRetries) already dials again, after a
		// backoff; retries inside the dial would multiply with it.
		ro.DialerRetries = 1
	}
	if ro.MaxRetries == 0 {
		ro.MaxRetries = DefaultMaxRetries
	}
}

func open(ctx context.Context, rdb redis.UniversalClient, opts Options) (*Store, error) {
	shards, buckets, err := hubConfig(ctx, rdb, opts)
	if err != nil {
		return nil, err
	}
	if !opts.NoConfig {
		if err := raiseListpackValue(ctx, rdb); err != nil {
			return nil, err
		}
	}
	s := &Store{
		rdb:  rdb,
		l:    newLayout(opts.Hub, shards, buckets),
		now:  opts.Now,
		lim:  opts.Limits,
		pool: make([]iidPool, shards),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.tc.init()
	s.sc.ttl = opts.StatsTTL
	if s.sc.ttl == 0 {
		s.sc.ttl = time.Second
	}
	if err := s.loadScripts(ctx); err != nil {
		return nil, err
	}
	if opts.SweepInterval > 0 {
		go s.sweepLoop(opts.SweepInterval)
	} else {
		close(s.done)
	}
	return s, nil
}

// hubConfig records the shard and bucket counts when the hub is new and
// returns the recorded ones otherwise.
func hubConfig(ctx context.Context, rdb redis.UniversalClient, opts Options) (int, int, error) {
	key := configKey(opts.Hub)
	if opts.MustExist {
		n, err := rdb.Exists(ctx, key).Result()
		if err != nil {
			return 0, 0, unavailable(err)
		}
		if n == 0 {
			return 0, 0, fmt.Errorf("redisstore: no hub %q in this Redis", opts.Hub)
		}
	}
	want := map[string]int{"shards": opts.Shards, "buckets": opts.Buckets}
	defaults := map[string]int{"shards": 16, "buckets": 1024}
	got := map[string]int{}
	for _, f := range []string{"shards", "buckets", "format", "rpb"} {
		v := want[f]
		switch f {
		case "format":
			v = recordFormat
		case "rpb":
			v = recordsPerBucket
		}
		if v == 0 {
			v = defaults[f]
		}
		if err := rdb.HSetNX(ctx, key, f, v).Err(); err != nil {
			return 0, 0, unavailable(err)
		}
		cur, err := rdb.HGet(ctx, key, f).Int()
		if err != nil {
			return 0, 0, unavailable(err)
		}
		got[f] = cur
	}
	if got["format"] != recordFormat || got["rpb"] != recordsPerBucket {
		return 0, 0, fmt.Errorf("redisstore: hub %q has record format %d with %d records per bucket; this version reads format %d with %d", opts.Hub, got["format"], got["rpb"], recordFormat, recordsPerBucket)
	}
	for _, f := range []string{"shards", "buckets"} {
		if want[f] != 0 && want[f] != got[f] {
			return 0, 0, fmt.Errorf("redisstore: hub %q was created with %s=%d; Options ask for %d (it cannot change without a migration)", opts.Hub, f, got[f], want[f])
		}
		if got[f] < 1 {
			return 0, 0, fmt.Errorf("redisstore: hub %q has an invalid %s=%d", opts.Hub, f, got[f])
		}
	}
	return got["shards"], got["buckets"], nil
}

// raiseListpackValue lets records (typically 150–400 bytes) stay in
// listpack-encoded buckets: with Redis's default of 64 bytes every record
// bucket would be a hash table, costing ~50 bytes more per record. A server
// that refuses CONFIG (managed Redis) keeps working, only less compactly.
func raiseListpackValue(ctx context.Context, rdb redis.UniversalClient) error {
	set := func(ctx context.Context, c *redis.Client) error {
		v, err := c.ConfigGet(ctx, "hash-max-listpack-value").Result()
		if err != nil {
			return nil // CONFIG disabled or renamed: leave the server alone
		}
		if n, err := strconv.Atoi(v["hash-max-listpack-value"]); err == nil && n >= listpackValue {
			return nil
		}
		_ = c.ConfigSet(ctx, "hash-max-listpack-value", strconv.Itoa(listpackValue)).Err()
		return nil
	}
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		return c.ForEachMaster(ctx, set)
	case *redis.Client:
		return set(ctx, c)
	}
	return nil
}

// Close stops the sweeper and closes the Redis client.
func (s *Store) Close() error {
	var err error
	s.closed.Do(func() {
		close(s.stop)
		<-s.done
		err = s.rdb.Close()
	})
	return err
}

// Client returns the store's Redis client, for tools (benchmarks, fsck).
func (s *Store) Client() redis.UniversalClient { return s.rdb }

// Shards returns the hub's shard count.
func (s *Store) Shards() int { return s.l.shards }

func unavailable(err error) error {
	var he *hubcore.Error
	if errors.As(err, &he) {
		return err
	}
	// The caller's own cancellation passes through as it is. A network
	// error does not, though a timed-out dial matches DeadlineExceeded:
	// then Redis did not answer within DialTimeout, which is an outage
	// (503), not a caller that gave up.
	var netErr *net.OpError
	if !errors.As(err, &netErr) && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return err
	}
	return &hubcore.Error{Code: hubcore.CodeUnavailable, Reason: "redis: " + err.Error(), Err: err}
}

func invalid(field, format string, args ...any) error {
	return &hubcore.Error{Code: hubcore.CodeInvalid, Field: field, Reason: fmt.Sprintf(format, args...)}
}

func notFound(what string) error {
	return &hubcore.Error{Code: hubcore.CodeNotFound, Reason: what + " not found"}
}

func conflict(current int64) error {
	return &hubcore.Error{Code: hubcore.CodeConflict, Reason: "the entry has changed (version " + strconv.FormatInt(current, 10) + ")", Current: current}
}

func gone(id string) error {
	return &hubcore.Error{Code: hubcore.CodeGone, Field: "RegistrationId", Reason: fmt.Sprintf("registration id %q was deleted, has expired or was never issued; use a new registration id", id)}
}

// --- iid allocation ---

// iidPool hands out a shard's integer ids. Ids come from the free list
// (ids of deleted records) or, in blocks, from the shard's counter, so
// that allocation rarely costs a round trip. An id taken and never used
// (a crash) is a gap: harmless.
type iidPool struct {
	mu   sync.Mutex
	free []int64
}

const iidBlock = 64

func (s *Store) allocIID(ctx context.Context, sh int) (int64, error) {
	p := &s.pool[sh]
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.free) == 0 {
		ids, err := s.rdb.LPopCount(ctx, s.l.free(sh), iidBlock).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return 0, unavailable(err)
		}
		for _, v := range ids {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
				p.free = append(p.free, n)
			}
		}
		if len(p.free) == 0 {
			hi, err := s.rdb.HIncrBy(ctx, s.l.meta(sh), "nx", iidBlock).Result()
			if err != nil {
				return 0, unavailable(err)
			}
			for n := hi - 1; n >= hi-iidBlock; n-- {
				p.free = append(p.free, n)
			}
		}
	}
	n := p.free[len(p.free)-1]
	p.free = p.free[:len(p.free)-1]
	return n, nil
}

// --- templates ---

// tplCache keeps template contents by (shard, hash), which never change
// while referenced, and their compiled forms per platform, so that reads
// and sends neither fetch nor compile a template more than once.
type tplCache struct {
	mu       sync.RWMutex
	content  map[tplKey]*tmplContent
	compiled map[compKey]*hubcore.Template
}

type tplKey struct {
	sh   int
	hash uint64
}

type compKey struct {
	tplKey
	p   hubcore.Platform
	reg bool
}

const tplCacheMax = 1 << 16

func (c *tplCache) init() {
	c.content = make(map[tplKey]*tmplContent)
	c.compiled = make(map[compKey]*hubcore.Template)
}

func (c *tplCache) getContent(k tplKey) *tmplContent {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.content[k]
}

func (c *tplCache) putContent(k tplKey, v *tmplContent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.content) >= tplCacheMax {
		clear(c.content)
	}
	c.content[k] = v
}

func (c *tplCache) getCompiled(k compKey) *hubcore.Template {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.compiled[k]
}

func (c *tplCache) putCompiled(k compKey, v *hubcore.Template) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.compiled) >= tplCacheMax {
		clear(c.compiled)
	}
	c.compiled[k] = v
}

// contents returns the content of each template entry, fetching the ones
// not cached from the shard's template table in one round trip.
func (s *Store) contents(ctx context.Context, sh int, es []tmplEntry) ([]*tmplContent, error) {
	out := make([]*tmplContent, len(es))
	var missing []string
	var at []int
	for i, e := range es {
		if e.inline != "" {
			c, err := decodeTemplate(e.inline)
			if err != nil {
				return nil, unavailable(err)
			}
			out[i] = c
			continue
		}
		if c := s.tc.getContent(tplKey{sh, e.hash}); c != nil {
			out[i] = c
			continue
		}
		missing = append(missing, hashed(e.hash).full())
		at = append(at, i)
	}
	if len(missing) == 0 {
		return out, nil
	}
	vals, err := s.rdb.HMGet(ctx, s.l.tpl(sh), missing...).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	for j, v := range vals {
		str, ok := v.(string)
		if !ok {
			// Contents are freed with the last record that refers to them,
			// so the record these entries came from has been replaced since
			// it was read: the caller reads again.
			return nil, unavailable(fmt.Errorf("template %x of shard %d is missing: %w", es[at[j]].hash, sh, errRetry))
		}
		c, err := decodeTemplate(str)
		if err != nil {
			return nil, unavailable(err)
		}
		s.tc.putContent(tplKey{sh, es[at[j]].hash}, c)
		out[at[j]] = c
	}
	return out, nil
}

// compiled returns the template compiled for platform p (and for a
// registration or an installation, whose rules differ slightly). The
// result is shared: callers must not modify it.
func (s *Store) compiled(sh int, e tmplEntry, c *tmplContent, p hubcore.Platform, reg bool) (*hubcore.Template, error) {
	k := compKey{tplKey{sh, e.hash}, p, reg}
	if e.inline == "" {
		if t := s.tc.getCompiled(k); t != nil {
			return t, nil
		}
	}
	t, err := compileTemplate(c, p, reg)
	if err != nil {
		return nil, err
	}
	if e.inline == "" {
		s.tc.putCompiled(k, t)
	}
	return t, nil
}

// outLimits re-validate stored entries on the way out only to compile
// their templates: what was accepted once is not refused later because a
// limit was lowered.
var outLimits = hubcore.Limits{MaxTags: 1 << 20, MaxTemplates: 1 << 20, MaxPushVariables: 1 << 20, MaxHeaders: 1 << 20}

// compileTemplate compiles a template by validating a stand-in entry of
// platform p that carries it: compilation depends on the platform only.
func compileTemplate(c *tmplContent, p hubcore.Platform, reg bool) (*hubcore.Template, error) {
	t := c.t.Clone()
	if reg {
		r := hubcore.Registration{RegistrationID: "x", Platform: p, PushChannel: standInChannel(p), Template: t, TemplateName: c.name}
		if err := r.Validate(outLimits); err != nil {
			return nil, unavailable(fmt.Errorf("stored template does not compile: %w", err))
		}
		return r.Template, nil
	}
	in := hubcore.Installation{InstallationID: "x", Platform: p, PushChannel: standInChannel(p), Templates: map[string]*hubcore.Template{c.name: t}}
	if err := in.Validate(outLimits); err != nil {
		return nil, unavailable(fmt.Errorf("stored template does not compile: %w", err))
	}
	return in.Templates[c.name], nil
}

var standInKey = sync.OnceValue(func() string {
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(k.PublicKey().Bytes())
})

func standInChannel(p hubcore.Platform) hubcore.PushChannel {
	switch p {
	case hubcore.APNS:
		return hubcore.PushChannel{Handle: strings.Repeat("0", 64)}
	case hubcore.WNS:
		return hubcore.PushChannel{Handle: "https://example.notify.windows.com/"}
	case hubcore.Browser:
		return hubcore.PushChannel{Endpoint: "https://push.example/", P256DH: standInKey(), Auth: "AAAAAAAAAAAAAAAAAAAAAA"}
	default:
		return hubcore.PushChannel{Handle: "x"}
	}
}

// --- conversions ---

// contentOf encodes a template and returns it with its hash.
func contentOf(name string, t *hubcore.Template) (string, uint64) {
	c := encodeTemplate(name, t)
	return c, xxhash.Sum64String(c)
}

// newTemplates are the template contents of a record being written, by
// hash, for the write script and the cache.
type newTemplates map[uint64]string

func recordOfInstallation(in *hubcore.Installation, version int64, inline map[uint64]bool) (*record, newTemplates) {
	r := &record{
		version:    version,
		expired:    in.PushChannelExpired,
		platform:   in.Platform,
		id:         in.InstallationID,
		lastUpdate: in.LastUpdate,
		expiration: in.ExpirationTime,
		lastActive: in.LastActiveOn,
		channel:    in.PushChannel,
		userID:     in.UserID,
		tags:       append([]string(nil), in.Tags...),
		vars:       sortedVars(in.PushVariables),
	}
	nt := newTemplates{}
	names := make([]string, 0, len(in.Templates))
	for n := range in.Templates {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c, h := contentOf(n, in.Templates[n])
		if inline[h] {
			r.tmpls = append(r.tmpls, tmplEntry{hash: h, inline: c})
			continue
		}
		r.tmpls = append(r.tmpls, tmplEntry{hash: h})
		nt[h] = c
	}
	return r, nt
}

func recordOfRegistration(g *hubcore.Registration, version int64, inline map[uint64]bool) (*record, newTemplates) {
	r := &record{
		version:    version,
		reg:        true,
		platform:   g.Platform,
		id:         g.RegistrationID,
		expiration: g.ExpirationTime,
		channel:    g.PushChannel,
		tags:       append([]string(nil), g.Tags...),
		vars:       sortedVars(g.PushVariables),
	}
	nt := newTemplates{}
	if g.Template != nil {
		c, h := contentOf(g.TemplateName, g.Template)
		if inline[h] {
			r.tmpls = append(r.tmpls, tmplEntry{hash: h, inline: c})
		} else {
			r.tmpls = append(r.tmpls, tmplEntry{hash: h})
			nt[h] = c
		}
	}
	return r, nt
}

func sortedVars(m map[string]string) []kv {
	if len(m) == 0 {
		return nil
	}
	out := make([]kv, 0, len(m))
	for k, v := range m {
		out = append(out, kv{k, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].k < out[j].k })
	return out
}

func varsMap(vs []kv) map[string]string {
	if len(vs) == 0 {
		return nil
	}
	m := make(map[string]string, len(vs))
	for _, p := range vs {
		m[p.k] = p.v
	}
	return m
}

// toInstallation builds the installation a record holds, its templates
// compiled and shared with the cache (Template.Clone keeps the compiled
// form, which is immutable).
func (s *Store) toInstallation(ctx context.Context, sh int, r *record) (*hubcore.Installation, error) {
	in := &hubcore.Installation{
		InstallationID:     r.id,
		UserID:             r.userID,
		Platform:           r.platform,
		PushChannel:        r.channel,
		PushChannelExpired: r.expired,
		Tags:               append([]string(nil), r.tags...),
		PushVariables:      varsMap(r.vars),
		ExpirationTime:     r.expiration,
		LastActiveOn:       r.lastActive,
		LastUpdate:         r.lastUpdate,
		Version:            r.version,
	}
	if len(r.tmpls) > 0 {
		cs, err := s.contents(ctx, sh, r.tmpls)
		if err != nil {
			return nil, err
		}
		in.Templates = make(map[string]*hubcore.Template, len(cs))
		for i, c := range cs {
			t, err := s.compiled(sh, r.tmpls[i], c, r.platform, false)
			if err != nil {
				return nil, err
			}
			in.Templates[c.name] = t.Clone()
		}
	}
	return in, nil
}

func (s *Store) toRegistration(ctx context.Context, sh int, r *record) (*hubcore.Registration, error) {
	g := &hubcore.Registration{
		RegistrationID: r.id,
		Platform:       r.platform,
		PushChannel:    r.channel,
		Tags:           append([]string(nil), r.tags...),
		PushVariables:  varsMap(r.vars),
		ExpirationTime: r.expiration,
		Version:        r.version,
	}
	if len(r.tmpls) > 0 {
		cs, err := s.contents(ctx, sh, r.tmpls[:1])
		if err != nil {
			return nil, err
		}
		t, err := s.compiled(sh, r.tmpls[0], cs[0], r.platform, true)
		if err != nil {
			return nil, err
		}
		g.Template = t.Clone()
		g.TemplateName = cs[0].name
	}
	return g, nil
}

// indexTags returns the folded tags a record is indexed under: for an
// installation its IndexTags without $InstallationId (looked up directly,
// never indexed); for a registration its tags.
func indexTags(r *record, cs []*tmplContent) []string {
	var all []string
	for _, t := range r.tags {
		all = append(all, tag.Fold(t))
	}
	if !r.reg {
		if r.userID != "" {
			all = append(all, tag.Fold(tag.ForUser(r.userID)))
		}
		for _, c := range cs {
			all = append(all, c.ftags...)
			if c.fname != "" {
				all = append(all, c.fname)
			}
		}
	}
	sort.Strings(all)
	out := all[:0]
	for i, t := range all {
		if i == 0 || t != all[i-1] {
			out = append(out, t)
		}
	}
	return out
}

// handleKey is the identity a handle is indexed under: PushChannel.Key,
// upper-cased, so that a lookup that does not know the platform finds APNs
// tokens in any case (matches are then checked exactly).
func handleKey(r *record) string {
	return strings.ToUpper(r.channel.Key(r.platform))
}
