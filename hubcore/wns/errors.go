package wns

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/internal/pnshttp"
)

// outcomeStaleToken marks a refusal of the access token itself, which Send
// answers by obtaining a new token and trying once more. It never leaves
// the package.
const outcomeStaleToken hubcore.OutcomeName = "wns:stale-access-token"

// classify maps a WNS answer to nil (delivered) or a PushError, following
// WNS's response codes and X-WNS-NotificationStatus, and the hub's outcome
// table.
func classify(status int, h http.Header, now time.Time) *hubcore.PushError {
	if status == http.StatusOK {
		switch strings.ToLower(h.Get("X-WNS-NotificationStatus")) {
		case "dropped":
			// Dropped because of an error, or because the device is
			// offline and the cache policy said not to keep it.
			if strings.EqualFold(h.Get("X-WNS-DeviceConnectionStatus"), "disconnected") {
				return &hubcore.PushError{Outcome: hubcore.OutcomeChannelDisconnected, Status: status, Reason: "dropped: device disconnected"}
			}
			return &hubcore.PushError{Outcome: hubcore.OutcomeDropped, Status: status, Reason: "dropped"}
		case "channelthrottled":
			ra, _ := parseRetryAfter(h.Get("Retry-After"), now)
			return &hubcore.PushError{Outcome: hubcore.OutcomeChannelThrottled, Status: status, Reason: "channelThrottled", Retry: true, RetryAfter: ra}
		}
		// "received", or no status at all: WNS took the notification.
		return nil
	}
	pe := &hubcore.PushError{Status: status, Reason: h.Get("X-WNS-Error-Description")}
	if pe.Reason == "" {
		pe.Reason = http.StatusText(status)
	}
	if pe.Reason == "" {
		pe.Reason = "HTTP " + strconv.Itoa(status)
	}
	retry := func(o hubcore.OutcomeName) *hubcore.PushError {
		pe.Outcome, pe.Retry = o, true
		pe.RetryAfter, _ = parseRetryAfter(h.Get("Retry-After"), now)
		return pe
	}
	switch {
	case status == http.StatusUnauthorized:
		pe.Outcome = outcomeStaleToken
	case status == http.StatusForbidden:
		// Authenticated, but the channel belongs to another app.
		pe.Outcome, pe.ExpireHandle = hubcore.OutcomeWrongToken, true
	case status == http.StatusNotFound:
		pe.Outcome, pe.ExpireHandle = hubcore.OutcomeBadChannel, true
	case status == http.StatusGone:
		pe.Outcome, pe.ExpireHandle = hubcore.OutcomeExpiredChannel, true
	case status == http.StatusRequestEntityTooLarge:
		pe.Outcome = hubcore.OutcomeInvalidNotificationSize
	case status == http.StatusNotAcceptable || status == http.StatusTooManyRequests:
		return retry(hubcore.OutcomeThrottled)
	case status == http.StatusServiceUnavailable || status == http.StatusBadGateway || status == http.StatusGatewayTimeout:
		return retry(hubcore.OutcomePnsUnavailable)
	case status >= 500:
		return retry(hubcore.OutcomePnsServerError)
	case status >= 200 && status < 300:
		// A success code WNS does not document: it took the
		// notification.
		return nil
	default:
		// 400 (bad headers), 405 (bad method) and other codes: the
		// request was malformed, which says nothing about the device.
		pe.Outcome = hubcore.OutcomePnsInterfaceError
	}
	return pe
}

// The Retry-After rules are the senders' shared ones.
const maxRetryAfter = pnshttp.MaxRetryAfter

var parseRetryAfter = pnshttp.ParseRetryAfter
