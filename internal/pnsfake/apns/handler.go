package apns

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushgate/pushgate/internal/pnsfake"
)

// Apple's payload limits: 5 KB for VoIP pushes, 4 KB for everything else.
const (
	maxPayload     = 4096
	maxVoIPPayload = 5120
	maxCollapseID  = 64
)

// ReasonBadPayload is the fake's reason for a payload that is not a JSON
// object with an aps dictionary; Apple documents no name for it.
const ReasonBadPayload = "BadPayload"

// pushTypes are the apns-push-type values Apple documents.
var pushTypes = map[string]bool{
	"alert": true, "background": true, "location": true, "voip": true,
	"complication": true, "fileprovider": true, "mdm": true,
	"liveactivity": true, "pushtotalk": true, "widgets": true, "controls": true,
}

// Precomputed answers: the error bodies of Apple's reasons and the shared
// header values, so that refusals at benchmark rates do not allocate them.
var (
	jsonCT      = []string{"application/json"}
	reasonBody  = map[string][]byte{}
	knownReason = []string{
		"BadCollapseId", "BadDeviceToken", "BadExpirationDate", "BadMessageId",
		"BadPriority", "BadTopic", "DeviceTokenNotForTopic", "DuplicateHeaders",
		"IdleTimeout", "InvalidPushType", "MissingDeviceToken", "MissingTopic",
		"PayloadEmpty", "TopicDisallowed", "BadCertificate",
		"BadCertificateEnvironment", "ExpiredProviderToken", "Forbidden",
		"InvalidProviderToken", "MissingProviderToken", "BadPath",
		"MethodNotAllowed", "PayloadTooLarge", "TooManyProviderTokenUpdates",
		"TooManyRequests", "InternalServerError", "ServiceUnavailable",
		"Shutdown", ReasonBadPayload,
	}
	// defaultReason names a scripted failure that gave only a status.
	defaultReason = map[int]string{
		400: "BadDeviceToken", 403: "Forbidden", 404: "BadPath",
		405: "MethodNotAllowed", 410: "Unregistered", 413: "PayloadTooLarge",
		429: "TooManyRequests", 500: "InternalServerError", 503: "ServiceUnavailable",
	}
)

func init() {
	for _, r := range knownReason {
		reasonBody[r] = errorBody(r)
	}
}

type errBody struct {
	Reason    string `json:"reason"`
	Timestamp int64  `json:"timestamp,omitempty"`
}

func errorBody(reason string) []byte {
	b, _ := json.Marshal(errBody{Reason: reason})
	return b
}

var bufPool = sync.Pool{New: func() any {
	b := make([]byte, maxVoIPPayload+1)
	return &b
}}

type connKey struct{}

// connState is what the fake remembers per connection: the provider token
// each team last used on it (for TooManyProviderTokenUpdates) and, in
// certificate mode, the client certificate's topics.
type connState struct {
	// last is the token of the connection's previous request: nearly
	// every request repeats it, and then needs no lookup at all.
	last atomic.Pointer[jwtEntry]
	mu   sync.Mutex
	cur  map[string]*jwtEntry

	topicsOnce sync.Once
	topics     []string
}

// ServeHTTP checks a request in Apple's order and answers it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	token, pathOK := strings.CutPrefix(r.URL.Path, "/3/device/")
	if !pathOK {
		token = ""
	}
	s.Log.Arrive(token)
	if r.ProtoMajor != 2 {
		s.Log.Refuse()
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusHTTPVersionNotSupported)
		io.WriteString(w, "APNs serves HTTP/2 only\n") //nolint:errcheck
		return
	}
	h := r.Header
	id, idOK := s.messageID(h["Apns-Id"])
	if r.Method != http.MethodPost {
		s.fail(w, id, http.StatusMethodNotAllowed, "MethodNotAllowed")
		return
	}
	if !pathOK || strings.IndexByte(token, '/') >= 0 {
		s.fail(w, id, http.StatusNotFound, "BadPath")
		return
	}
	if token == "" {
		s.fail(w, id, http.StatusBadRequest, "MissingDeviceToken")
		return
	}
	if !validDeviceToken(token) {
		s.fail(w, id, http.StatusBadRequest, "BadDeviceToken")
		return
	}
	if duplicateHeaders(h) {
		s.fail(w, id, http.StatusBadRequest, "DuplicateHeaders")
		return
	}
	cs, _ := r.Context().Value(connKey{}).(*connState)
	if cs == nil {
		cs = &connState{}
	}

	// Who is asking, and for which topic.
	topic := first(h["Apns-Topic"])
	var jwt *jwtEntry
	if s.opts.ClientCAs != nil {
		certTopics := cs.certTopics(r)
		if topic == "" {
			if len(certTopics) != 1 {
				s.fail(w, id, http.StatusBadRequest, "MissingTopic")
				return
			}
			topic = certTopics[0]
		}
		if !contains(certTopics, topic) {
			if _, known := s.topicTeam[topic]; known {
				s.fail(w, id, http.StatusBadRequest, "TopicDisallowed")
			} else {
				s.fail(w, id, http.StatusBadRequest, "BadTopic")
			}
			return
		}
	} else {
		e, status, reason := s.checkProviderToken(cs, h["Authorization"])
		if status != 0 {
			s.fail(w, id, status, reason)
			return
		}
		jwt = e
		team := e.team
		if topic == "" {
			s.fail(w, id, http.StatusBadRequest, "MissingTopic")
			return
		}
		owner, known := s.topicTeam[topic]
		if !known {
			s.fail(w, id, http.StatusBadRequest, "BadTopic")
			return
		}
		if owner != team {
			s.fail(w, id, http.StatusBadRequest, "TopicDisallowed")
			return
		}
	}
	reg, registered := s.registration(token)
	if registered && reg.topic != "" && reg.topic != topic {
		s.fail(w, id, http.StatusBadRequest, "DeviceTokenNotForTopic")
		return
	}

	// The apns-* headers.
	pushType := first(h["Apns-Push-Type"])
	if _, set := h["Apns-Push-Type"]; set && !pushTypes[pushType] {
		s.fail(w, id, http.StatusBadRequest, "InvalidPushType")
		return
	}
	if p, set := h["Apns-Priority"]; set {
		switch v := first(p); {
		case v != "1" && v != "5" && v != "10",
			v == "10" && pushType == "background":
			s.fail(w, id, http.StatusBadRequest, "BadPriority")
			return
		}
	}
	if e, set := h["Apns-Expiration"]; set && !isUnixSeconds(first(e)) {
		s.fail(w, id, http.StatusBadRequest, "BadExpirationDate")
		return
	}
	if c := first(h["Apns-Collapse-Id"]); len(c) > maxCollapseID {
		s.fail(w, id, http.StatusBadRequest, "BadCollapseId")
		return
	}
	if !idOK {
		s.fail(w, id, http.StatusBadRequest, "BadMessageId")
		return
	}

	// The payload.
	limit := maxPayload
	if pushType == "voip" {
		limit = maxVoIPPayload
	}
	if r.ContentLength > int64(limit) {
		s.fail(w, id, http.StatusRequestEntityTooLarge, "PayloadTooLarge")
		return
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := (*bp)[:limit+1]
	n, err := io.ReadFull(r.Body, buf)
	switch {
	case err == nil:
		s.fail(w, id, http.StatusRequestEntityTooLarge, "PayloadTooLarge")
		return
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
	default:
		return // the stream is gone; nobody to answer
	}
	body := buf[:n]
	if n == 0 {
		s.fail(w, id, http.StatusBadRequest, "PayloadEmpty")
		return
	}
	if checkPayload(body, pushType != "mdm") != nil {
		s.fail(w, id, http.StatusBadRequest, ReasonBadPayload)
		return
	}
	if registered && reg.unregistered {
		s.failWithTime(w, id, http.StatusGone, "Unregistered", reg.unregisteredAt)
		return
	}

	// Checked: now the script.
	a := s.Script.Next(token)
	switch a.Kind {
	case pnsfake.Fail:
		st := a.Status
		if st == 0 {
			st = http.StatusInternalServerError
		}
		reason := a.Reason
		if reason == "" {
			reason = defaultReason[st]
		}
		if reason == "ExpiredProviderToken" && jwt != nil {
			jwt.revoked.Store(true)
		}
		if st == http.StatusGone {
			s.failWithTime(w, id, st, reason, s.now().UnixMilli())
		} else {
			s.fail(w, id, st, reason)
		}
		return
	case pnsfake.Throttle:
		if a.RetryAfter > 0 {
			secs := (a.RetryAfter + time.Second - 1) / time.Second
			w.Header()["Retry-After"] = []string{strconv.FormatInt(int64(secs), 10)}
		}
		s.fail(w, id, http.StatusTooManyRequests, "TooManyRequests")
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
	// Record before answering, so that a sender's return implies the log.
	if s.Log.Keep {
		s.Log.Accept(pnsfake.Delivered{Token: token, Header: h.Clone(), Body: append([]byte(nil), body...), Arrived: time.Now()})
	} else {
		s.Log.Accept(pnsfake.Delivered{})
	}
	w.Header()["Apns-Id"] = []string{id}
	w.WriteHeader(http.StatusOK)
}

func (s *Server) fail(w http.ResponseWriter, id string, status int, reason string) {
	s.Log.Refuse()
	hd := w.Header()
	hd["Apns-Id"] = []string{id}
	hd["Content-Type"] = jsonCT
	w.WriteHeader(status)
	b, ok := reasonBody[reason]
	if !ok {
		b = errorBody(reason)
	}
	w.Write(b) //nolint:errcheck
}

// failWithTime answers a 410: its body also says since when (milliseconds
// since the epoch) the token has been invalid for the topic.
func (s *Server) failWithTime(w http.ResponseWriter, id string, status int, reason string, ms int64) {
	s.Log.Refuse()
	hd := w.Header()
	hd["Apns-Id"] = []string{id}
	hd["Content-Type"] = jsonCT
	w.WriteHeader(status)
	b, _ := json.Marshal(errBody{Reason: reason, Timestamp: ms})
	w.Write(b) //nolint:errcheck
}

// checkProviderToken verifies the authorization header; status 0 means the
// token is good (for e.team).
func (s *Server) checkProviderToken(cs *connState, vals []string) (e *jwtEntry, status int, reason string) {
	v := first(vals)
	if len(v) < 7 || !strings.EqualFold(v[:7], "bearer ") {
		return nil, http.StatusForbidden, "MissingProviderToken"
	}
	raw := strings.TrimSpace(v[7:])
	if raw == "" {
		return nil, http.StatusForbidden, "MissingProviderToken"
	}
	now := s.now().Unix()
	e = cs.last.Load()
	fast := e != nil && e.raw == raw
	if !fast {
		e = s.verifyToken(raw, now)
	}
	switch {
	case e.reason != "":
		return nil, http.StatusForbidden, e.reason
	case e.iat > now+tokenFutureSkew:
		return nil, http.StatusForbidden, "InvalidProviderToken"
	case s.expired(e, now):
		return nil, http.StatusForbidden, "ExpiredProviderToken"
	}
	if !fast && !s.adopt(cs, e, now) {
		return nil, http.StatusTooManyRequests, "TooManyProviderTokenUpdates"
	}
	return e, 0, ""
}

func (s *Server) expired(e *jwtEntry, now int64) bool {
	return now-e.iat > tokenMaxAge || e.seq < s.revokeBelow.Load() || e.revoked.Load()
}

// verifyToken returns the (cached) verdict on a provider token.
func (s *Server) verifyToken(raw string, now int64) *jwtEntry {
	if e := s.cache.get(raw); e != nil {
		return e
	}
	e := &jwtEntry{raw: strings.Clone(raw), reason: "InvalidProviderToken"}
	if p, err := parseJWT(raw); err == nil && p.Alg == "ES256" {
		if k, ok := s.opts.Keys[p.Kid]; ok && k.Public != nil && p.Iss == k.TeamID && p.verify(k.Public) {
			e.reason, e.team, e.iat = "", k.TeamID, p.Iat
		}
	}
	e, added := s.cache.put(e, now)
	if added && e.reason == "" {
		s.tokens.Add(1)
	}
	return e
}

// adopt records e as the connection's token for its team, unless that is
// a second change within 20 minutes.
func (s *Server) adopt(cs *connState, e *jwtEntry, now int64) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.cur == nil {
		cs.cur = make(map[string]*jwtEntry, 1)
	}
	prev := cs.cur[e.team]
	switch {
	case prev == nil || prev == e:
	case e.iat < prev.iat:
		// A request that loaded the token before a refresh: still valid,
		// and no change of the connection's token.
		cs.last.Store(e)
		return true
	case s.opts.AllowFrequentTokenUpdates, s.expired(prev, now), e.iat-prev.iat >= tokenMinReuse:
	default:
		return false
	}
	cs.cur[e.team] = e
	cs.last.Store(e)
	return true
}

func (cs *connState) certTopics(r *http.Request) []string {
	cs.topicsOnce.Do(func() {
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			cs.topics = certTopics(r.TLS.PeerCertificates[0])
		}
	})
	return cs.topics
}

// messageID returns the apns-id to answer with: the request's if it is a
// canonical UUID, else a new one (and false when the request's was bad).
func (s *Server) messageID(v []string) (string, bool) {
	if len(v) > 0 {
		if isUUID(v[0]) {
			return v[0], true
		}
		return s.newID(), false
	}
	return s.newID(), true
}

// newID makes a UUID-shaped id from a per-server random prefix and a
// counter: unique, and cheaper than reading crypto/rand per request.
func (s *Server) newID() string {
	var raw [16]byte
	copy(raw[:8], s.idPrefix[:])
	n := s.idSeq.Add(1)
	for i := 15; i >= 8; i-- {
		raw[i] = byte(n)
		n >>= 8
	}
	raw[6] = raw[6]&0x0f | 0x40
	raw[8] = raw[8]&0x3f | 0x80
	const hexdig = "0123456789ABCDEF"
	var out [36]byte
	j := 0
	for i, b := range raw {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out[j] = '-'
			j++
		}
		out[j], out[j+1] = hexdig[b>>4], hexdig[b&0xf]
		j += 2
	}
	return string(out[:])
}

// isUUID reports whether v is a UUID in its canonical 8-4-4-4-12 form.
func isUUID(v string) bool {
	if len(v) != 36 {
		return false
	}
	for i := 0; i < len(v); i++ {
		switch i {
		case 8, 13, 18, 23:
			if v[i] != '-' {
				return false
			}
		default:
			if !isHex(v[i]) {
				return false
			}
		}
	}
	return true
}

// validDeviceToken: 32 to 100 bytes written as hex, either case.
func validDeviceToken(t string) bool {
	if len(t) < 64 || len(t) > 200 || len(t)%2 != 0 {
		return false
	}
	for i := 0; i < len(t); i++ {
		if !isHex(t[i]) {
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// isUnixSeconds: apns-expiration is a UNIX time in seconds, 0 for "now or
// never".
func isUnixSeconds(v string) bool {
	if v == "" || len(v) > 18 {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return false
		}
	}
	return true
}

// duplicateHeaders reports a repeated apns-* or authorization header.
func duplicateHeaders(h http.Header) bool {
	for k, v := range h {
		if len(v) > 1 && (strings.HasPrefix(k, "Apns-") || k == "Authorization") {
			return true
		}
	}
	return false
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
