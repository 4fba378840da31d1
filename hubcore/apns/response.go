package apns

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/internal/pnshttp"
)

// errorBody is what APNs answers a refusal with; 410s add when (ms since
// the epoch) the token stopped being valid for the topic.
type errorBody struct {
	Reason    string `json:"reason"`
	Timestamp int64  `json:"timestamp"`
}

// parseErrorBody reads an APNs error body. A body that does not parse
// yields an empty reason: the status alone then classifies the answer.
func parseErrorBody(b []byte) (reason string, timestamp int64) {
	var e errorBody
	if json.Unmarshal(b, &e) != nil {
		return "", 0
	}
	return e.Reason, e.Timestamp
}

// maxRetryAfter is the cap on a Retry-After delay.
const maxRetryAfter = pnshttp.MaxRetryAfter

// parseRetryAfter is the delay a Retry-After asks for; 0 when absent or
// unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	d, _ := pnshttp.ParseRetryAfter(v, now)
	return d
}

// classify maps an APNs refusal to the hub's outcome (§8.2 of the
// reference, completed with the reasons Apple documents).
func classify(status int, reason string, retryAfter time.Duration) *hubcore.PushError {
	e := &hubcore.PushError{Status: status, Reason: reason}
	switch {
	case reason == "TooManyProviderTokenUpdates":
		// Apple answers it with 429; the credentials are fine, but this
		// connection's token churned: wait, and it passes.
		e.Outcome, e.Retry, e.RetryAfter = hubcore.OutcomeInvalidCredentials, true, retryAfter
	case status == http.StatusGone:
		// Unregistered, ExpiredToken: the app is gone from the device.
		e.Outcome, e.ExpireHandle = hubcore.OutcomeExpiredChannel, true
	case status == http.StatusBadRequest && reason == "BadDeviceToken":
		e.Outcome, e.ExpireHandle = hubcore.OutcomeBadChannel, true
	case status == http.StatusBadRequest && reason == "DeviceTokenNotForTopic":
		e.Outcome, e.ExpireHandle = hubcore.OutcomeWrongToken, true
	case status == http.StatusBadRequest && reason == "IdleTimeout":
		// The connection idled out under the request: sending again works.
		e.Outcome, e.Retry = hubcore.OutcomePnsUnavailable, true
	case status == http.StatusRequestEntityTooLarge:
		e.Outcome = hubcore.OutcomeInvalidNotificationSize
	case status == http.StatusForbidden:
		// InvalidProviderToken, MissingProviderToken, ExpiredProviderToken
		// (after the one refresh), BadCertificate(Environment), Forbidden,
		// and Apple's newer key-id reasons.
		e.Outcome = hubcore.OutcomeInvalidCredentials
	case status == http.StatusTooManyRequests:
		e.Outcome, e.Retry, e.RetryAfter = hubcore.OutcomeThrottled, true, retryAfter
	case status == http.StatusServiceUnavailable:
		e.Outcome, e.Retry, e.RetryAfter = hubcore.OutcomePnsUnavailable, true, retryAfter
	case status >= 500:
		e.Outcome, e.Retry, e.RetryAfter = hubcore.OutcomePnsServerError, true, retryAfter
	case status >= 400:
		// BadTopic, BadPriority, BadExpirationDate, BadCollapseId,
		// BadMessageId, PayloadEmpty, TopicDisallowed, InvalidPushType,
		// MissingTopic, DuplicateHeaders, BadPath, MethodNotAllowed…: the
		// request was wrong; sending it again will not help.
		e.Outcome = hubcore.OutcomePnsInterfaceError
	default:
		e.Outcome = hubcore.OutcomeUnknownError
	}
	return e
}
