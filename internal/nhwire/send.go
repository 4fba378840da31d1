package nhwire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/payload"
)

// The routing headers of a send request.
const (
	HeaderFormat       = "ServiceBusNotification-Format"
	HeaderTags         = "ServiceBusNotification-Tags"
	HeaderDeviceHandle = "ServiceBusNotification-DeviceHandle"
	HeaderScheduleTime = "ServiceBusNotification-ScheduleTime"
	HeaderApnsExpiry   = "ServiceBusNotification-Apns-Expiry"
	// headerApnsExpiryAlt is the Python sample's spelling.
	headerApnsExpiryAlt = "ServiceBusNotification-ApnsExpiry"
)

// SendHeaders is what a send request's headers say.
type SendHeaders struct {
	// Format is the payload format; absent means template.
	Format payload.Format
	// ContentType is the request's Content-Type as sent.
	ContentType string
	// Tags is the tag expression. HasTags false (header absent) means
	// broadcast; HasTags true with Tags "" means no targets at all, never
	// a broadcast. The JS client's literal "undefined" (sent for broadcast
	// test sends) is read as absent.
	Tags    string
	HasTags bool
	// DeviceHandle is the direct send's handle (for browser, the
	// subscription endpoint, with P256DH and Auth from their headers).
	DeviceHandle string
	P256DH       string
	Auth         string
	// ScheduleTime is when a scheduled send is due; zero when absent.
	ScheduleTime time.Time
	// Headers are the pass-through headers for the push services, sorted
	// by name: apns-* (lower case), X-WNS-*, and Web Push TTL, Urgency and
	// Topic, each kept only for the formats that use it (all of them for
	// template sends, which may reach any platform).
	Headers []hubcore.Header
}

func sendInvalid(field, format string, args ...any) *hubcore.Error {
	return &hubcore.Error{Code: hubcore.CodeInvalid, Field: field, Reason: fmt.Sprintf(format, args...)}
}

// single returns the one value of a header; a header sent twice is
// ambiguous and refused. Names match in any case, also in an http.Header
// built by hand with keys that are not in canonical form.
func single(h http.Header, name string) (string, bool, error) {
	var vs []string
	for k, v := range h {
		if strings.EqualFold(k, name) {
			vs = append(vs, v...)
		}
	}
	switch len(vs) {
	case 0:
		return "", false, nil
	case 1:
		return strings.TrimSpace(vs[0]), true, nil
	}
	return "", false, sendInvalid(name, "the header appears more than once")
}

// wnsNames spells the WNS headers as Microsoft documents them; Go
// canonicalises header keys (X-Wns-Requestforstatus) and WNS is
// case-insensitive anyway, but logs and tests read better.
var wnsNames = map[string]string{}

func init() {
	for _, n := range []string{"X-WNS-Type", "X-WNS-Cache-Policy", "X-WNS-RequestForStatus", "X-WNS-Tag",
		"X-WNS-TTL", "X-WNS-SuppressPopup", "X-WNS-Group", "X-WNS-Match"} {
		wnsNames[strings.ToLower(n)] = n
	}
}

// wnsTypes are the values X-WNS-Type may take.
var wnsTypes = map[string]bool{"wns/toast": true, "wns/tile": true, "wns/badge": true, "wns/raw": true}

// ParseScheduleTime reads ServiceBusNotification-ScheduleTime in the forms
// the SDKs send: JS's ISO time with milliseconds and Z, and .NET's and
// Java's yyyy-MM-ddTHH:mm:ss without a zone, which means UTC.
func ParseScheduleTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse("2006-01-02T15:04:05.9999999", s); err == nil {
		return t, nil
	}
	return time.Time{}, sendInvalid(HeaderScheduleTime, "%q is not a UTC time such as 2026-05-01T12:00:00Z", s)
}

// ParseSendHeaders reads a send request's headers, leniently: names in any
// case, the format in any case ("fcmV1", "fcm" for gcm). Errors are
// *hubcore.Error with the header as Field: CodeUnsupported for the retired
// windowsphone and nokiax formats, CodeInvalid otherwise. A windows send
// needs X-WNS-Type. apns-topic is dropped: the topic comes from the hub's
// credential, as in the service. X-Apns-Priority (.NET) becomes
// apns-priority and ServiceBusNotification-Apns-Expiry (a W3C date) becomes
// apns-expiration (Unix seconds) unless the apns- header is also sent.
func ParseSendHeaders(h http.Header) (*SendHeaders, error) {
	s := &SendHeaders{ContentType: h.Get("Content-Type")}
	f, ok, err := single(h, HeaderFormat)
	if err != nil {
		return nil, err
	}
	switch lf := strings.ToLower(f); {
	case !ok || lf == "":
		s.Format = payload.Template
	case lf == "windowsphone" || lf == "nokiax":
		return nil, &hubcore.Error{Code: hubcore.CodeUnsupported, Field: HeaderFormat, Reason: fmt.Sprintf("format %q is retired and not supported", f)}
	default:
		if s.Format, err = payload.ParseFormat(f); err != nil {
			return nil, sendInvalid(HeaderFormat, "unknown format %q (want apple, fcmv1, gcm, windows, adm, baidu, browser, xiaomi or template)", f)
		}
	}
	if s.Tags, s.HasTags, err = single(h, HeaderTags); err != nil {
		return nil, err
	}
	if s.HasTags && s.Tags == "undefined" {
		s.Tags, s.HasTags = "", false
	}
	if s.DeviceHandle, _, err = single(h, HeaderDeviceHandle); err != nil {
		return nil, err
	}
	if s.P256DH, _, err = single(h, "P256DH"); err != nil {
		return nil, err
	}
	if s.Auth, _, err = single(h, "Auth"); err != nil {
		return nil, err
	}
	if v, ok, err := single(h, HeaderScheduleTime); err != nil {
		return nil, err
	} else if ok {
		if s.ScheduleTime, err = ParseScheduleTime(v); err != nil {
			return nil, err
		}
	}
	apple := s.Format == payload.Apple || s.Format == payload.Template
	windows := s.Format == payload.Windows || s.Format == payload.Template
	browser := s.Format == payload.Browser || s.Format == payload.Template
	out := map[string]string{}
	for name := range h {
		lname := strings.ToLower(name)
		var key string
		switch {
		case apple && strings.HasPrefix(lname, "apns-") && lname != "apns-topic":
			key = lname
		case windows && strings.HasPrefix(lname, "x-wns-"):
			key = wnsNames[lname]
			if key == "" {
				key = "X-WNS-" + name[len("x-wns-"):]
			}
		case browser && (lname == "ttl" || lname == "urgency" || lname == "topic"):
			key = http.CanonicalHeaderKey(lname)
			if lname == "ttl" {
				key = "TTL"
			}
		default:
			continue
		}
		v, _, err := single(h, name)
		if err != nil {
			return nil, err
		}
		out[key] = v
	}
	if apple {
		if v, ok, err := single(h, "X-Apns-Priority"); err != nil {
			return nil, err
		} else if ok && out["apns-priority"] == "" {
			out["apns-priority"] = v
		}
		for _, name := range []string{HeaderApnsExpiry, headerApnsExpiryAlt} {
			v, ok, err := single(h, name)
			if err != nil {
				return nil, err
			}
			if !ok || out["apns-expiration"] != "" {
				continue
			}
			t, err := hubcore.ParseTime(v)
			if err != nil {
				return nil, sendInvalid(name, "%v", err)
			}
			if !t.IsZero() {
				out["apns-expiration"] = strconv.FormatInt(t.Unix(), 10)
			}
		}
	}
	if windows {
		typ, ok := out["X-WNS-Type"]
		if ok {
			typ = strings.ToLower(typ)
			if !wnsTypes[typ] {
				return nil, sendInvalid("X-WNS-Type", "%q is not one of wns/toast, wns/tile, wns/badge, wns/raw", out["X-WNS-Type"])
			}
			out["X-WNS-Type"] = typ
		} else if s.Format == payload.Windows {
			return nil, sendInvalid("X-WNS-Type", "a windows send needs X-WNS-Type (wns/toast, wns/tile, wns/badge or wns/raw)")
		}
	}
	names := make([]string, 0, len(out))
	for k := range out {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		s.Headers = append(s.Headers, hubcore.Header{Name: k, Value: out[k]})
	}
	return s, nil
}

// BatchLimits bound a $batch body. Zero fields take the defaults.
type BatchLimits struct {
	// MaxBody is the whole body's size (default 1 MiB).
	MaxBody int64
	// MaxNotification is the notification part's size (default 64 KiB,
	// the service's message limit).
	MaxNotification int
	// MaxDevices is the number of handles (default 1000, the service's).
	MaxDevices int
}

func (l BatchLimits) withDefaults() BatchLimits {
	if l.MaxBody <= 0 {
		l.MaxBody = 1 << 20
	}
	if l.MaxNotification <= 0 {
		l.MaxNotification = 64 << 10
	}
	if l.MaxDevices <= 0 {
		l.MaxDevices = 1000
	}
	return l
}

// Batch is a parsed direct batch send.
type Batch struct {
	// Notification is the payload and ContentType its part's Content-Type.
	Notification []byte
	ContentType  string
	// Devices are the handles, in the order sent.
	Devices []string
}

// batchField names the body in errors.
const batchField = "$batch"

// mediaParams parses "type/sub; k = v; k2="v2"" leniently: the JS client
// writes boundary = "…" with spaces around "=", which mime.ParseMediaType
// refuses.
func mediaParams(v string) (string, map[string]string) {
	parts := strings.Split(v, ";")
	params := map[string]string{}
	for _, p := range parts[1:] {
		k, val, ok := strings.Cut(p, "=")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		if len(val) >= 2 && (val[0] == '"' && val[len(val)-1] == '"' || val[0] == '\'' && val[len(val)-1] == '\'') {
			val = val[1 : len(val)-1]
		}
		params[strings.ToLower(strings.TrimSpace(k))] = val
	}
	return strings.ToLower(strings.TrimSpace(parts[0])), params
}

// countingReader fails once more than max bytes have been read.
type countingReader struct {
	r   io.Reader
	n   int64
	max int64
}

var errBodyTooLarge = errors.New("body too large")

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n > c.max {
		return n, errBodyTooLarge
	}
	return n, err
}

// ParseBatch reads a $batch body: multipart/mixed with a part named
// notification (the payload, with its Content-Type) and a part named
// devices (a JSON array of handle strings; the docs' single-quoted arrays
// are accepted). Parts are identified by the name parameter of their
// Content-Disposition; other parts are ignored. Errors are *hubcore.Error:
// CodeInvalid for a malformed body or a missing part ("Could not find a
// part of the multipart content supplied."), CodeLimit beyond lim.
func ParseBatch(contentType string, body io.Reader, lim BatchLimits) (*Batch, error) {
	lim = lim.withDefaults()
	mt, params := mediaParams(contentType)
	if !strings.HasPrefix(mt, "multipart/") {
		return nil, sendInvalid("Content-Type", "a $batch send must be multipart/mixed, not %q", mt)
	}
	boundary := params["boundary"]
	if boundary == "" || len(boundary) > 70 {
		return nil, sendInvalid("Content-Type", "multipart/mixed needs a boundary of 1 to 70 characters")
	}
	cr := &countingReader{r: body, max: lim.MaxBody}
	mr := multipart.NewReader(cr, boundary)
	b := &Batch{}
	var haveNote, haveDevices bool
	for {
		part, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, batchReadErr(err, lim)
		}
		_, disp := mediaParams(part.Header.Get("Content-Disposition"))
		name := strings.ToLower(disp["name"])
		switch name {
		case "notification":
			if haveNote {
				return nil, sendInvalid(batchField, "the notification part appears twice")
			}
			haveNote = true
			data, err := io.ReadAll(io.LimitReader(part, int64(lim.MaxNotification)+1))
			if err != nil {
				return nil, batchReadErr(err, lim)
			}
			if len(data) > lim.MaxNotification {
				return nil, &hubcore.Error{Code: hubcore.CodeLimit, Field: "notification", Reason: fmt.Sprintf("the notification is larger than %d bytes", lim.MaxNotification)}
			}
			b.Notification = data
			b.ContentType = textproto.MIMEHeader(part.Header).Get("Content-Type")
		case "devices":
			if haveDevices {
				return nil, sendInvalid(batchField, "the devices part appears twice")
			}
			haveDevices = true
			data, err := io.ReadAll(part)
			if err != nil {
				return nil, batchReadErr(err, lim)
			}
			if b.Devices, err = parseDevices(data, lim.MaxDevices); err != nil {
				return nil, err
			}
		default:
			if _, err := io.Copy(io.Discard, part); err != nil {
				return nil, batchReadErr(err, lim)
			}
		}
	}
	if !haveNote || !haveDevices {
		return nil, sendInvalid(batchField, "Could not find a part of the multipart content supplied.")
	}
	return b, nil
}

func batchReadErr(err error, lim BatchLimits) error {
	if errors.Is(err, errBodyTooLarge) {
		return &hubcore.Error{Code: hubcore.CodeLimit, Field: batchField, Reason: fmt.Sprintf("the body is larger than %d bytes", lim.MaxBody)}
	}
	return &hubcore.Error{Code: hubcore.CodeInvalid, Field: batchField, Reason: "the multipart body is malformed: " + err.Error(), Err: err}
}

// parseDevices reads the devices part: ["a","b"], or ['a','b'] as the
// documentation's examples write it.
func parseDevices(data []byte, max int) ([]string, error) {
	var devs []*string
	if err := json.Unmarshal(data, &devs); err != nil {
		trimmed := bytes.TrimSpace(data)
		if !bytes.ContainsRune(trimmed, '"') && bytes.ContainsRune(trimmed, '\'') {
			err = json.Unmarshal(bytes.ReplaceAll(trimmed, []byte("'"), []byte(`"`)), &devs)
		}
		if err != nil {
			return nil, sendInvalid("devices", "the devices part must be a JSON array of handle strings")
		}
	}
	if len(devs) == 0 {
		return nil, sendInvalid("devices", "the devices part lists no handles")
	}
	if len(devs) > max {
		return nil, &hubcore.Error{Code: hubcore.CodeLimit, Field: "devices", Reason: fmt.Sprintf("%d handles; a batch may carry at most %d", len(devs), max)}
	}
	out := make([]string, len(devs))
	for i, d := range devs {
		if d == nil || strings.TrimSpace(*d) == "" {
			return nil, sendInvalid("devices", "handle %d is empty", i)
		}
		out[i] = strings.TrimSpace(*d)
	}
	return out, nil
}
