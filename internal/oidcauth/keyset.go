package oidcauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

const (
	// maxJWKSBytes bounds a JWKS response: real ones are a few kB.
	maxJWKSBytes = 1 << 20
	// fetchTimeout bounds one JWKS fetch. The fetch is shared by every
	// waiting request, so it runs under its own deadline rather than any
	// one request's context.
	fetchTimeout = 10 * time.Second
	// maxKeyAge is how long a fetched key set is used before the next
	// verification refreshes it in the background. Without it a key the
	// issuer withdrew (say, after a compromise) would keep verifying until
	// a token with a new kid happened to arrive.
	maxKeyAge = time.Hour
)

// KeySet is an oidc.KeySet over an issuer's JWKS endpoint that, unlike
// go-oidc's RemoteKeySet, rate-limits refetches: a token whose kid is not
// cached triggers a fetch only if none started within MinRefetchInterval.
// Concurrent misses share one fetch. A refreshed key set replaces the cached
// one, so keys the issuer removed stop verifying.
//
// A KeySet is safe for concurrent use.
type KeySet struct {
	url         string
	client      *http.Client
	minInterval time.Duration
	algs        []jose.SignatureAlgorithm
	now         func() time.Time

	fetches atomic.Uint64

	mu        sync.Mutex
	keys      []jose.JSONWebKey
	fetchedAt time.Time // when the cached keys were fetched; zero before the first success
	startedAt time.Time // when the last fetch started, successful or not
	inflight  *fetchCall
}

type fetchCall struct {
	done chan struct{}
	err  error
}

// NewKeySet returns a KeySet for the JWKS at url. algs is the allow-list the
// token's alg header must be in (checked again here so the KeySet is safe
// to use on its own); minInterval is the least time between two fetches
// caused by unknown key ids.
func NewKeySet(url string, client *http.Client, minInterval time.Duration, algs []string) *KeySet {
	ks := &KeySet{url: url, client: client, minInterval: minInterval, now: time.Now}
	for _, a := range algs {
		ks.algs = append(ks.algs, jose.SignatureAlgorithm(a))
	}
	return ks
}

// Fetches returns how many JWKS fetches this key set has started.
func (ks *KeySet) Fetches() uint64 { return ks.fetches.Load() }

// outcomeKey carries a *sigOutcome through go-oidc, which wraps KeySet
// errors with %v and so loses their type; the verifier reads the precise
// reason from here instead.
type outcomeKey struct{}

// sigOutcome is what the KeySet tells the Verifier about one token: the
// precise refusal, or the payload whose signature it verified.
type sigOutcome struct {
	err     *Error
	payload []byte
}

func record(ctx context.Context, e *Error) error {
	if o, ok := ctx.Value(outcomeKey{}).(*sigOutcome); ok {
		o.err = e
	}
	return e
}

func verified(ctx context.Context, payload []byte) []byte {
	if o, ok := ctx.Value(outcomeKey{}).(*sigOutcome); ok {
		o.payload = payload
	}
	return payload
}

// VerifySignature implements oidc.KeySet.
func (ks *KeySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	jws, err := jose.ParseSigned(jwt, ks.algs)
	if err != nil {
		return nil, record(ctx, errToken(ReasonMalformed, "the JWT does not parse as a JWS with an allowed algorithm"))
	}
	if len(jws.Signatures) != 1 {
		return nil, record(ctx, errToken(ReasonMalformed, "the JWT has %d signatures, want exactly one", len(jws.Signatures)))
	}
	sig := jws.Signatures[0]
	kid, alg := sig.Header.KeyID, sig.Header.Algorithm

	keys, stale := ks.cached()
	if stale {
		ks.refreshInBackground()
	}
	payload, known := verifyWith(jws, keys, kid, alg)
	if payload != nil {
		return verified(ctx, payload), nil
	}
	if known {
		// The issuer publishes this kid and its key does not verify: a
		// forgery or corruption, not a rotation, so no refetch.
		return nil, record(ctx, errToken(ReasonBadSignature, "the signature does not verify with key %s", quote(kid)))
	}

	// Unknown kid (or no kid and no key verifies): the issuer may have
	// rotated. OpenID Connect Core §10.1.1 says to refetch, which go-oidc
	// does on every miss; here at most once per minInterval.
	fetchErr, fetched := ks.refetch(ctx)
	if fetched {
		keys, _ = ks.cached()
		payload, known = verifyWith(jws, keys, kid, alg)
		if payload != nil {
			return verified(ctx, payload), nil
		}
		if known {
			return nil, record(ctx, errToken(ReasonBadSignature, "the signature does not verify with key %s", quote(kid)))
		}
	}
	if fetchErr != nil {
		if errors.Is(fetchErr, context.Canceled) || errors.Is(fetchErr, context.DeadlineExceeded) {
			return nil, record(ctx, errUnavailable("gave up waiting for the issuer's key set: %v", fetchErr))
		}
		return nil, record(ctx, errUnavailable("fetching the issuer's key set failed: %v", fetchErr))
	}
	if kid == "" {
		return nil, record(ctx, errToken(ReasonBadSignature, "the token has no kid and no key of the issuer verifies it"))
	}
	return nil, record(ctx, errToken(ReasonUnknownKey, "key %s is not in the issuer's key set", quote(kid)))
}

// verifyWith tries the keys matching kid (all keys when the token names
// none). known reports whether a key with that kid exists at all.
func verifyWith(jws *jose.JSONWebSignature, keys []jose.JSONWebKey, kid, alg string) (payload []byte, known bool) {
	for i := range keys {
		k := &keys[i]
		if kid != "" && k.KeyID != kid {
			continue
		}
		known = kid != ""
		// A key that declares its algorithm may only be used with it
		// (RFC 7517 §4.4): an RSA key published for RS256 must not
		// verify a PS256 token.
		if k.Algorithm != "" && k.Algorithm != alg {
			continue
		}
		if p, err := jws.Verify(k); err == nil {
			return p, known
		}
	}
	return nil, known
}

func (ks *KeySet) cached() (keys []jose.JSONWebKey, stale bool) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	stale = !ks.fetchedAt.IsZero() && ks.now().Sub(ks.fetchedAt) >= maxKeyAge
	return ks.keys, stale
}

// refetch joins the in-flight fetch or starts one if the rate limit allows.
// fetched reports whether a fetch completed successfully for this caller to
// look at; err is that fetch's error, or nil when none was allowed.
func (ks *KeySet) refetch(ctx context.Context) (err error, fetched bool) {
	ks.mu.Lock()
	call := ks.inflight
	if call == nil {
		if !ks.startedAt.IsZero() && ks.now().Sub(ks.startedAt) < ks.minInterval {
			ks.mu.Unlock()
			return nil, false
		}
		call = ks.startLocked()
	}
	ks.mu.Unlock()
	select {
	case <-call.done:
		return call.err, call.err == nil
	case <-ctx.Done():
		return ctx.Err(), false
	}
}

// refreshInBackground starts a fetch for a stale key set without making
// the current request wait; the rate limit still applies.
func (ks *KeySet) refreshInBackground() {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.inflight != nil || ks.now().Sub(ks.startedAt) < ks.minInterval {
		return
	}
	ks.startLocked()
}

// startLocked starts a fetch; ks.mu must be held.
func (ks *KeySet) startLocked() *fetchCall {
	call := &fetchCall{done: make(chan struct{})}
	ks.inflight = call
	ks.startedAt = ks.now()
	ks.fetches.Add(1)
	go func() {
		keys, err := ks.fetch()
		ks.mu.Lock()
		if err == nil {
			ks.keys = keys
			ks.fetchedAt = ks.now()
		}
		// On failure the old keys stay: an IdP outage must not stop
		// tokens signed with known keys from verifying.
		ks.inflight = nil
		ks.mu.Unlock()
		call.err = err
		close(call.done)
	}()
	return call
}

func (ks *KeySet) fetch() ([]jose.JSONWebKey, error) {
	ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ks.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	// A refetch happens because the cached set looked out of date; an
	// intermediate cache must not answer with the same old set.
	req.Header.Set("Cache-Control", "no-cache")
	resp, err := ks.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", ks.url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", ks.url, resp.Status)
	}
	if len(body) > maxJWKSBytes {
		return nil, fmt.Errorf("GET %s: key set larger than 1 MiB", ks.url)
	}
	return parseJWKS(body)
}

// parseJWKS decodes a JWK Set, keeping only public signature keys. Keys of
// a type or algorithm this program does not understand are skipped, as RFC
// 7517 §5 asks, rather than failing the whole set: one exotic key must not
// lock every user out. Symmetric keys are never used to verify.
func parseJWKS(body []byte) ([]jose.JSONWebKey, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("decoding the key set: %w", err)
	}
	if set.Keys == nil {
		return nil, errors.New(`decoding the key set: no "keys" array`)
	}
	keys := make([]jose.JSONWebKey, 0, len(set.Keys))
	for _, raw := range set.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil {
			continue
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		if k.IsPublic() {
			keys = append(keys, k)
			continue
		}
		// A private asymmetric key published by mistake still holds the
		// public half; a symmetric key has none and is dropped.
		if pub := k.Public(); pub.Valid() {
			keys = append(keys, pub)
		}
	}
	return keys, nil
}
