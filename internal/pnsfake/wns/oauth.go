package wns

import (
	"encoding/json"
	"mime"
	"net/http"
)

// TokenScope is the only scope the token endpoint grants.
const TokenScope = "notify.windows.com"

var jsonCT = []string{"application/json"}

type oauthErr struct {
	code int
	err  string
	desc string
}

// serveToken is the access token endpoint: the client-credentials grant
// with the credentials as form parameters, as WNS documents it.
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h["Content-Type"] = jsonCT
	h.Set("Cache-Control", "no-store")
	tok, ttl, oe := s.grantToken(r)
	if oe != nil {
		b, _ := json.Marshal(map[string]string{"error": oe.err, "error_description": oe.desc})
		w.WriteHeader(oe.code)
		_, _ = w.Write(b)
		return
	}
	b, _ := json.Marshal(struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int64  `json:"expires_in"`
	}{tok, "bearer", ttl})
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
	f := r.PostForm
	if gt := f.Get("grant_type"); gt != "client_credentials" {
		return "", 0, &oauthErr{400, "unsupported_grant_type", "grant_type must be client_credentials, not " + gt}
	}
	id, secret := f.Get("client_id"), f.Get("client_secret")
	if id == "" || secret == "" {
		return "", 0, &oauthErr{400, "invalid_request", "client_id and client_secret are required form parameters"}
	}
	want, ok := s.apps.Load(id)
	if !ok || want.(string) != secret {
		return "", 0, &oauthErr{400, "invalid_client", "Invalid client id or client secret."}
	}
	if sc := f.Get("scope"); sc != TokenScope {
		return "", 0, &oauthErr{400, "invalid_scope", "scope must be " + TokenScope + ", not " + sc}
	}
	tok, ttl := s.issue(id)
	return tok, ttl, nil
}
