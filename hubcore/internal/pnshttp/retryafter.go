package pnshttp

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// MaxRetryAfter caps a Retry-After: the engine gives up on a delivery long
// before a day, and a far-future date must not overflow.
const MaxRetryAfter = 24 * time.Hour

// ParseRetryAfter reads a Retry-After value, delay-seconds or an HTTP-date
// (RFC 9110 §10.2.3), for every PNS sender. It reports false when v is
// empty or unreadable; a date in the past is a zero delay, and a delay too
// large for any integer is the cap, like any other long one.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if v[0] >= '0' && v[0] <= '9' {
		n, err := strconv.ParseUint(v, 10, 64)
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
			return MaxRetryAfter, true
		}
		if err != nil {
			return 0, false
		}
		if n >= uint64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter, true
		}
		return time.Duration(n) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	d := t.Sub(now)
	switch {
	case d <= 0:
		return 0, true
	case d >= MaxRetryAfter:
		return MaxRetryAfter, true
	}
	// Round up: the date has whole seconds, and retrying a little late
	// is harmless where early is not.
	return (d + time.Second - 1).Truncate(time.Second), true
}
