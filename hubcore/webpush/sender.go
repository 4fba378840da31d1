package webpush

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/internal/pnshttp"
)

// ErrTimeout is returned (wrapped) when a push service did not answer within
// Config.Timeout. It is a transport failure: the engine retries it. It does
// not wrap context.DeadlineExceeded, which would read as the caller's own
// deadline.
var ErrTimeout = errors.New("webpush: push service did not answer in time")

var errClosed = errors.New("webpush: sender is closed")

// Sender sends Web Push messages. Create it with New.
type Sender struct {
	cfg    Config
	key    *vapidKey
	ttl    []string // the default TTL header value
	conns  *conns
	tokens tokens
	closed atomic.Bool
	minted atomic.Int64

	// Test hooks: the clock, and the ephemeral key and salt of a message
	// (the RFC 8291 example fixes both).
	now       func() time.Time
	ephemeral func() (*ecdh.PrivateKey, []byte, error)
}

// New checks cfg and returns a Sender. It opens no connection: each push
// service host is dialed on first use.
func New(cfg Config) (*Sender, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	key, err := parseVAPIDKeys(cfg.VAPIDPrivateKey, cfg.VAPIDPublicKey)
	if err != nil {
		return nil, err
	}
	s := &Sender{
		cfg:       cfg,
		key:       key,
		ttl:       []string{strconv.FormatInt(int64(cfg.TTL/time.Second), 10)},
		now:       time.Now,
		ephemeral: randomEphemeral,
	}
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		TLSClientConfig:     &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12},
		Protocols:           new(http.Protocols),
		HTTP2:               &http.HTTP2Config{SendPingTimeout: 30 * time.Second},
		TLSHandshakeTimeout: 10 * time.Second,
		// Connections to a push service no longer sent to are closed
		// after a while; the services close idle ones themselves too.
		IdleConnTimeout:    2 * time.Minute,
		DisableCompression: true,
	}
	tr.Protocols.SetHTTP1(true)
	tr.Protocols.SetHTTP2(true)
	s.conns = newConns(tr, cfg.Conns)
	return s, nil
}

func randomEphemeral() (*ecdh.PrivateKey, []byte, error) {
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	salt := make([]byte, saltLen)
	rand.Read(salt)
	return k, salt, nil
}

// PublicKey returns the base64url VAPID public key: the applicationServerKey
// web apps must subscribe with.
func (s *Sender) PublicKey() string { return s.key.k }

// Close closes every connection, failing sends in flight; Send fails
// afterwards.
func (s *Sender) Close() error {
	s.closed.Store(true)
	s.conns.close()
	return nil
}

// Header values shared by every request; the transport only reads them.
var (
	hdrContentEncoding = []string{"aes128gcm"}
	hdrContentType     = []string{"application/octet-stream"}
)

// Send encrypts d.Body for the subscription in d.Channel and posts it to the
// subscription's push resource. It returns nil when the push service
// accepted the message, a *hubcore.PushError when it refused it or when the
// delivery cannot be sent at all (bad subscription keys, bad headers, too
// large), ctx.Err() when ctx ends, and any other error for a transport
// failure (ErrTimeout among them).
func (s *Sender) Send(ctx context.Context, d *hubcore.Delivery) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed.Load() {
		return errClosed
	}
	ch := &d.Channel
	ua, auth, perr := subscriptionKeys(ch)
	if perr != nil {
		return perr
	}
	if len(d.Body) > MaxPlaintext {
		return &hubcore.PushError{Outcome: hubcore.OutcomeInvalidNotificationSize,
			Reason: fmt.Sprintf("payload of %d bytes exceeds the %d that fit one 4096-byte aes128gcm record", len(d.Body), MaxPlaintext)}
	}
	hdr := make(http.Header, 7)
	hdr["Content-Encoding"] = hdrContentEncoding
	hdr["Content-Type"] = hdrContentType
	hdr["Ttl"] = s.ttl
	if perr := pushHeaders(hdr, d.Headers); perr != nil {
		return perr
	}

	rctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, ch.Endpoint, nil)
	if err != nil || req.URL.Scheme != "https" || req.URL.Host == "" || req.URL.User != nil {
		return &hubcore.PushError{Outcome: hubcore.OutcomeBadChannel, ExpireHandle: true,
			Reason: "the subscription endpoint is not an absolute https URL"}
	}
	req.Header = hdr

	as, salt, err := s.ephemeral()
	if err != nil {
		return err
	}
	body, err := seal(d.Body, ua, auth, as, salt)
	if err != nil {
		return &hubcore.PushError{Outcome: hubcore.OutcomeBadChannel, ExpireHandle: true, Reason: "cannot encrypt for the subscription: " + err.Error(), Err: err}
	}
	setBody(req, body)

	host := originKey(req.URL.Host)
	slot := s.tokens.slot(host)
	tok, err := s.token(slot, host)
	if err != nil {
		return err
	}
	hdr["Authorization"] = tok.auth

	status, perr, err := s.roundTrip(ctx, rctx, req, body)
	if err != nil || perr == nil {
		return err
	}
	if status == http.StatusUnauthorized || status == http.StatusForbidden {
		// The service refused the token. A fresh one may pass (it had
		// expired by the service's clock, or the key changed); try once.
		next, err := s.replace(slot, host, tok)
		if err != nil {
			return err
		}
		if next == nil {
			return perr
		}
		retry := req.Clone(rctx)
		retry.Header["Authorization"] = next.auth
		setBody(retry, body)
		_, perr, err = s.roundTrip(ctx, rctx, retry, body)
		if err != nil || perr == nil {
			return err
		}
	}
	return perr
}

// setBody gives req a fresh reader over body. No GetBody: a ClientConn
// never re-sends by itself; roundTrip does, with a fresh request.
func setBody(req *http.Request, body []byte) {
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.ContentLength = int64(len(body))
}

// roundTrip sends req (whose body is body) on a connection to its host,
// once a concurrency slot is free. It returns the service's refusal as a
// *PushError (with the status, for the caller's token retry), or a
// transport error.
func (s *Sender) roundTrip(ctx, rctx context.Context, req *http.Request, body []byte) (int, *hubcore.PushError, error) {
	h := s.conns.host(req.URL.Host)
	var resp *http.Response
	for attempt := 1; ; attempt++ {
		pc, err := h.reserve(rctx)
		if err != nil {
			return 0, nil, s.transportError(ctx, rctx, req, err)
		}
		resp, err = pc.cc.RoundTrip(req)
		h.done(pc)
		if err == nil {
			break
		}
		// A request the server provably never saw (a refused stream: the
		// server lowered its stream limit under us; a connection that
		// failed before the request left) is sent again, a few times.
		if attempt < maxRefusedRetries && rctx.Err() == nil && pnshttp.Unprocessed(err) {
			req = req.Clone(rctx)
			setBody(req, body)
			continue
		}
		return 0, nil, s.transportError(ctx, rctx, req, err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor == 1 {
		h.h1.Store(true)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		// Read to EOF so that an HTTP/1.1 connection can carry the next
		// request (a 201 has no body to speak of). A read error changes
		// nothing: the status says the message was accepted.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return resp.StatusCode, nil, nil
	}
	msg, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if err != nil && len(msg) == 0 && ctx.Err() != nil {
		return 0, nil, ctx.Err()
	}
	return resp.StatusCode, classify(resp.StatusCode, resp.Header, msg, s.now()), nil
}

// maxRefusedRetries bounds the re-sends of a request whose stream the
// server refused.
const maxRefusedRetries = 4

func (s *Sender) transportError(ctx, rctx context.Context, req *http.Request, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(rctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: %s after %v", ErrTimeout, req.URL.Host, s.cfg.Timeout)
	}
	return fmt.Errorf("webpush: POST to %s: %w", req.URL.Host, err)
}

// classify maps a refusal to the hub's outcomes (reference §8.2; RFC 8030
// §5, RFC 8292 §4.2, and the push services' documented codes).
func classify(status int, h http.Header, body []byte, now time.Time) *hubcore.PushError {
	e := &hubcore.PushError{Status: status, Reason: errorReason(body)}
	switch {
	case status == http.StatusNotFound || status == http.StatusGone:
		// The subscription expired or was unsubscribed: gone for good.
		e.Outcome, e.ExpireHandle = hubcore.OutcomeExpiredChannel, true
	case status == http.StatusRequestEntityTooLarge:
		e.Outcome = hubcore.OutcomeInvalidNotificationSize
	case status == http.StatusTooManyRequests:
		e.Outcome, e.Retry = hubcore.OutcomeThrottled, true
		e.RetryAfter = parseRetryAfter(h.Get("Retry-After"), now)
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		e.Outcome = hubcore.OutcomeInvalidCredentials
	case status == http.StatusInternalServerError:
		e.Outcome, e.Retry = hubcore.OutcomePnsServerError, true
		e.RetryAfter = parseRetryAfter(h.Get("Retry-After"), now)
	case status >= 500:
		e.Outcome, e.Retry = hubcore.OutcomePnsUnavailable, true
		e.RetryAfter = parseRetryAfter(h.Get("Retry-After"), now)
	default:
		// 400 and anything else the protocol does not define for a send
		// (405, 415, redirects): the request itself is wrong.
		e.Outcome = hubcore.OutcomePnsInterfaceError
	}
	return e
}

// subscriptionKeys decodes the subscription's keys. A subscription whose
// keys do not decode can never receive a message, so it is a bad channel.
func subscriptionKeys(ch *hubcore.PushChannel) (*ecdh.PublicKey, []byte, *hubcore.PushError) {
	bad := func(reason string) *hubcore.PushError {
		return &hubcore.PushError{Outcome: hubcore.OutcomeBadChannel, ExpireHandle: true, Reason: reason}
	}
	if ch.Endpoint == "" {
		return nil, nil, bad("the subscription has no endpoint")
	}
	p, err := decodeB64URL(ch.P256DH)
	if err != nil {
		return nil, nil, bad("p256dh is not base64url")
	}
	ua, err := ecdh.P256().NewPublicKey(p)
	if err != nil {
		return nil, nil, bad("p256dh is not an uncompressed P-256 public key")
	}
	auth, err := decodeB64URL(ch.Auth)
	if err != nil || len(auth) != 16 {
		return nil, nil, bad("auth is not a base64url 16-byte secret")
	}
	return ua, auth, nil
}

// pushHeaders copies the delivery's TTL, Urgency and Topic (RFC 8030 §5.2–
// §5.4) into hdr, checking them: a push service answers a bad value with
// 400, so a bad value is refused here without a round trip. An empty value
// leaves the header out; other headers are not the push service's business
// and are ignored.
func pushHeaders(hdr http.Header, hs []hubcore.Header) *hubcore.PushError {
	bad := func(format string, args ...any) *hubcore.PushError {
		return &hubcore.PushError{Outcome: hubcore.OutcomePnsInterfaceError, Reason: fmt.Sprintf(format, args...)}
	}
	for _, h := range hs {
		if h.Value == "" {
			continue
		}
		switch {
		case strings.EqualFold(h.Name, "TTL"):
			v, ok := canonicalTTL(h.Value)
			if !ok {
				return bad("TTL %q is not a non-negative number of seconds", h.Value)
			}
			hdr["Ttl"] = []string{v}
		case strings.EqualFold(h.Name, "Urgency"):
			switch h.Value {
			case "very-low", "low", "normal", "high":
				hdr["Urgency"] = []string{h.Value}
			default:
				return bad("Urgency %q is not very-low, low, normal or high", h.Value)
			}
		case strings.EqualFold(h.Name, "Topic"):
			if !validTopic(h.Value) {
				return bad("Topic %q is not 1 to 32 characters of the base64url alphabet", h.Value)
			}
			hdr["Topic"] = []string{h.Value}
		}
	}
	return nil
}

// canonicalTTL reads a TTL the way the hub validated it (strconv.Atoi: a
// sign is allowed) and returns the digits-only form RFC 8030 requires.
func canonicalTTL(v string) (string, bool) {
	digits := true
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			digits = false
			break
		}
	}
	if digits && len(v) > 0 && len(v) <= 10 {
		return v, true
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return "", false
	}
	return strconv.FormatInt(n, 10), true
}

func validTopic(v string) bool {
	if len(v) == 0 || len(v) > 32 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
