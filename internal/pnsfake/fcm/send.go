package fcm

import (
	"bytes"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pushgate/pushgate/internal/pnsfake"
)

// reqBuf is the per-request scratch space, pooled.
type reqBuf struct {
	buf bytes.Buffer
	lr  io.LimitedReader
}

var bufPool = sync.Pool{New: func() any { return new(reqBuf) }}

// serveSend is messages:send.
func (s *Server) serveSend(w http.ResponseWriter, r *http.Request, project string) {
	rb := bufPool.Get().(*reqBuf)
	defer bufPool.Put(rb)
	rb.buf.Reset()
	rb.lr = io.LimitedReader{R: r.Body, N: maxBody + 1}
	_, rerr := rb.buf.ReadFrom(&rb.lr)
	rb.lr.R = nil
	body := rb.buf.Bytes()

	// The body is read and checked first only so that Arrive can name the
	// token; its errors are answered after the request's, as Google
	// checks credentials before payloads.
	var c checker
	var bodyErr *apiErr
	switch {
	case rerr != nil:
		bodyErr = invalidArg("The request body could not be read.", "")
	case len(body) > maxBody:
		bodyErr = &apiErr{code: 413, status: "INVALID_ARGUMENT", msg: "Request payload size exceeds the limit."}
	default:
		bodyErr = c.check(body)
	}
	// Scripts and the log know a message by its token (or, for the
	// fake's own tests, its topic or condition).
	key := c.m.token
	if key == "" {
		key = c.m.topic + c.m.condition
	}
	s.Log.Arrive(key)

	if e := s.checkRequest(r, project); e != nil {
		s.refuse(w, e)
		return
	}
	if bodyErr != nil {
		s.refuse(w, bodyErr)
		return
	}
	if c.m.token != "" {
		if e := s.checkToken(c.m.token, project); e != nil {
			s.refuse(w, e)
			return
		}
	}
	if c.m.validateOnly {
		// Google answers a dry run with a fake message id and delivers
		// nothing.
		writeName(w, project, "fake_message_id")
		return
	}
	switch act := s.Script.Next(key); act.Kind {
	case pnsfake.Fail:
		s.refuse(w, scripted(act.Status, act.Reason))
	case pnsfake.Throttle:
		e := scripted(http.StatusTooManyRequests, "QUOTA_EXCEEDED")
		if act.RetryAfter > 0 {
			secs := int64((act.RetryAfter + time.Second - 1) / time.Second)
			w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
		}
		s.refuse(w, e)
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
		s.accept(w, r, key, project, body[c.m.start:c.m.end])
	default:
		s.accept(w, r, key, project, body[c.m.start:c.m.end])
	}
}

func (s *Server) refuse(w http.ResponseWriter, e *apiErr) {
	s.Log.Refuse()
	e.write(w)
}

func (s *Server) accept(w http.ResponseWriter, r *http.Request, token, project string, msg []byte) {
	d := pnsfake.Delivered{Token: token, Header: r.Header, Arrived: time.Now()}
	if s.Log.Keep {
		d.Body = append([]byte(nil), msg...)
	}
	s.Log.Accept(d)
	var id [40]byte
	b := append(id[:0], "0:"...)
	b = strconv.AppendUint(b, s.msgSeq.Add(1), 10)
	b = append(b, "%fa4e0a5cfa4e0a5c"...)
	writeName(w, project, string(b))
}

// writeName answers success: {"name":"projects/{p}/messages/{id}"}.
func writeName(w http.ResponseWriter, project, id string) {
	out := make([]byte, 0, 40+len(project)+len(id))
	out = append(out, `{"name":"projects/`...)
	out = append(out, project...)
	out = append(out, "/messages/"...)
	out = append(out, id...)
	out = append(out, "\"}\n"...)
	h := w.Header()
	h["Content-Type"] = jsonCT
	h["Content-Length"] = []string{strconv.Itoa(len(out))}
	_, _ = w.Write(out)
}

// checkRequest checks what comes before the body: method, credentials,
// project and content type.
func (s *Server) checkRequest(r *http.Request, project string) *apiErr {
	if r.Method != http.MethodPost {
		return &apiErr{code: 404, status: "NOT_FOUND", msg: "The requested URL was not found on this server: messages:send takes POST."}
	}
	auth := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(auth, " ")
	if auth == "" || !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return &apiErr{code: 401, status: "UNAUTHENTICATED", msg: "Request is missing the required authentication credential: an OAuth 2 access token as a Bearer token."}
	}
	v, found := s.tokens.Load(tok)
	if !found {
		return &apiErr{code: 401, status: "UNAUTHENTICATED", msg: "Request had invalid authentication credentials: unknown access token."}
	}
	g := v.(*grant)
	if s.now().UnixNano() >= g.expires.Load() {
		return &apiErr{code: 401, status: "UNAUTHENTICATED", msg: "Request had invalid authentication credentials: the access token has expired."}
	}
	if g.project != project {
		return &apiErr{code: 403, status: "PERMISSION_DENIED", msg: "Permission 'cloudmessaging.messages.create' denied on project " + project + ", or it does not exist."}
	}
	if !g.scoped {
		return &apiErr{code: 403, status: "PERMISSION_DENIED", msg: "Request had insufficient authentication scopes."}
	}
	ct := r.Header.Get("Content-Type")
	if ct != "application/json" && ct != "application/json; charset=utf-8" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return invalidArg("Invalid JSON payload received. Content-Type must be application/json, not "+strconv.Quote(ct)+".", "")
		}
	}
	return nil
}

// checkToken checks the registration token: its format, whether its app
// instance is gone, and whose it is.
func (s *Server) checkToken(token, project string) *apiErr {
	if !validToken(token) {
		return &apiErr{code: 400, status: "INVALID_ARGUMENT", msg: "The registration token is not a valid FCM registration token", fcmCode: "INVALID_ARGUMENT"}
	}
	if s.hasUnreg.Load() {
		if _, gone := s.unregistered.Load(token); gone {
			return &apiErr{code: 404, status: "NOT_FOUND", msg: "Requested entity was not found.", fcmCode: "UNREGISTERED"}
		}
	}
	if s.hasBound.Load() {
		if p, ok := s.bound.Load(token); ok && p.(string) != project {
			return &apiErr{code: 403, status: "PERMISSION_DENIED", msg: "SenderId mismatch", fcmCode: "SENDER_ID_MISMATCH"}
		}
	}
	return nil
}
