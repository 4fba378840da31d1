package webpush

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/internal/pnsfake"
	fake "github.com/pushgate/pushgate/internal/pnsfake/webpush"
)

// vapidKeys returns a fresh VAPID key pair in the form web-push tools print.
func vapidKeys(t testing.TB) (priv, pub string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	d, err := k.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	p, err := k.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(d), base64.RawURLEncoding.EncodeToString(p)
}

func startFake(t testing.TB, opts fake.Options) *fake.Server {
	t.Helper()
	f := fake.New(opts)
	if err := f.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func newSender(t testing.TB, f *fake.Server, mod func(*Config)) *Sender {
	t.Helper()
	priv, _ := vapidKeys(t)
	cfg := Config{VAPIDPrivateKey: priv, Subject: "mailto:ops@example.com", RootCAs: f.CertPool(), Timeout: 10 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func subscribe(t testing.TB, f *fake.Server) hubcore.PushChannel {
	t.Helper()
	ch, err := f.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func delivery(ch hubcore.PushChannel, body string, hs ...hubcore.Header) *hubcore.Delivery {
	return &hubcore.Delivery{Platform: hubcore.Browser, Channel: ch, Rendered: hubcore.Rendered{Body: []byte(body), Headers: hs}}
}

// arrivals counts requests that reached the fake.
func arrivals(f *fake.Server) *atomic.Int64 {
	var n atomic.Int64
	f.Log.OnArrive = func(string, time.Time) { n.Add(1) }
	return &n
}

func TestSend(t *testing.T) {
	f := startFake(t, fake.Options{})
	f.Log.Keep = true
	s := newSender(t, f, nil)
	ch := subscribe(t, f)
	ctx := context.Background()

	if err := s.Send(ctx, delivery(ch, `{"title":"plain"}`)); err != nil {
		t.Fatal(err)
	}
	if err := s.Send(ctx, delivery(ch, `{"title":"with headers"}`,
		hubcore.Header{Name: "ttl", Value: "+60"},
		hubcore.Header{Name: "Urgency", Value: "high"},
		hubcore.Header{Name: "topic", Value: "order_42-a"},
		hubcore.Header{Name: "X-Ignored", Value: "1"})); err != nil {
		t.Fatal(err)
	}
	got := f.Log.For(fake.ID(ch.Endpoint))
	if len(got) != 2 {
		t.Fatalf("%d deliveries, want 2", len(got))
	}
	checks := []struct {
		body                  string
		ttl, urgency, topic   string
		contentType, encoding string
	}{
		{`{"title":"plain"}`, "86400", "", "", "application/octet-stream", "aes128gcm"},
		{`{"title":"with headers"}`, "60", "high", "order_42-a", "application/octet-stream", "aes128gcm"},
	}
	for i, c := range checks {
		d := got[i]
		h := d.Header
		if string(d.Body) != c.body || h.Get("TTL") != c.ttl || h.Get("Urgency") != c.urgency || h.Get("Topic") != c.topic ||
			h.Get("Content-Type") != c.contentType || h.Get("Content-Encoding") != c.encoding || h.Get("X-Ignored") != "" {
			t.Errorf("delivery %d: body %q headers %v; want %+v", i, d.Body, h, c)
		}
		if !strings.HasPrefix(h.Get("Authorization"), "vapid t=") || !strings.HasSuffix(h.Get("Authorization"), ", k="+s.PublicKey()) {
			t.Errorf("delivery %d: Authorization %q", i, h.Get("Authorization"))
		}
	}
}

// TestSendRFC8291Example sends the RFC's example through the fake: the
// fake, holding the RFC's browser keys, decrypts it to the RFC's plaintext.
func TestSendRFC8291Example(t *testing.T) {
	f := startFake(t, fake.Options{})
	f.Log.Keep = true
	ua, err := ecdh.P256().NewPrivateKey(unb64(t, rfcUAPrivate))
	if err != nil {
		t.Fatal(err)
	}
	ch, err := f.SubscribeWith(fake.SubscribeOptions{Key: ua, Auth: unb64(t, rfcAuth)})
	if err != nil {
		t.Fatal(err)
	}
	if ch.P256DH != rfcUAPublic {
		t.Fatalf("p256dh %s, want the RFC's", ch.P256DH)
	}
	s := newSender(t, f, nil)
	s.ephemeral = func() (*ecdh.PrivateKey, []byte, error) {
		as, salt := rfcEphemeral(t)
		return as, salt, nil
	}
	if err := s.Send(context.Background(), delivery(ch, rfcPlaintext)); err != nil {
		t.Fatal(err)
	}
	got := f.Log.For(fake.ID(ch.Endpoint))
	if len(got) != 1 || string(got[0].Body) != rfcPlaintext {
		t.Fatalf("fake got %+v", got)
	}
}

func TestSendRefusals(t *testing.T) {
	f := startFake(t, fake.Options{})
	s := newSender(t, f, nil)
	ctx := context.Background()
	cases := []struct {
		name  string
		setup func(ch hubcore.PushChannel)
		want  hubcore.PushError
	}{
		{"404", fail(f, 404, 0), hubcore.PushError{Outcome: hubcore.OutcomeExpiredChannel, Status: 404, ExpireHandle: true}},
		{"410", fail(f, 410, 0), hubcore.PushError{Outcome: hubcore.OutcomeExpiredChannel, Status: 410, ExpireHandle: true}},
		{"unsubscribed", func(ch hubcore.PushChannel) { f.Unsubscribe(fake.ID(ch.Endpoint)) },
			hubcore.PushError{Outcome: hubcore.OutcomeExpiredChannel, Status: 410, ExpireHandle: true}},
		{"413", fail(f, 413, 0), hubcore.PushError{Outcome: hubcore.OutcomeInvalidNotificationSize, Status: 413}},
		{"429", func(ch hubcore.PushChannel) {
			f.Script.Push(fake.ID(ch.Endpoint), pnsfake.Action{Kind: pnsfake.Throttle, RetryAfter: 7 * time.Second})
		}, hubcore.PushError{Outcome: hubcore.OutcomeThrottled, Status: 429, Retry: true, RetryAfter: 7 * time.Second}},
		{"400", fail(f, 400, 0), hubcore.PushError{Outcome: hubcore.OutcomePnsInterfaceError, Status: 400}},
		{"405", fail(f, 405, 0), hubcore.PushError{Outcome: hubcore.OutcomePnsInterfaceError, Status: 405}},
		{"401", fail(f, 401, 0), hubcore.PushError{Outcome: hubcore.OutcomeInvalidCredentials, Status: 401}},
		{"403", fail(f, 403, 0), hubcore.PushError{Outcome: hubcore.OutcomeInvalidCredentials, Status: 403}},
		{"500", fail(f, 500, 0), hubcore.PushError{Outcome: hubcore.OutcomePnsServerError, Status: 500, Retry: true}},
		{"502", fail(f, 502, 0), hubcore.PushError{Outcome: hubcore.OutcomePnsUnavailable, Status: 502, Retry: true}},
		{"503 Retry-After", fail(f, 503, 2*time.Second), hubcore.PushError{Outcome: hubcore.OutcomePnsUnavailable, Status: 503, Retry: true, RetryAfter: 2 * time.Second}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ch := subscribe(t, f)
			tc.setup(ch)
			refused := f.Log.Refused()
			err := s.Send(ctx, delivery(ch, `{"a":1}`))
			var pe *hubcore.PushError
			if !errors.As(err, &pe) {
				t.Fatalf("err %v, want a *PushError", err)
			}
			if pe.Reason == "" {
				t.Error("no reason kept from the answer")
			}
			got := *pe
			got.Reason, got.Err = "", nil
			if got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
			// The token was fresh: no retry for 401/403 either.
			if n := f.Log.Refused() - refused; n != 1 {
				t.Errorf("%d requests refused, want 1", n)
			}
		})
	}
}

func fail(f *fake.Server, status int, retryAfter time.Duration) func(hubcore.PushChannel) {
	return func(ch hubcore.PushChannel) {
		f.Script.Push(fake.ID(ch.Endpoint), pnsfake.Action{Kind: pnsfake.Fail, Status: status, Reason: fmt.Sprintf("scripted %d", status), RetryAfter: retryAfter})
	}
}

// TestSendRefusedLocally: deliveries that cannot succeed are refused without
// a request.
func TestSendRefusedLocally(t *testing.T) {
	f := startFake(t, fake.Options{})
	n := arrivals(f)
	s := newSender(t, f, nil)
	ch := subscribe(t, f)
	badKey := ch
	badKey.P256DH = base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{4}, 65))
	shortAuth := ch
	shortAuth.Auth = "AAAA"
	httpEndpoint := ch
	httpEndpoint.Endpoint = strings.Replace(ch.Endpoint, "https:", "http:", 1)
	noEndpoint := ch
	noEndpoint.Endpoint = ""
	cases := []struct {
		name    string
		d       *hubcore.Delivery
		outcome hubcore.OutcomeName
		expire  bool
	}{
		{"too large", delivery(ch, strings.Repeat("x", MaxPlaintext+1)), hubcore.OutcomeInvalidNotificationSize, false},
		{"TTL negative", delivery(ch, "{}", hubcore.Header{Name: "TTL", Value: "-5"}), hubcore.OutcomePnsInterfaceError, false},
		{"TTL text", delivery(ch, "{}", hubcore.Header{Name: "TTL", Value: "soon"}), hubcore.OutcomePnsInterfaceError, false},
		{"Urgency", delivery(ch, "{}", hubcore.Header{Name: "Urgency", Value: "urgent"}), hubcore.OutcomePnsInterfaceError, false},
		{"Topic long", delivery(ch, "{}", hubcore.Header{Name: "Topic", Value: strings.Repeat("t", 33)}), hubcore.OutcomePnsInterfaceError, false},
		{"Topic dot", delivery(ch, "{}", hubcore.Header{Name: "Topic", Value: "a.b"}), hubcore.OutcomePnsInterfaceError, false},
		{"p256dh off the curve", delivery(badKey, "{}"), hubcore.OutcomeBadChannel, true},
		{"auth short", delivery(shortAuth, "{}"), hubcore.OutcomeBadChannel, true},
		{"http endpoint", delivery(httpEndpoint, "{}"), hubcore.OutcomeBadChannel, true},
		{"no endpoint", delivery(noEndpoint, "{}"), hubcore.OutcomeBadChannel, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Send(context.Background(), tc.d)
			var pe *hubcore.PushError
			if !errors.As(err, &pe) || pe.Outcome != tc.outcome || pe.ExpireHandle != tc.expire || pe.Retry || pe.Status != 0 {
				t.Fatalf("err %#v, want %s (expire %v)", err, tc.outcome, tc.expire)
			}
		})
	}
	if n.Load() != 0 {
		t.Errorf("%d requests reached the push service", n.Load())
	}
	// The largest payload that fits is sent, padded-delimited into exactly
	// one 4096-byte record.
	f.Log.Keep = true
	big := strings.Repeat("y", MaxPlaintext)
	if err := s.Send(context.Background(), delivery(ch, big)); err != nil {
		t.Fatalf("%d-byte payload: %v", MaxPlaintext, err)
	}
	if got := f.Log.For(fake.ID(ch.Endpoint)); len(got) != 1 || string(got[0].Body) != big {
		t.Error("the largest payload did not arrive intact")
	}
}

// TestTokenShared: a thousand concurrent sends mint one token and share a
// couple of connections.
func TestTokenShared(t *testing.T) {
	f := startFake(t, fake.Options{})
	s := newSender(t, f, nil)
	subs := make([]hubcore.PushChannel, 10)
	for i := range subs {
		subs[i] = subscribe(t, f)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for i := range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Send(context.Background(), delivery(subs[i%len(subs)], `{"n":1}`)); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if f.Log.Accepted() != 1000 {
		t.Errorf("accepted %d, want 1000", f.Log.Accepted())
	}
	if n := f.VerifiedTokens(); n != 1 {
		t.Errorf("the push service saw %d distinct tokens, want 1", n)
	}
	if n := s.minted.Load(); n != 1 {
		t.Errorf("minted %d tokens, want 1", n)
	}
	if n := f.Conns(); n > DefaultConns {
		t.Errorf("%d connections, want at most %d", n, DefaultConns)
	}
}

// TestStreamLimit: with a push service that allows few concurrent streams,
// requests queue on the existing connections instead of opening more.
func TestStreamLimit(t *testing.T) {
	f := startFake(t, fake.Options{MaxConcurrentStreams: 3})
	s := newSender(t, f, nil)
	ch := subscribe(t, f)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 300 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Send(context.Background(), delivery(ch, "{}")); err != nil {
				if failed.Add(1) < 4 {
					t.Log(err)
				}
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d sends failed", n)
	}
	if n := f.Conns(); n > DefaultConns {
		t.Errorf("%d connections, want at most %d", n, DefaultConns)
	}
}

// TestHTTP1: a push service that does not speak HTTP/2 gets one request
// per connection, on a wider but still bounded set of connections.
func TestHTTP1(t *testing.T) {
	f := startFake(t, fake.Options{})
	s := newSender(t, f, nil)
	s.conns.tr.Protocols.SetHTTP2(false)
	ch := subscribe(t, f)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Send(context.Background(), delivery(ch, "{}")); err != nil {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d sends failed", n)
	}
	if n := f.Conns(); n > DefaultConns*h1Factor {
		t.Errorf("%d connections, want at most %d", n, DefaultConns*h1Factor)
	}
	if !s.conns.host(strings.TrimPrefix(f.URL(), "https://")).h1.Load() {
		t.Error("the host was not recognised as HTTP/1.1")
	}
}

// clock is a settable sender clock.
type clock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
}

// TestTokenRefresh: a token is re-minted before it gets within an hour of
// its expiry.
func TestTokenRefresh(t *testing.T) {
	f := startFake(t, fake.Options{})
	s := newSender(t, f, nil)
	var c clock
	s.now = c.now
	ch := subscribe(t, f)
	send := func() {
		t.Helper()
		if err := s.Send(context.Background(), delivery(ch, "{}")); err != nil {
			t.Fatal(err)
		}
	}
	send()
	c.advance(10 * time.Hour)
	send()
	if n := f.VerifiedTokens(); n != 1 {
		t.Fatalf("%d tokens after 10 h, want 1", n)
	}
	c.advance(time.Hour + time.Minute) // 11 h 1 min: the token has 59 min left
	send()
	if n := f.VerifiedTokens(); n != 2 {
		t.Fatalf("%d tokens after 11 h, want 2", n)
	}
}

// TestTokenRetry: a token the service refuses is replaced once and the
// message re-sent; a brand-new token that is refused is not.
func TestTokenRetry(t *testing.T) {
	f := startFake(t, fake.Options{})
	s := newSender(t, f, nil)
	var c clock
	s.now = c.now
	ch := subscribe(t, f)
	id := fake.ID(ch.Endpoint)
	if err := s.Send(context.Background(), delivery(ch, "{}")); err != nil {
		t.Fatal(err)
	}
	c.advance(5 * time.Minute)
	f.Script.Push(id, pnsfake.Action{Kind: pnsfake.Fail, Status: 403, Reason: "token refused"})
	if err := s.Send(context.Background(), delivery(ch, "{}")); err != nil {
		t.Fatalf("after one refusal: %v", err)
	}
	if a, r, v := f.Log.Accepted(), f.Log.Refused(), f.VerifiedTokens(); a != 2 || r != 1 || v != 2 {
		t.Errorf("accepted %d refused %d tokens %d; want 2, 1, 2", a, r, v)
	}
	// Refused again right away: the new token is not replaced.
	f.Script.Push(id, pnsfake.Action{Kind: pnsfake.Fail, Status: 401, Reason: "token refused"},
		pnsfake.Action{Kind: pnsfake.Fail, Status: 401, Reason: "token refused"})
	var pe *hubcore.PushError
	if err := s.Send(context.Background(), delivery(ch, "{}")); !errors.As(err, &pe) || pe.Outcome != hubcore.OutcomeInvalidCredentials {
		t.Fatalf("err %v, want InvalidCredentials", err)
	}
	if r, v := f.Log.Refused(), f.VerifiedTokens(); r != 2 || v != 2 {
		t.Errorf("refused %d tokens %d; want 2, 2", r, v)
	}
}

// TestWrongKey: a subscription bound to another applicationServerKey.
func TestWrongKey(t *testing.T) {
	_, otherPub := vapidKeys(t)
	f := startFake(t, fake.Options{VAPIDPublicKey: otherPub})
	s := newSender(t, f, nil)
	var pe *hubcore.PushError
	err := s.Send(context.Background(), delivery(subscribe(t, f), "{}"))
	if !errors.As(err, &pe) || pe.Outcome != hubcore.OutcomeInvalidCredentials || pe.Status != 403 || pe.ExpireHandle || pe.Retry {
		t.Fatalf("err %#v, want InvalidCredentials 403", err)
	}
	if !strings.Contains(pe.Reason, "applicationServerKey") {
		t.Errorf("reason %q does not carry the service's message", pe.Reason)
	}
}

func TestTransportFailures(t *testing.T) {
	f := startFake(t, fake.Options{})
	s := newSender(t, f, func(c *Config) { c.Timeout = time.Second })
	ch := subscribe(t, f)
	id := fake.ID(ch.Endpoint)

	f.Script.Push(id, pnsfake.Action{Kind: pnsfake.Drop})
	err := s.Send(context.Background(), delivery(ch, "{}"))
	var pe *hubcore.PushError
	if err == nil || errors.As(err, &pe) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Drop: err %v, want a transport error", err)
	}

	f.Script.Push(id, pnsfake.Action{Kind: pnsfake.Slow, Delay: time.Hour})
	err = s.Send(context.Background(), delivery(ch, "{}"))
	if !errors.Is(err, ErrTimeout) || errors.As(err, &pe) || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Slow: err %v, want ErrTimeout", err)
	}

	// The sender recovers on a new connection.
	if err := s.Send(context.Background(), delivery(ch, "{}")); err != nil {
		t.Errorf("after the failures: %v", err)
	}
}

func TestContextCanceled(t *testing.T) {
	f := startFake(t, fake.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.Log.OnArrive = func(string, time.Time) { cancel() }
	s := newSender(t, f, nil)
	ch := subscribe(t, f)
	f.Script.Push(fake.ID(ch.Endpoint), pnsfake.Action{Kind: pnsfake.Slow, Delay: time.Hour})
	if err := s.Send(ctx, delivery(ch, "{}")); err != context.Canceled {
		t.Errorf("err %v, want context.Canceled", err)
	}
	if err := s.Send(ctx, delivery(ch, "{}")); err != context.Canceled {
		t.Errorf("already canceled: err %v", err)
	}
}

func TestClose(t *testing.T) {
	f := startFake(t, fake.Options{})
	s := newSender(t, f, nil)
	ch := subscribe(t, f)
	if err := s.Send(context.Background(), delivery(ch, "{}")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := s.Send(context.Background(), delivery(ch, "{}")); err == nil {
		t.Error("Send after Close succeeded")
	}
}
