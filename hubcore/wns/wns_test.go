package wns

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/internal/pnsfake"
	wnsfake "github.com/pushgate/pushgate/internal/pnsfake/wns"
)

const (
	clientID = "ms-app://s-1-15-2-1234567890-1234567890-1234567890-1234567890-1234567890-1234567890-1234567890"
	secret   = "Secret+Key/Of=The+App"
)

func setup(t testing.TB, opts wnsfake.Options, edit func(*Config)) (*wnsfake.Server, *Sender) {
	t.Helper()
	opts.ClientID, opts.ClientSecret = clientID, secret
	srv := wnsfake.New(opts)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	cfg := Config{
		ClientID:         clientID,
		ClientSecret:     secret,
		TokenURL:         srv.TokenURL(),
		EndpointOverride: srv.URL(),
		RootCAs:          srv.CertPool(),
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

const toast = `<toast><visual><binding template="ToastGeneric"><text>Hello</text></binding></visual></toast>`

func delivery(channel, typ, body string, headers ...hubcore.Header) *hubcore.Delivery {
	if typ != "" {
		headers = append([]hubcore.Header{{Name: "X-WNS-Type", Value: typ}}, headers...)
	}
	return &hubcore.Delivery{
		Platform: hubcore.WNS,
		Channel:  hubcore.PushChannel{Handle: wnsfake.ChannelURI(channel)},
		Rendered: hubcore.Rendered{Body: []byte(body), Headers: headers},
	}
}

func TestSendEveryHeader(t *testing.T) {
	srv, s := setup(t, wnsfake.Options{}, nil)
	srv.Log.Keep = true
	ch := wnsfake.Channel("all-headers")
	d := delivery(ch, "WNS/Toast", toast,
		hubcore.Header{Name: "x-wns-cache-policy", Value: "cache"},
		hubcore.Header{Name: "X-WNS-TTL", Value: "3600"},
		hubcore.Header{Name: "X-WNS-Tag", Value: "tag1"},
		hubcore.Header{Name: "X-WNS-Group", Value: "group1"},
		hubcore.Header{Name: "X-WNS-SuppressPopup", Value: "true"},
		hubcore.Header{Name: "X-WNS-RequestForStatus", Value: "true"},
		hubcore.Header{Name: "X-WNS-Match", Value: "type:wns/toast;group=group1;tag=tag1"},
		hubcore.Header{Name: "Content-Type", Value: "application/json"}, // not WNS's: dropped
	)
	if err := s.Send(context.Background(), d); err != nil {
		t.Fatalf("Send: %v", err)
	}
	got := srv.Log.For(ch)
	if len(got) != 1 {
		t.Fatalf("fake accepted %d notifications for the channel", len(got))
	}
	if string(got[0].Body) != toast {
		t.Errorf("body %q", got[0].Body)
	}
	h := got[0].Header
	want := map[string]string{
		"X-WNS-Type": "wns/toast", "Content-Type": "text/xml", "X-WNS-Cache-Policy": "cache", "X-WNS-TTL": "3600",
		"X-WNS-Tag": "tag1", "X-WNS-Group": "group1", "X-WNS-SuppressPopup": "true", "X-WNS-RequestForStatus": "true",
		"X-WNS-Match": "type:wns/toast;group=group1;tag=tag1",
	}
	for k, v := range want {
		if g := h.Values(k); len(g) != 1 || g[0] != v {
			t.Errorf("%s = %q, want %q", k, g, v)
		}
	}
	if a := h.Get("Authorization"); !strings.HasPrefix(a, "Bearer EgA") {
		t.Errorf("Authorization = %q", a)
	}
}

func TestSendEachType(t *testing.T) {
	srv, s := setup(t, wnsfake.Options{}, nil)
	srv.Log.Keep = true
	for i, c := range []struct{ typ, body, ct string }{
		{"wns/tile", `<tile><visual><binding template="TileMedium"><text>x</text></binding></visual></tile>`, "text/xml"},
		{"wns/badge", `<?xml version="1.0" encoding="utf-8"?><badge value="3"/>`, "text/xml"},
		{"wns/raw", "\x00\x01 any bytes {\"json\":true}", "application/octet-stream"},
	} {
		ch := wnsfake.Channel(fmt.Sprint("type-", i))
		if err := s.Send(context.Background(), delivery(ch, c.typ, c.body)); err != nil {
			t.Errorf("%s: %v", c.typ, err)
			continue
		}
		got := srv.Log.For(ch)
		if len(got) != 1 || string(got[0].Body) != c.body || got[0].Header.Get("Content-Type") != c.ct {
			t.Errorf("%s: delivered %+v", c.typ, got)
		}
	}
}

func TestScriptedAnswers(t *testing.T) {
	srv, s := setup(t, wnsfake.Options{}, nil)
	cases := []struct {
		name    string
		actions []pnsfake.Action
		want    hubcore.PushError
	}{
		{"400", []pnsfake.Action{{Kind: pnsfake.Fail, Status: 400, Reason: "bad header"}},
			hubcore.PushError{Outcome: hubcore.OutcomePnsInterfaceError, Status: 400, Reason: "bad header"}},
		{"401 twice", []pnsfake.Action{{Kind: pnsfake.Fail, Status: 401}, {Kind: pnsfake.Fail, Status: 401}},
			hubcore.PushError{Outcome: hubcore.OutcomeInvalidCredentials, Status: 401, Reason: "Unauthorized"}},
		{"403", []pnsfake.Action{{Kind: pnsfake.Fail, Status: 403}},
			hubcore.PushError{Outcome: hubcore.OutcomeWrongToken, Status: 403, Reason: "Forbidden", ExpireHandle: true}},
		{"404", []pnsfake.Action{{Kind: pnsfake.Fail, Status: 404}},
			hubcore.PushError{Outcome: hubcore.OutcomeBadChannel, Status: 404, Reason: "Not Found", ExpireHandle: true}},
		{"405", []pnsfake.Action{{Kind: pnsfake.Fail, Status: 405}},
			hubcore.PushError{Outcome: hubcore.OutcomePnsInterfaceError, Status: 405, Reason: "Method Not Allowed"}},
		{"406", []pnsfake.Action{{Kind: pnsfake.Throttle, RetryAfter: 30 * time.Second}},
			hubcore.PushError{Outcome: hubcore.OutcomeThrottled, Status: 406, Reason: "The cloud service exceeded its throttle limit.", Retry: true, RetryAfter: 30 * time.Second}},
		{"410", []pnsfake.Action{{Kind: pnsfake.Fail, Status: 410}},
			hubcore.PushError{Outcome: hubcore.OutcomeExpiredChannel, Status: 410, Reason: "Gone", ExpireHandle: true}},
		{"413", []pnsfake.Action{{Kind: pnsfake.Fail, Status: 413}},
			hubcore.PushError{Outcome: hubcore.OutcomeInvalidNotificationSize, Status: 413, Reason: "Request Entity Too Large"}},
		{"500", []pnsfake.Action{{Kind: pnsfake.Fail, Status: 500}},
			hubcore.PushError{Outcome: hubcore.OutcomePnsServerError, Status: 500, Reason: "Internal Server Error", Retry: true}},
		{"503", []pnsfake.Action{{Kind: pnsfake.Fail, Status: 503}},
			hubcore.PushError{Outcome: hubcore.OutcomePnsUnavailable, Status: 503, Reason: "Service Unavailable", Retry: true}},
		{"dropped", []pnsfake.Action{{Kind: pnsfake.Fail, Status: 200, Reason: "dropped"}},
			hubcore.PushError{Outcome: hubcore.OutcomeDropped, Status: 200, Reason: "dropped"}},
		{"disconnected", []pnsfake.Action{{Kind: pnsfake.Fail, Status: 200, Reason: "disconnected"}},
			hubcore.PushError{Outcome: hubcore.OutcomeChannelDisconnected, Status: 200, Reason: "dropped: device disconnected"}},
		{"channel throttled", []pnsfake.Action{{Kind: pnsfake.Fail, Status: 200, Reason: "channelThrottled"}},
			hubcore.PushError{Outcome: hubcore.OutcomeChannelThrottled, Status: 200, Reason: "channelThrottled", Retry: true}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ch := wnsfake.Channel(fmt.Sprint("scripted-", i))
			srv.Script.Push(ch, c.actions...)
			err := s.Send(context.Background(), delivery(ch, "wns/toast", toast))
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

func TestFakeChecksMapped(t *testing.T) {
	srv, s := setup(t, wnsfake.Options{}, nil)
	gone, foreign := wnsfake.Channel("gone"), wnsfake.Channel("foreign")
	srv.Unregister(gone)
	srv.BindChannel(foreign, "ms-app://someone-else")
	cases := []struct {
		name    string
		d       *hubcore.Delivery
		outcome hubcore.OutcomeName
		expire  bool
	}{
		{"expired channel", delivery(gone, "wns/toast", toast), hubcore.OutcomeExpiredChannel, true},
		{"other app's channel", delivery(foreign, "wns/toast", toast), hubcore.OutcomeWrongToken, true},
		{"malformed channel", delivery("not*base64", "wns/toast", toast), hubcore.OutcomeBadChannel, true},
		{"too big", delivery(wnsfake.Channel("big"), "wns/raw", strings.Repeat("x", 5001)), hubcore.OutcomeInvalidNotificationSize, false},
		{"not XML", delivery(wnsfake.Channel("xml"), "wns/toast", "<toast>"), hubcore.OutcomePnsInterfaceError, false},
		{"wrong root", delivery(wnsfake.Channel("root"), "wns/tile", toast), hubcore.OutcomePnsInterfaceError, false},
		{"bad cache policy", delivery(wnsfake.Channel("cp"), "wns/toast", toast, hubcore.Header{Name: "X-WNS-Cache-Policy", Value: "always"}), hubcore.OutcomePnsInterfaceError, false},
		{"unknown header", delivery(wnsfake.Channel("uh"), "wns/toast", toast, hubcore.Header{Name: "X-WNS-Priority", Value: "1"}), hubcore.OutcomePnsInterfaceError, false},
	}
	for _, c := range cases {
		err := s.Send(context.Background(), c.d)
		var pe *hubcore.PushError
		if !errors.As(err, &pe) || pe.Outcome != c.outcome || pe.ExpireHandle != c.expire || pe.Retry {
			t.Errorf("%s: Send = %v, want %s (expire %v)", c.name, err, c.outcome, c.expire)
		}
	}
}

func TestRefusedLocally(t *testing.T) {
	srv, s := setup(t, wnsfake.Options{}, nil)
	arrived := make(chan string, 16)
	srv.Log.OnArrive = func(token string, _ time.Time) { arrived <- token }
	ch := wnsfake.Channel("local")
	for _, c := range []struct {
		name    string
		d       *hubcore.Delivery
		outcome hubcore.OutcomeName
	}{
		{"no type", delivery(ch, "", toast), hubcore.OutcomeInvalidPayload},
		{"bad type", delivery(ch, "wns/tost", toast), hubcore.OutcomeInvalidPayload},
		{"http channel", &hubcore.Delivery{Channel: hubcore.PushChannel{Handle: "http://db5.notify.windows.com/?token=x"}, Rendered: hubcore.Rendered{Headers: []hubcore.Header{{Name: "X-WNS-Type", Value: "wns/raw"}}}}, hubcore.OutcomeBadChannel},
		{"foreign host", &hubcore.Delivery{Channel: hubcore.PushChannel{Handle: "https://evil.example/?token=x"}, Rendered: hubcore.Rendered{Headers: []hubcore.Header{{Name: "X-WNS-Type", Value: "wns/raw"}}}}, hubcore.OutcomeBadChannel},
		{"look-alike host", &hubcore.Delivery{Channel: hubcore.PushChannel{Handle: "https://notify.windows.com.evil.example/w/?token=x"}, Rendered: hubcore.Rendered{Headers: []hubcore.Header{{Name: "X-WNS-Type", Value: "wns/raw"}}}}, hubcore.OutcomeBadChannel},
		{"user info", &hubcore.Delivery{Channel: hubcore.PushChannel{Handle: "https://evil.example@db5.notify.windows.com/?token=x"}, Rendered: hubcore.Rendered{Headers: []hubcore.Header{{Name: "X-WNS-Type", Value: "wns/raw"}}}}, hubcore.OutcomeBadChannel},
	} {
		err := s.Send(context.Background(), c.d)
		var pe *hubcore.PushError
		if !errors.As(err, &pe) || pe.Outcome != c.outcome || pe.Retry {
			t.Errorf("%s: Send = %v, want %s", c.name, err, c.outcome)
		}
	}
	select {
	case tok := <-arrived:
		t.Errorf("a refused delivery reached the fake (%q)", tok)
	default:
	}
	if srv.TokensIssued() != 0 {
		t.Errorf("a token was minted for deliveries that were never sent")
	}
}

func TestManySendsOneToken(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprint("http2=", h2), func(t *testing.T) {
			conns := 8
			if h2 {
				conns = 2
			}
			srv, s := setup(t, wnsfake.Options{}, func(c *Config) { c.HTTP2 = h2; c.Conns = conns })
			const n, workers = 1000, 100
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range n / workers {
						if err := s.Send(context.Background(), delivery(wnsfake.Channel(fmt.Sprint(w, "-", i)), "wns/toast", toast)); err != nil {
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
			// The sends' connections, and one to the token endpoint.
			if got := srv.Conns(); got > int64(conns)+1 {
				t.Errorf("fake accepted %d connections, want at most %d", got, conns+1)
			}
		})
	}
}

func TestRefreshOnUnauthorized(t *testing.T) {
	srv, s := setup(t, wnsfake.Options{}, nil)
	ctx := context.Background()
	if err := s.Send(ctx, delivery(wnsfake.Channel("first"), "wns/toast", toast)); err != nil {
		t.Fatal(err)
	}
	srv.ExpireTokens()
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Send(ctx, delivery(wnsfake.Channel(fmt.Sprint("after-", i)), "wns/toast", toast)); err != nil {
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

func TestRefreshAhead(t *testing.T) {
	srv, s := setup(t, wnsfake.Options{}, nil)
	send := func() {
		t.Helper()
		if err := s.Send(context.Background(), delivery(wnsfake.Channel("ahead"), "wns/badge", `<badge value="1"/>`)); err != nil {
			t.Fatal(err)
		}
	}
	send()
	first := s.tokens.Current()
	if first == nil || time.Until(first.RefreshAt) < 23*time.Hour {
		t.Fatalf("token cached for refresh at %v, want about a day minus 5 minutes", first)
	}
	s.tokens.Now = func() time.Time { return first.RefreshAt.Add(time.Millisecond) }
	send()
	s.tokens.WaitMint()
	if got := srv.TokensIssued(); got != 2 {
		t.Fatalf("tokens issued = %d after refreshAt, want 2", got)
	}
	second := s.tokens.Current()
	s.tokens.Now = func() time.Time { return second.UsableUntil.Add(time.Millisecond) }
	send()
	if got := srv.TokensIssued(); got != 3 {
		t.Errorf("tokens issued = %d after usableUntil, want 3", got)
	}
}

func TestCredentialRefused(t *testing.T) {
	srv, s := setup(t, wnsfake.Options{}, func(c *Config) { c.ClientSecret = "wrong" })
	for range 2 {
		err := s.Send(context.Background(), delivery(wnsfake.Channel("x"), "wns/toast", toast))
		var pe *hubcore.PushError
		if !errors.As(err, &pe) || pe.Outcome != hubcore.OutcomeInvalidCredentials || pe.Retry || pe.Status != 400 || !strings.Contains(pe.Reason, "invalid_client") {
			t.Fatalf("Send = %v, want InvalidCredentials (400 invalid_client)", err)
		}
	}
	if srv.Log.Accepted() != 0 || srv.TokensIssued() != 0 {
		t.Error("a notification or token got through")
	}
}

func TestDropIsATransportError(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		srv, s := setup(t, wnsfake.Options{}, func(c *Config) { c.HTTP2 = h2 })
		ch := wnsfake.Channel("drop")
		srv.Script.Push(ch, pnsfake.Action{Kind: pnsfake.Drop})
		err := s.Send(context.Background(), delivery(ch, "wns/toast", toast))
		var pe *hubcore.PushError
		if err == nil || errors.As(err, &pe) || errors.Is(err, context.Canceled) {
			t.Fatalf("http2=%v: Send = %v, want a transport error", h2, err)
		}
		if err := s.Send(context.Background(), delivery(ch, "wns/toast", toast)); err != nil {
			t.Fatalf("http2=%v: Send after the drop: %v", h2, err)
		}
	}
}

func TestSlowTimesOut(t *testing.T) {
	srv, s := setup(t, wnsfake.Options{}, func(c *Config) { c.Timeout = 300 * time.Millisecond })
	// Get the token and a connection first, so that the timeout hits the
	// send; on a loaded machine that may take more than one try.
	var err error
	for range 10 {
		if err = s.Send(context.Background(), delivery(wnsfake.Channel("warm"), "wns/toast", toast)); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	ch := wnsfake.Channel("slow")
	srv.Script.Push(ch, pnsfake.Action{Kind: pnsfake.Slow, Delay: time.Minute})
	err = s.Send(context.Background(), delivery(ch, "wns/toast", toast))
	var pe *hubcore.PushError
	if err == nil || errors.As(err, &pe) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send = %v, want a deadline-exceeded transport error", err)
	}
}

func TestContextCancel(t *testing.T) {
	ch := wnsfake.Channel("cancel")
	ctx, cancel := context.WithCancel(context.Background())
	srv, s := setup(t, wnsfake.Options{}, nil)
	srv.Log.OnArrive = func(token string, _ time.Time) {
		if token == ch {
			cancel()
		}
	}
	srv.Script.Push(ch, pnsfake.Action{Kind: pnsfake.Slow, Delay: time.Minute})
	if err := s.Send(ctx, delivery(ch, "wns/toast", toast)); err != context.Canceled {
		t.Fatalf("Send = %v, want context.Canceled", err)
	}
	if err := s.Send(ctx, delivery(wnsfake.Channel("after"), "wns/toast", toast)); err != context.Canceled {
		t.Fatalf("Send with a cancelled context = %v", err)
	}
}

func TestNewChecksConfig(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no id", Config{ClientSecret: "s"}, "required"},
		{"no secret", Config{ClientID: "i"}, "required"},
		{"bad token url", Config{ClientID: "i", ClientSecret: "s", TokenURL: "http://login.live.com/accesstoken.srf"}, "TokenURL"},
		{"override with path", Config{ClientID: "i", ClientSecret: "s", EndpointOverride: "https://127.0.0.1:1/w/"}, "just https://host"},
		{"override not https", Config{ClientID: "i", ClientSecret: "s", EndpointOverride: "http://127.0.0.1:1"}, "EndpointOverride"},
		{"bad allowed host", Config{ClientID: "i", ClientSecret: "s", AllowedHosts: []string{"https://x"}}, "AllowedHosts"},
		{"negative", Config{ClientID: "i", ClientSecret: "s", Timeout: -1}, "must not be negative"},
	}
	for _, c := range cases {
		if _, err := New(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: New = %v, want an error containing %q", c.name, err, c.want)
		}
	}
	s, err := New(Config{ClientID: "i", ClientSecret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.cc.TokenURL != DefaultTokenURL || s.tr.MaxConnsPerHost != defaultConnsHTTP1 || s.allowed[0] != DefaultHostSuffix {
		t.Errorf("defaults: %q %d %v", s.cc.TokenURL, s.tr.MaxConnsPerHost, s.allowed)
	}
}
