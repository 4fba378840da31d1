package fcm

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// apiErr is a refusal in the making: the HTTP status, google.rpc status
// name, message, FcmError code (or "") and the bad field (or "").
type apiErr struct {
	code    int
	status  string
	msg     string
	fcmCode string
	field   string
}

func invalidArg(msg, field string) *apiErr {
	return &apiErr{code: 400, status: "INVALID_ARGUMENT", msg: msg, field: field}
}

// fcmCodes are FCM's ErrorCode values with the HTTP status each comes with
// and the message the fake answers them with.
var fcmCodes = map[string]struct {
	code int
	msg  string
}{
	"UNSPECIFIED_ERROR":      {500, "Unspecified error."},
	"INVALID_ARGUMENT":       {400, "Request contains an invalid argument."},
	"UNREGISTERED":           {404, "Requested entity was not found."},
	"SENDER_ID_MISMATCH":     {403, "SenderId mismatch"},
	"QUOTA_EXCEEDED":         {429, "Quota exceeded for message sending."},
	"UNAVAILABLE":            {503, "The service is currently unavailable."},
	"INTERNAL":               {500, "Internal error encountered."},
	"THIRD_PARTY_AUTH_ERROR": {401, "Auth error from APNS or Web Push Service"},
}

// defaultFcmCode is the FcmError code a scripted failure with only a status
// stands for.
func defaultFcmCode(code int) string {
	switch code {
	case 400:
		return "INVALID_ARGUMENT"
	case 401:
		return "THIRD_PARTY_AUTH_ERROR"
	case 403:
		return "SENDER_ID_MISMATCH"
	case 404:
		return "UNREGISTERED"
	case 429:
		return "QUOTA_EXCEEDED"
	case 503:
		return "UNAVAILABLE"
	case 500:
		return "INTERNAL"
	}
	return "UNSPECIFIED_ERROR"
}

// statusName is the google.rpc.Code name Google's HTTP APIs pair with an
// HTTP status.
func statusName(code int) string {
	switch code {
	case 400:
		return "INVALID_ARGUMENT"
	case 401:
		return "UNAUTHENTICATED"
	case 403:
		return "PERMISSION_DENIED"
	case 404:
		return "NOT_FOUND"
	case 409:
		return "ABORTED"
	case 412:
		return "FAILED_PRECONDITION"
	case 429:
		return "RESOURCE_EXHAUSTED"
	case 499:
		return "CANCELLED"
	case 500:
		return "INTERNAL"
	case 501:
		return "UNIMPLEMENTED"
	case 503:
		return "UNAVAILABLE"
	case 504:
		return "DEADLINE_EXCEEDED"
	}
	return "UNKNOWN"
}

// scripted turns a pnsfake Fail action into an answer. Reason is an FcmError
// code (with FcmError details), a google.rpc status name such as
// UNAUTHENTICATED or PERMISSION_DENIED (without), or empty (the FcmError
// code that goes with Status). "CODE: message" also sets the message.
func scripted(status int, reason string) *apiErr {
	code, msg, _ := strings.Cut(reason, ":")
	code, msg = strings.TrimSpace(code), strings.TrimSpace(msg)
	if code == "" {
		code = defaultFcmCode(status)
	}
	e := &apiErr{code: status, msg: msg}
	if c, ok := fcmCodes[code]; ok {
		e.fcmCode = code
		if e.code == 0 {
			e.code = c.code
		}
		if e.msg == "" {
			e.msg = c.msg
		}
		e.status = statusName(e.code)
		return e
	}
	// A bare google.rpc status, e.g. UNAUTHENTICATED for a stale token.
	if e.code == 0 {
		e.code = 500
	}
	e.status = code
	if e.msg == "" {
		e.msg = "Scripted " + strings.ToLower(code) + " error."
	}
	return e
}

type errorBody struct {
	Error struct {
		Code    int      `json:"code"`
		Message string   `json:"message"`
		Status  string   `json:"status"`
		Details []detail `json:"details,omitempty"`
	} `json:"error"`
}

type detail struct {
	Type            string      `json:"@type"`
	ErrorCode       string      `json:"errorCode,omitempty"`
	FieldViolations []violation `json:"fieldViolations,omitempty"`
}

type violation struct {
	Field       string `json:"field"`
	Description string `json:"description"`
}

var jsonCT = []string{"application/json; charset=UTF-8"}

// write answers e in Google's error shape.
func (e *apiErr) write(w http.ResponseWriter) {
	var b errorBody
	b.Error.Code, b.Error.Message, b.Error.Status = e.code, e.msg, e.status
	if e.fcmCode != "" {
		b.Error.Details = append(b.Error.Details, detail{Type: "type.googleapis.com/google.firebase.fcm.v1.FcmError", ErrorCode: e.fcmCode})
	}
	if e.field != "" {
		b.Error.Details = append(b.Error.Details, detail{Type: "type.googleapis.com/google.rpc.BadRequest",
			FieldViolations: []violation{{Field: e.field, Description: e.msg}}})
	}
	out, _ := json.MarshalIndent(&b, "", "  ")
	h := w.Header()
	h["Content-Type"] = jsonCT
	if e.code == 401 {
		h.Set("WWW-Authenticate", `Bearer realm="https://accounts.google.com/", error="invalid_token"`)
	}
	h.Set("Content-Length", strconv.Itoa(len(out)))
	w.WriteHeader(e.code)
	_, _ = w.Write(out)
}

func writeError(w http.ResponseWriter, code int, status, msg, fcmCode string) {
	(&apiErr{code: code, status: status, msg: msg, fcmCode: fcmCode}).write(w)
}
