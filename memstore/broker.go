package memstore

import (
	"container/heap"
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/fanout"
)

// BrokerOptions configure a Broker.
type BrokerOptions struct {
	// Now is the clock of retention: when outcomes (fanout.OutcomeTTL) and
	// feedback (FeedbackTTL) expire. nil means time.Now. Claim's
	// reclaimAfter and Take's refill always use the real monotonic clock:
	// they measure short intervals that a settable clock would break.
	Now func() time.Time
	// FeedbackKeep and FeedbackTTL bound the feedback kept; zero means
	// fanout.FeedbackKeep and fanout.FeedbackTTL.
	FeedbackKeep int
	FeedbackTTL  time.Duration
}

// Broker is the single-process fanout.Broker: the queue, schedules,
// outcomes, de-duplication, feedback and token buckets of a hub whose
// only replica is this process (the embedded default, with no Redis).
// Nothing survives a restart: a send in flight then is lost, which is the
// price of running without a shared backend. Its methods are safe for
// concurrent use.
//
// Memory stays bounded by what is live: a notification's de-duplication
// map is dropped as soon as it reaches a final state (later Dedupe calls,
// from attempts that outlived it, answer false for every handle), expired
// outcomes are swept lazily, feedback is a ring of at most FeedbackKeep
// events and idle token buckets are forgotten once full again.
type Broker struct {
	now    func() time.Time
	fbKeep int
	fbTTL  time.Duration

	mu    sync.Mutex
	notes map[string]*note
	// queue holds the jobs nobody claimed yet, oldest first, from qhead.
	queue []fanout.Job
	qhead int
	// held are the claimed jobs not yet finished, by Ref.
	held map[string]*holding
	seq  uint64 // last Ref issued
	// wake is closed (and replaced) whenever jobs are queued, to wake
	// blocked Claims.
	wake      chan struct{}
	sched     schedHeap
	fb        []fbEntry
	fbSeq     uint64 // seq of the last feedback event recorded
	buckets   map[string]*tokenBucket
	nextSweep time.Time
}

var _ fanout.Broker = (*Broker)(nil)

// note is one notification's spec and outcome.
type note struct {
	spec           *fanout.Spec
	state          fanout.State
	started, ended time.Time
	targets        int64
	abandoned      int64
	counts         fanout.Counts
	done           []uint64 // bit per finished part
	partsDone      int
	expires        time.Time
	dedupe         map[uint64]taken
}

// taken is who last took a handle hash: the part and its attempt.
type taken struct {
	part    int
	attempt int64
}

type holding struct {
	job      fanout.Job
	seq      uint64
	consumer string
	touched  time.Time // real clock
	attempt  int64
}

type fbEntry struct {
	seq uint64
	at  time.Time
	ev  hubcore.FeedbackEvent
}

type tokenBucket struct {
	tokens float64
	ts     time.Time // real clock
	idle   time.Duration
}

// NewBroker returns an empty broker.
func NewBroker(opts BrokerOptions) *Broker {
	b := &Broker{
		now:     opts.Now,
		fbKeep:  opts.FeedbackKeep,
		fbTTL:   opts.FeedbackTTL,
		notes:   make(map[string]*note),
		held:    make(map[string]*holding),
		wake:    make(chan struct{}),
		buckets: make(map[string]*tokenBucket),
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
	return b
}

// maxParts matches hubcore.AudienceQuery's bound on Parts.
const maxParts = 1 << 16

func brokerInvalid(field, format string, args ...any) error {
	return &hubcore.Error{Code: hubcore.CodeInvalid, Field: field, Reason: fmt.Sprintf(format, args...)}
}

func noteNotFound(id string) error {
	return &hubcore.Error{Code: hubcore.CodeNotFound, Reason: fmt.Sprintf("notification %q not found (unknown or expired)", id)}
}

func noteConflict(id string, st fanout.State) error {
	return &hubcore.Error{Code: hubcore.CodeConflict, Reason: fmt.Sprintf("notification %q is %s", id, st)}
}

func checkSpec(s *fanout.Spec) error {
	if s == nil || s.ID == "" {
		return brokerInvalid("ID", "a notification id is required")
	}
	if s.Parts < 1 || s.Parts > maxParts {
		return brokerInvalid("Parts", "parts %d out of range (1..%d)", s.Parts, maxParts)
	}
	return nil
}

// copySpec copies s deeply: the broker's copy must not change when the
// caller reuses its buffers, and callers must not change the broker's.
func copySpec(s *fanout.Spec) *fanout.Spec {
	c := *s
	c.Body = append([]byte(nil), s.Body...)
	c.Headers = append([]hubcore.Header(nil), s.Headers...)
	c.Handles = append([]hubcore.PushChannel(nil), s.Handles...)
	return &c
}

// get returns the live note id, dropping it if it has expired.
func (b *Broker) get(id string, now time.Time) *note {
	n := b.notes[id]
	if n != nil && !now.Before(n.expires) {
		delete(b.notes, id)
		return nil
	}
	return n
}

// sweep drops expired notes and idle buckets, at most once a minute, so
// that memory follows what is live without a background goroutine.
func (b *Broker) sweep(now time.Time) {
	if now.Before(b.nextSweep) {
		return
	}
	b.nextSweep = now.Add(time.Minute)
	for id, n := range b.notes {
		if !now.Before(n.expires) {
			delete(b.notes, id)
		}
	}
	real := time.Now()
	for k, tb := range b.buckets {
		if real.Sub(tb.ts) > tb.idle {
			delete(b.buckets, k)
		}
	}
}

// push queues the jobs of n and wakes blocked Claims.
func (b *Broker) push(id string, parts int) {
	for p := range parts {
		b.queue = append(b.queue, fanout.Job{NotificationID: id, Part: p})
	}
	close(b.wake)
	b.wake = make(chan struct{})
}

func (b *Broker) store(spec *fanout.Spec, st fanout.State, expires time.Time) (*note, error) {
	now := b.now()
	b.sweep(now)
	if b.get(spec.ID, now) != nil {
		return nil, &hubcore.Error{Code: hubcore.CodeConflict, Field: "ID", Reason: fmt.Sprintf("notification %q already exists", spec.ID)}
	}
	n := &note{
		spec:    copySpec(spec),
		state:   st,
		counts:  fanout.Counts{},
		done:    make([]uint64, (spec.Parts+63)/64),
		expires: expires,
		dedupe:  make(map[uint64]taken),
	}
	b.notes[spec.ID] = n
	return n, nil
}

// Enqueue implements fanout.Broker.
func (b *Broker) Enqueue(ctx context.Context, spec *fanout.Spec) error {
	if err := checkSpec(spec); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, err := b.store(spec, fanout.Enqueued, b.now().Add(fanout.OutcomeTTL)); err != nil {
		return err
	}
	b.push(spec.ID, spec.Parts)
	return nil
}

// Schedule implements fanout.Broker.
func (b *Broker) Schedule(ctx context.Context, spec *fanout.Spec) error {
	if err := checkSpec(spec); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	// Kept OutcomeTTL after it is due; a send scheduled in the past is due
	// now.
	due := spec.At
	if now := b.now(); due.Before(now) {
		due = now
	}
	n, err := b.store(spec, fanout.Scheduled, due.Add(fanout.OutcomeTTL))
	if err != nil {
		return err
	}
	heap.Push(&b.sched, schedEntry{at: spec.At, id: spec.ID, n: n})
	return nil
}

// Cancel implements fanout.Broker. The schedule entry stays in the heap and
// is dropped when it comes due: FireDue fires only Scheduled notes.
func (b *Broker) Cancel(ctx context.Context, id string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := b.get(id, b.now())
	if n == nil {
		return noteNotFound(id)
	}
	if n.state != fanout.Scheduled {
		return noteConflict(id, n.state)
	}
	n.state = fanout.Cancelled
	return nil
}

// FireDue implements fanout.Broker.
func (b *Broker) FireDue(ctx context.Context, now time.Time, max int) ([]string, error) {
	if max < 1 {
		return nil, brokerInvalid("max", "max must be at least 1")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	clock := b.now()
	var ids []string
	for len(b.sched) > 0 && len(ids) < max && !b.sched[0].at.After(now) {
		e := heap.Pop(&b.sched).(schedEntry)
		// The entry may be stale: cancelled, expired, or its id reused by a
		// newer note.
		if n := b.get(e.id, clock); n == e.n && n.state == fanout.Scheduled {
			n.state = fanout.Enqueued
			b.push(e.id, n.spec.Parts)
			ids = append(ids, e.id)
		}
	}
	return ids, nil
}

// Claim implements fanout.Broker. A consumer may reclaim its own neglected
// jobs too, as with Redis's XAUTOCLAIM: idle is idle.
func (b *Broker) Claim(ctx context.Context, consumer string, max int, reclaimAfter, block time.Duration) ([]fanout.Claim, error) {
	if max < 1 {
		return nil, brokerInvalid("max", "max must be at least 1")
	}
	if consumer == "" {
		return nil, brokerInvalid("consumer", "a consumer name is required")
	}
	deadline := time.Now().Add(block)
	var timer *time.Timer
	for {
		b.mu.Lock()
		cs := b.claimLocked(consumer, max, reclaimAfter)
		wake := b.wake
		b.mu.Unlock()
		if len(cs) > 0 {
			return cs, nil
		}
		d := time.Until(deadline)
		if d <= 0 || ctx.Err() != nil {
			return nil, nil
		}
		if timer == nil {
			timer = time.NewTimer(d)
			defer timer.Stop()
		}
		select {
		case <-wake:
		case <-timer.C:
			return nil, nil
		case <-ctx.Done():
			return nil, nil
		}
	}
}

func (b *Broker) claimLocked(consumer string, max int, reclaimAfter time.Duration) []fanout.Claim {
	now := time.Now()
	var out []fanout.Claim
	if reclaimAfter > 0 && len(b.held) > 0 {
		var idle []*holding
		for _, h := range b.held {
			if now.Sub(h.touched) >= reclaimAfter {
				idle = append(idle, h)
			}
		}
		sort.Slice(idle, func(i, j int) bool { return idle[i].seq < idle[j].seq })
		for _, h := range idle {
			if len(out) == max {
				break
			}
			h.consumer, h.touched = consumer, now
			h.attempt++
			out = append(out, fanout.Claim{Job: h.job, Ref: strconv.FormatUint(h.seq, 10), Attempt: h.attempt})
		}
	}
	for len(out) < max && b.qhead < len(b.queue) {
		j := b.queue[b.qhead]
		b.queue[b.qhead] = fanout.Job{}
		b.qhead++
		b.seq++
		ref := strconv.FormatUint(b.seq, 10)
		b.held[ref] = &holding{job: j, seq: b.seq, consumer: consumer, touched: now, attempt: 1}
		out = append(out, fanout.Claim{Job: j, Ref: ref, Attempt: 1})
	}
	// Compact the queue once most of it is consumed.
	if b.qhead > 64 && b.qhead*2 > len(b.queue) {
		b.queue = append([]fanout.Job(nil), b.queue[b.qhead:]...)
		b.qhead = 0
	}
	return out
}

// Touch implements fanout.Broker. Only the claims consumer still holds are
// refreshed: a consumer that lost a claim to a reclaim cannot keep the new
// holder's claim alive.
func (b *Broker) Touch(ctx context.Context, consumer string, claims []fanout.Claim) error {
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range claims {
		if h := b.held[c.Ref]; h != nil && h.consumer == consumer {
			h.touched = now
		}
	}
	return nil
}

// Spec implements fanout.Broker.
func (b *Broker) Spec(ctx context.Context, id string) (*fanout.Spec, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := b.get(id, b.now())
	if n == nil {
		return nil, noteNotFound(id)
	}
	return copySpec(n.spec), nil
}

// Start implements fanout.Broker.
func (b *Broker) Start(ctx context.Context, id string, at time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := b.get(id, b.now())
	if n == nil {
		return noteNotFound(id)
	}
	if n.state == fanout.Enqueued {
		n.state, n.started = fanout.Processing, at
	}
	return nil
}

// Dedupe implements fanout.Broker.
func (b *Broker) Dedupe(ctx context.Context, id string, part int, attempt int64, hashes []uint64, out []bool) error {
	if len(out) != len(hashes) {
		return brokerInvalid("out", "len(out) %d != len(hashes) %d", len(out), len(hashes))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	n := b.get(id, b.now())
	if n == nil {
		return noteNotFound(id)
	}
	if n.dedupe == nil { // final: every part is done, nothing more to deliver
		clear(out)
		return nil
	}
	for i, h := range hashes {
		t, ok := n.dedupe[h]
		if !ok || (t.part == part && t.attempt < attempt) {
			n.dedupe[h] = taken{part: part, attempt: attempt}
			out[i] = true
		} else {
			out[i] = false
		}
	}
	return nil
}

// Finish implements fanout.Broker.
func (b *Broker) Finish(ctx context.Context, c fanout.Claim, counts fanout.Counts, at time.Time) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.held, c.Ref)
	n := b.get(c.NotificationID, b.now())
	if n == nil {
		return false, noteNotFound(c.NotificationID)
	}
	if c.Part < 0 || c.Part >= n.spec.Parts {
		return false, brokerInvalid("Part", "part %d out of range (0..%d)", c.Part, n.spec.Parts-1)
	}
	w, bit := c.Part/64, uint64(1)<<(c.Part%64)
	if n.done[w]&bit != 0 {
		return false, nil
	}
	n.done[w] |= bit
	for p, m := range counts {
		for o, k := range m {
			if k == 0 {
				continue
			}
			n.counts.Add(p, o, k)
			n.targets += k
			if o == hubcore.OutcomeAbandoned {
				n.abandoned += k
			}
		}
	}
	n.partsDone++
	if n.partsDone < n.spec.Parts {
		return false, nil
	}
	switch {
	case n.targets == 0:
		n.state = fanout.NoTargetFound
	case n.abandoned == n.targets:
		n.state = fanout.Abandoned
	default:
		n.state = fanout.Completed
	}
	n.ended = at
	n.dedupe = nil
	return true, nil
}

// Outcome implements fanout.Broker.
func (b *Broker) Outcome(ctx context.Context, id string) (*fanout.Outcome, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := b.get(id, b.now())
	if n == nil {
		return nil, noteNotFound(id)
	}
	counts := fanout.Counts{}
	counts.Merge(n.counts)
	return &fanout.Outcome{
		ID:        id,
		State:     n.state,
		Enqueued:  n.spec.Enqueued,
		At:        n.spec.At,
		Started:   n.started,
		Ended:     n.ended,
		Targets:   n.targets,
		Counts:    counts,
		Parts:     n.spec.Parts,
		PartsDone: n.partsDone,
		Spec:      copySpec(n.spec),
	}, nil
}

// trimFeedback drops the events beyond fbKeep and those older than fbTTL.
func (b *Broker) trimFeedback(now time.Time) {
	drop := len(b.fb) - b.fbKeep
	if drop < 0 {
		drop = 0
	}
	cut := now.Add(-b.fbTTL)
	for drop < len(b.fb) && b.fb[drop].at.Before(cut) {
		drop++
	}
	if drop == 0 {
		return
	}
	clear(b.fb[:drop])
	b.fb = b.fb[drop:]
	// Reslicing leaves the dropped prefix allocated: copy once it is
	// more than half of the array.
	if cap(b.fb) > 2*len(b.fb)+1024 {
		b.fb = append([]fbEntry(nil), b.fb...)
	}
}

// AddFeedback implements fanout.Broker.
func (b *Broker) AddFeedback(ctx context.Context, evs []hubcore.FeedbackEvent) error {
	if len(evs) == 0 {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	for _, ev := range evs {
		b.fbSeq++
		b.fb = append(b.fb, fbEntry{seq: b.fbSeq, at: now, ev: ev})
	}
	b.trimFeedback(now)
	return nil
}

// Feedback implements fanout.Broker. The cursor is the decimal sequence
// number of the last event returned.
func (b *Broker) Feedback(ctx context.Context, cursor string, limit int) ([]hubcore.FeedbackEvent, string, error) {
	if limit < 0 {
		return nil, "", brokerInvalid("limit", "limit must not be negative")
	}
	if limit == 0 {
		limit = hubcore.DefaultPageSize
	}
	var after uint64
	if cursor != "" {
		v, err := strconv.ParseUint(cursor, 10, 64)
		if err != nil || v == 0 {
			return nil, "", brokerInvalid("cursor", "invalid feedback cursor %q", cursor)
		}
		after = v
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if after > b.fbSeq {
		return nil, "", brokerInvalid("cursor", "invalid feedback cursor %q", cursor)
	}
	b.trimFeedback(b.now())
	if len(b.fb) == 0 {
		return nil, "", nil
	}
	// Sequence numbers are contiguous in the ring.
	i := 0
	if first := b.fb[0].seq; after >= first {
		i = int(after - first + 1)
	}
	if i >= len(b.fb) {
		return nil, "", nil
	}
	end := min(i+limit, len(b.fb))
	evs := make([]hubcore.FeedbackEvent, 0, end-i)
	for _, e := range b.fb[i:end] {
		evs = append(evs, e.ev)
	}
	next := ""
	if end < len(b.fb) {
		next = strconv.FormatUint(b.fb[end-1].seq, 10)
	}
	return evs, next, nil
}

// Take implements fanout.Broker with a token bucket on the real clock.
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
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sweep(b.now())
	tb := b.buckets[bucket]
	if tb == nil {
		tb = &tokenBucket{tokens: float64(burst), ts: now}
		b.buckets[bucket] = tb
	}
	// A bucket is forgotten once it would be full again anyway.
	tb.idle = time.Duration(float64(burst)/rate*float64(time.Second)) + 10*time.Second
	if dt := now.Sub(tb.ts); dt > 0 {
		tb.tokens = math.Min(float64(burst), tb.tokens+dt.Seconds()*rate)
	}
	tb.ts = now
	// The epsilon forgives float rounding: a taker that slept the wait it
	// was told finds its token.
	took := min(n, int64(tb.tokens+1e-9))
	tb.tokens = math.Max(0, tb.tokens-float64(took))
	if took > 0 {
		return took, 0, nil
	}
	wait := time.Duration(math.Ceil((1 - tb.tokens) / rate * float64(time.Second)))
	return 0, max(wait, time.Nanosecond), nil
}

// schedEntry is one scheduled send in the heap; n identifies the note it
// was pushed for, so that a stale entry never fires a newer note.
type schedEntry struct {
	at time.Time
	id string
	n  *note
}

type schedHeap []schedEntry

func (h schedHeap) Len() int { return len(h) }
func (h schedHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].id < h[j].id
}
func (h schedHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *schedHeap) Push(x any)   { *h = append(*h, x.(schedEntry)) }
func (h *schedHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = schedEntry{}
	*h = old[:len(old)-1]
	return e
}
