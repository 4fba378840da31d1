package hubcore

import (
	"errors"
	"strconv"
	"strings"

	"github.com/pushgate/pushgate/hubcore/payload"
	"github.com/pushgate/pushgate/hubcore/template"
)

// Format is the payload format a platform's notifications are sent in.
func (p Platform) Format() payload.Format {
	switch p {
	case APNS:
		return payload.Apple
	case FCMV1:
		return payload.FCMV1
	case GCM:
		return payload.GCM
	case WNS:
		return payload.Windows
	case Browser:
		return payload.Browser
	case ADM:
		return payload.ADM
	case Baidu:
		return payload.Baidu
	default:
		return payload.Xiaomi
	}
}

// Rendered is one notification rendered from a template for one device:
// what a platform sender needs beyond the handle.
type Rendered struct {
	Body    []byte
	Headers []Header
	// Expiration is the APNs expiration as UNIX seconds ("0": deliver now
	// or never), or "" when the template sets none.
	Expiration string
	// Priority is the APNs priority ("1", "5" or "10"), or "".
	Priority string
}

// Header is a rendered header.
type Header struct{ Name, Value string }

// Render renders the compiled template for platform p with the send's
// properties layered over the device's push variables, appending the body to
// dst (pass a reused buffer's [:0] to render without allocating it), and
// checks the result against the platform's payload rules. Errors are
// *Error: CodeLimit when the payload is too large for the service, otherwise
// CodeInvalid.
func (c *CompiledTemplate) Render(dst []byte, p Platform, props template.Props) (Rendered, error) {
	var r Rendered
	var err error
	if r.Body, err = c.Body.Render(dst, props); err != nil {
		return r, renderError("body", err)
	}
	if err := payload.Check(p.Format(), r.Body, c.WNSType); err != nil {
		return r, renderError("body", err)
	}
	for _, h := range c.Headers {
		v, err := h.Value.String(props)
		if err != nil {
			return r, renderError("headers."+h.Name, err)
		}
		if err := checkHeader(p, h.Name, v, true); err != nil {
			return r, invalid("headers."+h.Name, "rendered value %q: %v", v, err)
		}
		r.Headers = append(r.Headers, Header{Name: h.Name, Value: v})
	}
	if c.Expiry != nil {
		v, err := c.Expiry.String(props)
		if err != nil {
			return r, renderError("expiry", err)
		}
		if r.Expiration, err = apnsExpiration(v); err != nil {
			return r, invalid("expiry", "rendered expiry %q: %v", v, err)
		}
	}
	if c.Priority != nil {
		v, err := c.Priority.String(props)
		if err != nil {
			return r, renderError("priority", err)
		}
		if v != "1" && v != "5" && v != "10" {
			return r, invalid("priority", "rendered APNs priority %q is not 1, 5 or 10", v)
		}
		r.Priority = v
	}
	return r, nil
}

// apnsExpiration turns a W3C date or "0" into APNs' UNIX seconds; an empty
// rendering (a missing property) means "no expiration set".
func apnsExpiration(v string) (string, error) {
	v = strings.TrimSpace(v)
	switch v {
	case "":
		return "", nil
	case "0":
		return "0", nil
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
		return v, nil
	}
	t, err := ParseTime(v)
	if err != nil {
		return "", err
	}
	if t.IsZero() {
		return "", nil
	}
	return strconv.FormatInt(t.Unix(), 10), nil
}

func renderError(field string, err error) *Error {
	code := CodeInvalid
	if errors.Is(err, payload.ErrTooLarge) || errors.Is(err, template.ErrTooLarge) {
		code = CodeLimit
	}
	return &Error{Code: code, Field: field, Reason: err.Error(), Err: err}
}
