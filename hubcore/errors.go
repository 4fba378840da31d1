package hubcore

import (
	"errors"
	"fmt"
)

// Code classifies a domain error. Exactly one place (the HTTP layer) maps
// codes to status codes; everything below it speaks in codes.
type Code string

// The error codes of the hub core. The comment gives the status the HTTP
// layer answers with.
const (
	// CodeInvalid: the input breaks a rule of the model (400).
	CodeInvalid Code = "invalid"
	// CodeLimit: the input exceeds a configured limit (400, or 413 for bodies).
	CodeLimit Code = "limit"
	// CodeUnsupported: well-formed but not something the hub does (400).
	CodeUnsupported Code = "unsupported"
	// CodeNotFound: no such installation or registration (404).
	CodeNotFound Code = "not_found"
	// CodeConflict: a write was conditional on a version that is no longer
	// current (412).
	CodeConflict Code = "conflict"
	// CodeGone: the entry expired or its id may not be reused (410).
	CodeGone Code = "gone"
	// CodeForbidden: the caller may not do this to this entry (403).
	CodeForbidden Code = "forbidden"
	// CodeUnavailable: a dependency (the store) cannot serve now (503).
	CodeUnavailable Code = "unavailable"
)

// Error is the typed error of the hub core: a code for the API layer, the
// offending field (a JSON path such as "templates.alert.body", or "" when the
// whole input is at fault) and a reason written for the person who sent it.
type Error struct {
	Code   Code
	Field  string
	Reason string
	// Current is the current version of the entry for CodeConflict, so the
	// caller can retry or report it.
	Current int64
	// Err is the underlying cause, if any (a tagexpr or template error).
	Err error
}

func (e *Error) Error() string {
	if e.Field == "" {
		return e.Reason
	}
	return e.Field + ": " + e.Reason
}

func (e *Error) Unwrap() error { return e.Err }

// Is lets errors.Is(err, &Error{Code: c}) match on the code alone.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && t.Field == "" && t.Reason == ""
}

// CodeOf returns the code of err, or "" when err is not a hub core error.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// Sentinels for errors.Is.
var (
	ErrNotFound  = &Error{Code: CodeNotFound}
	ErrConflict  = &Error{Code: CodeConflict}
	ErrGone      = &Error{Code: CodeGone}
	ErrInvalid   = &Error{Code: CodeInvalid}
	ErrForbidden = &Error{Code: CodeForbidden}
)

func invalid(field, format string, args ...any) *Error {
	return &Error{Code: CodeInvalid, Field: field, Reason: fmt.Sprintf(format, args...)}
}

func limit(field, format string, args ...any) *Error {
	return &Error{Code: CodeLimit, Field: field, Reason: fmt.Sprintf(format, args...)}
}

func unsupported(field, format string, args ...any) *Error {
	return &Error{Code: CodeUnsupported, Field: field, Reason: fmt.Sprintf(format, args...)}
}

func wrapInvalid(field string, err error) *Error {
	return &Error{Code: CodeInvalid, Field: field, Reason: err.Error(), Err: err}
}
