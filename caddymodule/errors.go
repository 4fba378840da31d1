package caddymodule

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/pushgate/pushgate/hubcore"
)

// statusOf is the one place where a hub core error code becomes an HTTP
// status. Every handler answers errors through it.
func statusOf(err error) int {
	var he *hubcore.Error
	if !errors.As(err, &he) {
		return http.StatusInternalServerError
	}
	switch he.Code {
	case hubcore.CodeInvalid, hubcore.CodeUnsupported:
		return http.StatusBadRequest
	case hubcore.CodeLimit:
		return http.StatusBadRequest
	case hubcore.CodeNotFound:
		return http.StatusNotFound
	case hubcore.CodeConflict:
		return http.StatusPreconditionFailed
	case hubcore.CodeGone:
		return http.StatusGone
	case hubcore.CodeForbidden:
		return http.StatusForbidden
	case hubcore.CodeUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// deviceError is the JSON error body of the device endpoints.
type deviceError struct {
	Error   string   `json:"error"`
	Message string   `json:"message"`
	Field   string   `json:"field,omitempty"`
	Reasons []string `json:"reasons,omitempty"`
}

// writeError answers err as JSON with the status statusOf gives it. A
// server error's detail is logged by the caller, not shown.
func writeError(w http.ResponseWriter, err error) int {
	status := statusOf(err)
	body := deviceError{Error: "internal", Message: "internal error"}
	var he *hubcore.Error
	if errors.As(err, &he) && status != http.StatusInternalServerError {
		body = deviceError{Error: string(he.Code), Message: he.Reason, Field: he.Field}
		if he.Code == hubcore.CodeConflict {
			w.Header().Set("ETag", etag(he.Current))
		}
	}
	setRetryAfter(w, status)
	writeJSON(w, status, body)
	return status
}

// setRetryAfter marks a 503 as worth retrying soon. Every 503 either API
// sends is transient (the store or the policy engine could not answer in
// time), and clients and SDKs retry sooner when told when.
func setRetryAfter(w http.ResponseWriter, status int) {
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func forbidden(reason string) *hubcore.Error {
	return &hubcore.Error{Code: hubcore.CodeForbidden, Reason: reason}
}
