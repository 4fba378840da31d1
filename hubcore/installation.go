package hubcore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Installation is one app installation on one device: its push handle, its
// tags and its templates. It is the Notification Hubs installation model; the
// JSON methods speak its wire shape.
type Installation struct {
	InstallationID     string
	UserID             string
	Platform           Platform
	PushChannel        PushChannel
	PushChannelExpired bool
	Tags               []string
	PushVariables      map[string]string
	Templates          map[string]*Template
	// ExpirationTime is when the hub forgets the installation; zero means never.
	ExpirationTime time.Time
	// LastActiveOn is when the push service last reported the handle dead.
	LastActiveOn time.Time
	// LastUpdate is when the installation was last written.
	LastUpdate time.Time
	// Version is the store's write counter, served as the ETag. Zero means
	// the installation has not been stored.
	Version int64
}

// Template is a named template of an installation, or the template of a
// template registration. Body, header values, Expiry and Priority may contain
// template expressions; they are compiled by Validate and rendered per send.
type Template struct {
	Body    string
	Headers map[string]string
	// Expiry is the APNs expiration: a W3C date, "0", or an expression.
	Expiry string
	// Priority is the APNs priority of a registration template ("5", "10" or
	// an expression). Installation templates carry it as an apns-priority header.
	Priority string
	Tags     []string

	compiled *CompiledTemplate
}

// PushChannel is a PNS handle: a single string for every platform but
// browser, whose Web Push subscription has an endpoint and two keys. Baidu's
// handle is a channel id, with the Baidu user id beside it when known.
type PushChannel struct {
	Handle      string
	Endpoint    string
	P256DH      string
	Auth        string
	BaiduUserID string
}

// IsZero reports whether no handle is set.
func (c PushChannel) IsZero() bool {
	return c.Handle == "" && c.Endpoint == "" && c.P256DH == "" && c.Auth == ""
}

// Key is the identity of a handle for lookups and de-duplication: APNs tokens
// are hex and compare case-insensitively (the SDKs send upper case, devices
// report lower case), so they are upper-cased; a Web Push subscription is
// identified by its endpoint.
func (c PushChannel) Key(p Platform) string {
	switch p {
	case APNS:
		return strings.ToUpper(c.Handle)
	case Browser:
		return c.Endpoint
	default:
		return c.Handle
	}
}

// NeverExpires is how Notification Hubs writes "no expiry" on the wire.
const NeverExpires = "9999-12-31T23:59:59.9999999Z"

// timeLayout is the .NET round-trip layout the SDKs parse: seven fractional
// digits at most, UTC.
const timeLayout = "2006-01-02T15:04:05.9999999Z07:00"

// FormatTime writes t as the SDKs expect; the zero time means never.
func FormatTime(t time.Time) string {
	if t.IsZero() {
		return NeverExpires
	}
	return t.UTC().Format(timeLayout)
}

// ParseTime reads an ISO 8601 time with or without a zone (no zone means UTC,
// as the .NET "s" format is sent) and maps the year-9999 "never" to zero.
func ParseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	var t time.Time
	var err error
	if t, err = time.Parse(time.RFC3339Nano, s); err != nil {
		if t, err = time.Parse("2006-01-02T15:04:05.9999999", s); err != nil {
			return time.Time{}, fmt.Errorf("%q is not an ISO 8601 time such as 2026-05-01T12:00:00Z", s)
		}
	}
	if t.Year() >= 9999 {
		return time.Time{}, nil
	}
	return t.UTC(), nil
}

type installationWire struct {
	InstallationID     string                   `json:"installationId"`
	PushChannel        json.RawMessage          `json:"pushChannel,omitempty"`
	PushChannelExpired bool                     `json:"pushChannelExpired"`
	Platform           string                   `json:"platform"`
	ExpirationTime     string                   `json:"expirationTime"`
	Tags               []string                 `json:"tags,omitempty"`
	PushVariables      map[string]string        `json:"pushVariables,omitempty"`
	Templates          map[string]*templateWire `json:"templates,omitempty"`
	UserID             string                   `json:"userId,omitempty"`
	LastActiveOn       string                   `json:"lastActiveOn,omitempty"`
	LastUpdate         string                   `json:"lastUpdate,omitempty"`
}

type templateWire struct {
	Body     string            `json:"body"`
	Headers  map[string]string `json:"headers,omitempty"`
	Expiry   string            `json:"expiry,omitempty"`
	Priority string            `json:"priority,omitempty"`
	Tags     []string          `json:"tags,omitempty"`
}

type browserChannelWire struct {
	Endpoint string `json:"endpoint"`
	P256DH   string `json:"p256dh"`
	Auth     string `json:"auth"`
}

// MarshalJSON writes the Notification Hubs shape: camelCase, nulls omitted,
// pushChannelExpired and expirationTime always present, properties in the
// order the service emits them.
func (in *Installation) MarshalJSON() ([]byte, error) {
	w := installationWire{
		InstallationID:     in.InstallationID,
		PushChannelExpired: in.PushChannelExpired,
		Platform:           string(in.Platform),
		ExpirationTime:     FormatTime(in.ExpirationTime),
		Tags:               in.Tags,
		PushVariables:      in.PushVariables,
		UserID:             in.UserID,
	}
	var err error
	if w.PushChannel, err = in.PushChannel.marshal(in.Platform); err != nil {
		return nil, err
	}
	if !in.LastActiveOn.IsZero() {
		w.LastActiveOn = FormatTime(in.LastActiveOn)
	}
	if !in.LastUpdate.IsZero() {
		w.LastUpdate = FormatTime(in.LastUpdate)
	}
	if len(in.Templates) > 0 {
		w.Templates = make(map[string]*templateWire, len(in.Templates))
		for name, t := range in.Templates {
			w.Templates[name] = t.wire()
		}
	}
	return json.Marshal(&w)
}

// Generic is what decoding MarshalJSON's output into an any gives (maps,
// slices, strings, booleans), built directly: policies see installations
// in this shape, and building it without the JSON round trip saves most of
// the cost of preparing a policy's input. TestGenericMatchesJSON keeps the
// two equal.
func (in *Installation) Generic() map[string]any {
	m := make(map[string]any, 11)
	m["installationId"] = in.InstallationID
	if in.Platform == Browser {
		if c := in.PushChannel; c.Endpoint != "" || c.P256DH != "" || c.Auth != "" {
			m["pushChannel"] = map[string]any{"endpoint": c.Endpoint, "p256dh": c.P256DH, "auth": c.Auth}
		}
	} else if in.PushChannel.Handle != "" {
		m["pushChannel"] = in.PushChannel.Handle
	}
	m["pushChannelExpired"] = in.PushChannelExpired
	m["platform"] = string(in.Platform)
	m["expirationTime"] = FormatTime(in.ExpirationTime)
	if len(in.Tags) > 0 {
		m["tags"] = stringsAny(in.Tags)
	}
	if len(in.PushVariables) > 0 {
		m["pushVariables"] = mapAny(in.PushVariables)
	}
	if len(in.Templates) > 0 {
		ts := make(map[string]any, len(in.Templates))
		for name, t := range in.Templates {
			tm := map[string]any{"body": t.Body}
			if len(t.Headers) > 0 {
				tm["headers"] = mapAny(t.Headers)
			}
			if t.Expiry != "" {
				tm["expiry"] = t.Expiry
			}
			if t.Priority != "" {
				tm["priority"] = t.Priority
			}
			if len(t.Tags) > 0 {
				tm["tags"] = stringsAny(t.Tags)
			}
			ts[name] = tm
		}
		m["templates"] = ts
	}
	if in.UserID != "" {
		m["userId"] = in.UserID
	}
	if !in.LastActiveOn.IsZero() {
		m["lastActiveOn"] = FormatTime(in.LastActiveOn)
	}
	if !in.LastUpdate.IsZero() {
		m["lastUpdate"] = FormatTime(in.LastUpdate)
	}
	return m
}

func stringsAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func mapAny(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (t *Template) wire() *templateWire {
	return &templateWire{Body: t.Body, Headers: t.Headers, Expiry: t.Expiry, Priority: t.Priority, Tags: t.Tags}
}

func (c PushChannel) marshal(p Platform) (json.RawMessage, error) {
	if p == Browser {
		if c.Endpoint == "" && c.P256DH == "" && c.Auth == "" {
			return nil, nil
		}
		return json.Marshal(browserChannelWire{Endpoint: c.Endpoint, P256DH: c.P256DH, Auth: c.Auth})
	}
	if c.Handle == "" {
		return nil, nil
	}
	return json.Marshal(c.Handle)
}

// UnmarshalJSON reads an installation leniently, as the SDKs write it: nulls
// and unknown properties are accepted, the platform in any case, pushChannel
// as a string or (browser) an object. Read-only properties sent by a client
// (pushChannelExpired, lastActiveOn, lastUpdate) are ignored. It checks the
// shape of the JSON only; Validate checks the model's rules.
func (in *Installation) UnmarshalJSON(data []byte) error {
	var w struct {
		InstallationID *string                    `json:"installationId"`
		UserID         *string                    `json:"userId"`
		Platform       *string                    `json:"platform"`
		PushChannel    json.RawMessage            `json:"pushChannel"`
		Tags           []*string                  `json:"tags"`
		PushVariables  map[string]*string         `json:"pushVariables"`
		Templates      map[string]json.RawMessage `json:"templates"`
		ExpirationTime *string                    `json:"expirationTime"`
		SecondaryTiles json.RawMessage            `json:"secondaryTiles"`
	}
	if err := decodeStrict(data, &w); err != nil {
		return err
	}
	out := Installation{}
	if w.InstallationID != nil {
		out.InstallationID = *w.InstallationID
	}
	if w.UserID != nil {
		out.UserID = *w.UserID
	}
	if w.Platform != nil && *w.Platform != "" {
		p, err := ParsePlatform(*w.Platform)
		if err != nil {
			return err
		}
		out.Platform = p
	}
	var err error
	if out.PushChannel, err = parsePushChannel(w.PushChannel); err != nil {
		return err
	}
	if out.Tags, err = nonNullStrings("tags", w.Tags); err != nil {
		return err
	}
	if out.PushVariables, err = nonNullMap("pushVariables", w.PushVariables); err != nil {
		return err
	}
	if len(w.Templates) > 0 {
		out.Templates = make(map[string]*Template, len(w.Templates))
		for name, raw := range w.Templates {
			if isNull(raw) {
				continue
			}
			t, err := parseTemplateJSON("templates."+name, raw)
			if err != nil {
				return err
			}
			out.Templates[name] = t
		}
	}
	if w.ExpirationTime != nil && *w.ExpirationTime != "" {
		t, err := ParseTime(*w.ExpirationTime)
		if err != nil {
			return invalid("expirationTime", "%v", err)
		}
		out.ExpirationTime = t
	}
	if !isNull(w.SecondaryTiles) && !bytes.Equal(bytes.TrimSpace(w.SecondaryTiles), []byte("{}")) {
		return unsupported("secondaryTiles", "WNS secondary tiles are not supported; register each tile as its own installation")
	}
	*in = out
	return nil
}

// DecodeInstallation reads an installation from a request body.
func DecodeInstallation(data []byte) (*Installation, error) {
	var in Installation
	if err := in.UnmarshalJSON(data); err != nil {
		return nil, err
	}
	return &in, nil
}

func parsePushChannel(raw json.RawMessage) (PushChannel, error) {
	raw = bytes.TrimSpace(raw)
	if isNull(raw) {
		return PushChannel{}, nil
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return PushChannel{}, invalid("pushChannel", "not a valid JSON string")
		}
		return PushChannel{Handle: s}, nil
	case '{':
		var b struct {
			Endpoint *string `json:"endpoint"`
			P256DH   *string `json:"p256dh"`
			Auth     *string `json:"auth"`
		}
		if err := decodeStrict(raw, &b); err != nil {
			return PushChannel{}, retarget(err, "pushChannel")
		}
		return PushChannel{Endpoint: deref(b.Endpoint), P256DH: deref(b.P256DH), Auth: deref(b.Auth)}, nil
	default:
		return PushChannel{}, invalid("pushChannel", "must be a string, or for browser an object with endpoint, p256dh and auth")
	}
}

func parseTemplateJSON(field string, raw json.RawMessage) (*Template, error) {
	var w struct {
		Body     *string            `json:"body"`
		Headers  map[string]*string `json:"headers"`
		Expiry   *string            `json:"expiry"`
		Priority *string            `json:"priority"`
		Tags     []*string          `json:"tags"`
	}
	if err := decodeStrict(raw, &w); err != nil {
		return nil, retarget(err, field)
	}
	t := &Template{Body: deref(w.Body), Expiry: deref(w.Expiry), Priority: deref(w.Priority)}
	var err error
	if t.Headers, err = nonNullMap(field+".headers", w.Headers); err != nil {
		return nil, err
	}
	if t.Tags, err = nonNullStrings(field+".tags", w.Tags); err != nil {
		return nil, err
	}
	return t, nil
}

// decodeStrict decodes one JSON value and turns encoding/json's errors into
// hub core errors that name the offending property.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if dec.More() {
		return invalid("", "unexpected data after the JSON value")
	}
	return nil
}

func jsonError(err error) error {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		field := te.Field
		return invalid(field, "expected %s, got JSON %s", describeGoType(te.Type.String()), te.Value)
	case errors.As(err, &se):
		return invalid("", "malformed JSON at byte %d: %v", se.Offset, se)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return invalid("", "truncated JSON")
	case errors.Is(err, io.EOF):
		return invalid("", "empty body: expected a JSON value")
	default:
		var he *Error
		if errors.As(err, &he) {
			return he
		}
		return invalid("", "malformed JSON: %v", err)
	}
}

func describeGoType(t string) string {
	switch {
	case strings.Contains(t, "map"), strings.HasPrefix(t, "struct"):
		return "an object"
	case strings.HasPrefix(t, "[]"):
		return "an array"
	case strings.Contains(t, "string"):
		return "a string"
	case strings.Contains(t, "bool"):
		return "a boolean"
	case strings.Contains(t, "int"), strings.Contains(t, "float"):
		return "a number"
	default:
		return t
	}
}

func retarget(err error, field string) error {
	var he *Error
	if errors.As(err, &he) {
		c := *he
		if c.Field == "" {
			c.Field = field
		} else {
			c.Field = field + "." + c.Field
		}
		return &c
	}
	return err
}

func nonNullStrings(field string, in []*string) ([]string, error) {
	if in == nil {
		return nil, nil
	}
	out := make([]string, 0, len(in))
	for i, s := range in {
		if s == nil {
			return nil, invalid(fmt.Sprintf("%s[%d]", field, i), "null is not a tag")
		}
		out = append(out, *s)
	}
	return out, nil
}

func nonNullMap(field string, in map[string]*string) (map[string]string, error) {
	if in == nil {
		return nil, nil
	}
	out := make(map[string]string, len(in))
	for k, v := range in {
		if v == nil {
			continue
		}
		out[k] = *v
	}
	return out, nil
}

func isNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || bytes.Equal(raw, []byte("null"))
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// Clone returns a deep copy, so a patch can be applied to the copy and the
// original kept when the patch fails.
func (in *Installation) Clone() *Installation {
	out := *in
	out.Tags = cloneStrings(in.Tags)
	out.PushVariables = cloneMap(in.PushVariables)
	if in.Templates != nil {
		out.Templates = make(map[string]*Template, len(in.Templates))
		for k, t := range in.Templates {
			out.Templates[k] = t.Clone()
		}
	}
	return &out
}

// Clone returns a deep copy of the template, compiled form included (it is
// immutable and shared).
func (t *Template) Clone() *Template {
	if t == nil {
		return nil
	}
	c := *t
	c.Headers = cloneMap(t.Headers)
	c.Tags = cloneStrings(t.Tags)
	return &c
}

func cloneStrings(s []string) []string {
	if s == nil {
		return nil
	}
	return append([]string(nil), s...)
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
