package oidcauth

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushgate/pushgate/internal/oidcauth/idptest"
)

// Tests against a real OpenID provider (oidc-provider under Node.js; see
// idptest). The attack tests use hand-made tokens instead: a real IdP will
// not sign them.

const idpAud = "https://push.example.test"

func idpVerifier(t *testing.T, idp *idptest.IdP, now func() time.Time, cfg Config) *Verifier {
	t.Helper()
	cfg.Issuer = idp.Issuer
	cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	v, err := newVerifier(context.Background(), cfg, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestIdP(t *testing.T) {
	idp := idptest.Start(t)
	both := Config{ClientIDs: []string{idptest.MobileClientID}, Audiences: []string{idpAud}}
	v := idpVerifier(t, idp, time.Now, both)

	idToken := idp.IDToken(t, "alice")
	access := idp.AccessToken(t, "bob", idpAud)
	accessRS := idp.AccessTokenAlg(t, "carol", idpAud, "RS256")

	t.Run("ID token accepted", func(t *testing.T) {
		id := mustAccept(t, v, idToken)
		if id.TokenType != TokenTypeID || id.UserID != "alice" || id.Issuer != idp.Issuer {
			t.Errorf("identity %+v", id)
		}
	})
	t.Run("access token accepted", func(t *testing.T) {
		id := mustAccept(t, v, access)
		if id.TokenType != TokenTypeAccess || id.UserID != "bob" || id.Claims["client_id"] != idptest.BackendClientID {
			t.Errorf("identity %+v", id)
		}
		if id := mustAccept(t, v, accessRS); id.UserID != "carol" {
			t.Errorf("identity %+v", id)
		}
	})
	t.Run("kinds kept apart", func(t *testing.T) {
		accessOnly := idpVerifier(t, idp, time.Now, Config{Audiences: []string{idpAud}})
		mustRefuse(t, accessOnly, "Bearer "+idToken, ReasonWrongType, 401)
		mustAccept(t, accessOnly, access)
		idOnly := idpVerifier(t, idp, time.Now, Config{ClientIDs: []string{idptest.MobileClientID}})
		mustRefuse(t, idOnly, "Bearer "+access, ReasonWrongType, 401)
		mustAccept(t, idOnly, idToken)
	})
	t.Run("wrong audience", func(t *testing.T) {
		other := idp.AccessToken(t, "bob", "https://other.example.test")
		e := mustRefuse(t, v, "Bearer "+other, ReasonWrongAudience, 401)
		if want := `audience ["https://other.example.test"] is not one of the configured audiences ["` + idpAud + `"]`; e.Description != want {
			t.Errorf("description %q, want %q", e.Description, want)
		}
		wrongClient := idpVerifier(t, idp, time.Now, Config{ClientIDs: []string{"someone-else"}})
		mustRefuse(t, wrongClient, "Bearer "+idToken, ReasonWrongAudience, 401)
	})
	t.Run("expired", func(t *testing.T) {
		// oidc-provider issues these for 10 minutes (access) and an
		// hour (ID); a verifier whose clock runs two hours ahead sees
		// both expired.
		later := func() time.Time { return time.Now().Add(2 * time.Hour) }
		skewed := idpVerifier(t, idp, later, both)
		for _, tok := range []string{idToken, access} {
			e := mustRefuse(t, skewed, "Bearer "+tok, ReasonExpired, 401)
			if !strings.HasPrefix(e.Description, "token expired at 20") {
				t.Errorf("description %q", e.Description)
			}
		}
	})
	t.Run("flood of random kids", func(t *testing.T) {
		fresh := idpVerifier(t, idp, time.Now, both)
		mustAccept(t, fresh, access)
		attacker := newKey(t, "", "ES256")
		claims := map[string]any{"iss": idp.Issuer, "sub": "mallory", "aud": idpAud, "exp": time.Now().Add(time.Hour).Unix()}
		var wg sync.WaitGroup
		work := make(chan string)
		for range 8 {
			wg.Go(func() {
				for h := range work {
					if _, err := fresh.Verify(context.Background(), h); err == nil {
						t.Error("random-kid token accepted")
					}
				}
			})
		}
		for i := range 1000 {
			attacker.kid = fmt.Sprintf("random-%d", i)
			work <- "Bearer " + attacker.sign(t, "at+jwt", claims)
		}
		close(work)
		wg.Wait()
		if got := fresh.JWKSFetches(); got > 2 {
			t.Errorf("%d JWKS fetches for 1,000 random kids, want at most 2", got)
		}
		mustAccept(t, fresh, access)
	})
}

func TestIdPRotation(t *testing.T) {
	idp := idptest.Start(t)
	clk := newFakeClock()
	v := idpVerifier(t, idp, clk.Now, Config{ClientIDs: []string{idptest.MobileClientID}, Audiences: []string{idpAud}, MinRefetchInterval: 30 * time.Second, CacheTTL: -1})

	oldAccess := idp.AccessToken(t, "alice", idpAud)
	oldID := idp.IDToken(t, "alice")
	mustAccept(t, v, oldAccess)
	mustAccept(t, v, oldID)

	kids := idp.Rotate(t)
	newAccess := idp.AccessToken(t, "alice", idpAud)
	newID := idp.IDToken(t, "alice")
	if kid := headerKid(t, newAccess); !slices.Contains(kids, kid) {
		t.Fatalf("new token's kid %s is not one of the rotated kids %v", kid, kids)
	}

	// Within the refetch interval the new kid cannot trigger a fetch;
	// the old keys are still cached.
	mustRefuse(t, v, "Bearer "+newAccess, ReasonUnknownKey, 401)
	mustAccept(t, v, oldAccess)

	clk.Advance(31 * time.Second)
	mustAccept(t, v, newAccess)
	mustAccept(t, v, newID)
	// The refreshed JWKS no longer holds the old keys.
	mustRefuse(t, v, "Bearer "+oldAccess, ReasonUnknownKey, 401)
	mustRefuse(t, v, "Bearer "+oldID, ReasonUnknownKey, 401)
	if got := v.JWKSFetches(); got != 2 {
		t.Errorf("%d JWKS fetches, want 2", got)
	}
}

func headerKid(t *testing.T, tok string) string {
	t.Helper()
	hdr, _, e := splitJWT(tok)
	if e != nil {
		t.Fatal(e)
	}
	return hdr.Kid
}
