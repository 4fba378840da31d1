package webpush

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// maxRetryAfter caps a Retry-After so that a garbled or hostile value cannot
// park deliveries for days.
const maxRetryAfter = 24 * time.Hour

// parseRetryAfter reads Retry-After (RFC 9110 §10.2.3): delay-seconds or an
// HTTP-date. It returns 0 when the value is absent, malformed or in the past.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if v[0] >= '0' && v[0] <= '9' {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
				return maxRetryAfter
			}
			return 0
		}
		if n > uint64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		return time.Duration(n) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	d := t.Sub(now)
	if d <= 0 {
		return 0
	}
	return min(d, maxRetryAfter)
}

// maxReason bounds the reason kept from an error body: it ends up in
// feedback records and logs.
const maxReason = 200

// errorReason extracts the push service's own explanation from an error
// body. Mozilla autopush answers JSON {"code","errno","error","message"};
// FCM and Apple answer a short text or a JSON {"reason"}; anything else is
// kept as its first line.
func errorReason(body []byte) string {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return ""
	}
	if body[0] == '{' {
		var e struct {
			Errno   json.Number `json:"errno"`
			Error   any         `json:"error"`
			Message string      `json:"message"`
			Reason  string      `json:"reason"`
		}
		if json.Unmarshal(body, &e) == nil {
			msg := e.Message
			if msg == "" {
				msg = e.Reason
			}
			if msg == "" {
				if s, ok := e.Error.(string); ok {
					msg = s
				} else if m, ok := e.Error.(map[string]any); ok {
					msg, _ = m["message"].(string)
				}
			}
			if e.Errno != "" {
				msg = "errno " + string(e.Errno) + ": " + msg
			}
			if msg != "" {
				return clip(msg)
			}
		}
	}
	if i := bytes.IndexAny(body, "\r\n"); i >= 0 {
		body = body[:i]
	}
	return clip(string(body))
}

// clip bounds s to maxReason bytes of valid, printable UTF-8.
func clip(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) <= maxReason {
		return s
	}
	cut := maxReason
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
