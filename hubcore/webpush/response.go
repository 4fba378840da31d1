package webpush

import (
	"bytes"
	"encoding/json"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pushgate/pushgate/hubcore/internal/pnshttp"
)

// maxRetryAfter is the cap on a Retry-After delay.
const maxRetryAfter = pnshttp.MaxRetryAfter

// parseRetryAfter is the delay a Retry-After asks for; 0 when absent or
// unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	d, _ := pnshttp.ParseRetryAfter(v, now)
	return d
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
