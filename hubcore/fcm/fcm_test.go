package fcm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/internal/pnsfake"
	fcmfake "github.com/pushgate/pushgate/internal/pnsfake/fcm"
)

const project = "pushgate-test"

// sharedKey is one service-account key for the whole test binary: RSA key
// generation is slow, and the sender is pointed at the fake's token URL by
// Config.TokenURL, so the key file's own token_uri does not matter.
var sharedKey = sync.OnceValues(func() ([]byte, error) {
	return fcmfake.NewServiceAccount(project, "https://oauth2.invalid/token")
})

// setup starts a fake that trusts the shared key and a sender for it.
func setup(t testing.TB, opts fcmfake.Options, edit func(*Config)) (*fcmfake.Server, *Sender) {
	t.Helper()
	srv := fcmfake.New(opts)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	key, err := sharedKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.AddServiceAccount(key); err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		CredentialsJSON: key,
		Endpoint:        srv.URL(),
		TokenURL:        srv.TokenURL(),
		RootCAs:         srv.CertPool(),
	}
	if edit != nil {
		edit(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return srv, s
}

func delivery(token, body string) *hubcore.Delivery {
	return &hubcore.Delivery{
		Platform: hubcore.FCMV1,
		Channel:  hubcore.PushChannel{Handle: token},
		Rendered: hubcore.Rendered{Body: []byte(body)},
	}
}

const simpleBody = `{"message":{"notification":{"title":"Hi","body":"there"},"data":{"k":"v"}}}`

func TestSendDeliversEveryField(t *testing.T) {
	srv, s := setup(t, fcmfake.Options{}, nil)
	srv.Log.Keep = true
	tok := fcmfake.Token("device-1")
	body := `{
	  "message": {
	    "notification": {"title": "Hello", "body": "World", "image": "https://example.com/i.png"},
	    "data": {"a": "1", "b": "two"},
	    "android": {"priority": "HIGH", "ttl": "3600s", "collapse_key": "c", "notification": {"channel_id": "x"}},
	    "apns": {"headers": {"apns-priority": "10"}, "payload": {"aps": {"badge": 3}}},
	    "webpush": {"headers": {"TTL": "60"}, "data": {"w": "1"}},
	    "fcm_options": {"analytics_label": "l"}
	  }
	}`
	if err := s.Send(context.Background(), delivery(tok, body)); err != nil {
		t.Fatalf("Send: %v", err)
	}
	got := srv.Log.For(tok)
	if len(got) != 1 {
		t.Fatalf("fake accepted %d messages for the token, want 1", len(got))
	}
	var sent, want map[string]any
	if err := json.Unmarshal(got[0].Body, &sent); err != nil {
		t.Fatalf("delivered message is not JSON: %v\n%s", err, got[0].Body)
	}
	var wrapper struct{ Message map[string]any }
	if err := json.Unmarshal([]byte(body), &wrapper); err != nil {
		t.Fatal(err)
	}
	want = wrapper.Message
	want["token"] = tok
	if a, b := fmt.Sprint(sent), fmt.Sprint(want); a != b {
		t.Errorf("delivered message\n got %s\nwant %s", a, b)
	}
	h := got[0].Header
	if a := h.Get("Authorization"); !strings.HasPrefix(a, "Bearer ya29.") {
		t.Errorf("Authorization = %q", a)
	}
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q", ct)
	}
}

func TestKeyFileTokenURIIsTheDefault(t *testing.T) {
	srv := fcmfake.New(fcmfake.Options{})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	key, err := srv.ServiceAccount("other-project")
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{CredentialsJSON: key, Endpoint: srv.URL(), RootCAs: srv.CertPool()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Project() != "other-project" {
		t.Errorf("Project() = %q", s.Project())
	}
	if err := s.Send(context.Background(), delivery(fcmfake.Token("d"), simpleBody)); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if n := srv.TokensIssued(); n != 1 {
		t.Errorf("tokens issued = %d, want 1", n)
	}
}

// TestScriptedAnswers checks the mapping of every FCM answer the fake can
// give to a PushError.
func TestScriptedAnswers(t *testing.T) {
	srv, s := setup(t, fcmfake.Options{}, nil)
	cases := []struct {
		name    string
		actions []pnsfake.Action
		want    hubcore.PushError // Err ignored
	}{
		{"unregistered", []pnsfake.Action{{Kind: pnsfake.Fail, Status: 404, Reason: "UNREGISTERED"}},
			hubcore.PushError{Outcome: hubcore.OutcomeExpiredChannel, Status: 404, Reason: "UNREGISTERED", ExpireHandle: true}},
		{"bad token", []pnsfake.Action{{Kind: pnsfake.Fail, Status: 400, Reason: "INVALID_ARGUMENT: The registration token is not a valid FCM registration token"}},
			hubcore.PushError{Outcome: hubcore.OutcomeBadChannel, Status: 400, Reason: "INVALID_ARGUMENT", ExpireHandle: true}},
		{"invalid argument", []pnsfake.Action{{Kind: pnsfake.Fail, Status: 400, Reason: "INVALID_ARGUMENT"}},
			hubcore.PushError{Outcome: hubcore.OutcomePnsInterfaceError, Status: 400, Reason: "INVALID_ARGUMENT"}},
		{"too big", []pnsfake.Action{{Kind: pnsfake.Fail, Status: 400, Reason: "INVALID_ARGUMENT: Message is too big"}},
			hubcore.PushError{Outcome: hubcore.OutcomeInvalidNotificationSize, Status: 400, Reason: "INVALID_ARGUMENT"}},
		{"sender id mismatch", []pnsfake.Action{{Kind: pnsfake.Fail, Status: 403, Reason: "SENDER_ID_MISMATCH"}},
			hubcore.PushError{Outcome: hubcore.OutcomeWrongToken, Status: 403, Reason: "SENDER_ID_MISMATCH", ExpireHandle: true}},
		{"quota", []pnsfake.Action{{Kind: pnsfake.Throttle, RetryAfter: 30 * time.Second}},
			hubcore.PushError{Outcome: hubcore.OutcomeThrottled, Status: 429, Reason: "QUOTA_EXCEEDED", Retry: true, RetryAfter: 30 * time.Second}},
		{"unavailable", []pnsfake.Action{{Kind: pnsfake.Fail, Status: 503, Reason: "UNAVAILABLE"}},
			hubcore.PushError{Outcome: hubcore.OutcomePnsUnavailable, Status: 503, Reason: "UNAVAILABLE", Retry: true}},
		{"internal", []pnsfake.Action{{Kind: pnsfake.Fail, Status: 500, Reason: "INTERNAL"}},
			hubcore.PushError{Outcome: hubcore.OutcomePnsServerError, Status: 500, Reason: "INTERNAL", Retry: true}},
		{"unspecified 500", []pnsfake.Action{{Kind: pnsfake.Fail, Status: 500, Reason: "UNSPECIFIED_ERROR"}},
			hubcore.PushError{Outcome: hubcore.OutcomePnsServerError, Status: 500, Reason: "INTERNAL", Retry: true}},
		{"third-party auth", []pnsfake.Action{{Kind: pnsfake.Fail, Status: 401, Reason: "THIRD_PARTY_AUTH_ERROR"}},
			hubcore.PushError{Outcome: hubcore.OutcomeInvalidCredentials, Status: 401, Reason: "THIRD_PARTY_AUTH_ERROR"}},
		{"permission denied", []pnsfake.Action{{Kind: pnsfake.Fail, Status: 403, Reason: "PERMISSION_DENIED"}},
			hubcore.PushError{Outcome: hubcore.OutcomeInvalidCredentials, Status: 403, Reason: "PERMISSION_DENIED"}},
		{"plain not found", []pnsfake.Action{{Kind: pnsfake.Fail, Status: 404, Reason: "NOT_FOUND"}},
			hubcore.PushError{Outcome: hubcore.OutcomePnsInterfaceError, Status: 404, Reason: "NOT_FOUND"}},
		{"stale access token twice", []pnsfake.Action{{Kind: pnsfake.Fail, Status: 401, Reason: "UNAUTHENTICATED"}, {Kind: pnsfake.Fail, Status: 401, Reason: "UNAUTHENTICATED"}},
			hubcore.PushError{Outcome: hubcore.OutcomeInvalidCredentials, Status: 401, Reason: "UNAUTHENTICATED"}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tok := fcmfake.Token(fmt.Sprintf("scripted-%d", i))
			srv.Script.Push(tok, c.actions...)
			err := s.Send(context.Background(), delivery(tok, simpleBody))
			var pe *hubcore.PushError
			if !errors.As(err, &pe) {
				t.Fatalf("Send = %v, want a *PushError", err)
			}
			got := *pe
			got.Err = nil
			if got != c.want {
				t.Errorf("Send =\n %+v\nwant\n %+v", got, c.want)
			}
		})
	}
}

// TestFakeChecksMapped drives the fake's own refusals (not scripts) through
// the sender.
func TestFakeChecksMapped(t *testing.T) {
	srv, s := setup(t, fcmfake.Options{}, nil)
	gone, foreign := fcmfake.Token("gone"), fcmfake.Token("foreign")
	srv.Unregister(gone)
	srv.BindToken(foreign, "someone-else")
	big := `{"message":{"data":{"k":"` + strings.Repeat("x", 4100) + `"}}}`
	cases := []struct {
		name, token, body string
		outcome           hubcore.OutcomeName
		expire            bool
	}{
		{"malformed token", "not-a-token", simpleBody, hubcore.OutcomeBadChannel, true},
		{"unregistered", gone, simpleBody, hubcore.OutcomeExpiredChannel, true},
		{"other sender", foreign, simpleBody, hubcore.OutcomeWrongToken, true},
		{"too big", fcmfake.Token("big"), big, hubcore.OutcomeInvalidNotificationSize, false},
		{"non-string data", fcmfake.Token("num"), `{"message":{"data":{"n":1}}}`, hubcore.OutcomePnsInterfaceError, false},
		{"unknown field", fcmfake.Token("unk"), `{"message":{"notification":{"titel":"x"}}}`, hubcore.OutcomePnsInterfaceError, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := s.Send(context.Background(), delivery(c.token, c.body))
			var pe *hubcore.PushError
			if !errors.As(err, &pe) {
				t.Fatalf("Send = %v, want a *PushError", err)
			}
			if pe.Outcome != c.outcome || pe.ExpireHandle != c.expire || pe.Retry {
				t.Errorf("Send = %+v, want outcome %s, expire %v, no retry", pe, c.outcome, c.expire)
			}
		})
	}
}

// TestPayloadRefusedLocally: payloads the sender must not send at all.
func TestPayloadRefusedLocally(t *testing.T) {
	srv, s := setup(t, fcmfake.Options{}, nil)
	var arrived sync.Map
	srv.Log.OnArrive = func(token string, _ time.Time) { arrived.Store(token, true) }
	tok := fcmfake.Token("local")
	for _, body := range []string{
		`{"message":{"token":"x","data":{}}}`,
		`{"message":{"topic":"news"}}`,
		`{"message":{"condition":"'a' in topics"}}`,
		`{"message":{"\u0074oken":"x"}}`,
		`{"notification":{"title":"no wrapper"}}`,
		`{"message":{}, "validate_only":true}`,
		`{"message":"x"}`,
		`[]`,
		`{"message":{"data":{"k":"v"}}`,
		``,
	} {
		err := s.Send(context.Background(), delivery(tok, body))
		var pe *hubcore.PushError
		if !errors.As(err, &pe) || pe.Outcome != hubcore.OutcomePnsInterfaceError || pe.Retry || pe.ExpireHandle {
			t.Errorf("body %s: Send = %v, want PnsInterfaceError", body, err)
		}
	}
	if _, ok := arrived.Load(tok); ok {
		t.Error("a refused payload reached the fake")
	}
	if err := s.Send(context.Background(), delivery("", simpleBody)); err == nil {
		t.Error("Send with no handle succeeded")
	}
}

// TestOneTokenManySends: a thousand concurrent sends share one access token
// and the sender's two connections.
func TestOneTokenManySends(t *testing.T) {
	srv, s := setup(t, fcmfake.Options{}, nil)
	const n, workers = 1000, 100
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n / workers {
				d := delivery(fcmfake.Token(fmt.Sprintf("dev-%d-%d", w, i)), simpleBody)
				if err := s.Send(context.Background(), d); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Send: %v", err)
	}
	if got := srv.Log.Accepted(); got != n {
		t.Errorf("accepted %d, want %d", got, n)
	}
	if got := srv.TokensIssued(); got != 1 {
		t.Errorf("tokens issued = %d, want 1", got)
	}
	// Two send connections and one to the token endpoint.
	if got := srv.Conns(); got > 3 {
		t.Errorf("fake accepted %d connections, want at most 3", got)
	}
}

// TestRefreshOnUnauthenticated: when FCM stops accepting the access token,
// the sender mints one new token, however many sends saw the refusal.
func TestRefreshOnUnauthenticated(t *testing.T) {
	srv, s := setup(t, fcmfake.Options{}, nil)
	ctx := context.Background()
	if err := s.Send(ctx, delivery(fcmfake.Token("a"), simpleBody)); err != nil {
		t.Fatal(err)
	}
	srv.ExpireTokens()
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Send(ctx, delivery(fcmfake.Token(fmt.Sprint("b", i)), simpleBody)); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Send after expiry: %v", err)
	}
	if got := srv.TokensIssued(); got != 2 {
		t.Errorf("tokens issued = %d, want 2", got)
	}
}

// TestRefreshAhead: near expiry a new token is minted in the background
// while sends keep using the old one; past the usable limit sends wait for
// a new token.
func TestRefreshAhead(t *testing.T) {
	srv, s := setup(t, fcmfake.Options{}, nil)
	ctx := context.Background()
	send := func() {
		t.Helper()
		if err := s.Send(ctx, delivery(fcmfake.Token("ahead"), simpleBody)); err != nil {
			t.Fatal(err)
		}
	}
	send()
	first := s.tokens.Current()
	if first == nil || first.RefreshAt.IsZero() {
		t.Fatal("no token with an expiry cached after a send")
	}
	// Between refreshAt and usableUntil: the old token is used and a mint
	// starts.
	s.tokens.Now = func() time.Time { return first.RefreshAt.Add(time.Millisecond) }
	send()
	s.tokens.WaitMint()
	if got := srv.TokensIssued(); got != 2 {
		t.Fatalf("tokens issued = %d after passing refreshAt, want 2", got)
	}
	second := s.tokens.Current()
	if second == first {
		t.Fatal("background refresh did not replace the token")
	}
	// Past usableUntil: the send itself waits for a new token.
	s.tokens.Now = func() time.Time { return second.UsableUntil.Add(time.Millisecond) }
	send()
	if got := srv.TokensIssued(); got != 3 {
		t.Errorf("tokens issued = %d after passing usableUntil, want 3", got)
	}
}

func TestShortLivedTokens(t *testing.T) {
	// A 30-second token is refreshed 3 seconds early, not 5 minutes: the
	// margin is capped at a tenth of the lifetime.
	srv, s := setup(t, fcmfake.Options{TokenTTL: 30 * time.Second}, nil)
	for range 5 {
		if err := s.Send(context.Background(), delivery(fcmfake.Token("short"), simpleBody)); err != nil {
			t.Fatal(err)
		}
	}
	if got := srv.TokensIssued(); got != 1 {
		t.Errorf("tokens issued = %d, want 1", got)
	}
	at := s.tokens.Current()
	if life := time.Until(at.RefreshAt); life < 20*time.Second || life > 28*time.Second {
		t.Errorf("refresh due in %v, want about 27s", life)
	}
}

func TestCredentialRefused(t *testing.T) {
	srv := fcmfake.New(fcmfake.Options{})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	key, err := sharedKey() // not registered with this fake
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{CredentialsJSON: key, Endpoint: srv.URL(), TokenURL: srv.TokenURL(), RootCAs: srv.CertPool()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for range 2 {
		err = s.Send(context.Background(), delivery(fcmfake.Token("x"), simpleBody))
		var pe *hubcore.PushError
		if !errors.As(err, &pe) || pe.Outcome != hubcore.OutcomeInvalidCredentials || pe.Retry || pe.Status != 400 || !strings.Contains(pe.Reason, "invalid_grant") {
			t.Fatalf("Send = %v, want InvalidCredentials (400 invalid_grant)", err)
		}
	}
	if srv.Log.Accepted() != 0 {
		t.Error("a message was accepted without a token")
	}
}

func TestDropIsATransportError(t *testing.T) {
	srv, s := setup(t, fcmfake.Options{}, nil)
	tok := fcmfake.Token("drop")
	srv.Script.Push(tok, pnsfake.Action{Kind: pnsfake.Drop})
	err := s.Send(context.Background(), delivery(tok, simpleBody))
	var pe *hubcore.PushError
	if err == nil || errors.As(err, &pe) || errors.Is(err, context.Canceled) {
		t.Fatalf("Send = %v, want a transport error", err)
	}
	if err := s.Send(context.Background(), delivery(tok, simpleBody)); err != nil {
		t.Fatalf("Send after the drop: %v", err)
	}
}

func TestSlowTimesOut(t *testing.T) {
	srv, s := setup(t, fcmfake.Options{}, func(c *Config) { c.Timeout = 300 * time.Millisecond })
	tok := fcmfake.Token("slow")
	// Get the token and a connection first, so that the timeout hits the
	// send; on a loaded machine that may take more than one try.
	var err error
	for range 10 {
		if err = s.Send(context.Background(), delivery(fcmfake.Token("warm"), simpleBody)); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	srv.Script.Push(tok, pnsfake.Action{Kind: pnsfake.Slow, Delay: time.Minute})
	err = s.Send(context.Background(), delivery(tok, simpleBody))
	var pe *hubcore.PushError
	if err == nil || errors.As(err, &pe) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send = %v, want a deadline-exceeded transport error", err)
	}
}

func TestContextCancel(t *testing.T) {
	tok := fcmfake.Token("cancel")
	ctx, cancel := context.WithCancel(context.Background())
	srv, s := setup(t, fcmfake.Options{}, nil)
	srv.Log.OnArrive = func(token string, _ time.Time) {
		if token == tok {
			cancel()
		}
	}
	srv.Script.Push(tok, pnsfake.Action{Kind: pnsfake.Slow, Delay: time.Minute})
	if err := s.Send(ctx, delivery(tok, simpleBody)); !errors.Is(err, context.Canceled) || err != context.Canceled {
		t.Fatalf("Send = %v, want context.Canceled", err)
	}
	if err := s.Send(ctx, delivery(fcmfake.Token("after"), simpleBody)); err != context.Canceled {
		t.Fatalf("Send with a cancelled context = %v, want context.Canceled", err)
	}
}

func TestNewChecksConfig(t *testing.T) {
	key, err := sharedKey()
	if err != nil {
		t.Fatal(err)
	}
	var kf map[string]any
	if err := json.Unmarshal(key, &kf); err != nil {
		t.Fatal(err)
	}
	with := func(k string, v any) []byte {
		m := map[string]any{}
		for a, b := range kf {
			m[a] = b
		}
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		b, _ := json.Marshal(m)
		return b
	}
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no credentials", Config{}, "CredentialsJSON is required"},
		{"not JSON", Config{CredentialsJSON: []byte("nope")}, "not a service-account key file"},
		{"wrong type", Config{CredentialsJSON: with("type", "authorized_user")}, `type "authorized_user"`},
		{"no email", Config{CredentialsJSON: with("client_email", nil)}, "no client_email"},
		{"bad key", Config{CredentialsJSON: with("private_key", "x")}, "not PEM"},
		{"no project", Config{CredentialsJSON: with("project_id", nil)}, "no project"},
		{"bad project", Config{CredentialsJSON: key, ProjectID: "a/b"}, "not allowed in a URL"},
		{"bad endpoint", Config{CredentialsJSON: key, Endpoint: "fcm.googleapis.com"}, "Endpoint"},
		{"plain http", Config{CredentialsJSON: key, Endpoint: "http://127.0.0.1:1"}, "not https"},
		{"bad token url", Config{CredentialsJSON: key, TokenURL: "::"}, "TokenURL"},
		{"negative", Config{CredentialsJSON: key, Conns: -1}, "must not be negative"},
	}
	for _, c := range cases {
		_, err := New(c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: New = %v, want an error containing %q", c.name, err, c.want)
		}
	}
	s, err := New(Config{CredentialsJSON: key})
	if err != nil {
		t.Fatalf("New with defaults: %v", err)
	}
	if s.sendURL != DefaultEndpoint+"/v1/projects/"+project+"/messages:send" || s.jwt.TokenURL != "https://oauth2.invalid/token" || len(s.pool.slots) != defaultConns || s.pool.addr != "fcm.googleapis.com:443" {
		t.Errorf("defaults: sendURL %q, token URL %q, %d connections to %s", s.sendURL, s.jwt.TokenURL, len(s.pool.slots), s.pool.addr)
	}
	s.Close()
}

// TestHTTP2StreamLimit checks that requests use HTTP/2 with a bounded number of
// connections even when far more requests are in flight than one
// connection's stream limit.
func TestHTTP2StreamLimit(t *testing.T) {
	srv, s := setup(t, fcmfake.Options{MaxConcurrentStreams: 4}, func(c *Config) { c.Conns = 1 })
	srv.Script.SetDefault(pnsfake.Action{Kind: pnsfake.Slow, Delay: 5 * time.Millisecond})
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Send(context.Background(), delivery(fcmfake.Token(fmt.Sprint("h2-", i)), simpleBody)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got := srv.Conns(); got > 2 {
		t.Errorf("fake accepted %d connections, want 2 (one send, one token)", got)
	}
	if srv.Log.Accepted() != 64 {
		t.Errorf("accepted %d, want 64", srv.Log.Accepted())
	}
}
