package redisstore

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/fanout"
)

// BrokerOptions configure a Broker.
type BrokerOptions struct {
	// Now is the clock of the lifetimes the client computes: a scheduled
	// send's retention (fanout.OutcomeTTL after it is due), the
	// de-duplication keys' (until the send's Deadline + 1 h) and the
	// trimming of the job stream. nil means time.Now. Idle times of
	// claims, token buckets and feedback retention use Redis's clock, the
	// one clock every replica shares.
	Now func() time.Time
	// FeedbackKeep and FeedbackTTL bound the feedback kept; zero means
	// fanout.FeedbackKeep and fanout.FeedbackTTL.
	FeedbackKeep int
	FeedbackTTL  time.Duration
}

// Broker is the fanout.Broker of replicas sharing one Redis (standalone,
// Sentinel or Cluster): every replica of a hub opens one on the same hub
// name and they share its queue, schedules, outcomes, de-duplication,
// feedback and token buckets. Its methods are safe for concurrent use.
//
// # Keys
//
// The queue's keys share one hash tag, {pg:<hub>:q}, so that its scripts
// see them together on one Cluster node:
//
//	{pg:<hub>:q}:jobs       STREAM of jobs (fields n: notification, p: part),
//	                        with the consumer group "pg"
//	{pg:<hub>:q}:sched      ZSET of scheduled ids by At in unix µs
//	{pg:<hub>:q}:n:<id>     HASH a notification's spec and outcome
//	                        (fields in broker_scripts.go), OutcomeTTL
//	{pg:<hub>:q}:p:<id>     STRING bitmap of its finished parts, same TTL
//
// De-duplication is the bulk of the traffic and must not pile onto that
// one slot: a notification's handle hashes are spread over 16 keys,
// {pg:<hub>:d:<id>:<k>} for k = hash mod 16, each a HASH of 8-byte hash →
// "part:attempt", kept until the send's Deadline + 1 h. Feedback is a
// STREAM {pg:<hub>:fb} (field e: the event as JSON); a token bucket is a
// HASH {pg:<hub>:tb:<bucket>}, each in its own slot.
//
// # Jobs
//
// Enqueue writes the spec and XADDs one stream entry per part in one
// script. Claim first takes over entries idle for reclaimAfter (XPENDING
// IDLE, then XCLAIM), then reads new ones (XREADGROUP >, blocking). A
// claim's Attempt is the entry's delivery count, which XREADGROUP sets to
// 1 and every XCLAIM increments, so it needs no bookkeeping of its own.
// Touch re-claims the entry for its holder with JUSTID, which resets the
// idle time without counting a delivery. Finish acknowledges and deletes
// the entry, so the stream holds only unfinished jobs; entries older than
// OutcomeTTL (+1 h), whose notification has expired, are trimmed as new
// ones are added.
type Broker struct {
	rdb    redis.UniversalClient
	k      brokerKeys
	now    func() time.Time
	fbKeep int
	fbTTL  time.Duration

	// deadlines caches the notifications' Deadline for Dedupe, whose keys
	// live in other slots than the notification's hash.
	dlMu      sync.Mutex
	deadlines map[string]time.Time

	// nextReap is when Claim next deletes idle consumers (unix ns).
	nextReap atomic.Int64
}

var _ fanout.Broker = (*Broker)(nil)

// brokerGroup is the consumer group every replica reads the jobs with.
const brokerGroup = "pg"

// dedupeKeys is how many keys a notification's de-duplication is spread
// over.
const dedupeKeys = 16

// maxBrokerParts matches hubcore.AudienceQuery's bound on Parts.
const maxBrokerParts = 1 << 16

// deadlineCacheMax bounds the deadline cache; it is cleared when full,
// which costs one HGET per notification in flight.
const deadlineCacheMax = 4096

// maxReclaim bounds the jobs one Claim reclaims (Claim may return fewer
// than max): the script passes them to XCLAIM as arguments.
const maxReclaim = 1000

// feedbackChunk is how many events one script call appends.
const feedbackChunk = 1000

// Consumers that hold nothing and have not read for reapIdle are deleted
// from the group, checked every reapEvery by each broker.
const (
	reapIdle  = time.Hour
	reapEvery = 10 * time.Minute
)

// blockSlice bounds one blocking read, so that Claim notices a cancelled
// context soon: go-redis cannot interrupt a blocking command.
const blockSlice = 500 * time.Millisecond

type brokerKeys struct {
	hub, jobs, sched, notePrefix, partsPrefix, fb string
}

func newBrokerKeys(hub string) brokerKeys {
	q := "{pg:" + hub + ":q}"
	return brokerKeys{
		hub:         hub,
		jobs:        q + ":jobs",
		sched:       q + ":sched",
		notePrefix:  q + ":n:",
		partsPrefix: q + ":p:",
		fb:          "{pg:" + hub + ":fb}",
	}
}

func (k brokerKeys) note(id string) string  { return k.notePrefix + id }
func (k brokerKeys) parts(id string) string { return k.partsPrefix + id }

func (k brokerKeys) dedupe(id string, shard int) string {
	return "{pg:" + k.hub + ":d:" + id + ":" + strconv.Itoa(shard) + "}"
}

func (k brokerKeys) bucket(name string) string { return "{pg:" + k.hub + ":tb:" + name + "}" }

// NewBroker returns the broker of hub on rdb, creating the job stream's
// consumer group if needed and loading the scripts. rdb may be shared with
// a Store; the broker does not close it.
func NewBroker(rdb redis.UniversalClient, hub string, opts BrokerOptions) (*Broker, error) {
	if hub == "" {
		return nil, errors.New("redisstore: a hub name is required")
	}
	for i := 0; i < len(hub); i++ {
		if c := hub[i]; c == '{' || c == '}' || c == ':' || c <= ' ' || c >= 0x7f {
			return nil, fmt.Errorf("redisstore: hub name %q: '{', '}', ':', spaces and control characters are not allowed", hub)
		}
	}
	b := &Broker{
		rdb:       rdb,
		k:         newBrokerKeys(hub),
		now:       opts.Now,
		fbKeep:    opts.FeedbackKeep,
		fbTTL:     opts.FeedbackTTL,
		deadlines: make(map[string]time.Time),
	}
	if b.now == nil {
		b.now = time.Now
	}
	if b.fbKeep <= 0 {
		b.fbKeep = fanout.FeedbackKeep
	}
	if b.fbTTL <= 0 {
		b.fbTTL = fanout.FeedbackTTL
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.ensureGroup(ctx); err != nil {
		return nil, err
	}
	for _, sc := range brokerScripts {
		if err := sc.Load(ctx, rdb).Err(); err != nil {
			return nil, unavailable(err)
		}
	}
	return b, nil
}

// ensureGroup creates the job stream and its consumer group unless they
// exist. The group starts at 0 so that jobs added before it are read too.
func (b *Broker) ensureGroup(ctx context.Context) error {
	err := b.rdb.XGroupCreateMkStream(ctx, b.k.jobs, brokerGroup, "0").Err()
	if err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
		return unavailable(err)
	}
	return nil
}

func isNoGroup(err error) bool {
	return err != nil && strings.Contains(err.Error(), "NOGROUP")
}

func brokerInvalid(field, format string, args ...any) error {
	return &hubcore.Error{Code: hubcore.CodeInvalid, Field: field, Reason: fmt.Sprintf(format, args...)}
}

func noteNotFound(id string) error {
	return &hubcore.Error{Code: hubcore.CodeNotFound, Reason: fmt.Sprintf("notification %q not found (unknown or expired)", id)}
}

func checkBrokerSpec(s *fanout.Spec) error {
	if s == nil || s.ID == "" {
		return brokerInvalid("ID", "a notification id is required")
	}
	if s.Parts < 1 || s.Parts > maxBrokerParts {
		return brokerInvalid("Parts", "parts %d out of range (1..%d)", s.Parts, maxBrokerParts)
	}
	return nil
}

// padNanos writes t as zero-padded unix nanoseconds: equal-length decimal
// strings compare like the instants, which Lua's doubles could not.
func padNanos(t time.Time) string {
	var ns int64
	switch {
	case t.Year() < 1970: // the zero time, and UnixNano's undefined range
	case t.Year() >= 2262:
		ns = math.MaxInt64
	default:
		ns = t.UnixNano()
	}
	return fmt.Sprintf("%020d", ns)
}

func nanos(t time.Time) string { return strconv.FormatInt(t.UnixNano(), 10) }

func ms(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }

// minJobID is the stream id below which jobs are trimmed: those of
// notifications expired for an hour.
func (b *Broker) minJobID() string {
	return strconv.FormatInt(b.now().Add(-fanout.OutcomeTTL-time.Hour).UnixMilli(), 10)
}

func (b *Broker) rememberDeadline(id string, dl time.Time) {
	b.dlMu.Lock()
	defer b.dlMu.Unlock()
	if len(b.deadlines) >= deadlineCacheMax {
		clear(b.deadlines)
	}
	b.deadlines[id] = dl
}

// deadline returns a notification's Deadline, from the cache or Redis.
func (b *Broker) deadline(ctx context.Context, id string) (time.Time, error) {
	b.dlMu.Lock()
	dl, ok := b.deadlines[id]
	b.dlMu.Unlock()
	if ok {
		return dl, nil
	}
	v, err := b.rdb.HGet(ctx, b.k.note(id), "dl").Int64()
	if errors.Is(err, redis.Nil) {
		return time.Time{}, noteNotFound(id)
	}
	if err != nil {
		return time.Time{}, unavailable(err)
	}
	dl = time.Unix(0, v)
	b.rememberDeadline(id, dl)
	return dl, nil
}

// Enqueue implements fanout.Broker.
func (b *Broker) Enqueue(ctx context.Context, spec *fanout.Spec) error {
	if err := checkBrokerSpec(spec); err != nil {
		return err
	}
	blob, err := json.Marshal(spec)
	if err != nil {
		return brokerInvalid("", "spec: %v", err)
	}
	n, err := enqueueScript.Run(ctx, b.rdb, []string{b.k.note(spec.ID), b.k.jobs},
		spec.ID, blob, spec.Parts, padNanos(spec.At), nanos(spec.Deadline), ms(fanout.OutcomeTTL), brokerGroup, b.minJobID()).Int()
	if err != nil {
		return unavailable(err)
	}
	if n == 0 {
		return exists(spec.ID)
	}
	b.rememberDeadline(spec.ID, spec.Deadline)
	return nil
}

func exists(id string) error {
	return &hubcore.Error{Code: hubcore.CodeConflict, Field: "ID", Reason: fmt.Sprintf("notification %q already exists", id)}
}

// Schedule implements fanout.Broker.
func (b *Broker) Schedule(ctx context.Context, spec *fanout.Spec) error {
	if err := checkBrokerSpec(spec); err != nil {
		return err
	}
	blob, err := json.Marshal(spec)
	if err != nil {
		return brokerInvalid("", "spec: %v", err)
	}
	// Kept OutcomeTTL after it is due; a send scheduled in the past is due
	// now.
	ttl := fanout.OutcomeTTL
	if d := spec.At.Sub(b.now()); d > 0 {
		ttl += d
	}
	n, err := scheduleScript.Run(ctx, b.rdb, []string{b.k.note(spec.ID), b.k.sched},
		spec.ID, blob, spec.Parts, padNanos(spec.At), nanos(spec.Deadline), ms(ttl), spec.At.UnixMicro()).Int()
	if err != nil {
		return unavailable(err)
	}
	if n == 0 {
		return exists(spec.ID)
	}
	b.rememberDeadline(spec.ID, spec.Deadline)
	return nil
}

// Cancel implements fanout.Broker.
func (b *Broker) Cancel(ctx context.Context, id string) error {
	n, err := cancelScript.Run(ctx, b.rdb, []string{b.k.note(id), b.k.sched}, id).Int()
	if err != nil {
		return unavailable(err)
	}
	switch n {
	case -1:
		return noteNotFound(id)
	case 0:
		st, err := b.rdb.HGet(ctx, b.k.note(id), "st").Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return unavailable(err)
		}
		return &hubcore.Error{Code: hubcore.CodeConflict, Reason: fmt.Sprintf("notification %q is %s, not Scheduled", id, st)}
	}
	return nil
}

// FireDue implements fanout.Broker: it reads the candidates by score, then
// one script fires those it can still take from the zset.
func (b *Broker) FireDue(ctx context.Context, now time.Time, max int) ([]string, error) {
	if max < 1 {
		return nil, brokerInvalid("max", "max must be at least 1")
	}
	ids, err := b.rdb.ZRangeByScore(ctx, b.k.sched, &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(now.UnixMicro(), 10), Count: int64(max),
	}).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	keys := make([]string, 0, 2+len(ids))
	keys = append(keys, b.k.jobs, b.k.sched)
	args := make([]any, 0, 3+len(ids))
	args = append(args, brokerGroup, padNanos(now), b.minJobID())
	for _, id := range ids {
		keys = append(keys, b.k.note(id))
		args = append(args, id)
	}
	fired, err := fireScript.Run(ctx, b.rdb, keys, args...).StringSlice()
	if err != nil {
		return nil, unavailable(err)
	}
	return fired, nil
}

// Claim implements fanout.Broker. A consumer may reclaim its own neglected
// jobs too: the pending list does not tell consumers apart, and idle is
// idle.
func (b *Broker) Claim(ctx context.Context, consumer string, max int, reclaimAfter, block time.Duration) ([]fanout.Claim, error) {
	if max < 1 {
		return nil, brokerInvalid("max", "max must be at least 1")
	}
	if consumer == "" {
		return nil, brokerInvalid("consumer", "a consumer name is required")
	}
	deadline := time.Now().Add(block)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	b.reap(ctx)
	var out []fanout.Claim
	if reclaimAfter > 0 {
		cs, err := b.reclaim(ctx, consumer, max, reclaimAfter)
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil
			}
			return nil, err
		}
		out = cs
	}
	retried := false
	for len(out) < max {
		// Block only when nothing was reclaimed, and never with a zero
		// BLOCK, which Redis reads as "forever".
		wait := time.Until(deadline).Truncate(time.Millisecond)
		blocking := len(out) == 0 && wait >= time.Millisecond
		args := &redis.XReadGroupArgs{
			Group:    brokerGroup,
			Consumer: consumer,
			Streams:  []string{b.k.jobs, ">"},
			Count:    int64(max - len(out)),
			Block:    -1,
		}
		if blocking {
			args.Block = min(wait, blockSlice)
		}
		res, err := b.rdb.XReadGroup(ctx, args).Result()
		switch {
		case errors.Is(err, redis.Nil):
			res = nil
		case err != nil && ctx.Err() != nil:
			return out, nil
		case isNoGroup(err) && !retried:
			retried = true
			if err := b.ensureGroup(ctx); err != nil {
				return out, nil
			}
			continue
		case err != nil:
			if len(out) > 0 {
				return out, nil // the reclaimed claims are held: hand them out
			}
			return nil, unavailable(err)
		}
		for _, st := range res {
			for _, m := range st.Messages {
				if c, ok := b.claimOf(ctx, m.ID, m.Values["n"], m.Values["p"], 1); ok {
					out = append(out, c)
				}
			}
		}
		if len(out) > 0 || !blocking || ctx.Err() != nil || !time.Now().Before(deadline) {
			break
		}
	}
	return out, nil
}

// reap deletes idle consumers, at most once per reapEvery per broker. It
// is housekeeping: a failure only postpones it.
func (b *Broker) reap(ctx context.Context) {
	now := time.Now().UnixNano()
	next := b.nextReap.Load()
	if now < next || !b.nextReap.CompareAndSwap(next, now+int64(reapEvery)) {
		return
	}
	_ = reapScript.Run(ctx, b.rdb, []string{b.k.jobs}, brokerGroup, reapIdle.Milliseconds()).Err()
}

// claimOf builds a claim from a stream entry. An entry without a valid
// job (never written by the broker) is dropped, so that it cannot come
// back forever.
func (b *Broker) claimOf(ctx context.Context, ref string, n, p any, attempt int64) (fanout.Claim, bool) {
	id, _ := n.(string)
	ps, _ := p.(string)
	part, err := strconv.Atoi(ps)
	if id == "" || err != nil {
		b.rdb.XAck(ctx, b.k.jobs, brokerGroup, ref)
		b.rdb.XDel(ctx, b.k.jobs, ref)
		return fanout.Claim{}, false
	}
	return fanout.Claim{Job: fanout.Job{NotificationID: id, Part: part}, Ref: ref, Attempt: attempt}, true
}

func (b *Broker) reclaim(ctx context.Context, consumer string, limit int, idle time.Duration) ([]fanout.Claim, error) {
	idleMS := max(idle.Milliseconds(), 1)
	run := func() ([]any, error) {
		return reclaimScript.Run(ctx, b.rdb, []string{b.k.jobs}, brokerGroup, consumer, idleMS, min(limit, maxReclaim)).Slice()
	}
	rows, err := run()
	if isNoGroup(err) {
		if err := b.ensureGroup(ctx); err != nil {
			return nil, err
		}
		rows, err = run()
	}
	if err != nil {
		return nil, unavailable(err)
	}
	out := make([]fanout.Claim, 0, len(rows))
	for _, r := range rows {
		f, ok := r.([]any)
		if !ok || len(f) != 4 {
			continue
		}
		ref, _ := f[0].(string)
		attempt, _ := f[3].(int64)
		if c, ok := b.claimOf(ctx, ref, f[1], f[2], attempt); ok && ref != "" {
			out = append(out, c)
		}
	}
	return out, nil
}

// isStreamID reports whether s is a full stream entry id, <ms>-<seq>.
func isStreamID(s string) bool {
	ms, seq, ok := strings.Cut(s, "-")
	if !ok || ms == "" || seq == "" || len(ms) > 20 || len(seq) > 20 {
		return false
	}
	for _, part := range []string{ms, seq} {
		for i := 0; i < len(part); i++ {
			if part[i] < '0' || part[i] > '9' {
				return false
			}
		}
	}
	return true
}

// Touch implements fanout.Broker.
func (b *Broker) Touch(ctx context.Context, consumer string, claims []fanout.Claim) error {
	args := make([]any, 0, 2+len(claims))
	args = append(args, brokerGroup, consumer)
	for _, c := range claims {
		if isStreamID(c.Ref) {
			args = append(args, c.Ref)
		}
	}
	if len(args) == 2 || consumer == "" {
		return nil
	}
	if err := touchScript.Run(ctx, b.rdb, []string{b.k.jobs}, args...).Err(); err != nil {
		if isNoGroup(err) {
			return nil // the group is gone, and with it every claim
		}
		return unavailable(err)
	}
	return nil
}

// Spec implements fanout.Broker.
func (b *Broker) Spec(ctx context.Context, id string) (*fanout.Spec, error) {
	blob, err := b.rdb.HGet(ctx, b.k.note(id), "spec").Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, noteNotFound(id)
	}
	if err != nil {
		return nil, unavailable(err)
	}
	return decodeSpec(blob)
}

func decodeSpec(blob []byte) (*fanout.Spec, error) {
	var s fanout.Spec
	if err := json.Unmarshal(blob, &s); err != nil {
		return nil, unavailable(fmt.Errorf("stored spec: %w", err))
	}
	return &s, nil
}

// Start implements fanout.Broker.
func (b *Broker) Start(ctx context.Context, id string, at time.Time) error {
	n, err := startScript.Run(ctx, b.rdb, []string{b.k.note(id)}, nanos(at)).Int()
	if err != nil {
		return unavailable(err)
	}
	if n < 0 {
		return noteNotFound(id)
	}
	return nil
}

// Dedupe implements fanout.Broker: the batch is split over the
// notification's 16 keys, one script call each, sent as one pipeline
// (which go-redis splits by node on a Cluster).
func (b *Broker) Dedupe(ctx context.Context, id string, part int, attempt int64, hashes []uint64, out []bool) error {
	if len(out) != len(hashes) {
		return brokerInvalid("out", "len(out) %d != len(hashes) %d", len(out), len(hashes))
	}
	if part < 0 {
		return brokerInvalid("part", "part %d is negative", part)
	}
	dl, err := b.deadline(ctx, id)
	if err != nil {
		return err
	}
	if len(hashes) == 0 {
		return nil
	}
	ttl := dl.Add(time.Hour).Sub(b.now())
	if ttl < time.Minute {
		ttl = time.Minute // a late attempt still needs its answers to stick
	}
	var idx [dedupeKeys][]int
	var packed [dedupeKeys][]byte
	for i, h := range hashes {
		k := int(h % dedupeKeys)
		idx[k] = append(idx[k], i)
		packed[k] = binary.BigEndian.AppendUint64(packed[k], h)
	}
	partS, attS, ttlS := strconv.Itoa(part), strconv.FormatInt(attempt, 10), ms(ttl)
	keys := func(k int) []string { return []string{b.k.dedupe(id, k)} }
	var cmds [dedupeKeys]*redis.Cmd
	pipe := b.rdb.Pipeline()
	for k := range dedupeKeys {
		if len(idx[k]) > 0 {
			cmds[k] = dedupeScript.EvalSha(ctx, pipe, keys(k), partS, attS, ttlS, packed[k])
		}
	}
	_, _ = pipe.Exec(ctx) // errors are read per command below
	for k, cmd := range cmds {
		if cmd == nil {
			continue
		}
		res, err := cmd.Text()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			// The server lost its scripts (a restart or SCRIPT FLUSH):
			// this call loads it again.
			res, err = dedupeScript.Run(ctx, b.rdb, keys(k), partS, attS, ttlS, packed[k]).Text()
		}
		if err != nil {
			return unavailable(err)
		}
		if len(res) != len(idx[k]) {
			return unavailable(fmt.Errorf("dedupe script returned %d answers for %d hashes", len(res), len(idx[k])))
		}
		for j, i := range idx[k] {
			out[i] = res[j] == '1'
		}
	}
	return nil
}

// countField names a count's field in the notification's hash.
func countField(p hubcore.Platform, o hubcore.OutcomeName) string {
	return "c:" + string(p) + "|" + string(o)
}

// Finish implements fanout.Broker.
func (b *Broker) Finish(ctx context.Context, c fanout.Claim, counts fanout.Counts, at time.Time) (bool, error) {
	if !isStreamID(c.Ref) {
		return false, brokerInvalid("Ref", "invalid claim ref %q", c.Ref)
	}
	args := []any{brokerGroup, c.Ref, c.Part, nanos(at)}
	for p, m := range counts {
		for o, n := range m {
			if n == 0 {
				continue
			}
			ab := "0"
			if o == hubcore.OutcomeAbandoned {
				ab = "1"
			}
			args = append(args, countField(p, o), n, ab)
		}
	}
	id := c.NotificationID
	r, err := finishScript.Run(ctx, b.rdb, []string{b.k.jobs, b.k.note(id), b.k.parts(id)}, args...).Int()
	if err != nil {
		return false, unavailable(err)
	}
	switch r {
	case -1:
		return false, noteNotFound(id)
	case -2:
		return false, brokerInvalid("Part", "part %d of %q out of range", c.Part, id)
	}
	return r == 2, nil
}

// Outcome implements fanout.Broker.
func (b *Broker) Outcome(ctx context.Context, id string) (*fanout.Outcome, error) {
	m, err := b.rdb.HGetAll(ctx, b.k.note(id)).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	blob, ok := m["spec"]
	if !ok {
		return nil, noteNotFound(id)
	}
	spec, err := decodeSpec([]byte(blob))
	if err != nil {
		return nil, err
	}
	o := &fanout.Outcome{
		ID:       id,
		State:    fanout.State(m["st"]),
		Enqueued: spec.Enqueued,
		At:       spec.At,
		Counts:   fanout.Counts{},
		Parts:    spec.Parts,
		Spec:     spec,
	}
	num := func(f string) int64 {
		n, _ := strconv.ParseInt(m[f], 10, 64)
		return n
	}
	if v := num("t0"); v != 0 {
		o.Started = time.Unix(0, v)
	}
	if v := num("t1"); v != 0 {
		o.Ended = time.Unix(0, v)
	}
	o.Targets = num("tg")
	o.PartsDone = int(num("pd"))
	for f, v := range m {
		rest, ok := strings.CutPrefix(f, "c:")
		if !ok {
			continue
		}
		p, name, ok := strings.Cut(rest, "|")
		n, err := strconv.ParseInt(v, 10, 64)
		if ok && err == nil && n != 0 {
			o.Counts.Add(hubcore.Platform(p), hubcore.OutcomeName(name), n)
		}
	}
	return o, nil
}

// AddFeedback implements fanout.Broker.
func (b *Broker) AddFeedback(ctx context.Context, evs []hubcore.FeedbackEvent) error {
	for len(evs) > 0 {
		chunk := evs[:min(len(evs), feedbackChunk)]
		evs = evs[len(chunk):]
		args := make([]any, 0, 2+len(chunk))
		args = append(args, b.fbKeep, b.fbTTL.Milliseconds())
		for _, ev := range chunk {
			blob, err := json.Marshal(ev)
			if err != nil {
				return brokerInvalid("", "feedback event: %v", err)
			}
			args = append(args, blob)
		}
		if err := feedbackScript.Run(ctx, b.rdb, []string{b.k.fb}, args...).Err(); err != nil {
			return unavailable(err)
		}
	}
	return nil
}

// Feedback implements fanout.Broker. The cursor is the stream id of the
// last event returned.
func (b *Broker) Feedback(ctx context.Context, cursor string, limit int) ([]hubcore.FeedbackEvent, string, error) {
	if limit < 0 {
		return nil, "", brokerInvalid("limit", "limit must not be negative")
	}
	if limit == 0 {
		limit = hubcore.DefaultPageSize
	}
	start := "-"
	if cursor != "" {
		if !isStreamID(cursor) {
			return nil, "", brokerInvalid("cursor", "invalid feedback cursor %q", cursor)
		}
		start = "(" + cursor
	}
	// One more than asked tells whether there is a next page.
	msgs, err := b.rdb.XRangeN(ctx, b.k.fb, start, "+", int64(limit)+1).Result()
	if err != nil {
		return nil, "", unavailable(err)
	}
	next := ""
	if len(msgs) > limit {
		msgs = msgs[:limit]
		next = msgs[limit-1].ID
	}
	evs := make([]hubcore.FeedbackEvent, 0, len(msgs))
	for _, m := range msgs {
		s, _ := m.Values["e"].(string)
		var ev hubcore.FeedbackEvent
		if err := json.Unmarshal([]byte(s), &ev); err != nil {
			return nil, "", unavailable(fmt.Errorf("stored feedback event %s: %w", m.ID, err))
		}
		evs = append(evs, ev)
	}
	return evs, next, nil
}

// Take implements fanout.Broker.
func (b *Broker) Take(ctx context.Context, bucket string, rate float64, burst, n int64) (int64, time.Duration, error) {
	if !(rate > 0) || math.IsInf(rate, 0) {
		return 0, 0, brokerInvalid("rate", "rate must be a positive number")
	}
	if burst < 1 {
		return 0, 0, brokerInvalid("burst", "burst must be at least 1")
	}
	if n < 0 {
		return 0, 0, brokerInvalid("n", "n must not be negative")
	}
	if n == 0 {
		return 0, 0, nil
	}
	vals, err := takeScript.Run(ctx, b.rdb, []string{b.k.bucket(bucket)},
		strconv.FormatFloat(rate, 'g', -1, 64), burst, n).Int64Slice()
	if err != nil {
		return 0, 0, unavailable(err)
	}
	if len(vals) != 2 {
		return 0, 0, unavailable(fmt.Errorf("take script returned %v", vals))
	}
	if vals[0] > 0 {
		return vals[0], 0, nil
	}
	return 0, time.Duration(vals[1]) * time.Microsecond, nil
}
