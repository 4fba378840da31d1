package oidcauth

import (
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"
)

// RFC 6750 §3.1 error codes.
const (
	// CodeInvalidRequest marks a malformed Authorization header (status 400).
	CodeInvalidRequest = "invalid_request"
	// CodeInvalidToken marks a token that is expired, badly signed or not
	// meant for this service (status 401).
	CodeInvalidToken = "invalid_token"
)

// Reasons are short, stable labels for metrics and logs: one per way a
// request can fail, so a dashboard can tell an attack (bad_signature,
// unknown_key) from a misconfiguration (wrong_audience, wrong_issuer) or an
// outage (idp_unavailable).
const (
	ReasonMissing        = "missing"
	ReasonMalformed      = "malformed"
	ReasonBadSignature   = "bad_signature"
	ReasonUnknownKey     = "unknown_key"
	ReasonExpired        = "expired"
	ReasonNotYetValid    = "not_yet_valid"
	ReasonWrongIssuer    = "wrong_issuer"
	ReasonWrongAudience  = "wrong_audience"
	ReasonWrongType      = "wrong_type"
	ReasonAlgNotAllowed  = "alg_not_allowed"
	ReasonNoUserClaim    = "no_user_claim"
	ReasonIDPUnavailable = "idp_unavailable"
)

// Error is why a request was refused. It never contains the token: claim
// values it quotes (issuer, audience, key id) are truncated and quoted.
type Error struct {
	// Status is the HTTP status to answer with: 401 for a missing or
	// invalid token, 400 for a malformed Authorization header, 503 when
	// the identity provider could not be reached (the token may be fine;
	// answering 401 would make clients throw it away and log the user out).
	Status int
	// Code is the RFC 6750 error code ("invalid_request" or
	// "invalid_token"); empty when the request carried no bearer token
	// at all (RFC 6750 §3.1) or the provider is unavailable.
	Code string
	// Description is for humans: logs, the error body and the
	// error_description attribute.
	Description string
	// Reason is one of the Reason* labels.
	Reason string
}

func (e *Error) Error() string {
	return "oidcauth: " + e.Reason + ": " + e.Description
}

// WWWAuthenticate renders the WWW-Authenticate challenge for e (RFC 6750
// §3). A request without a bearer token gets only the realm, as §3.1
// advises; otherwise error and error_description follow.
//
// The realm is a quoted-string (RFC 9110 §11.2), so quotes and
// backslashes in it are escaped. error_description is stricter: RFC 6750
// allows only %x20-21 / %x23-5B / %x5D-7E there, which excludes the double
// quote and the backslash altogether: a double quote becomes an apostrophe,
// a backslash a slash, and anything else outside the set (control
// characters, non-ASCII) a question mark.
func (e *Error) WWWAuthenticate(realm string) string {
	var b strings.Builder
	b.WriteString(`Bearer realm="`)
	writeQuotedStringContent(&b, realm)
	b.WriteByte('"')
	if e.Code == "" {
		return b.String()
	}
	b.WriteString(`, error="`)
	// Codes are constants from this package, but a caller may build an
	// Error itself: keep the output well-formed whatever it holds.
	writeRFC6750Content(&b, e.Code)
	b.WriteByte('"')
	if e.Description != "" {
		b.WriteString(`, error_description="`)
		writeRFC6750Content(&b, e.Description)
		b.WriteByte('"')
	}
	return b.String()
}

// writeQuotedStringContent writes s as the inside of an RFC 9110
// quoted-string: qdtext plus quoted-pairs. Control characters other than
// HTAB cannot be represented at all and are dropped.
func writeQuotedStringContent(b *strings.Builder, s string) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c == '\t' || (c >= 0x20 && c != 0x7f):
			b.WriteByte(c)
		}
	}
}

func writeRFC6750Content(b *strings.Builder, s string) {
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteByte('\'')
		case r == '\\':
			b.WriteByte('/')
		case r >= 0x20 && r <= 0x7e:
			b.WriteRune(r)
		default:
			b.WriteByte('?')
		}
	}
}

// quote renders an untrusted value (a claim, a key id, a header value)
// for a description: bounded, so a 10 kB claim cannot bloat logs and
// headers, and %q-quoted, so control characters are visible.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return fmt.Sprintf("%q…", s[:cut])
	}
	return fmt.Sprintf("%q", s)
}

func quoteList(ss []string) string {
	const maxItems = 8
	parts := make([]string, 0, min(len(ss), maxItems)+1)
	for i, s := range ss {
		if i == maxItems {
			parts = append(parts, fmt.Sprintf("… %d more", len(ss)-maxItems))
			break
		}
		parts = append(parts, quote(s))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func errMissing(desc string) *Error {
	return &Error{Status: http.StatusUnauthorized, Reason: ReasonMissing, Description: desc}
}

func errRequest(desc string) *Error {
	return &Error{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Reason: ReasonMalformed, Description: desc}
}

func errToken(reason, format string, args ...any) *Error {
	return &Error{Status: http.StatusUnauthorized, Code: CodeInvalidToken, Reason: reason, Description: fmt.Sprintf(format, args...)}
}

func errUnavailable(format string, args ...any) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Reason: ReasonIDPUnavailable, Description: fmt.Sprintf(format, args...)}
}
