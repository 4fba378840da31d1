package oidcauth

import (
	"encoding/base64"
	"encoding/json"
	"strings"
)

// maxTokenLen bounds the work an unauthenticated request can cause before
// the signature is checked. Real ID and access tokens are 1–4 kB; 16 kB
// leaves room for fat group claims.
const maxTokenLen = 16 << 10

// parseAuthorization extracts the bearer token from an Authorization header
// value (RFC 6750 §2.1, RFC 9110 §11.6.2):
//
//	credentials = "Bearer" 1*SP b64token
//	b64token    = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
//
// The scheme is case-insensitive; surrounding whitespace is ignored. An
// empty header or another scheme is "no bearer token" (401 without an error
// code); a Bearer header with a missing, oversized or ill-formed token is a
// malformed request (400).
func parseAuthorization(h string) (string, *Error) {
	h = strings.Trim(h, " \t")
	if h == "" {
		return "", errMissing("no bearer token: the Authorization header is missing or empty")
	}
	scheme, rest, hasSpace := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		if !isToken(scheme) {
			return "", errRequest("the Authorization header is not of the form \"Bearer <token>\"")
		}
		// Echo the scheme (it is a short RFC 9110 token) but never what
		// follows it: for Basic that is a password.
		return "", errMissing("no bearer token: the Authorization header uses the " + quote(scheme) + " scheme")
	}
	if !hasSpace {
		return "", errRequest("the Authorization header has the Bearer scheme but no token")
	}
	tok := strings.TrimLeft(rest, " ")
	switch {
	case tok == "":
		return "", errRequest("the Authorization header has the Bearer scheme but no token")
	case len(tok) > maxTokenLen:
		return "", errRequest("the bearer token is longer than 16 KiB")
	case !isB64Token(tok):
		return "", errRequest("the bearer token contains characters outside the RFC 6750 b64token alphabet")
	}
	return tok, nil
}

func isB64Token(s string) bool {
	i := 0
	for ; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/') {
			break
		}
	}
	if i == 0 {
		return false
	}
	for ; i < len(s); i++ {
		if s[i] != '=' {
			return false
		}
	}
	return true
}

// isToken reports whether s is an RFC 9110 token (an auth-scheme).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= 0x20 || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}

// jwtHeader is the part of the JOSE header checked before the signature.
type jwtHeader struct {
	Alg string `json:"alg"`
	Typ string `json:"typ"`
	Kid string `json:"kid"`
}

// unverifiedClaims are read before the signature is checked, only to turn
// tokens away cheaply: a token naming another issuer is refused without
// touching the key set, so foreign tokens cannot trigger JWKS refetches.
// Nothing read here is trusted for an accept decision.
type unverifiedClaims struct {
	Iss json.RawMessage `json:"iss"`
}

// splitJWT checks the JWS compact serialization shape and decodes the
// header and the unverified issuer.
func splitJWT(tok string) (jwtHeader, string, *Error) {
	var hdr jwtHeader
	parts := strings.Split(tok, ".")
	switch {
	case len(parts) == 5:
		return hdr, "", errToken(ReasonMalformed, "encrypted (JWE) tokens are not supported")
	case len(parts) != 3:
		return hdr, "", errToken(ReasonMalformed, "the bearer token is not a JWT (want three dot-separated parts, got %d)", len(parts))
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(parts[0])
	if err != nil {
		return hdr, "", errToken(ReasonMalformed, "the JWT header is not base64url")
	}
	if err := json.Unmarshal(raw, &hdr); err != nil {
		return hdr, "", errToken(ReasonMalformed, "the JWT header is not a JSON object with string alg, typ and kid")
	}
	payload, err := base64.RawURLEncoding.Strict().DecodeString(parts[1])
	if err != nil {
		return hdr, "", errToken(ReasonMalformed, "the JWT payload is not base64url")
	}
	var c unverifiedClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return hdr, "", errToken(ReasonMalformed, "the JWT payload is not a JSON object")
	}
	var iss string
	if len(c.Iss) > 0 && string(c.Iss) != "null" {
		if err := json.Unmarshal(c.Iss, &iss); err != nil {
			return hdr, "", errToken(ReasonMalformed, "the iss claim is not a string")
		}
	}
	return hdr, iss, nil
}

// tokenKind classifies a token by its typ header (RFC 7515 §4.1.9: media
// types compare case-insensitively and the "application/" prefix may be
// left out). An absent typ or "JWT" is what OpenID Connect ID tokens carry;
// RFC 9068 §2.1 requires "at+jwt" on JWT access tokens. Anything else
// (logout+jwt, secevent+jwt, dpop+jwt …) is neither and is refused.
func tokenKind(typ string) (string, bool) {
	t := strings.ToLower(typ)
	t = strings.TrimPrefix(t, "application/")
	switch t {
	case "", "jwt":
		return TokenTypeID, true
	case "at+jwt":
		return TokenTypeAccess, true
	}
	return "", false
}
