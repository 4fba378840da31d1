package caddymodule

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
)

// NHThrottle limits how fast one SAS rule (every key of that name) may call
// the API: a token bucket that refills at Rate requests per second and holds
// at most Burst. The limit is kept by each process, so N replicas behind a
// load balancer admit up to N times the rate between them.
type NHThrottle struct {
	// Rate is the sustained rate in requests per second. 0 means no limit,
	// which on a rule exempts it from the handler's default.
	Rate float64 `json:"rate"`
	// Burst is how many requests may arrive at once after a quiet spell
	// (default: Rate rounded up, at least 1).
	Burst int `json:"burst,omitempty"`
}

// Bounds of a throttle rate, in requests per second: beyond them the
// bucket's arithmetic (a wait of 1/rate seconds as a time.Duration, a
// burst counted in an int) would overflow, and no one means either.
const (
	nhMinRate = 1e-6 // one request in 11.6 days
	nhMaxRate = 1e9
)

// validate checks the limit and fills in the default burst.
func (t *NHThrottle) validate() error {
	if math.IsNaN(t.Rate) || t.Rate < 0 || t.Rate > 0 && (t.Rate < nhMinRate || t.Rate > nhMaxRate) {
		return fmt.Errorf("throttle rate %v is not 0 (off) or %g to %g requests per second", t.Rate, nhMinRate, nhMaxRate)
	}
	if t.Burst < 0 {
		return fmt.Errorf("throttle burst %d is negative", t.Burst)
	}
	if t.Rate > 0 && t.Burst == 0 {
		t.Burst = max(1, int(math.Ceil(t.Rate)))
	}
	return nil
}

// String describes the limit for error details and logs, per second,
// minute or hour, whichever reads as at least one request.
func (t *NHThrottle) String() string {
	rate, unit := t.Rate, "second"
	if rate < 1 {
		rate, unit = rate*60, "minute"
	}
	if rate < 1 {
		rate, unit = rate*60, "hour"
	}
	return fmt.Sprintf("%s requests per %s with bursts of %d", strconv.FormatFloat(rate, 'g', 4, 64), unit, t.Burst)
}

// tokenBucket is one rule's budget. A refused request takes nothing, so a
// client that waits as long as Retry-After says is served.
type tokenBucket struct {
	limit NHThrottle

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

// take spends a token at now, or returns how long until one is available.
func (b *tokenBucket) take(now time.Time) (time.Duration, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.last.IsZero() {
		b.tokens, b.last = float64(b.limit.Burst), now
	}
	// A clock that steps back refills nothing rather than draining.
	if el := now.Sub(b.last); el > 0 {
		b.tokens = math.Min(float64(b.limit.Burst), b.tokens+el.Seconds()*b.limit.Rate)
		b.last = now
	}
	// The slack absorbs rounding, so waiting exactly the advertised time
	// always succeeds.
	if b.tokens >= 1-1e-9 {
		b.tokens--
		return 0, true
	}
	// Rounded up to the nanosecond, so waiting exactly this long refills
	// the token even at the highest rates.
	return time.Duration(math.Ceil((1 - b.tokens) / b.limit.Rate * float64(time.Second))), false
}

// nhLimiter holds the buckets of one handler, by rule name. It is built
// once per provision from the configured rules, so a request can never add
// an entry: only an authenticated rule name reaches it.
type nhLimiter struct {
	buckets map[string]*tokenBucket
}

// newNHLimiter resolves each rule's limit: the rule's own, else the
// handler's. Keys of one rule name share a bucket, so they must agree.
func newNHLimiter(def *NHThrottle, rules []NHRule) (*nhLimiter, error) {
	if def != nil {
		if err := def.validate(); err != nil {
			return nil, err
		}
	}
	chosen := map[string]*NHThrottle{}
	for _, r := range rules {
		t := def
		if r.Throttle != nil {
			if err := r.Throttle.validate(); err != nil {
				return nil, fmt.Errorf("rule %q: %v", r.Name, err)
			}
			t = r.Throttle
		}
		if prev, seen := chosen[r.Name]; seen {
			if !sameThrottle(prev, t) {
				return nil, fmt.Errorf("rule %q: its keys have different throttles; a rule name has one budget", r.Name)
			}
			continue
		}
		chosen[r.Name] = t
	}
	l := &nhLimiter{buckets: map[string]*tokenBucket{}}
	for name, t := range chosen {
		if t != nil && t.Rate > 0 {
			l.buckets[name] = &tokenBucket{limit: *t}
		}
	}
	return l, nil
}

func sameThrottle(a, b *NHThrottle) bool {
	off := func(t *NHThrottle) bool { return t == nil || t.Rate == 0 }
	if off(a) || off(b) {
		return off(a) == off(b)
	}
	return *a == *b
}

// throttle spends one request of rule's budget. It returns 0 when the
// request may go on, otherwise the status of the refusal it has sent.
// It runs right after authentication: an unauthenticated flood cannot
// spend a real key's budget, and a throttled request costs no store work.
func (n *NHAPI) throttle(req *nhReq, rule string) int {
	if n.limiter == nil {
		return 0
	}
	b := n.limiter.buckets[rule]
	if b == nil {
		return 0
	}
	wait, ok := b.take(n.now())
	if ok {
		return 0
	}
	secs := max(1, int64(math.Ceil(wait.Seconds())))
	req.w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	n.logger.Debug("nh request throttled", zap.String("rule", rule), zap.Int64("retry_after", secs),
		zap.String("tracking_id", req.tracking))
	// Before 2020-06 the service signalled throttling with 403 and
	// Retry-After, which the older SDKs still read as "retry" (reference
	// §1.5); newer ones expect 429.
	status := http.StatusTooManyRequests
	if req.version != "" && req.version < "2020-06" {
		status = http.StatusForbidden
	}
	unit := "seconds"
	if secs == 1 {
		unit = "second"
	}
	return n.fail(req, status, fmt.Sprintf("Throttled: the key %s is over its limit of %s. Retry after %d %s.",
		rule, b.limit.String(), secs, unit))
}
