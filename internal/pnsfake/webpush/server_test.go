package webpush

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushgate/pushgate/internal/pnsfake"
)

func TestAcceptDecrypts(t *testing.T) {
	s := start(t, Options{})
	s.Log.Keep = true
	c := httpClient(t, s)
	a := newAppServer(t)
	ch, err := s.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ch.Endpoint, s.URL()+"/push/") {
		t.Fatalf("endpoint %q not under %s/push/", ch.Endpoint, s.URL())
	}
	msg := []byte(`{"title":"hello"}`)
	r := pushRequest(t, s, a, ch, seal(t, ch, msg, sealOpts{padding: 7}))
	r.Header.Set("Urgency", "high")
	r.Header.Set("Topic", "news_1-a")
	r.Header.Set("TTL", "99999999999")
	resp, _ := do(t, c, r)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("status %d, want 201", resp.StatusCode)
	}
	if resp.ProtoMajor != 2 {
		t.Errorf("served over %s, want HTTP/2", resp.Proto)
	}
	if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, s.URL()+"/message/") {
		t.Errorf("Location %q", loc)
	}
	if ttl := resp.Header.Get("TTL"); ttl != "2592000" {
		t.Errorf("applied TTL %q, want the 30-day cap", ttl)
	}
	got := s.Log.For(ID(ch.Endpoint))
	if len(got) != 1 || !bytes.Equal(got[0].Body, msg) {
		t.Fatalf("log %+v, want one delivery of %q", got, msg)
	}
	if got[0].Header.Get("Urgency") != "high" || got[0].Header.Get("Topic") != "news_1-a" {
		t.Errorf("logged headers %v", got[0].Header)
	}
	if s.Log.Accepted() != 1 || s.Log.Refused() != 0 {
		t.Errorf("accepted %d refused %d", s.Log.Accepted(), s.Log.Refused())
	}
}

// TestEmptyPush: RFC 8030 allows a push message without payload, and then
// without content coding.
func TestEmptyPush(t *testing.T) {
	s := start(t, Options{})
	c := httpClient(t, s)
	a := newAppServer(t)
	ch, _ := s.Subscribe()
	r := pushRequest(t, s, a, ch, nil)
	r.Header.Del("Content-Encoding")
	r.Body, r.ContentLength = http.NoBody, 0
	if resp, e := do(t, c, r); resp.StatusCode != http.StatusCreated {
		t.Fatalf("status %d %+v, want 201", resp.StatusCode, e)
	}
}

// TestStrict sends requests that break one rule each, with a raw client, and
// checks the documented answer.
func TestStrict(t *testing.T) {
	a := newAppServer(t)
	other := newAppServer(t)
	s := start(t, Options{})
	c := httpClient(t, s)
	ch, err := s.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	bound, err := s.SubscribeWith(SubscribeOptions{ApplicationServerKey: other.k})
	if err != nil {
		t.Fatal(err)
	}
	gone, _ := s.Subscribe()
	if !s.Unsubscribe(ID(gone.Endpoint)) {
		t.Fatal("Unsubscribe: unknown id")
	}
	now := time.Now()
	hdr := `{"typ":"JWT","alg":"ES256"}`
	vapid := func(jwt string) string { return "vapid t=" + jwt + ", k=" + a.k }
	setAuth := func(v string) func(*http.Request) {
		return func(r *http.Request) { r.Header.Set("Authorization", v) }
	}
	body := func(o sealOpts) func(*http.Request) {
		return func(r *http.Request) { setBody(r, seal(t, ch, []byte("hi"), o)) }
	}
	asKey, _ := ecdh.P256().GenerateKey(rand.Reader)

	cases := []struct {
		name   string
		target string // endpoint; default ch
		mutate func(*http.Request)
		status int
		errno  int
		header string // a header the answer must carry
	}{
		{name: "GET", mutate: func(r *http.Request) { r.Method = http.MethodGet }, status: 405, header: "Allow"},
		{name: "PUT", mutate: func(r *http.Request) { r.Method = http.MethodPut }, status: 405, header: "Allow"},
		{name: "unknown subscription", target: s.URL() + "/push/nope", status: 404, errno: 102},
		{name: "not a push path", target: s.URL() + "/other", status: 404, errno: 102},
		{name: "unsubscribed", target: gone.Endpoint, status: 410, errno: 103},
		{name: "TTL missing", mutate: func(r *http.Request) { r.Header.Del("TTL") }, status: 400, errno: 111},
		{name: "TTL negative", mutate: func(r *http.Request) { r.Header.Set("TTL", "-1") }, status: 400, errno: 112},
		{name: "TTL not a number", mutate: func(r *http.Request) { r.Header.Set("TTL", "1h") }, status: 400, errno: 112},
		{name: "TTL signed", mutate: func(r *http.Request) { r.Header.Set("TTL", "+5") }, status: 400, errno: 112},
		{name: "TTL empty", mutate: func(r *http.Request) { r.Header.Set("TTL", "") }, status: 400, errno: 112},
		{name: "TTL twice", mutate: func(r *http.Request) { r.Header.Add("TTL", "5") }, status: 400, errno: 112},
		{name: "Urgency unknown", mutate: func(r *http.Request) { r.Header.Set("Urgency", "urgent") }, status: 400},
		{name: "Urgency upper case", mutate: func(r *http.Request) { r.Header.Set("Urgency", "High") }, status: 400},
		{name: "Topic too long", mutate: func(r *http.Request) { r.Header.Set("Topic", strings.Repeat("a", 33)) }, status: 400, errno: 113},
		{name: "Topic bad character", mutate: func(r *http.Request) { r.Header.Set("Topic", "a.b") }, status: 400, errno: 113},
		{name: "Content-Encoding missing", mutate: func(r *http.Request) { r.Header.Del("Content-Encoding") }, status: 415, errno: 110, header: "Accept-Encoding"},
		{name: "Content-Encoding aesgcm", mutate: func(r *http.Request) { r.Header.Set("Content-Encoding", "aesgcm") }, status: 415, errno: 110},
		{name: "Authorization missing", mutate: func(r *http.Request) { r.Header.Del("Authorization") }, status: 401, errno: 109, header: "WWW-Authenticate"},
		{name: "Authorization bearer", mutate: setAuth("Bearer abc"), status: 401, errno: 109},
		{name: "Authorization legacy WebPush", mutate: setAuth("WebPush " + a.jwtWith(t, hdr, a.claims(s.URL(), now.Add(time.Hour), "mailto:a@b.c"))), status: 401, errno: 109},
		{name: "vapid without k", mutate: setAuth("vapid t=" + a.jwtWith(t, hdr, a.claims(s.URL(), now.Add(time.Hour), "mailto:a@b.c"))), status: 401, errno: 109},
		{name: "vapid t twice", mutate: setAuth("vapid t=a.b.c, t=a.b.c, k=" + a.k), status: 401, errno: 109},
		{name: "JWT not three parts", mutate: setAuth(vapid("abc.def")), status: 403, errno: 109},
		{name: "JWT alg HS256", mutate: setAuth(vapid(a.jwtWith(t, `{"typ":"JWT","alg":"HS256"}`, a.claims(s.URL(), now.Add(time.Hour), "mailto:a@b.c")))), status: 403, errno: 109},
		{name: "JWT signed by another key", mutate: setAuth(vapid(other.jwtWith(t, hdr, a.claims(s.URL(), now.Add(time.Hour), "mailto:a@b.c")))), status: 403, errno: 109},
		{name: "JWT tampered", mutate: setAuth(vapid(a.jwtWith(t, hdr, a.claims(s.URL(), now.Add(time.Hour), "mailto:a@b.c")) + "A")), status: 403, errno: 109},
		{name: "JWT claims swapped", mutate: setAuth(vapid(func() string {
			j1 := strings.Split(a.jwtWith(t, hdr, a.claims(s.URL(), now.Add(time.Hour), "mailto:a@b.c")), ".")
			j2 := strings.Split(a.jwtWith(t, hdr, a.claims(s.URL(), now.Add(2*time.Hour), "mailto:a@b.c")), ".")
			return j1[0] + "." + j2[1] + "." + j1[2]
		}())), status: 403, errno: 109},
		{name: "aud another origin", mutate: setAuth(vapid(a.jwtWith(t, hdr, a.claims("https://fcm.googleapis.com", now.Add(time.Hour), "mailto:a@b.c")))), status: 403, errno: 109},
		{name: "aud with path", mutate: setAuth(vapid(a.jwtWith(t, hdr, a.claims(s.URL()+"/", now.Add(time.Hour), "mailto:a@b.c")))), status: 403, errno: 109},
		{name: "exp past", mutate: setAuth(vapid(a.jwtWith(t, hdr, a.claims(s.URL(), now.Add(-time.Minute), "mailto:a@b.c")))), status: 403, errno: 109},
		{name: "exp over 24h", mutate: setAuth(vapid(a.jwtWith(t, hdr, a.claims(s.URL(), now.Add(25*time.Hour), "mailto:a@b.c")))), status: 403, errno: 109},
		{name: "exp missing", mutate: setAuth(vapid(a.jwtWith(t, hdr, `{"aud":"`+s.URL()+`","sub":"mailto:a@b.c"}`))), status: 403, errno: 109},
		{name: "sub missing", mutate: setAuth(vapid(a.jwtWith(t, hdr, `{"aud":"`+s.URL()+`","exp":`+strconv.FormatInt(now.Add(time.Hour).Unix(), 10)+`}`))), status: 403, errno: 109},
		{name: "sub http", mutate: setAuth(vapid(a.jwtWith(t, hdr, a.claims(s.URL(), now.Add(time.Hour), "http://example.com")))), status: 403, errno: 109},
		{name: "k not a key", mutate: setAuth("vapid t=" + a.jwtWith(t, hdr, a.claims(s.URL(), now.Add(time.Hour), "mailto:a@b.c")) + ", k=AAAA"), status: 403, errno: 109},
		{name: "key not the subscription's", target: bound.Endpoint, status: 403, errno: 109},
		{name: "body over 4096", mutate: func(r *http.Request) { setBody(r, make([]byte, 4097)) }, status: 413, errno: 104},
		{name: "body garbage", mutate: func(r *http.Request) { setBody(r, bytes.Repeat([]byte{7}, 200)) }, status: 400, errno: 110},
		{name: "body empty with coding", mutate: func(r *http.Request) { setBody(r, nil) }, status: 400, errno: 110},
		{name: "record size below 18", mutate: body(sealOpts{rs: 17}), status: 400, errno: 110},
		{name: "two records", mutate: body(sealOpts{rs: 18}), status: 400, errno: 110},
		{name: "idlen 0", mutate: body(sealOpts{idlen: 1}), status: 400, errno: 110},
		{name: "not-last delimiter", mutate: body(sealOpts{delimiter: 1}), status: 400, errno: 110},
		{name: "no delimiter", mutate: body(sealOpts{noDelim: true}), status: 400, errno: 110},
		{name: "message key is the VAPID key", mutate: func(r *http.Request) {
			k, err := a.key.ECDH()
			if err != nil {
				t.Fatal(err)
			}
			setBody(r, seal(t, ch, []byte("hi"), sealOpts{as: k}))
		}, status: 400, errno: 110},
		{name: "encrypted for another subscription", mutate: func(r *http.Request) {
			setBody(r, seal(t, bound, []byte("hi"), sealOpts{as: asKey}))
		}, status: 400, errno: 110},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			target := ch
			if tc.target != "" {
				target.Endpoint = tc.target
			}
			r := pushRequest(t, s, a, ch, seal(t, ch, []byte(`{"a":1}`), sealOpts{}))
			r.URL, _ = r.URL.Parse(target.Endpoint)
			r.Host = r.URL.Host
			if tc.mutate != nil {
				tc.mutate(r)
			}
			before := s.Log.Refused()
			resp, e := do(t, c, r)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d (%+v), want %d", resp.StatusCode, e, tc.status)
			}
			if e.Errno != tc.errno {
				t.Errorf("errno %d (%s), want %d", e.Errno, e.Message, tc.errno)
			}
			if e.Message == "" {
				t.Error("no message")
			}
			t.Logf("%d %s", resp.StatusCode, e.Message)
			if tc.header != "" && resp.Header.Get(tc.header) == "" {
				t.Errorf("answer lacks %s", tc.header)
			}
			if s.Log.Refused() != before+1 {
				t.Errorf("refusals %d, want %d", s.Log.Refused(), before+1)
			}
		})
	}
	if n := s.Log.Accepted(); n != 0 {
		t.Errorf("accepted %d bad requests", n)
	}
}

func TestBoundSubscription(t *testing.T) {
	a := newAppServer(t)
	s := start(t, Options{VAPIDPublicKey: a.k})
	c := httpClient(t, s)
	ch, _ := s.Subscribe()
	r := pushRequest(t, s, a, ch, seal(t, ch, []byte("x"), sealOpts{}))
	if resp, e := do(t, c, r); resp.StatusCode != 201 {
		t.Fatalf("bound key: status %d %+v", resp.StatusCode, e)
	}
	b := newAppServer(t)
	r = pushRequest(t, s, b, ch, seal(t, ch, []byte("x"), sealOpts{}))
	if resp, _ := do(t, c, r); resp.StatusCode != 403 {
		t.Fatalf("other key: status %d, want 403", resp.StatusCode)
	}
	if bad := New(Options{VAPIDPublicKey: "nope"}); bad.Start() == nil {
		t.Error("Start accepted a malformed VAPIDPublicKey")
	}
}

// TestTokenCache: one verification per distinct Authorization value, and a
// cached token is still refused once it expires.
func TestTokenCache(t *testing.T) {
	s := start(t, Options{})
	c := httpClient(t, s)
	a := newAppServer(t)
	ch, _ := s.Subscribe()
	auth := a.auth(t, s)
	for range 5 {
		r := pushRequest(t, s, a, ch, seal(t, ch, []byte("x"), sealOpts{}))
		r.Header.Set("Authorization", auth)
		if resp, e := do(t, c, r); resp.StatusCode != 201 {
			t.Fatalf("status %d %+v", resp.StatusCode, e)
		}
	}
	if n := s.VerifiedTokens(); n != 1 {
		t.Errorf("verified %d tokens, want 1", n)
	}
	g, ok := s.grants.get(auth)
	if !ok {
		t.Fatal("token not cached")
	}
	if err := g.current(time.Unix(g.exp, 0)); err == nil {
		t.Error("a cached token is accepted at its expiry")
	}
}

func TestScript(t *testing.T) {
	s := start(t, Options{})
	c := httpClient(t, s)
	a := newAppServer(t)
	ch, _ := s.Subscribe()
	id := ID(ch.Endpoint)
	send := func() (*http.Response, errBody) {
		return do(t, c, pushRequest(t, s, a, ch, seal(t, ch, []byte("x"), sealOpts{})))
	}

	s.Script.Push(id, pnsfake.Action{Kind: pnsfake.Fail, Status: 503, Reason: "maintenance", RetryAfter: 3 * time.Second})
	resp, e := send()
	if resp.StatusCode != 503 || e.Message != "maintenance" || resp.Header.Get("Retry-After") != "3" {
		t.Errorf("Fail: %d %+v Retry-After %q", resp.StatusCode, e, resp.Header.Get("Retry-After"))
	}
	s.Script.Push(id, pnsfake.Action{Kind: pnsfake.Throttle, RetryAfter: 1500 * time.Millisecond})
	resp, _ = send()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "2" {
		t.Errorf("Throttle: %d Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	s.Script.Push(id, pnsfake.Action{Kind: pnsfake.Slow, Delay: time.Millisecond})
	if resp, _ = send(); resp.StatusCode != 201 {
		t.Errorf("Slow: %d", resp.StatusCode)
	}

	// Slow past the client's patience: the fake gives up with the client.
	s.Script.Push(id, pnsfake.Action{Kind: pnsfake.Slow, Delay: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	r := pushRequest(t, s, a, ch, seal(t, ch, []byte("x"), sealOpts{})).WithContext(ctx)
	if _, err := c.Do(r); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Slow(1h): err %v, want the client's deadline", err)
	}

	s.Script.Push(id, pnsfake.Action{Kind: pnsfake.Drop})
	if _, err := c.Do(pushRequest(t, s, a, ch, seal(t, ch, []byte("x"), sealOpts{}))); err == nil {
		t.Error("Drop: got an answer")
	}
	if resp, _ = send(); resp.StatusCode != 201 {
		t.Errorf("after Drop: %d", resp.StatusCode)
	}
	if s.Log.Accepted() != 2 || s.Log.Refused() != 2 {
		t.Errorf("accepted %d refused %d, want 2 and 2", s.Log.Accepted(), s.Log.Refused())
	}
}

func TestConnsCounted(t *testing.T) {
	s := start(t, Options{})
	c := httpClient(t, s)
	a := newAppServer(t)
	ch, _ := s.Subscribe()
	var arrived sync.WaitGroup
	arrived.Add(20)
	s.Log.OnArrive = func(string, time.Time) { arrived.Done() }
	r := pushRequest(t, s, a, ch, seal(t, ch, []byte("x"), sealOpts{}))
	if resp, _ := do(t, c, r); resp.StatusCode != 201 {
		t.Fatal(resp.Status)
	}
	var wg sync.WaitGroup
	for range 19 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := pushRequest(t, s, a, ch, seal(t, ch, []byte("x"), sealOpts{}))
			resp, err := c.Do(r)
			if err == nil {
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	arrived.Wait()
	if n := s.Conns(); n != 1 {
		t.Errorf("%d connections for one HTTP/2 client, want 1", n)
	}
}

func TestSubscribeBeforeStart(t *testing.T) {
	if _, err := New(Options{}).Subscribe(); err == nil {
		t.Error("Subscribe before Start succeeded")
	}
}

func TestOriginOption(t *testing.T) {
	s := start(t, Options{Origin: "https://push.example.test:8443/"})
	if s.URL() != "https://push.example.test:8443" {
		t.Fatalf("URL %q", s.URL())
	}
	ch, err := s.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ch.Endpoint, "https://push.example.test:8443/push/") || ID(ch.Endpoint) == "" {
		t.Errorf("endpoint %q", ch.Endpoint)
	}
	if ID("https://x/other") != "" {
		t.Error("ID of a foreign URL")
	}
}
