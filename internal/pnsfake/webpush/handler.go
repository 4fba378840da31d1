package webpush

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pushgate/pushgate/internal/pnsfake"
)

// autopush error numbers (autopush "Error Codes" documentation).
const (
	errnoNotFound     = 102
	errnoGone         = 103
	errnoTooLarge     = 104
	errnoAuth         = 109
	errnoCrypto       = 110
	errnoMissingTTL   = 111
	errnoInvalidTTL   = 112
	errnoInvalidTopic = 113
	errnoBackoff      = 201
	errnoUnknown      = 999
)

// bodyPool holds request body buffers: one byte more than the limit, to
// tell "exactly 4096" from "more".
var bodyPool = sync.Pool{New: func() any { b := make([]byte, maxBody+1); return &b }}

// ServeHTTP checks one push request (see the package comment for the order
// of checks and the answers), then applies the subscription's script.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, isPush := strings.CutPrefix(r.URL.Path, pushPath)
	if !isPush {
		id = ""
	}
	s.Log.Arrive(id)
	if r.Method != http.MethodPost {
		w.Header()["Allow"] = []string{"POST"}
		s.refuse(w, http.StatusMethodNotAllowed, 0, "push messages are sent with POST (RFC 8030 §5)")
		return
	}
	var sub *subscription
	if isPush && id != "" {
		sub = s.lookup(id)
	}
	if sub == nil {
		s.refuse(w, http.StatusNotFound, errnoNotFound, "no such subscription")
		return
	}
	if sub.gone.Load() {
		s.refuse(w, http.StatusGone, errnoGone, "the subscription has been unsubscribed")
		return
	}

	ttlv := r.Header["Ttl"]
	if len(ttlv) == 0 {
		s.refuse(w, http.StatusBadRequest, errnoMissingTTL, "the TTL header is required (RFC 8030 §5.2)")
		return
	}
	ttl, ok := parseTTL(ttlv)
	if !ok {
		s.refuse(w, http.StatusBadRequest, errnoInvalidTTL, "TTL is a non-negative integer number of seconds (RFC 8030 §5.2)")
		return
	}
	if v, ok := r.Header["Urgency"]; ok && (len(v) != 1 || !validUrgency(v[0])) {
		s.refuse(w, http.StatusBadRequest, 0, "Urgency is one of very-low, low, normal, high (RFC 8030 §5.3)")
		return
	}
	if v, ok := r.Header["Topic"]; ok && (len(v) != 1 || !validTopic(v[0])) {
		s.refuse(w, http.StatusBadRequest, errnoInvalidTopic, "Topic is at most 32 characters of the base64url alphabet (RFC 8030 §5.4)")
		return
	}
	ce := r.Header["Content-Encoding"]
	if !(len(ce) == 0 && r.ContentLength == 0) && (len(ce) != 1 || !strings.EqualFold(ce[0], "aes128gcm")) {
		// A push message without a payload needs no encoding; any payload
		// must be aes128gcm (RFC 8291 §4). The legacy "aesgcm" draft
		// coding is not accepted.
		w.Header()["Accept-Encoding"] = []string{"aes128gcm"}
		s.refuse(w, http.StatusUnsupportedMediaType, errnoCrypto, "the payload must use the aes128gcm content coding (RFC 8291 §4)")
		return
	}

	g, status, reason := s.authorize(r.Header["Authorization"], sub)
	if status != 0 {
		if status == http.StatusUnauthorized {
			w.Header()["Www-Authenticate"] = []string{"vapid"}
		}
		s.refuse(w, status, errnoAuth, reason)
		return
	}

	if r.ContentLength > maxBody {
		s.refuse(w, http.StatusRequestEntityTooLarge, errnoTooLarge, "the body exceeds 4096 bytes (RFC 8030 §7.2)")
		return
	}
	bp := bodyPool.Get().(*[]byte)
	defer bodyPool.Put(bp)
	n, err := readFull(r.Body, *bp)
	if err != nil {
		// The client went away or the stream was reset: no one to answer.
		return
	}
	if n > maxBody {
		s.refuse(w, http.StatusRequestEntityTooLarge, errnoTooLarge, "the body exceeds 4096 bytes (RFC 8030 §7.2)")
		return
	}
	var plain []byte
	if n == 0 && len(ce) != 0 {
		s.refuse(w, http.StatusBadRequest, errnoCrypto, "an aes128gcm body cannot be empty")
		return
	}
	if n > 0 {
		h, err := parseHeader((*bp)[:n])
		if err != nil {
			s.refuse(w, http.StatusBadRequest, errnoCrypto, err.Error())
			return
		}
		if string(h.keyid) == g.key {
			s.refuse(w, http.StatusBadRequest, errnoCrypto, "the message key equals the VAPID signing key; they must differ (RFC 8292 §3.2)")
			return
		}
		if plain, err = sub.open(h); err != nil {
			s.refuse(w, http.StatusBadRequest, errnoCrypto, err.Error())
			return
		}
	}

	a := s.Script.Next(id)
	switch a.Kind {
	case pnsfake.Fail:
		st := a.Status
		if st == 0 {
			st = http.StatusInternalServerError
		}
		if a.RetryAfter > 0 {
			w.Header()["Retry-After"] = []string{retryAfter(a.RetryAfter)}
		}
		s.refuse(w, st, errnoFor(st), a.Reason)
		return
	case pnsfake.Throttle:
		w.Header()["Retry-After"] = []string{retryAfter(a.RetryAfter)}
		s.refuse(w, http.StatusTooManyRequests, errnoBackoff, "too many messages; back off")
		return
	case pnsfake.Drop:
		pnsfake.DropConn(r)
		return
	case pnsfake.Slow:
		t := time.NewTimer(a.Delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	s.accept(w, r, id, ttl, plain)
}

func (s *Server) accept(w http.ResponseWriter, r *http.Request, id string, ttl int64, plain []byte) {
	d := pnsfake.Delivered{Token: id, Arrived: time.Now()}
	if s.Log.Keep {
		d.Header = r.Header.Clone()
		d.Body = append([]byte{}, plain...)
	}
	s.Log.Accept(d)
	h := w.Header()
	h["Location"] = []string{s.URL() + "/message/" + strconv.FormatUint(s.msgs.Add(1), 36)}
	h["Ttl"] = []string{strconv.FormatInt(ttl, 10)}
	w.WriteHeader(http.StatusCreated)
}

// authorize checks the vapid credentials (RFC 8292) and, for a restricted
// subscription, that they prove the key it was created with. It returns a
// status of 0 when they pass.
func (s *Server) authorize(v []string, sub *subscription) (grant, int, string) {
	if len(v) == 0 {
		return grant{}, http.StatusUnauthorized, "vapid authentication is required (RFC 8292)"
	}
	if len(v) > 1 {
		return grant{}, http.StatusUnauthorized, "more than one Authorization header"
	}
	now := time.Now()
	g, ok := s.grants.get(v[0])
	if !ok {
		t, k, err := parseVapid(v[0])
		if err != nil {
			return grant{}, http.StatusUnauthorized, err.Error()
		}
		if g, err = verifyJWT(t, k, s.URL(), now); err != nil {
			return grant{}, http.StatusForbidden, err.Error()
		}
		if s.grants.put(v[0], g, now.Unix()) {
			s.verified.Add(1)
		}
	} else if err := g.current(now); err != nil {
		return grant{}, http.StatusForbidden, err.Error()
	}
	if sub.bound != "" && g.key != sub.bound {
		return grant{}, http.StatusForbidden, "k is not the applicationServerKey this subscription was created with (RFC 8292 §4.2)"
	}
	return g, 0, ""
}

// refuse answers an error in autopush's JSON shape.
func (s *Server) refuse(w http.ResponseWriter, status, errno int, msg string) {
	s.Log.Refuse()
	b := make([]byte, 0, 96+len(msg))
	b = append(b, `{"code":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	if errno != 0 {
		b = append(b, `,"errno":`...)
		b = strconv.AppendInt(b, int64(errno), 10)
	}
	b = append(b, `,"error":`...)
	b = strconv.AppendQuote(b, http.StatusText(status))
	b = append(b, `,"message":`...)
	b = appendJSONString(b, msg)
	b = append(b, '}')
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(status)
	w.Write(b)
}

// appendJSONString quotes s as a JSON string (strconv.Quote's escapes are
// Go's, not JSON's, for control and non-ASCII characters).
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

func errnoFor(status int) int {
	switch status {
	case http.StatusNotFound:
		return errnoNotFound
	case http.StatusGone:
		return errnoGone
	case http.StatusRequestEntityTooLarge:
		return errnoTooLarge
	case http.StatusUnauthorized, http.StatusForbidden:
		return errnoAuth
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		return errnoBackoff
	case http.StatusInternalServerError:
		return errnoUnknown
	}
	return 0
}

// retryAfter writes a delay as Retry-After delay-seconds, rounded up so
// that a sender honouring it never comes back early.
func retryAfter(d time.Duration) string {
	secs := int64((d + time.Second - 1) / time.Second)
	if secs < 0 {
		secs = 0
	}
	return strconv.FormatInt(secs, 10)
}

// parseTTL reads TTL = 1*DIGIT (RFC 8030 §5.2), applying MaxTTL. Several
// TTL fields are as wrong as a bad one.
func parseTTL(v []string) (int64, bool) {
	if len(v) != 1 || v[0] == "" {
		return 0, false
	}
	var n int64
	for i := 0; i < len(v[0]); i++ {
		c := v[0][i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if n < MaxTTL {
			n = n*10 + int64(c-'0')
		}
	}
	return min(n, MaxTTL), true
}

func validUrgency(v string) bool {
	switch v {
	case "very-low", "low", "normal", "high":
		return true
	}
	return false
}

func validTopic(v string) bool {
	if v == "" || len(v) > 32 {
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

// readFull reads r into buf until EOF or buf is full, and reports how much
// it read; a full buffer means the body is at least len(buf) long.
func readFull(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
