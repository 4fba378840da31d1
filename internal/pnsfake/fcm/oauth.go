package fcm

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"strings"
	"time"
)

// Grant and scopes the token endpoint knows.
const (
	jwtBearerGrant = "urn:ietf:params:oauth:grant-type:jwt-bearer"
	// MessagingScope is the scope FCM documents for messages:send.
	MessagingScope = "https://www.googleapis.com/auth/firebase.messaging"
	// CloudPlatformScope also allows sending.
	CloudPlatformScope = "https://www.googleapis.com/auth/cloud-platform"
	// maxAssertionLife is Google's limit on exp - iat.
	maxAssertionLife = 3600
	// clockSkew is how far in the future an iat may be.
	clockSkew = 5 * 60
)

// assertion is a parsed JWT-bearer assertion, before its signature is
// checked.
type assertion struct {
	alg, kid       string
	iss, aud, sub  string
	scope          string
	iat, exp       int64
	signingInput   []byte
	sig            []byte
	hasIat, hasExp bool
}

// parseAssertion splits and decodes a compact JWS. It checks the shape
// only; verify checks the signature.
func parseAssertion(raw string) (*assertion, error) {
	h, rest, ok := strings.Cut(raw, ".")
	if !ok {
		return nil, errors.New("not a JWT: no '.'")
	}
	c, sig, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(sig, ".") {
		return nil, errors.New("not a JWT: want three '.'-separated parts")
	}
	hb, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		return nil, errors.New("not a JWT: header is not base64url")
	}
	cb, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return nil, errors.New("not a JWT: claims are not base64url")
	}
	sb, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return nil, errors.New("not a JWT: signature is not base64url")
	}
	var hdr struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}
	if err := json.Unmarshal(hb, &hdr); err != nil {
		return nil, errors.New("not a JWT: header is not a JSON object")
	}
	var cl struct {
		Iss   string           `json:"iss"`
		Aud   string           `json:"aud"`
		Sub   string           `json:"sub"`
		Scope string           `json:"scope"`
		Iat   *json.RawMessage `json:"iat"`
		Exp   *json.RawMessage `json:"exp"`
	}
	if err := json.Unmarshal(cb, &cl); err != nil {
		return nil, errors.New("not a JWT: claims are not a JSON object with string iss, aud, sub and scope")
	}
	a := &assertion{alg: hdr.Alg, kid: hdr.Kid, iss: cl.Iss, aud: cl.Aud, sub: cl.Sub, scope: cl.Scope,
		signingInput: []byte(raw[:len(h)+1+len(c)]), sig: sb}
	if a.iat, a.hasIat, err = numericDate("iat", cl.Iat); err != nil {
		return nil, err
	}
	if a.exp, a.hasExp, err = numericDate("exp", cl.Exp); err != nil {
		return nil, err
	}
	return a, nil
}

// numericDate reads a JWT NumericDate as whole seconds.
func numericDate(name string, raw *json.RawMessage) (int64, bool, error) {
	if raw == nil {
		return 0, false, nil
	}
	var f float64
	if err := json.Unmarshal(*raw, &f); err != nil {
		return 0, false, errors.New("invalid JWT: " + name + " is not a number")
	}
	if f < 0 || f > 1e11 {
		return 0, false, errors.New("invalid JWT: " + name + " is out of range")
	}
	return int64(f), true, nil
}

// verify checks the RS256 signature with pub.
func (a *assertion) verify(pub *rsa.PublicKey) bool {
	sum := sha256.Sum256(a.signingInput)
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], a.sig) == nil
}

type oauthErr struct {
	code int
	err  string
	desc string
}

func (e *oauthErr) write(w http.ResponseWriter) {
	b, _ := json.Marshal(map[string]string{"error": e.err, "error_description": e.desc})
	w.Header()["Content-Type"] = jsonCT
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(e.code)
	_, _ = w.Write(b)
}

// serveToken is the token endpoint: the JWT-bearer grant of RFC 7523 with
// Google's checks.
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	tok, ttl, oe := s.grantToken(r)
	if oe != nil {
		oe.write(w)
		return
	}
	b, _ := json.Marshal(struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
		TokenType   string `json:"token_type"`
	}{tok, ttl, "Bearer"})
	w.Header()["Content-Type"] = jsonCT
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(b)
}

func (s *Server) grantToken(r *http.Request) (string, int64, *oauthErr) {
	if r.Method != http.MethodPost {
		return "", 0, &oauthErr{405, "invalid_request", "the token endpoint takes POST"}
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/x-www-form-urlencoded" {
		return "", 0, &oauthErr{400, "invalid_request", "the body must be application/x-www-form-urlencoded"}
	}
	r.Body = http.MaxBytesReader(nil, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		return "", 0, &oauthErr{400, "invalid_request", "unreadable form: " + err.Error()}
	}
	if gt := r.PostForm.Get("grant_type"); gt != jwtBearerGrant {
		return "", 0, &oauthErr{400, "unsupported_grant_type", "Invalid grant_type: " + gt}
	}
	raw := r.PostForm.Get("assertion")
	if raw == "" {
		return "", 0, &oauthErr{400, "invalid_request", "assertion is required"}
	}
	a, err := parseAssertion(raw)
	if err != nil {
		return "", 0, &oauthErr{400, "invalid_grant", err.Error()}
	}
	if a.alg != "RS256" {
		return "", 0, &oauthErr{400, "invalid_grant", "Invalid JWT: alg must be RS256"}
	}
	v, ok := s.accounts.Load(a.iss)
	if !ok {
		return "", 0, &oauthErr{400, "invalid_grant", "Invalid grant: account not found"}
	}
	acct := v.(*account)
	if a.kid != "" && a.kid != acct.keyID {
		return "", 0, &oauthErr{400, "invalid_grant", "Invalid JWT Signature: unknown key id"}
	}
	if !a.verify(acct.pub) {
		return "", 0, &oauthErr{400, "invalid_grant", "Invalid JWT Signature."}
	}
	if want := "https://" + r.Host + r.URL.Path; a.aud != want {
		return "", 0, &oauthErr{400, "invalid_grant", "Invalid JWT: aud must be " + want}
	}
	now := s.now()
	if !a.hasIat || !a.hasExp {
		return "", 0, &oauthErr{400, "invalid_grant", "Invalid JWT: iat and exp are required"}
	}
	if a.exp-a.iat > maxAssertionLife || a.exp <= a.iat {
		return "", 0, &oauthErr{400, "invalid_grant", "Invalid JWT: exp must be after iat and at most an hour after it"}
	}
	if a.exp <= now.Unix() || a.iat > now.Unix()+clockSkew {
		return "", 0, &oauthErr{400, "invalid_grant", "Invalid JWT: the assertion is expired or issued in the future; check the clock"}
	}
	if strings.TrimSpace(a.scope) == "" {
		return "", 0, &oauthErr{400, "invalid_scope", "Invalid OAuth scope: a scope is required"}
	}
	if a.sub != "" && a.sub != a.iss {
		return "", 0, &oauthErr{401, "unauthorized_client", "Client is unauthorized to retrieve access tokens for another subject"}
	}
	scoped := false
	for _, sc := range strings.Fields(a.scope) {
		if sc == MessagingScope || sc == CloudPlatformScope {
			scoped = true
		}
	}
	tok, ttl := s.issue(acct.project, scoped)
	return tok, ttl, nil
}

// issue makes and records an access token.
func (s *Server) issue(project string, scoped bool) (string, int64) {
	var rb [32]byte
	_, _ = rand.Read(rb[:])
	tok := "ya29.fake-" + base64.RawURLEncoding.EncodeToString(rb[:])
	ttl := int64(s.opts.TokenTTL / time.Second)
	if ttl < 1 {
		ttl = 1
	}
	g := &grant{project: project, scoped: scoped}
	g.expires.Store(s.now().Add(time.Duration(ttl) * time.Second).UnixNano())
	s.tokens.Store(tok, g)
	s.issued.Add(1)
	return tok, ttl
}
