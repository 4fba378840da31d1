// Package payload checks native notification payloads against what each
// push service will accept, so that a send the service would refuse fails
// at the hub with a message that names the rule, instead of later, per
// device, with the service's error. It checks native sends and rendered
// template output alike.
//
// The checks are deliberately shallow: size, and the shape the hub itself
// depends on (a JSON object, a well-formed XML document, no caller-chosen
// targets). Field-level validation is left to the push services, whose
// rules change more often than the hub would.
package payload

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Format is a Notification Hubs payload format, as named by the
// ServiceBusNotification-Format header.
type Format string

// The formats a send may carry.
const (
	Apple    Format = "apple"
	FCMV1    Format = "fcmv1"
	GCM      Format = "gcm" // FCM legacy HTTP; also spelled "fcm" by the .NET SDK
	Windows  Format = "windows"
	Browser  Format = "browser"
	ADM      Format = "adm"
	Baidu    Format = "baidu"
	Xiaomi   Format = "xiaomi"
	Template Format = "template"
)

// ParseFormat parses a ServiceBusNotification-Format value. Clients differ
// in case ("fcmV1" in the portal and docs, lower case from the JS SDK), so
// the comparison ignores it; "fcm" is the .NET SDK's name for gcm.
func ParseFormat(s string) (Format, error) {
	switch f := Format(strings.ToLower(strings.TrimSpace(s))); f {
	case Apple, FCMV1, GCM, Windows, Browser, ADM, Baidu, Xiaomi, Template:
		return f, nil
	case "fcm":
		return GCM, nil
	case "windowsphone", "nokiax":
		return "", fmt.Errorf("payload: format %q is retired and not supported", s)
	}
	return "", fmt.Errorf("payload: unknown format %q", s)
}

// Size limits, in bytes of the body as sent to the service.
const (
	// MaxApple: APNs rejects larger payloads with PayloadTooLarge (Apple,
	// "Creating the Remote Notification Payload"; peers §12.1). VoIP
	// pushes may be 5120, but Notification Hubs applies 4096 to all
	// (reference §9.3), and so do we.
	MaxApple = 4096
	// MaxFCM applies to FCM v1 and legacy alike (Firebase documentation,
	// peers §12.2; reference §9.3).
	MaxFCM = 4096
	// MaxWindows: Notification Hubs documents WNS payloads, raw included,
	// as "up to 5 KB" (reference §9.3, send-wns-native-notification). The
	// WNS response-code table phrases it as 5000 bytes (peers §12.3);
	// 5120 is the hub's documented figure and what clients expect.
	MaxWindows = 5120
	// MaxADM: Amazon Device Messaging caps the data payload at 6 KB
	// (Amazon ADM "Send a Message" documentation).
	MaxADM = 6144
	// MaxBaidu: Baidu Cloud Push caps message content at 4 KB (Baidu push
	// server API documentation; not covered by the local references).
	MaxBaidu = 4096
	// MaxXiaomi: Mi Push caps the payload at 4 KB (Xiaomi server SDK
	// documentation; not covered by the local references).
	MaxXiaomi = 4096
	// MaxTemplate: a template send body is bounded by the 64 KB request
	// body limit Notification Hubs applies to every send (reference §9.3).
	MaxTemplate = 64 << 10
)

// Web Push: RFC 8030 §7.2 only obliges a push service to accept 4096
// octets of body, and RFC 8291 §4 requires the aes128gcm content coding
// (RFC 8188) with a single record, so the browser payload limit is what
// remains of one 4096-byte record after encryption overhead.
const (
	webPushMaxRecord = 4096
	// RFC 8188 §2.1 header: salt(16) || rs(4) || idlen(1) || keyid, where
	// RFC 8291 §4 puts the 65-byte uncompressed P-256 public key in keyid.
	webPushHeader = 16 + 4 + 1 + 65
	// AES-GCM authentication tag (RFC 8188 §2).
	webPushTag = 16
	// Padding delimiter octet that ends the plaintext of the last record
	// (RFC 8188 §2; RFC 8291 §4 requires at least this one octet).
	webPushDelimiter = 1
	// MaxBrowser is the largest plaintext that fits: 3993 bytes.
	MaxBrowser = webPushMaxRecord - webPushHeader - webPushTag - webPushDelimiter
)

// MaxSize returns the body limit for f, and the name of the service that
// imposes it (for messages).
func MaxSize(f Format) (int, string) {
	switch f {
	case Apple:
		return MaxApple, "APNs"
	case FCMV1, GCM:
		return MaxFCM, "FCM"
	case Windows:
		return MaxWindows, "WNS"
	case Browser:
		return MaxBrowser, "Web Push (one aes128gcm record)"
	case ADM:
		return MaxADM, "ADM"
	case Baidu:
		return MaxBaidu, "Baidu Push"
	case Xiaomi:
		return MaxXiaomi, "Mi Push"
	case Template:
		return MaxTemplate, "a template send"
	}
	return 0, ""
}

// ErrTooLarge is matched (with errors.Is) by an *Error that reports a size
// limit, so that callers can answer 413 rather than 400.
var ErrTooLarge = errors.New("payload: too large")

// Error says why a payload would be refused.
type Error struct {
	Format Format
	// Reason completes the sentence "<format> payload ...".
	Reason string
	// Limit and Size are set for size errors only.
	Limit, Size int
}

func (e *Error) Error() string {
	return string(e.Format) + " payload " + e.Reason
}

// Is makes errors.Is(err, ErrTooLarge) true for size errors.
func (e *Error) Is(target error) bool {
	return target == ErrTooLarge && e.Limit > 0
}

// WNS notification types (the X-WNS-Type header).
const (
	WNSToast = "wns/toast"
	WNSTile  = "wns/tile"
	WNSBadge = "wns/badge"
	WNSRaw   = "wns/raw"
)

// Check reports whether body is a payload the service for f would accept,
// as far as size and shape go. wnsType is the X-WNS-Type header and only
// matters for Windows: raw notifications are opaque, the others are XML.
// An empty wnsType is treated as XML (toast, tile and badge all are).
func Check(f Format, body []byte, wnsType string) error {
	limit, service := MaxSize(f)
	if service == "" {
		return &Error{Format: f, Reason: "has an unknown format"}
	}
	if len(body) > limit {
		return &Error{Format: f, Reason: fmt.Sprintf("is %d bytes; %s accepts at most %d", len(body), service, limit), Limit: limit, Size: len(body)}
	}
	switch f {
	case Apple:
		return checkApple(body)
	case FCMV1:
		return checkFCMV1(body)
	case GCM:
		return checkGCM(body)
	case Windows:
		return checkWindows(body, wnsType)
	case Template:
		return checkTemplate(body)
	default: // Browser, ADM, Baidu, Xiaomi
		_, err := object(f, body)
		return err
	}
}

func shapeErr(f Format, format string, args ...any) error {
	return &Error{Format: f, Reason: fmt.Sprintf(format, args...)}
}

// object parses body as a JSON object, keeping member values raw. Keys
// are matched exactly: push services treat JSON keys case-sensitively.
func object(f Format, body []byte) (map[string]json.RawMessage, error) {
	if !json.Valid(body) {
		var v any
		err := json.Unmarshal(body, &v)
		msg := "invalid JSON"
		var se *json.SyntaxError
		if errors.As(err, &se) {
			msg = fmt.Sprintf("invalid JSON at offset %d: %s", se.Offset, strings.TrimPrefix(se.Error(), "json: "))
		}
		return nil, shapeErr(f, "is not valid JSON: %s", msg)
	}
	t := bytes.TrimLeft(body, " \t\r\n")
	if len(t) == 0 || t[0] != '{' {
		return nil, shapeErr(f, "must be a JSON object")
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, shapeErr(f, "is not a JSON object: %v", err)
	}
	return m, nil
}

func isObject(raw json.RawMessage) bool {
	t := bytes.TrimLeft(raw, " \t\r\n")
	return len(t) > 0 && t[0] == '{'
}

func checkApple(body []byte) error {
	m, err := object(Apple, body)
	if err != nil {
		return err
	}
	if aps, ok := m["aps"]; ok && !isObject(aps) {
		return shapeErr(Apple, "has an \"aps\" member that is not an object")
	}
	return nil
}

// fcmTargets are the message fields that choose recipients. The hub sets
// the token itself; a payload that names its own target would send to it
// once per matching device, outside tag routing.
var fcmTargets = []string{"token", "topic", "condition"}

func checkFCMV1(body []byte) error {
	m, err := object(FCMV1, body)
	if err != nil {
		return err
	}
	raw, ok := m["message"]
	if !ok {
		return shapeErr(FCMV1, `must be {"message":{...}}: there is no "message" member`)
	}
	for k := range m {
		if k != "message" {
			return shapeErr(FCMV1, `has an unexpected top-level member %q: the body must be {"message":{...}}`, k)
		}
	}
	if !isObject(raw) {
		return shapeErr(FCMV1, `has a "message" member that is not an object`)
	}
	var msg map[string]json.RawMessage
	if err := json.Unmarshal(raw, &msg); err != nil {
		return shapeErr(FCMV1, "has an unreadable message: %v", err)
	}
	for _, k := range fcmTargets {
		if _, ok := msg[k]; ok {
			return shapeErr(FCMV1, "must not set message.%s: the hub sets the device token", k)
		}
	}
	if data, ok := msg["data"]; ok && string(bytes.TrimSpace(data)) != "null" {
		if !isObject(data) {
			return shapeErr(FCMV1, "has a message.data that is not an object")
		}
		var kv map[string]json.RawMessage
		if err := json.Unmarshal(data, &kv); err != nil {
			return shapeErr(FCMV1, "has an unreadable message.data: %v", err)
		}
		for k, v := range kv {
			if t := bytes.TrimLeft(v, " \t\r\n"); len(t) == 0 || t[0] != '"' {
				return shapeErr(FCMV1, "has message.data.%s that is not a string: FCM data values must be strings", k)
			}
		}
	}
	return nil
}

// gcmTargets are the legacy FCM fields that choose recipients.
var gcmTargets = []string{"to", "registration_ids", "condition"}

func checkGCM(body []byte) error {
	m, err := object(GCM, body)
	if err != nil {
		return err
	}
	for _, k := range gcmTargets {
		if _, ok := m[k]; ok {
			return shapeErr(GCM, "must not set %q: the hub sets the registration id", k)
		}
	}
	return nil
}

func checkWindows(body []byte, wnsType string) error {
	switch strings.ToLower(strings.TrimSpace(wnsType)) {
	case WNSRaw:
		return nil // opaque bytes: only the size applies
	case "", WNSToast, WNSTile, WNSBadge:
	default:
		return shapeErr(Windows, "has X-WNS-Type %q; expected wns/toast, wns/tile, wns/badge or wns/raw", wnsType)
	}
	if err := wellFormed(body); err != nil {
		return shapeErr(Windows, "is not well-formed XML: %v", err)
	}
	return nil
}

// wellFormed checks for a single, well-formed XML element. encoding/xml
// does not resolve external entities, so a DOCTYPE is harmless here.
func wellFormed(body []byte) error {
	d := xml.NewDecoder(bytes.NewReader(bytes.TrimPrefix(body, []byte("\uFEFF"))))
	d.Strict = true
	depth, roots := 0, 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				roots++
				if roots > 1 {
					return fmt.Errorf("line %d: more than one root element", lineOf(d))
				}
			}
			depth++
		case xml.EndElement:
			depth--
		case xml.CharData:
			if depth == 0 && len(bytes.TrimSpace(tok)) > 0 {
				return fmt.Errorf("line %d: text outside the root element", lineOf(d))
			}
		}
	}
	if roots == 0 {
		return errors.New("no root element")
	}
	return nil
}

func lineOf(d *xml.Decoder) int {
	line, _ := d.InputPos()
	return line
}

// checkTemplate checks a template send body: a flat JSON object of
// properties (strings; numbers and booleans are tolerated).
func checkTemplate(body []byte) error {
	m, err := object(Template, body)
	if err != nil {
		return err
	}
	for k, v := range m {
		t := bytes.TrimLeft(v, " \t\r\n")
		if len(t) > 0 && (t[0] == '{' || t[0] == '[') {
			return shapeErr(Template, "has property %q that is not a string: template properties must be strings", k)
		}
	}
	return nil
}
