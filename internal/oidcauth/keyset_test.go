package oidcauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

func TestKeySetUnknownKidFlood(t *testing.T) {
	ti := newTestIssuer(t)
	clk := newFakeClock()
	es := newKey(t, "k1", "ES256")
	ti.publish(es)
	v := newTestVerifier(t, ti, clk, Config{})
	claims := claimsFor(ti, clk, "app", nil)
	mustAccept(t, v, es.sign(t, "", claims))
	if got := v.JWKSFetches(); got != 1 {
		t.Fatalf("%d fetches after the first token, want 1", got)
	}

	// 1,000 tokens with random kids, 16 at a time: one key pair signs
	// them all (the kid is what matters), so the test spends its time
	// in the verifier, not in key generation.
	attacker := newKey(t, "", "ES256")
	toks := make([]string, 1000)
	for i := range toks {
		attacker.kid = fmt.Sprintf("random-%d", i)
		toks[i] = "Bearer " + attacker.sign(t, "", claims)
	}
	var wg sync.WaitGroup
	work := make(chan string)
	reasons := make(chan string, len(toks))
	for range 16 {
		wg.Go(func() {
			for h := range work {
				_, err := v.Verify(context.Background(), h)
				var e *Error
				if errors.As(err, &e) {
					reasons <- e.Reason
				} else {
					reasons <- fmt.Sprint(err)
				}
			}
		})
	}
	for _, h := range toks {
		work <- h
	}
	close(work)
	wg.Wait()
	close(reasons)
	for r := range reasons {
		if r != ReasonUnknownKey {
			t.Fatalf("reason %s, want unknown_key", r)
		}
	}
	if got := v.JWKSFetches(); got > 2 {
		t.Errorf("%d JWKS fetches for 1,000 unknown kids, want at most 2", got)
	}
	if got := ti.jwksHits.Load(); got != int64(v.JWKSFetches()) {
		t.Errorf("server saw %d fetches, key set counted %d", got, v.JWKSFetches())
	}
	// Cached keys still verify during the flood's aftermath.
	mustAccept(t, v, es.sign(t, "", claims))
}

func TestKeySetFloodFromCold(t *testing.T) {
	// No key cached yet: the first unknown kid may fetch, the rest may
	// not.
	ti := newTestIssuer(t)
	clk := newFakeClock()
	ti.publish(newKey(t, "k1", "ES256"))
	v := newTestVerifier(t, ti, clk, Config{})
	attacker := newKey(t, "", "ES256")
	for i := range 200 {
		attacker.kid = fmt.Sprint("r", i)
		mustRefuse(t, v, "Bearer "+attacker.sign(t, "", claimsFor(ti, clk, "app", nil)), ReasonUnknownKey, 401)
	}
	if got := ti.jwksHits.Load(); got > 1 {
		t.Errorf("%d fetches, want at most 1", got)
	}
}

func TestKeySetRotation(t *testing.T) {
	ti := newTestIssuer(t)
	clk := newFakeClock()
	k1 := newKey(t, "k1", "ES256")
	k2 := newKey(t, "k2", "ES256")
	ti.publish(k1)
	v := newTestVerifier(t, ti, clk, Config{MinRefetchInterval: 30 * time.Second, CacheTTL: -1})
	claims := claimsFor(ti, clk, "app", map[string]any{"exp": clk.Now().Add(time.Hour).Unix()})
	old := k1.sign(t, "", claims)
	mustAccept(t, v, old)

	// The IdP rotates: k2 replaces k1. Within the interval the new kid
	// cannot trigger a fetch yet.
	ti.publish(k2)
	fresh := k2.sign(t, "", claims)
	mustRefuse(t, v, "Bearer "+fresh, ReasonUnknownKey, 401)
	mustAccept(t, v, old) // still cached

	clk.Advance(31 * time.Second)
	mustAccept(t, v, fresh)
	if got := v.JWKSFetches(); got != 2 {
		t.Errorf("%d fetches, want 2", got)
	}
	// k1 left the key set, so it no longer verifies, and asking again
	// does not refetch.
	e := mustRefuse(t, v, "Bearer "+old, ReasonUnknownKey, 401)
	if !strings.Contains(e.Description, `"k1"`) {
		t.Errorf("description %q should name the kid", e.Description)
	}
	if got := v.JWKSFetches(); got != 2 {
		t.Errorf("%d fetches, want 2", got)
	}
}

func TestKeySetSharedFetch(t *testing.T) {
	ti := newTestIssuer(t)
	clk := newFakeClock()
	k1 := newKey(t, "k1", "ES256")
	ti.publish(k1)
	v := newTestVerifier(t, ti, clk, Config{})
	tok := "Bearer " + k1.sign(t, "", claimsFor(ti, clk, "app", nil))
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Go(func() {
			_, err := v.Verify(context.Background(), tok)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if got := ti.jwksHits.Load(); got != 1 {
		t.Errorf("%d fetches for 32 concurrent first requests, want 1", got)
	}
}

func TestKeySetOutage(t *testing.T) {
	ti := newTestIssuer(t)
	clk := newFakeClock()
	k1 := newKey(t, "k1", "ES256")
	ti.publish(k1)
	v := newTestVerifier(t, ti, clk, Config{})
	claims := claimsFor(ti, clk, "app", map[string]any{"exp": clk.Now().Add(3 * time.Hour).Unix()})
	mustAccept(t, v, k1.sign(t, "", claims))

	ti.setDown(true)
	clk.Advance(time.Minute)
	// Cached keys keep working while the JWKS endpoint is down.
	mustAccept(t, v, k1.sign(t, "", claims))
	// An unknown kid may fetch, the fetch fails: the IdP is unavailable,
	// not the token invalid.
	stranger := newKey(t, "k9", "ES256")
	mustRefuse(t, v, "Bearer "+stranger.sign(t, "", claims), ReasonIDPUnavailable, http.StatusServiceUnavailable)
	mustAccept(t, v, k1.sign(t, "", claims))
}

func TestKeySetStaleRefresh(t *testing.T) {
	ti := newTestIssuer(t)
	clk := newFakeClock()
	k1 := newKey(t, "k1", "ES256")
	ti.publish(k1)
	v := newTestVerifier(t, ti, clk, Config{CacheTTL: -1})
	claims := claimsFor(ti, clk, "app", map[string]any{"exp": clk.Now().Add(3 * time.Hour).Unix()})
	tok := k1.sign(t, "", claims)
	mustAccept(t, v, tok)

	// The issuer withdraws k1 without a new kid ever being seen. Once
	// the cache is older than maxKeyAge, a verification refreshes it in
	// the background and k1 stops verifying.
	ti.publish(newKey(t, "k2", "ES256"))
	clk.Advance(maxKeyAge + time.Second)
	mustAccept(t, v, tok) // served from the stale cache; starts the refresh
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := v.Verify(context.Background(), "Bearer "+tok)
		var e *Error
		if errors.As(err, &e) && e.Reason == ReasonUnknownKey {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("k1 still accepted after the background refresh (err %v)", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := v.JWKSFetches(); got != 2 {
		t.Errorf("%d fetches, want 2", got)
	}
}

func TestParseJWKS(t *testing.T) {
	ec := newKey(t, "ec", "ES256")
	pub, err := jose.JSONWebKey{Key: ec.pub, KeyID: "ec", Use: "sig", Algorithm: "ES256"}.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	priv, err := jose.JSONWebKey{Key: ec.priv, KeyID: "ec-private"}.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	body := `{"keys":[` + string(pub) + `,` + string(priv) + `,
		{"kty":"oct","k":"c2VjcmV0","kid":"hmac"},
		{"kty":"EC","crv":"secp256k1","alg":"ES256K","kid":"k1","x":"AA","y":"AA"},
		{"kty":"OKP","crv":"Ed448","kid":"ed448","x":"AA"},
		{"kty":"RSA","use":"enc","kid":"enc","n":"AQAB","e":"AQAB"},
		{"kty":"weird"}]}`
	keys, err := parseJWKS([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, k := range keys {
		if !k.IsPublic() {
			t.Errorf("kid %s: not a public key", k.KeyID)
		}
		kids = append(kids, k.KeyID)
	}
	if got := strings.Join(kids, ","); got != "ec,ec-private" {
		t.Errorf("kept %s, want ec,ec-private", got)
	}
	for _, bad := range []string{``, `[]`, `{}`, `{"keys":{}}`} {
		if _, err := parseJWKS([]byte(bad)); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}

func FuzzParseJWKS(f *testing.F) {
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","kid":"a"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"oct","k":"AA"}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		keys, err := parseJWKS(body)
		if err != nil {
			return
		}
		for _, k := range keys {
			if !k.IsPublic() {
				t.Fatalf("non-public key kept: %T", k.Key)
			}
		}
	})
}

// TestVerifiedTokenCache: a token verified once is remembered for CacheTTL
// (no second signature check or fetch), never past its own expiry, and a
// key's withdrawal takes effect once the entry has aged out.
func TestVerifiedTokenCache(t *testing.T) {
	ti := newTestIssuer(t)
	clk := newFakeClock()
	k1 := newKey(t, "k1", "ES256")
	k2 := newKey(t, "k2", "ES256")
	ti.publish(k1)
	v := newTestVerifier(t, ti, clk, Config{MinRefetchInterval: time.Second, CacheTTL: time.Minute, ClockSkew: time.Second})
	long := k1.sign(t, "", claimsFor(ti, clk, "app", map[string]any{"exp": clk.Now().Add(time.Hour).Unix()}))
	short := k1.sign(t, "", claimsFor(ti, clk, "app", map[string]any{"exp": clk.Now().Add(10 * time.Second).Unix()}))
	mustAccept(t, v, long)
	mustAccept(t, v, short)

	ti.publish(k2) // k1 withdrawn
	clk.Advance(5 * time.Second)
	mustAccept(t, v, long) // cached: the withdrawal is not seen yet
	mustAccept(t, v, short)

	clk.Advance(10 * time.Second) // past short's expiry, within the TTL
	mustRefuse(t, v, "Bearer "+short, ReasonExpired, 401)
	mustAccept(t, v, long)

	// Past the TTL, once the key set has refreshed (a k2 token makes it
	// fetch), the cached k1 token is verified again and refused.
	clk.Advance(time.Minute)
	mustAccept(t, v, k2.sign(t, "", claimsFor(ti, clk, "app", map[string]any{"exp": clk.Now().Add(time.Hour).Unix()})))
	mustRefuse(t, v, "Bearer "+long, ReasonUnknownKey, 401)
	// A refused token is never cached.
	mustRefuse(t, v, "Bearer "+long, ReasonUnknownKey, 401)
}
