package wns

import (
	"bytes"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pushgate/pushgate/internal/pnsfake"
)

// MaxPayload is WNS's payload limit for every notification type.
const MaxPayload = 5000

// reqBuf is the per-request scratch space, pooled.
type reqBuf struct {
	buf bytes.Buffer
	lr  io.LimitedReader
}

var bufPool = sync.Pool{New: func() any { return new(reqBuf) }}

// refuse answers an error: WNS's answers carry no body, the reason goes in
// X-WNS-Error-Description.
func (s *Server) refuse(w http.ResponseWriter, code int, desc string) {
	s.Log.Refuse()
	h := w.Header()
	h.Set("X-Wns-Error-Description", desc)
	h["X-Wns-Debug-Trace"] = s.traceV
	h["Content-Length"] = zeroLen
	w.WriteHeader(code)
}

var zeroLen = []string{"0"}

// serveNotify takes one notification for a channel.
func (s *Server) serveNotify(w http.ResponseWriter, r *http.Request) {
	channel := channelOf(r.URL.RawQuery)
	s.Log.Arrive(channel)
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		s.refuse(w, http.StatusMethodNotAllowed, "Only POST is supported.")
		return
	}
	if code, desc := s.checkAuth(r, channel); code != 0 {
		if code == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		}
		s.refuse(w, code, desc)
		return
	}
	typ, code, desc := checkHeaders(r.Header, r.ContentLength)
	if code != 0 {
		s.refuse(w, code, desc)
		return
	}
	rb := bufPool.Get().(*reqBuf)
	defer bufPool.Put(rb)
	rb.buf.Reset()
	rb.lr = io.LimitedReader{R: r.Body, N: MaxPayload + 1}
	_, err := rb.buf.ReadFrom(&rb.lr)
	rb.lr.R = nil
	if err != nil {
		s.refuse(w, http.StatusBadRequest, "The request body could not be read.")
		return
	}
	body := rb.buf.Bytes()
	if len(body) > MaxPayload {
		s.refuse(w, http.StatusRequestEntityTooLarge, "The notification payload exceeds 5000 bytes.")
		return
	}
	if r.ContentLength != int64(len(body)) {
		s.refuse(w, http.StatusBadRequest, "Content-Length does not match the body.")
		return
	}
	if typ != "wns/raw" {
		if desc := s.xml.check(typ, body); desc != "" {
			s.refuse(w, http.StatusBadRequest, desc)
			return
		}
	}
	switch act := s.Script.Next(channel); act.Kind {
	case pnsfake.Fail:
		s.scripted(w, act)
	case pnsfake.Throttle:
		if act.RetryAfter > 0 {
			secs := int64((act.RetryAfter + time.Second - 1) / time.Second)
			w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
		}
		s.refuse(w, http.StatusNotAcceptable, "The cloud service exceeded its throttle limit.")
	case pnsfake.Drop:
		pnsfake.DropConn(r)
	case pnsfake.Slow:
		t := time.NewTimer(act.Delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
		s.accept(w, r, channel, body)
	default:
		s.accept(w, r, channel, body)
	}
}

func (s *Server) scripted(w http.ResponseWriter, act pnsfake.Action) {
	code := act.Status
	if code == 0 {
		code = http.StatusInternalServerError
	}
	if code != http.StatusOK {
		desc := act.Reason
		if desc == "" {
			desc = http.StatusText(code)
		}
		s.refuse(w, code, desc)
		return
	}
	s.Log.Refuse()
	h := w.Header()
	h["X-Wns-Debug-Trace"] = s.traceV
	h.Set("X-Wns-Msg-Id", s.msgID())
	switch strings.ToLower(act.Reason) {
	case "disconnected":
		h.Set("X-Wns-Notificationstatus", "dropped")
		h.Set("X-Wns-Deviceconnectionstatus", "disconnected")
	case "channelthrottled":
		h.Set("X-Wns-Notificationstatus", "channelThrottled")
	default:
		h.Set("X-Wns-Notificationstatus", "dropped")
	}
	h["Content-Length"] = zeroLen
	w.WriteHeader(http.StatusOK)
}

func (s *Server) msgID() string {
	var b [16]byte
	return string(strconv.AppendUint(append(b[:0], "1B"...), s.msgSeq.Add(1)|1<<60, 16))
}

var (
	statusReceived  = []string{"received"}
	statusConnected = []string{"connected"}
)

func (s *Server) accept(w http.ResponseWriter, r *http.Request, channel string, body []byte) {
	d := pnsfake.Delivered{Token: channel, Header: r.Header, Arrived: time.Now()}
	if s.Log.Keep {
		d.Body = append([]byte(nil), body...)
	}
	s.Log.Accept(d)
	h := w.Header()
	h["X-Wns-Notificationstatus"] = statusReceived
	h.Set("X-Wns-Msg-Id", s.msgID())
	h["X-Wns-Debug-Trace"] = s.traceV
	if strings.EqualFold(r.Header.Get("X-Wns-Requestforstatus"), "true") {
		h["X-Wns-Deviceconnectionstatus"] = statusConnected
	}
	h["Content-Length"] = zeroLen
	w.WriteHeader(http.StatusOK)
}

// checkAuth checks the bearer token and the channel.
func (s *Server) checkAuth(r *http.Request, channel string) (int, string) {
	auth := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return http.StatusUnauthorized, "The request has no bearer access token."
	}
	v, found := s.tokens.Load(tok)
	if !found {
		return http.StatusUnauthorized, "Invalid access token."
	}
	g := v.(*grant)
	if s.now().UnixNano() >= g.expires.Load() {
		return http.StatusUnauthorized, "Token expired"
	}
	if !validChannel(channel) {
		return http.StatusNotFound, "The channel URI is not valid or is not recognized by WNS."
	}
	if s.hasUnreg.Load() {
		if _, gone := s.unregistered.Load(channel); gone {
			return http.StatusGone, "The channel expired."
		}
	}
	if s.hasBound.Load() {
		if app, ok := s.bound.Load(channel); ok && app.(string) != g.app {
			return http.StatusForbidden, "The cloud service is not authorized to send a notification to this URI."
		}
	}
	return 0, ""
}

// channelOf reads the token parameter of a query without building a map.
func channelOf(q string) string {
	for q != "" {
		var kv string
		kv, q, _ = strings.Cut(q, "&")
		if v, ok := strings.CutPrefix(kv, "token="); ok {
			if strings.ContainsAny(v, "%+") {
				if u, err := url.QueryUnescape(v); err == nil {
					return u
				}
				return "\x00" // not a valid channel: answered 404
			}
			return v
		}
	}
	return ""
}

// validChannel is the fake's rule for channel tokens.
func validChannel(ch string) bool {
	if ch == "" || len(ch) > 1024 {
		return false
	}
	for i := 0; i < len(ch); i++ {
		c := ch[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '+' || c == '/' || c == '=' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// checkHeaders checks the request headers: X-WNS-Type, the Content-Type
// that goes with it, and every other X-WNS-* header. It returns the type.
func checkHeaders(h http.Header, contentLength int64) (typ string, code int, desc string) {
	if contentLength < 0 {
		return "", 400, "Content-Length is required."
	}
	types := h["X-Wns-Type"] // the server canonicalizes names
	if len(types) != 1 {
		return "", 400, "X-WNS-Type is required, once."
	}
	typ = types[0]
	var wantCT string
	switch typ {
	case "wns/toast", "wns/tile", "wns/badge":
		wantCT = "text/xml"
	case "wns/raw":
		wantCT = "application/octet-stream"
	default:
		return "", 400, "X-WNS-Type must be wns/toast, wns/tile, wns/badge or wns/raw."
	}
	ct := h.Get("Content-Type")
	if ct != wantCT {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != wantCT {
			return "", 400, "Content-Type must be " + wantCT + " for " + typ + "."
		}
	}
	for name, vals := range h {
		if len(name) < 6 || !strings.EqualFold(name[:6], "X-WNS-") {
			continue
		}
		if len(vals) != 1 {
			return "", 400, name + " is given more than once."
		}
		if d := checkWNSHeader(strings.ToLower(name), vals[0], typ); d != "" {
			return "", 400, d
		}
	}
	return typ, 0, ""
}

// checkWNSHeader checks one X-WNS-* header other than X-WNS-Type.
func checkWNSHeader(name, v, typ string) string {
	switch name {
	case "x-wns-type":
		return ""
	case "x-wns-cache-policy":
		if !strings.EqualFold(v, "cache") && !strings.EqualFold(v, "no-cache") {
			return "X-WNS-Cache-Policy must be cache or no-cache."
		}
	case "x-wns-requestforstatus":
		if !isBool(v) {
			return "X-WNS-RequestForStatus must be true or false."
		}
	case "x-wns-ttl":
		if n, err := strconv.ParseUint(v, 10, 31); err != nil || v == "" || n > 1<<31 {
			return "X-WNS-TTL must be a number of seconds."
		}
	case "x-wns-tag":
		if typ != "wns/toast" && typ != "wns/tile" {
			return "X-WNS-Tag applies to toast and tile notifications only."
		}
		if v == "" || len(v) > 16 {
			return "X-WNS-Tag must be 1 to 16 characters."
		}
	case "x-wns-group":
		if typ != "wns/toast" {
			return "X-WNS-Group applies to toast notifications only."
		}
		if v == "" || len(v) > 16 {
			return "X-WNS-Group must be 1 to 16 characters."
		}
	case "x-wns-suppresspopup":
		if typ != "wns/toast" {
			return "X-WNS-SuppressPopup applies to toast notifications only."
		}
		if !isBool(v) {
			return "X-WNS-SuppressPopup must be true or false."
		}
	case "x-wns-match":
		if !validMatch(v) {
			return "X-WNS-Match must be type:wns/toast;group=…;tag=…, type:wns/toast;group=…, type:wns/toast;tag=… or type:wns/toast;all."
		}
	default:
		return "Unknown header " + name + "."
	}
	return ""
}

func isBool(v string) bool { return strings.EqualFold(v, "true") || strings.EqualFold(v, "false") }

// validMatch checks an X-WNS-Match value.
func validMatch(v string) bool {
	rest, ok := strings.CutPrefix(v, "type:wns/toast;")
	if !ok {
		return false
	}
	if rest == "all" {
		return true
	}
	group, tag := false, false
	for _, part := range strings.Split(rest, ";") {
		k, val, ok := strings.Cut(part, "=")
		if !ok || val == "" || len(val) > 16 {
			return false
		}
		switch {
		case k == "group" && !group && !tag:
			group = true
		case k == "tag" && !tag:
			tag = true
		default:
			return false
		}
	}
	return group || tag
}
