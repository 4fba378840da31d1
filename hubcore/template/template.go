// Package template implements the Notification Hubs template language: the
// expressions ($(p), .(p,n), %(p), #(p), 'literals' and {a + b} composites)
// that installation and registration templates embed in platform payloads.
//
// A template is compiled once, when it is stored, into literal byte chunks
// and holes; rendering it for a device is then a walk over that list that
// appends to a caller-owned buffer. Nothing is re-parsed per send, and a
// render with a reused buffer does not allocate.
//
// Substituted text is escaped for the place it lands in (a JSON string, XML
// text, an XML attribute), so a rendered JSON template is always valid JSON
// and a rendered XML template is always well-formed, whatever the property
// values contain.
package template

import (
	"errors"
	"fmt"
	"strings"
)

// BodyKind says how a template body is parsed, and so where expressions may
// appear and how substituted text is escaped.
type BodyKind uint8

const (
	// JSON bodies (apns, fcmv1, gcm, adm, baidu, browser, xiaomi) must be
	// valid JSON; expressions may only be whole string values.
	JSON BodyKind = iota + 1
	// XML bodies (WNS toast, tile, badge) must be well-formed; expressions
	// may only be whole attribute values or whole element text.
	XML
	// Raw bodies (WNS raw) are opaque bytes. The whole body is one
	// expression if it begins with a sigil, and a literal otherwise.
	Raw
)

// String names the kind as it appears in error messages.
func (k BodyKind) String() string {
	switch k {
	case JSON:
		return "JSON"
	case XML:
		return "XML"
	case Raw:
		return "raw"
	}
	return fmt.Sprintf("BodyKind(%d)", uint8(k))
}

// Limits bound what a template may cost. Templates come from devices (an
// installation PUT is authorised by a Listen key), so a hostile one must
// not be able to make one send expand into megabytes per device.
type Limits struct {
	// MaxBody is the longest accepted template body, in bytes.
	MaxBody int
	// MaxExpressions bounds the number of expression terms (functions and
	// quoted literals, counted across all holes) in one template.
	MaxExpressions int
	// MaxOutput bounds the bytes one render may append.
	MaxOutput int
}

// Default limits. 64 KiB matches the largest request body Notification Hubs
// accepts for a send, and is 16 times every platform's payload limit, so no
// template that could ever be delivered is refused by them.
const (
	DefaultMaxBody        = 64 << 10
	DefaultMaxExpressions = 1000
	DefaultMaxOutput      = 64 << 10
)

// DefaultLimits is what Compile and CompileValue use.
var DefaultLimits = Limits{
	MaxBody:        DefaultMaxBody,
	MaxExpressions: DefaultMaxExpressions,
	MaxOutput:      DefaultMaxOutput,
}

// withDefaults lets a caller set only the limits it cares about.
func (l Limits) withDefaults() Limits {
	if l.MaxBody <= 0 {
		l.MaxBody = DefaultMaxBody
	}
	if l.MaxExpressions <= 0 {
		l.MaxExpressions = DefaultMaxExpressions
	}
	if l.MaxOutput <= 0 {
		l.MaxOutput = DefaultMaxOutput
	}
	return l
}

// Error reports a template that does not compile. Offset is the byte offset
// in the source body (or value) of the offending character, so that an API
// error can point at it.
type Error struct {
	Offset int
	Reason string
}

func (e *Error) Error() string {
	return fmt.Sprintf("template: at offset %d: %s", e.Offset, e.Reason)
}

// ErrTooLarge is matched (with errors.Is) by every *LimitError, so callers
// can map any limit breach to one status code.
var ErrTooLarge = errors.New("template: too large")

// LimitError reports a breach of one of the Limits, at compile time (body
// size, expression count) or at render time (output size).
type LimitError struct {
	// What names the limit: "body", "expressions" or "output".
	What string
	// Limit is the configured maximum.
	Limit int
	// Size is the size seen; for "output" it is a lower bound, because
	// rendering stops as soon as the limit is known to be exceeded.
	Size int
}

func (e *LimitError) Error() string {
	switch e.What {
	case "body":
		return fmt.Sprintf("template: body is %d bytes; the limit is %d", e.Size, e.Limit)
	case "expressions":
		return fmt.Sprintf("template: more than %d expression terms", e.Limit)
	case "output":
		return fmt.Sprintf("template: rendered output would be at least %d bytes; the limit is %d", e.Size, e.Limit)
	}
	return fmt.Sprintf("template: %s limit %d exceeded (%d)", e.What, e.Limit, e.Size)
}

// Is makes errors.Is(err, ErrTooLarge) true for any limit breach.
func (e *LimitError) Is(target error) bool { return target == ErrTooLarge }

// Template is a compiled template body. It is immutable and safe for
// concurrent use.
type Template struct {
	kind   BodyKind
	segs   []segment
	tail   string
	props  []string
	maxOut int
}

// segment is a literal chunk followed by one hole.
type segment struct {
	lit  string
	hole hole
}

// Compile compiles a template body with DefaultLimits.
func Compile(body string, kind BodyKind) (*Template, error) {
	return DefaultLimits.Compile(body, kind)
}

// Compile compiles a template body under l. Zero fields of l take the
// defaults.
func (l Limits) Compile(body string, kind BodyKind) (*Template, error) {
	l = l.withDefaults()
	if len(body) > l.MaxBody {
		return nil, &LimitError{What: "body", Limit: l.MaxBody, Size: len(body)}
	}
	b := builder{src: body, limits: l}
	var err error
	switch kind {
	case JSON:
		err = b.scanJSON()
	case XML:
		err = b.scanXML()
	case Raw:
		err = b.scanRaw()
	default:
		return nil, fmt.Errorf("template: unknown body kind %v", kind)
	}
	if err != nil {
		return nil, err
	}
	return b.finish(kind), nil
}

// builder accumulates the chunks of a template being compiled.
type builder struct {
	src    string
	limits Limits
	pos    int // end of the source already copied into segs
	segs   []segment
	props  []string
	terms  int
}

// addHole records that src[start:end] is replaced by h.
func (b *builder) addHole(start, end int, h hole) {
	lit := b.src[b.pos:start]
	b.pos = end
	if h.constant() {
		// A hole without property references renders the same for every
		// device: fold it into the literal stream now. Its text is made
		// of quoted literals from the body, so it is bounded by MaxBody.
		out, _ := h.render(nil, nil, 0, 1<<62)
		b.segs = append(b.segs, segment{lit: lit + string(out)})
		return
	}
	b.segs = append(b.segs, segment{lit: lit, hole: h})
	for i := range h.terms {
		if n := h.terms[i].name; n != "" && !contains(b.props, n) {
			b.props = append(b.props, n)
		}
	}
}

// finish joins the literal-only segments left by constant folding onto
// the next hole's literal (or the tail) and freezes the template.
func (b *builder) finish(kind BodyKind) *Template {
	t := &Template{kind: kind, props: b.props, maxOut: b.limits.MaxOutput}
	var pending strings.Builder
	for _, s := range b.segs {
		pending.WriteString(s.lit)
		if s.hole.terms == nil {
			continue
		}
		t.segs = append(t.segs, segment{lit: pending.String(), hole: s.hole})
		pending.Reset()
	}
	pending.WriteString(b.src[b.pos:])
	t.tail = pending.String()
	return t
}

// countTerms enforces MaxExpressions as holes are found, so that a body
// with a million expressions is refused as soon as the limit is passed.
func (b *builder) countTerms(n int) error {
	b.terms += n
	if b.terms > b.limits.MaxExpressions {
		return &LimitError{What: "expressions", Limit: b.limits.MaxExpressions, Size: b.terms}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// scanRaw treats the whole body as one value, rendered as plain text.
func (b *builder) scanRaw() error {
	if !isSigil(b.src) {
		return nil
	}
	h, err := parseHole(b.src, srcMap{base: 0}, modeText)
	if err != nil {
		return err
	}
	if err := b.countTerms(len(h.terms)); err != nil {
		return err
	}
	b.addHole(0, len(b.src), h)
	return nil
}

// Kind reports how the body was parsed.
func (t *Template) Kind() BodyKind { return t.kind }

// IsLiteral reports whether the template reads no property (it has no
// expressions, or only constant ones such as {'a' + 'b'}), in which case
// every render yields the same bytes and a caller may render it once.
func (t *Template) IsLiteral() bool { return len(t.segs) == 0 }

// Properties returns the folded (ASCII lower-case) names of the properties
// the template reads, in order of first use. A caller can use it to decide
// whether a message carries anything the template needs.
func (t *Template) Properties() []string {
	return append([]string(nil), t.props...)
}

// MaxOutput reports the most bytes one Render may append.
func (t *Template) MaxOutput() int { return t.maxOut }

// Render appends the template, evaluated against p, to dst. p may be nil,
// in which case every property is missing. On error the returned slice is
// dst with nothing appended; the only render-time error is a *LimitError.
func (t *Template) Render(dst []byte, p Props) ([]byte, error) {
	start := len(dst)
	var err error
	for i := range t.segs {
		s := &t.segs[i]
		dst = append(dst, s.lit...)
		dst, err = s.hole.render(dst, p, start, t.maxOut)
		if err != nil {
			return dst[:start], err
		}
	}
	dst = append(dst, t.tail...)
	if n := len(dst) - start; n > t.maxOut {
		return dst[:start], &LimitError{What: "output", Limit: t.maxOut, Size: n}
	}
	return dst, nil
}

// Value is a compiled single templated scalar: an installation template
// header value, an APNs expiry or priority. It renders as plain text.
type Value struct {
	t Template
}

// CompileValue compiles a single value with DefaultLimits.
func CompileValue(s string) (*Value, error) {
	return DefaultLimits.CompileValue(s)
}

// CompileValue compiles a single value under l: a literal, or a whole
// expression if s begins with a sigil.
func (l Limits) CompileValue(s string) (*Value, error) {
	l = l.withDefaults()
	if len(s) > l.MaxBody {
		return nil, &LimitError{What: "body", Limit: l.MaxBody, Size: len(s)}
	}
	b := builder{src: s, limits: l}
	if isSigil(s) {
		h, err := parseHole(s, srcMap{base: 0}, modeHeader)
		if err != nil {
			return nil, err
		}
		if err := b.countTerms(len(h.terms)); err != nil {
			return nil, err
		}
		b.addHole(0, len(s), h)
	}
	return &Value{t: *b.finish(Raw)}, nil
}

// IsLiteral reports whether the value reads no property.
func (v *Value) IsLiteral() bool { return v.t.IsLiteral() }

// Properties returns the folded names of the properties the value reads.
func (v *Value) Properties() []string { return v.t.Properties() }

// Render appends the value, evaluated against p, to dst. Control characters
// other than tab in substituted text are replaced by spaces, because values
// end up in HTTP headers, where a CR or LF would either be refused by the
// transport or split the header.
func (v *Value) Render(dst []byte, p Props) ([]byte, error) {
	return v.t.Render(dst, p)
}

// String renders the value against p and returns it as a string.
func (v *Value) String(p Props) (string, error) {
	b, err := v.t.Render(nil, p)
	return string(b), err
}
