package fcm

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/internal/pnshttp"
)

// outcomeStaleToken marks a refusal of the access token itself, which Send
// answers by minting a new token and trying once more. It never leaves the
// package.
const outcomeStaleToken hubcore.OutcomeName = "fcm:stale-access-token"

// apiError is the google.rpc.Status error body of Google's JSON APIs.
type apiError struct {
	Error struct {
		Code    int             `json:"code"`
		Message string          `json:"message"`
		Status  string          `json:"status"`
		Details []apiErrDetails `json:"details"`
	} `json:"error"`
}

type apiErrDetails struct {
	Type      string `json:"@type"`
	ErrorCode string `json:"errorCode"` // google.firebase.fcm.v1.FcmError
	// FieldViolations is google.rpc.BadRequest's list of bad fields.
	FieldViolations []struct {
		Field       string `json:"field"`
		Description string `json:"description"`
	} `json:"fieldViolations"`
}

const fcmErrorType = "type.googleapis.com/google.firebase.fcm.v1.FcmError"

// parseError reads an error body. It reports false for a body that is not
// Google's error shape (a proxy's HTML page, an empty body); the status
// code alone then decides.
func parseError(b []byte) (apiError, bool) {
	var e apiError
	if len(b) == 0 || json.Unmarshal(b, &e) != nil || (e.Error.Status == "" && e.Error.Code == 0) {
		return apiError{}, false
	}
	return e, true
}

// fcmCode is the FcmError errorCode of the error, or "".
func (e *apiError) fcmCode() string {
	for _, d := range e.Error.Details {
		if d.Type == fcmErrorType && d.ErrorCode != "" {
			return d.ErrorCode
		}
	}
	return ""
}

// aboutToken reports whether an INVALID_ARGUMENT error is about the
// registration token rather than the payload: only then is the handle bad.
func (e *apiError) aboutToken() bool {
	for _, d := range e.Error.Details {
		for _, v := range d.FieldViolations {
			if v.Field == "message.token" {
				return true
			}
		}
	}
	m := strings.ToLower(e.Error.Message)
	return strings.Contains(m, "registration token") || strings.Contains(m, "'message.token'")
}

// aboutSize reports whether an INVALID_ARGUMENT error says the message is
// too large.
func (e *apiError) aboutSize() bool {
	m := strings.ToLower(e.Error.Message)
	return strings.Contains(m, "too big") || strings.Contains(m, "too large")
}

// classify maps an FCM answer other than 200 to a PushError, following the
// HTTP v1 error codes (FcmError errorCode first, then google.rpc status,
// then the HTTP status) and the hub's outcome table.
func classify(status int, retryAfter string, body []byte, now time.Time) *hubcore.PushError {
	e, ok := parseError(body)
	code := ""
	if ok {
		code = e.fcmCode()
		if code == "" || code == "UNSPECIFIED_ERROR" {
			code = e.Error.Status
		}
	}
	pe := &hubcore.PushError{Status: status, Reason: code}
	if pe.Reason == "" {
		pe.Reason = http.StatusText(status)
	}
	if pe.Reason == "" {
		pe.Reason = "HTTP " + strconv.Itoa(status)
	}
	retry := func(o hubcore.OutcomeName) *hubcore.PushError {
		pe.Outcome, pe.Retry = o, true
		pe.RetryAfter, _ = parseRetryAfter(retryAfter, now)
		return pe
	}
	switch code {
	case "UNREGISTERED":
		pe.Outcome, pe.ExpireHandle = hubcore.OutcomeExpiredChannel, true
		return pe
	case "SENDER_ID_MISMATCH":
		pe.Outcome, pe.ExpireHandle = hubcore.OutcomeWrongToken, true
		return pe
	case "INVALID_ARGUMENT":
		switch {
		case e.aboutToken():
			pe.Outcome, pe.ExpireHandle = hubcore.OutcomeBadChannel, true
		case e.aboutSize():
			pe.Outcome = hubcore.OutcomeInvalidNotificationSize
		default:
			pe.Outcome = hubcore.OutcomePnsInterfaceError
		}
		return pe
	case "QUOTA_EXCEEDED", "RESOURCE_EXHAUSTED":
		return retry(hubcore.OutcomeThrottled)
	case "UNAVAILABLE":
		return retry(hubcore.OutcomePnsUnavailable)
	case "INTERNAL":
		return retry(hubcore.OutcomePnsServerError)
	case "THIRD_PARTY_AUTH_ERROR":
		// The APNs or Web Push credential stored in Firebase was
		// refused: a configuration problem, not a bad device.
		pe.Outcome = hubcore.OutcomeInvalidCredentials
		return pe
	case "UNAUTHENTICATED":
		pe.Outcome = outcomeStaleToken
		return pe
	case "PERMISSION_DENIED":
		// The service account may not send for this project.
		pe.Outcome = hubcore.OutcomeInvalidCredentials
		return pe
	}
	switch {
	case status == http.StatusUnauthorized:
		pe.Outcome = outcomeStaleToken
	case status == http.StatusForbidden:
		pe.Outcome = hubcore.OutcomeInvalidCredentials
	case status == http.StatusTooManyRequests:
		return retry(hubcore.OutcomeThrottled)
	case status == http.StatusServiceUnavailable || status == http.StatusBadGateway || status == http.StatusGatewayTimeout:
		return retry(hubcore.OutcomePnsUnavailable)
	case status >= 500:
		return retry(hubcore.OutcomePnsServerError)
	case status == http.StatusRequestEntityTooLarge:
		pe.Outcome = hubcore.OutcomeInvalidNotificationSize
	default:
		// A 404 without UNREGISTERED is a wrong URL or project, and
		// other 4xx are malformed requests: neither says anything
		// about the device.
		pe.Outcome = hubcore.OutcomePnsInterfaceError
	}
	return pe
}

// The Retry-After rules are the senders' shared ones.
var parseRetryAfter = pnshttp.ParseRetryAfter
