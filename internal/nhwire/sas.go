// Package nhwire holds the Notification Hubs wire formats that pushgate
// speaks so that existing backends and the official SDKs work unchanged:
// SAS tokens, the Atom/XML registration documents, the other XML documents
// (errors, test-send outcomes, notification details, PNS feedback) and the
// send request's headers and $batch body. It has no HTTP server code; the
// API handler composes these pieces.
package nhwire

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Rights are the claims a SAS rule grants.
type Rights uint8

// The three rights of Notification Hubs.
const (
	Listen Rights = 1 << iota
	Send
	Manage
)

// Has reports whether r grants every right in need. Manage implies Listen
// and Send, because the service refuses to create a Manage rule without
// them, so a rule stored as Manage alone still means all three.
func (r Rights) Has(need Rights) bool {
	if r&Manage != 0 {
		r |= Listen | Send
	}
	return r&need == need
}

// String names the rights as the portal does ("Listen,Send").
func (r Rights) String() string {
	var parts []string
	for _, x := range []struct {
		r Rights
		n string
	}{{Listen, "Listen"}, {Send, "Send"}, {Manage, "Manage"}} {
		if r&x.r != 0 {
			parts = append(parts, x.n)
		}
	}
	return strings.Join(parts, ",")
}

// Rule is a shared access authorization rule. Key is the key text exactly
// as it appears in the connection string: clients sign with its UTF-8 bytes,
// not with the base64-decoded bytes. A rule with a primary and a secondary
// key is passed to Verify as two Rules with the same Name.
type Rule struct {
	Name   string
	Key    []byte
	Rights Rights
}

// Operation is an API operation, for the rights check.
type Operation int

// The operations of the data-plane API.
const (
	OpCreateRegistrationID Operation = iota
	OpCreateRegistration
	OpUpsertRegistration
	OpReadRegistration
	OpDeleteRegistration
	OpListRegistrationsByChannel
	OpListRegistrationsByTag
	OpListRegistrations
	OpPutInstallation
	OpPatchInstallation
	OpReadInstallation
	OpDeleteInstallation
	OpSend
	OpSchedule
	OpCancelScheduled
	OpNotificationDetails
	OpFeedbackContainer
	OpJobs
	OpManageHub

	// pushgate's extensions (under /{hub}/x-pushgate/), beyond the service.

	// OpFeedbackList reads the PNS feedback that the feedback container
	// URL points at.
	OpFeedbackList
	// OpListInstallations lists installations by tag or user.
	OpListInstallations
	// OpAudience counts and explains a tag expression's audience.
	OpAudience
	// OpEditTags adds and removes tags on every installation an
	// expression matches.
	OpEditTags
	// OpExport streams the whole registry out.
	OpExport
	// OpImport writes a registry export in.
	OpImport
)

// RightsFor returns the right an operation needs. Devices register with a
// Listen key (so every single-entry registration and installation operation
// is Listen), backends send with a Send key, and anything that reveals other
// devices' registrations in bulk or manages the hub needs Manage. Telemetry
// and feedback are "Send or Manage"; Manage implies Send, so Send suffices.
func RightsFor(op Operation) Rights {
	switch op {
	case OpCreateRegistrationID, OpCreateRegistration, OpUpsertRegistration,
		OpReadRegistration, OpDeleteRegistration, OpListRegistrationsByChannel,
		OpPutInstallation, OpPatchInstallation, OpReadInstallation, OpDeleteInstallation:
		return Listen
	case OpSend, OpSchedule, OpCancelScheduled, OpNotificationDetails, OpFeedbackContainer,
		OpFeedbackList: // what the container URL reads, so the right that got the URL
		return Send
	case OpListInstallations, OpAudience, OpEditTags, OpExport, OpImport:
		// The extensions reveal or change many devices' entries at once.
		return Manage
	default:
		// By-tag and unfiltered listings, jobs, hub management, and any
		// operation added later: the safest right.
		return Manage
	}
}

// SASReason classifies why a token was refused. Every reason is a 401.
type SASReason string

// The reasons a token is refused.
const (
	ReasonMalformed         SASReason = "malformed"
	ReasonExpired           SASReason = "expired"
	ReasonUnknownKeyName    SASReason = "unknown key name"
	ReasonSignatureMismatch SASReason = "signature mismatch"
	ReasonResourceMismatch  SASReason = "resource mismatch"
)

// SASError is a refused token or connection string.
type SASError struct {
	Reason SASReason
	// Detail says what exactly was wrong, for logs; it never contains key
	// material.
	Detail string
}

func (e *SASError) Error() string {
	if e.Detail == "" {
		return "sas: " + string(e.Reason)
	}
	return "sas: " + string(e.Reason) + ": " + e.Detail
}

// Is lets errors.Is(err, &SASError{Reason: r}) match on the reason alone.
func (e *SASError) Is(target error) bool {
	t, ok := target.(*SASError)
	return ok && t.Reason == e.Reason && t.Detail == ""
}

// ServiceDetail is the text the service puts in the error body's Detail for
// this refusal, so that clients matching on it keep working.
func (e *SASError) ServiceDetail() string {
	switch e.Reason {
	case ReasonSignatureMismatch:
		return "InvalidSignature: The token has an invalid signature."
	case ReasonResourceMismatch:
		return "40104: Invalid authorization token audience."
	case ReasonExpired:
		return "ExpiredToken: The token is expired."
	case ReasonUnknownKeyName:
		return "InvalidSignature: The token has an invalid signature."
	default:
		return "MalformedToken: The credentials contained in the authorization header are not in the correct format."
	}
}

func sasErr(r SASReason, format string, args ...any) *SASError {
	return &SASError{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// Limits on untrusted input, far above anything a client sends.
const (
	maxConnectionString = 4096
	maxHeader           = 8192
	maxKeyName          = 256
	maxKey              = 256
)

// ClockSkew is how long after its se a token is still accepted, to absorb
// clock differences between client and hub (the reference recommends ~5
// minutes).
const ClockSkew = 5 * time.Minute

// ParseConnectionString reads Endpoint=…;SharedAccessKeyName=…;SharedAccessKey=…
// the way the SDKs do: parts in any order, keys case-insensitive, each part
// split on its first "=" (keys are base64 ending in "="), whitespace, empty
// parts and unknown parts (OperationTimeout) tolerated. The endpoint is
// returned with sb:// turned into https://, as clients do before calling.
// Errors are *SASError with ReasonMalformed.
func ParseConnectionString(s string) (endpoint, keyName, key string, err error) {
	if len(s) > maxConnectionString {
		return "", "", "", sasErr(ReasonMalformed, "connection string longer than %d bytes", maxConnectionString)
	}
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return "", "", "", sasErr(ReasonMalformed, "connection string part without '='")
		}
		k = strings.ToLower(strings.TrimSpace(k))
		v = strings.TrimSpace(v)
		switch k {
		case "endpoint", "sharedaccesskeyname", "sharedaccesskey":
		default:
			continue
		}
		if seen[k] {
			return "", "", "", sasErr(ReasonMalformed, "connection string repeats %s", k)
		}
		seen[k] = true
		switch k {
		case "endpoint":
			endpoint = v
		case "sharedaccesskeyname":
			keyName = v
		case "sharedaccesskey":
			key = v
		}
	}
	if endpoint == "" {
		return "", "", "", sasErr(ReasonMalformed, "connection string has no Endpoint")
	}
	if (keyName == "") != (key == "") {
		return "", "", "", sasErr(ReasonMalformed, "SharedAccessKeyName and SharedAccessKey must appear together")
	}
	if len(keyName) > maxKeyName || len(key) > maxKey {
		return "", "", "", sasErr(ReasonMalformed, "key name or key longer than %d characters", maxKey)
	}
	if rest, ok := cutPrefixFold(endpoint, "sb://"); ok {
		endpoint = "https://" + rest
	}
	u, perr := url.Parse(endpoint)
	if perr != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return "", "", "", sasErr(ReasonMalformed, "Endpoint is not an absolute sb://, https:// or http:// URL")
	}
	return endpoint, keyName, key, nil
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

// encodeURIComponent is JavaScript's encodeURIComponent: everything but
// A-Z a-z 0-9 - _ . ! ~ * ' ( ) is percent-encoded with upper-case hex. The
// JS SDK encodes sr, sig and skn with it.
func encodeURIComponent(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_.!~*'()", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

func mac(key []byte, sr, se string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(sr + "\n" + se))
	return h.Sum(nil)
}

// Sign returns the Authorization header value a client computes: sr is the
// lower-cased resource URI, URL-encoded; the HMAC-SHA256 under key (used
// as-is) covers that encoded sr, a line feed and se (Unix seconds); sig is
// the URL-encoded base64 MAC. Fields come in the JS client's order.
func Sign(resourceURI, keyName string, key []byte, expiry time.Time) string {
	sr := encodeURIComponent(strings.ToLower(resourceURI))
	se := strconv.FormatInt(expiry.Unix(), 10)
	sig := encodeURIComponent(base64.StdEncoding.EncodeToString(mac(key, sr, se)))
	return "SharedAccessSignature sr=" + sr + "&sig=" + sig + "&se=" + se + "&skn=" + encodeURIComponent(keyName)
}

// token is a parsed header; sr and se are kept exactly as received because
// the signature covers those bytes.
type token struct {
	rawSr, rawSe string
	sr, skn      string
	sig          []byte
	se           int64
}

func parseToken(header string) (*token, error) {
	if len(header) > maxHeader {
		return nil, sasErr(ReasonMalformed, "header longer than %d bytes", maxHeader)
	}
	h := strings.TrimSpace(header)
	rest, ok := cutPrefixFold(h, "SharedAccessSignature")
	if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '\t') {
		return nil, sasErr(ReasonMalformed, "not a SharedAccessSignature token")
	}
	rest = strings.TrimSpace(rest)
	var t token
	var rawSig, rawSkn string
	seen := map[string]bool{}
	for _, pair := range strings.Split(rest, "&") {
		k, v, _ := strings.Cut(pair, "=")
		k = strings.ToLower(strings.TrimSpace(k))
		switch k {
		case "sr", "sig", "se", "skn":
		default:
			continue // unknown keys are ignored
		}
		if seen[k] {
			return nil, sasErr(ReasonMalformed, "%s appears twice", k)
		}
		seen[k] = true
		switch k {
		case "sr":
			t.rawSr = v
		case "sig":
			rawSig = v
		case "se":
			t.rawSe = v
		case "skn":
			rawSkn = v
		}
	}
	for _, k := range []string{"sr", "sig", "se", "skn"} {
		if !seen[k] {
			return nil, sasErr(ReasonMalformed, "%s is missing", k)
		}
	}
	var err error
	// sr and skn: .NET encodes a space as "+", JS never leaves a literal
	// "+", so query unescaping reads both.
	if t.sr, err = url.QueryUnescape(t.rawSr); err != nil || t.sr == "" {
		return nil, sasErr(ReasonMalformed, "sr is not URL-encoded text")
	}
	if t.skn, err = url.QueryUnescape(rawSkn); err != nil || t.skn == "" {
		return nil, sasErr(ReasonMalformed, "skn is not URL-encoded text")
	}
	// sig: base64 uses "+", which a client that forgot to encode leaves
	// as is, so only %XX escapes are decoded.
	sig, err := url.PathUnescape(rawSig)
	if err != nil {
		return nil, sasErr(ReasonMalformed, "sig is not URL-encoded text")
	}
	if t.sig, err = base64.StdEncoding.DecodeString(sig); err != nil {
		if t.sig, err = base64.RawStdEncoding.DecodeString(strings.TrimRight(sig, "=")); err != nil {
			return nil, sasErr(ReasonMalformed, "sig is not base64")
		}
	}
	se, err := url.QueryUnescape(t.rawSe)
	if err == nil {
		t.se, err = strconv.ParseInt(strings.TrimSpace(se), 10, 64)
	}
	if err != nil {
		return nil, sasErr(ReasonMalformed, "se is not an integer")
	}
	return &t, nil
}

// hexCase rewrites the hex digits of every %XX escape in s to upper or
// lower case, to tolerate proxies that normalise escapes.
func hexCase(s string, upper bool) string {
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if b[i] != '%' {
			continue
		}
		for j := i + 1; j <= i+2; j++ {
			c := b[j]
			if upper && 'a' <= c && c <= 'f' {
				b[j] = c - 'a' + 'A'
			} else if !upper && 'A' <= c && c <= 'F' {
				b[j] = c - 'A' + 'a'
			}
		}
		i += 2
	}
	return string(b)
}

// Verify checks an Authorization header against the request it came with
// and returns the rule that signed it. In order: the token must parse
// (fields in any order, URL-encoded values, unknown fields ignored), skn
// must name a rule, the HMAC over the sr and se exactly as received (or
// with the hex case of their escapes changed) must match one of that name's
// keys (compared in constant time), se plus ClockSkew must be after now,
// and the decoded sr must cover requestURL.
//
// requestURL must be absolute: the handler builds it from the request's
// Host and path. The audience rule: schemes (http, https, sb) are
// equivalent; query and fragment are dropped; host and path compare
// case-insensitively after percent-decoding; sr's path must equal the
// request path or be a prefix of it ending at a "/" boundary; a port in sr
// must match the request's (443 and 80 stand for no port), and an sr
// without a port matches any, because .NET removes it. This one rule accepts
// namespace-rooted (JS, Go), hub-rooted (Python) and full-path (.NET, Java)
// tokens. Errors are *SASError.
func Verify(header string, requestURL *url.URL, rules []Rule, now time.Time) (*Rule, error) {
	t, err := parseToken(header)
	if err != nil {
		return nil, err
	}
	var candidates []*Rule
	for i := range rules {
		if rules[i].Name == t.skn {
			candidates = append(candidates, &rules[i])
		}
	}
	if len(candidates) == 0 {
		return nil, sasErr(ReasonUnknownKeyName, "no rule named %q", t.skn)
	}
	var matched *Rule
	srForms := []string{t.rawSr, hexCase(t.rawSr, true), hexCase(t.rawSr, false)}
	for _, r := range candidates {
		for i, sr := range srForms {
			if i > 0 && sr == t.rawSr {
				continue
			}
			if hmac.Equal(mac(r.Key, sr, t.rawSe), t.sig) && matched == nil {
				matched = r
			}
		}
	}
	if matched == nil {
		return nil, sasErr(ReasonSignatureMismatch, "the token's signature does not match rule %q", t.skn)
	}
	limit := now.Add(-ClockSkew).Unix()
	if t.se <= limit {
		return nil, sasErr(ReasonExpired, "expired at %d", t.se)
	}
	if err := checkAudience(t.sr, requestURL); err != nil {
		return nil, err
	}
	return matched, nil
}

// checkAudience applies the audience rule documented on Verify.
func checkAudience(sr string, u *url.URL) error {
	if u == nil || u.Host == "" {
		return sasErr(ReasonResourceMismatch, "request URL has no host")
	}
	aud := strings.ToLower(sr)
	if i := strings.Index(aud, "://"); i >= 0 {
		aud = aud[i+3:]
	}
	if i := strings.IndexAny(aud, "?#"); i >= 0 {
		aud = aud[:i]
	}
	audHost, audPath, _ := strings.Cut(aud, "/")
	if p, err := url.PathUnescape(audPath); err == nil {
		audPath = p
	}
	ah := (&url.URL{Host: audHost})
	rh := (&url.URL{Host: strings.ToLower(u.Host)})
	if ah.Hostname() == "" || ah.Hostname() != rh.Hostname() {
		return sasErr(ReasonResourceMismatch, "sr host %q does not match the request", audHost)
	}
	if ap := ah.Port(); ap != "" {
		rp := rh.Port()
		if ap != rp && !(rp == "" && (ap == "443" || ap == "80")) {
			return sasErr(ReasonResourceMismatch, "sr port %s does not match the request", ap)
		}
	}
	audPath = strings.Trim(audPath, "/")
	reqPath := strings.Trim(strings.ToLower(u.Path), "/")
	if audPath != "" && reqPath != audPath && !strings.HasPrefix(reqPath, audPath+"/") {
		return sasErr(ReasonResourceMismatch, "sr path /%s does not cover the request", audPath)
	}
	return nil
}
