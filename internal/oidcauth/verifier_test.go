package oidcauth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

const testAud = "https://push.example.test"

// mustRefuse verifies header and checks the refusal's reason and status,
// and that nothing of the token leaks into the error.
func mustRefuse(t *testing.T, v *Verifier, header, reason string, status int) *Error {
	t.Helper()
	id, err := v.Verify(context.Background(), header)
	if err == nil {
		t.Fatalf("accepted (user %q), want refusal with reason %s", id.UserID, reason)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %T %v, want *Error", err, err)
	}
	if e.Reason != reason || e.Status != status {
		t.Fatalf("got reason %s status %d (%s), want %s %d", e.Reason, e.Status, e.Description, reason, status)
	}
	if e.Description == "" {
		t.Errorf("empty description")
	}
	if tok := strings.TrimSpace(strings.TrimPrefix(header, "Bearer ")); len(tok) > 20 {
		for _, part := range strings.Split(tok, ".") {
			if len(part) > 8 && strings.Contains(e.Error()+e.WWWAuthenticate("r"), part) {
				t.Errorf("error echoes part of the token: %s", e.Error())
			}
		}
	}
	return e
}

func mustAccept(t *testing.T, v *Verifier, tok string) *Identity {
	t.Helper()
	id, err := v.Verify(context.Background(), "Bearer "+tok)
	if err != nil {
		t.Fatalf("refused: %v", err)
	}
	return id
}

func TestVerifyKinds(t *testing.T) {
	ti := newTestIssuer(t)
	clk := newFakeClock()
	es := newKey(t, "es1", "ES256")
	rs := newKey(t, "rs1", "RS256")
	ti.publish(es, rs)
	v := newTestVerifier(t, ti, clk, Config{})

	id := mustAccept(t, v, rs.sign(t, "JWT", claimsFor(ti, clk, "app", nil)))
	if id.TokenType != TokenTypeID || id.UserID != "alice" || id.Subject != "alice" || id.Issuer != ti.URL() {
		t.Errorf("ID token identity = %+v", id)
	}
	if id.Claims["aud"] != "app" {
		t.Errorf("claims = %v", id.Claims)
	}
	// No typ at all is what many IdPs put on ID tokens.
	mustAccept(t, v, es.sign(t, "", claimsFor(ti, clk, "app", nil)))

	for _, typ := range []string{"at+jwt", "application/at+jwt", "AT+JWT"} {
		id = mustAccept(t, v, es.sign(t, typ, claimsFor(ti, clk, testAud, map[string]any{"client_id": "backend"})))
		if id.TokenType != TokenTypeAccess {
			t.Errorf("typ %s: kind %s", typ, id.TokenType)
		}
	}
	if want := time.Unix(clk.Now().Add(10*time.Minute).Unix(), 0); !id.Expiry.Equal(want) {
		t.Errorf("expiry %v, want %v", id.Expiry, want)
	}

	// Audiences are per kind: a client ID does not admit an access
	// token, and an API audience does not admit an ID token.
	mustRefuse(t, v, "Bearer "+es.sign(t, "at+jwt", claimsFor(ti, clk, "app", nil)), ReasonWrongAudience, 401)
	e := mustRefuse(t, v, "Bearer "+es.sign(t, "JWT", claimsFor(ti, clk, testAud, nil)), ReasonWrongType, 401)
	if !strings.Contains(e.Description, "at+jwt") {
		t.Errorf("description %q should explain the typ rule", e.Description)
	}
	e = mustRefuse(t, v, "Bearer "+es.sign(t, "JWT", claimsFor(ti, clk, "", map[string]any{"aud": []string{"x", "y"}})), ReasonWrongAudience, 401)
	if want := `audience ["x" "y"] is not one of the configured client IDs ["app"]`; e.Description != want {
		t.Errorf("description %q, want %q", e.Description, want)
	}
	mustRefuse(t, v, "Bearer "+es.sign(t, "logout+jwt", claimsFor(ti, clk, "app", nil)), ReasonWrongType, 401)

	accessOnly := newTestVerifier(t, ti, clk, Config{Audiences: []string{testAud}})
	mustRefuse(t, accessOnly, "Bearer "+es.sign(t, "JWT", claimsFor(ti, clk, "app", nil)), ReasonWrongType, 401)
	mustAccept(t, accessOnly, es.sign(t, "at+jwt", claimsFor(ti, clk, testAud, nil)))
	idOnly := newTestVerifier(t, ti, clk, Config{ClientIDs: []string{"app"}})
	mustRefuse(t, idOnly, "Bearer "+es.sign(t, "at+jwt", claimsFor(ti, clk, "app", nil)), ReasonWrongType, 401)
	mustAccept(t, idOnly, es.sign(t, "JWT", claimsFor(ti, clk, "app", nil)))
}

func TestVerifyUserClaim(t *testing.T) {
	ti := newTestIssuer(t)
	clk := newFakeClock()
	es := newKey(t, "es1", "ES256")
	ti.publish(es)
	v := newTestVerifier(t, ti, clk, Config{UserClaim: "email"})
	id := mustAccept(t, v, es.sign(t, "", claimsFor(ti, clk, "app", map[string]any{"email": "alice@example.test"})))
	if id.UserID != "alice@example.test" || id.Subject != "alice" {
		t.Errorf("identity %+v", id)
	}
	for _, c := range []map[string]any{{}, {"email": ""}, {"email": " "}, {"email": 42}, {"email": []string{"a"}}} {
		mustRefuse(t, v, "Bearer "+es.sign(t, "", claimsFor(ti, clk, "app", c)), ReasonNoUserClaim, 401)
	}
	dflt := newTestVerifier(t, ti, clk, Config{})
	mustRefuse(t, dflt, "Bearer "+es.sign(t, "", claimsFor(ti, clk, "app", map[string]any{"sub": nil})), ReasonNoUserClaim, 401)
}

func TestVerifyTimes(t *testing.T) {
	ti := newTestIssuer(t)
	clk := newFakeClock()
	es := newKey(t, "es1", "ES256")
	ti.publish(es)
	v := newTestVerifier(t, ti, clk, Config{})
	now := clk.Now()
	tok := func(c map[string]any) string { return "Bearer " + es.sign(t, "", claimsFor(ti, clk, "app", c)) }

	exp := now.Add(-2 * time.Minute).Unix()
	e := mustRefuse(t, v, tok(map[string]any{"exp": exp}), ReasonExpired, 401)
	if want := "token expired at " + time.Unix(exp, 0).UTC().Format(time.RFC3339); e.Description != want {
		t.Errorf("description %q, want %q", e.Description, want)
	}
	// Within the default one-minute skew.
	mustAccept(t, v, strings.TrimPrefix(tok(map[string]any{"exp": now.Add(-30 * time.Second).Unix()}), "Bearer "))
	mustRefuse(t, v, tok(map[string]any{"exp": nil}), ReasonMalformed, 401)
	mustRefuse(t, v, tok(map[string]any{"exp": "tomorrow"}), ReasonMalformed, 401)

	e = mustRefuse(t, v, tok(map[string]any{"nbf": now.Add(10 * time.Minute).Unix()}), ReasonNotYetValid, 401)
	if !strings.HasPrefix(e.Description, "token not valid before ") {
		t.Errorf("description %q", e.Description)
	}
	mustAccept(t, v, strings.TrimPrefix(tok(map[string]any{"nbf": now.Add(30 * time.Second).Unix()}), "Bearer "))
	mustRefuse(t, v, tok(map[string]any{"iat": now.Add(10 * time.Minute).Unix()}), ReasonNotYetValid, 401)

	strict := newTestVerifier(t, ti, clk, Config{ClockSkew: time.Second})
	mustRefuse(t, strict, tok(map[string]any{"exp": now.Add(-30 * time.Second).Unix()}), ReasonExpired, 401)
	mustRefuse(t, strict, tok(map[string]any{"nbf": now.Add(30 * time.Second).Unix()}), ReasonNotYetValid, 401)
}

// segment base64url-encodes a JSON value for a hand-built token.
func segment(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestVerifyAttacks(t *testing.T) {
	ti := newTestIssuer(t)
	clk := newFakeClock()
	es := newKey(t, "k1", "ES256")
	rs := newKey(t, "rs1", "RS256")
	ti.publish(es, rs)
	v := newTestVerifier(t, ti, clk, Config{})
	good := claimsFor(ti, clk, "app", nil)
	mustAccept(t, v, es.sign(t, "", good))
	fetches := ti.jwksHits.Load()

	t.Run("alg none", func(t *testing.T) {
		body := segment(t, map[string]any{"alg": "none", "typ": "JWT"}) + "." + segment(t, good)
		mustRefuse(t, v, "Bearer "+body+".", ReasonAlgNotAllowed, 401)
		mustRefuse(t, v, "Bearer "+body+".c2ln", ReasonAlgNotAllowed, 401)
		for _, alg := range []string{"None", "NONE", ""} {
			hdr := segment(t, map[string]any{"alg": alg})
			mustRefuse(t, v, "Bearer "+hdr+"."+segment(t, good)+".c2ln", ReasonAlgNotAllowed, 401)
		}
	})

	t.Run("HS256 keyed with the public key", func(t *testing.T) {
		// The classic confusion: a verifier that picks the algorithm
		// from the header would HMAC with the RSA public key, which
		// the attacker knows.
		der, err := x509.MarshalPKIXPublicKey(rs.pub)
		if err != nil {
			t.Fatal(err)
		}
		secrets := [][]byte{
			pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}),
			der,
		}
		for _, secret := range secrets {
			signing := segment(t, map[string]any{"alg": "HS256", "typ": "JWT", "kid": "rs1"}) + "." + segment(t, good)
			mac := hmac.New(sha256.New, secret)
			mac.Write([]byte(signing))
			tok := signing + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
			e := mustRefuse(t, v, "Bearer "+tok, ReasonAlgNotAllowed, 401)
			if !strings.Contains(e.Description, `"HS256"`) {
				t.Errorf("description %q", e.Description)
			}
		}
	})

	t.Run("alg swapped to another allowed alg", func(t *testing.T) {
		// An ES256 signature relabelled PS256 under an RSA kid.
		parts := strings.Split(es.sign(t, "", good), ".")
		hdr := segment(t, map[string]any{"alg": "PS256", "kid": "rs1"})
		mustRefuse(t, v, "Bearer "+hdr+"."+parts[1]+"."+parts[2], ReasonBadSignature, 401)
	})

	t.Run("wrong issuer", func(t *testing.T) {
		e := mustRefuse(t, v, "Bearer "+es.sign(t, "", claimsFor(ti, clk, "app", map[string]any{"iss": "https://evil.example"})), ReasonWrongIssuer, 401)
		if want := `issuer "https://evil.example" is not the configured issuer "` + ti.URL() + `"`; e.Description != want {
			t.Errorf("description %q, want %q", e.Description, want)
		}
		mustRefuse(t, v, "Bearer "+es.sign(t, "", claimsFor(ti, clk, "app", map[string]any{"iss": nil})), ReasonWrongIssuer, 401)
	})

	t.Run("second issuer with the same kid", func(t *testing.T) {
		other := newTestIssuer(t)
		evil := newKey(t, "k1", "ES256")
		other.publish(evil)
		// Its own issuer name: refused before any key is looked at.
		mustRefuse(t, v, "Bearer "+evil.sign(t, "", claimsFor(other, clk, "app", nil)), ReasonWrongIssuer, 401)
		// Claiming ours: kid k1 is known and its key does not verify.
		mustRefuse(t, v, "Bearer "+evil.sign(t, "", good), ReasonBadSignature, 401)
	})

	t.Run("tampered payload", func(t *testing.T) {
		parts := strings.Split(es.sign(t, "", good), ".")
		forged := claimsFor(ti, clk, "app", map[string]any{"sub": "bob"})
		mustRefuse(t, v, "Bearer "+parts[0]+"."+segment(t, forged)+"."+parts[2], ReasonBadSignature, 401)
	})

	t.Run("unknown kid within the refetch interval", func(t *testing.T) {
		stranger := newKey(t, "k-unknown", "ES256")
		mustRefuse(t, v, "Bearer "+stranger.sign(t, "", good), ReasonUnknownKey, 401)
	})

	t.Run("headers", func(t *testing.T) {
		tok := es.sign(t, "", good)
		for _, c := range []struct {
			header, reason string
			status         int
		}{
			{"", ReasonMissing, 401},
			{"   ", ReasonMissing, 401},
			{"Basic YWxpY2U6c2VjcmV0", ReasonMissing, 401},
			{"Digest username=\"alice\"", ReasonMissing, 401},
			{"Bearer", ReasonMalformed, 400},
			{"Bearer ", ReasonMalformed, 400},
			{"Bearer  ", ReasonMalformed, 400},
			{"Bearer a b", ReasonMalformed, 400},
			{"Bearer " + tok + " extra", ReasonMalformed, 400},
			{"Bearer ä", ReasonMalformed, 400},
			{"Bearer \x00", ReasonMalformed, 400},
			{"Bearer " + strings.Repeat("a", maxTokenLen+1), ReasonMalformed, 400},
			{"Bearer garbage", ReasonMalformed, 401},
			{"Bearer a.b.c", ReasonMalformed, 401},
			{"Bearer a.b.c.d.e", ReasonMalformed, 401},
			{"Bearer ..", ReasonMalformed, 401},
			{"Bearer " + segment(t, "x") + "." + segment(t, good) + ".c2ln", ReasonMalformed, 401},
			{"Bearer " + segment(t, map[string]any{"alg": "ES256"}) + ".bm90IGpzb24.c2ln", ReasonMalformed, 401},
			{"Bearer " + segment(t, map[string]any{"alg": 1}) + "." + segment(t, good) + ".c2ln", ReasonMalformed, 401},
			{"Bearer " + segment(t, map[string]any{"alg": "ES256", "kid": "k1"}) + "." + segment(t, good) + ".c2ln", ReasonBadSignature, 401},
		} {
			mustRefuse(t, v, c.header, c.reason, c.status)
		}
		// The scheme is case-insensitive and surrounding space is
		// tolerated.
		for _, h := range []string{"bearer " + tok, "BEARER  " + tok, " Bearer " + tok + " "} {
			if _, err := v.Verify(context.Background(), h); err != nil {
				t.Errorf("%.12q…: %v", h, err)
			}
		}
	})

	if got := ti.jwksHits.Load(); got != fetches {
		t.Errorf("attacks caused %d JWKS fetches, want none", got-fetches)
	}
}

func TestWWWAuthenticate(t *testing.T) {
	for _, c := range []struct {
		e     Error
		realm string
		want  string
	}{
		{Error{Status: 401, Reason: ReasonMissing, Description: "no token"}, "pushgate", `Bearer realm="pushgate"`},
		{Error{Status: 401, Code: CodeInvalidToken, Description: "token expired at 2026-11-23T10:00:00Z"}, "pushgate",
			`Bearer realm="pushgate", error="invalid_token", error_description="token expired at 2026-11-23T10:00:00Z"`},
		{Error{Status: 401, Code: CodeInvalidToken, Description: `audience ["x"] is not "y" \ é` + "\n"}, `a "q" \b`,
			`Bearer realm="a \"q\" \\b", error="invalid_token", error_description="audience ['x'] is not 'y' / ??"`},
		{Error{Status: 400, Code: CodeInvalidRequest}, "r", `Bearer realm="r", error="invalid_request"`},
	} {
		if got := c.e.WWWAuthenticate(c.realm); got != c.want {
			t.Errorf("got  %s\nwant %s", got, c.want)
		}
	}
}

func TestConfig(t *testing.T) {
	ok := Config{Issuer: "https://id.example.test", ClientIDs: []string{"app"}}
	for name, mutate := range map[string]func(*Config){
		"no issuer":      func(c *Config) { c.Issuer = "" },
		"http issuer":    func(c *Config) { c.Issuer = "http://id.example.test" },
		"issuer query":   func(c *Config) { c.Issuer = "https://id.example.test/?a=b" },
		"no audience":    func(c *Config) { c.ClientIDs = nil },
		"empty client":   func(c *Config) { c.ClientIDs = []string{""} },
		"alg none":       func(c *Config) { c.Algorithms = []string{"ES256", "none"} },
		"alg HS256":      func(c *Config) { c.Algorithms = []string{"HS256"} },
		"alg unknown":    func(c *Config) { c.Algorithms = []string{"ES256K"} },
		"negative skew":  func(c *Config) { c.ClockSkew = -time.Second },
		"huge skew":      func(c *Config) { c.ClockSkew = time.Hour },
		"negative fetch": func(c *Config) { c.MinRefetchInterval = -time.Second },
	} {
		c := ok
		mutate(&c)
		if _, err := c.withDefaults(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	for _, iss := range []string{"http://127.0.0.1:9", "http://localhost:9/x", "http://[::1]:9", "https://id.example.test/tenant"} {
		c := ok
		c.Issuer = iss
		if _, err := c.withDefaults(); err != nil {
			t.Errorf("%s: %v", iss, err)
		}
	}
	c, err := ok.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.UserClaim != "sub" || c.ClockSkew != time.Minute || c.MinRefetchInterval != 30*time.Second || len(c.Algorithms) != 10 || c.HTTPClient == nil {
		t.Errorf("defaults: %+v", c)
	}
}

func TestLazyDiscovery(t *testing.T) {
	ti := newTestIssuer(t)
	clk := newFakeClock()
	es := newKey(t, "k1", "ES256")
	ti.publish(es)
	ti.setDown(true)
	v, err := newVerifier(context.Background(), Config{Issuer: ti.URL(), ClientIDs: []string{"app"}, HTTPClient: ti.srv.Client()}, clk.Now)
	if err != nil {
		t.Fatalf("New must not fail while the IdP is down: %v", err)
	}
	tok := "Bearer " + es.sign(t, "", claimsFor(ti, clk, "app", nil))
	mustRefuse(t, v, tok, ReasonIDPUnavailable, http.StatusServiceUnavailable)
	attempts := ti.discovery.Load()
	// Within the backoff no request reaches the IdP.
	for range 10 {
		mustRefuse(t, v, tok, ReasonIDPUnavailable, http.StatusServiceUnavailable)
	}
	if got := ti.discovery.Load(); got != attempts {
		t.Errorf("%d discovery attempts during the backoff", got-attempts)
	}
	ti.setDown(false)
	clk.Advance(maxBackoff)
	mustAccept(t, v, strings.TrimPrefix(tok, "Bearer "))
	if err := v.Ready(context.Background()); err != nil {
		t.Error(err)
	}
}

func TestDiscoveryIssuerMismatch(t *testing.T) {
	ti := newTestIssuer(t)
	// The discovery document names ti.URL(), not this path below it.
	v, err := New(context.Background(), Config{Issuer: ti.URL() + "/other", ClientIDs: []string{"app"}, HTTPClient: ti.srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	var e *Error
	if err := v.Ready(context.Background()); !errors.As(err, &e) || e.Reason != ReasonIDPUnavailable {
		t.Fatalf("Ready = %v, want idp_unavailable", err)
	}
}
