package template

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// xmlScanner checks that an XML body is well-formed and reports attribute
// values and runs of character data to the builder. It is hand-written for
// the same reason as the JSON scanner: compilation needs exact byte spans.
//
// It accepts the XML that push payloads use and refuses the rest with a
// clear error: a DOCTYPE (which would bring entity definitions, and with
// them entity-expansion bombs), encodings other than UTF-8, and non-ASCII
// element or attribute names.
type xmlScanner struct {
	b *builder
	s string
	i int
}

func (b *builder) scanXML() error {
	x := xmlScanner{b: b, s: b.src}
	if strings.HasPrefix(x.s, "\uFEFF") {
		x.i = len("\uFEFF")
	}
	if rest := x.s[x.i:]; strings.HasPrefix(rest, "<?xml") && len(rest) > 5 && (isSpace(rest[5]) || rest[5] == '?') {
		if err := x.decl(); err != nil {
			return err
		}
	}
	if err := x.misc(); err != nil {
		return err
	}
	if x.i >= len(x.s) {
		return x.errorf(x.i, "no root element")
	}
	if x.s[x.i] != '<' {
		return x.errorf(x.i, "text is not allowed outside the root element")
	}
	if err := x.element(1); err != nil {
		return err
	}
	if err := x.misc(); err != nil {
		return err
	}
	if x.i < len(x.s) {
		if x.s[x.i] == '<' {
			return x.errorf(x.i, "only one root element is allowed")
		}
		return x.errorf(x.i, "text is not allowed outside the root element")
	}
	return nil
}

func (x *xmlScanner) errorf(off int, format string, args ...any) error {
	return &Error{Offset: off, Reason: "invalid XML: " + fmt.Sprintf(format, args...)}
}

func (x *xmlScanner) space() bool {
	start := x.i
	for x.i < len(x.s) && isSpace(x.s[x.i]) {
		x.i++
	}
	return x.i > start
}

func (x *xmlScanner) has(p string) bool { return strings.HasPrefix(x.s[x.i:], p) }

// misc skips whitespace, comments and processing instructions between the
// prolog, the root element and the end.
func (x *xmlScanner) misc() error {
	for {
		x.space()
		switch {
		case x.has("<!--"):
			if err := x.comment(); err != nil {
				return err
			}
		case x.has("<?"):
			if err := x.pi(); err != nil {
				return err
			}
		case x.has("<!DOCTYPE"):
			return x.errorf(x.i, "DOCTYPE is not allowed in a template")
		case x.has("<!"):
			return x.errorf(x.i, "unexpected markup %s", quoteChar(x.s[x.i+1:]))
		default:
			return nil
		}
	}
}

// decl parses <?xml version="1.0" encoding="utf-8" standalone="yes"?>.
func (x *xmlScanner) decl() error {
	start := x.i
	x.i += len("<?xml")
	seen := map[string]bool{}
	for {
		hadSpace := x.space()
		if x.has("?>") {
			x.i += 2
			if !seen["version"] {
				return x.errorf(start, "XML declaration without version")
			}
			return nil
		}
		if x.i >= len(x.s) {
			return x.errorf(start, "unterminated XML declaration")
		}
		if !hadSpace {
			return x.errorf(x.i, "expected whitespace in XML declaration")
		}
		nameAt := x.i
		name, err := x.name()
		if err != nil {
			return err
		}
		x.space()
		if x.i >= len(x.s) || x.s[x.i] != '=' {
			return x.errorf(x.i, "expected '=' after %s in XML declaration", name)
		}
		x.i++
		x.space()
		if x.i >= len(x.s) || x.s[x.i] != '"' && x.s[x.i] != '\'' {
			return x.errorf(x.i, "expected a quoted value in XML declaration")
		}
		q := x.s[x.i]
		end := strings.IndexByte(x.s[x.i+1:], q)
		if end < 0 {
			return x.errorf(x.i, "unterminated value in XML declaration")
		}
		val := x.s[x.i+1 : x.i+1+end]
		x.i += end + 2
		if seen[name] {
			return x.errorf(nameAt, "repeated %s in XML declaration", name)
		}
		seen[name] = true
		switch name {
		case "version":
			if val != "1.0" {
				return x.errorf(nameAt, "XML version %q is not supported (only 1.0)", val)
			}
		case "encoding":
			if !strings.EqualFold(val, "utf-8") {
				return x.errorf(nameAt, "encoding %q is not supported (only UTF-8)", val)
			}
		case "standalone":
			if val != "yes" && val != "no" {
				return x.errorf(nameAt, "standalone must be yes or no")
			}
		default:
			return x.errorf(nameAt, "unexpected %s in XML declaration", name)
		}
	}
}

func (x *xmlScanner) comment() error {
	start := x.i
	x.i += len("<!--")
	end := strings.Index(x.s[x.i:], "--")
	if end < 0 {
		return x.errorf(start, "unterminated comment")
	}
	if err := x.chars(x.i, x.i+end); err != nil {
		return err
	}
	x.i += end
	if !x.has("-->") {
		return x.errorf(x.i, "'--' is not allowed inside a comment")
	}
	x.i += 3
	return nil
}

func (x *xmlScanner) pi() error {
	start := x.i
	x.i += 2
	target, err := x.name()
	if err != nil {
		return err
	}
	if strings.EqualFold(target, "xml") {
		return x.errorf(start, "the XML declaration must come first")
	}
	end := strings.Index(x.s[x.i:], "?>")
	if end < 0 {
		return x.errorf(start, "unterminated processing instruction")
	}
	if end > 0 && !isSpace(x.s[x.i]) {
		return x.errorf(x.i, "expected whitespace after processing instruction target")
	}
	if err := x.chars(x.i, x.i+end); err != nil {
		return err
	}
	x.i += end + 2
	return nil
}

// chars checks that s[from:to] holds only characters XML allows.
func (x *xmlScanner) chars(from, to int) error {
	for i := from; i < to; {
		n, err := x.char(i)
		if err != nil {
			return err
		}
		i += n
	}
	return nil
}

// char checks the character at i and returns its width.
func (x *xmlScanner) char(i int) (int, error) {
	c := x.s[i]
	if c < utf8.RuneSelf {
		if c < 0x20 && !isSpace(c) {
			return 0, x.errorf(i, "control character U+%04X is not allowed in XML", c)
		}
		return 1, nil
	}
	r, size := utf8.DecodeRuneInString(x.s[i:])
	if r == utf8.RuneError && size == 1 {
		return 0, x.errorf(i, "invalid UTF-8")
	}
	if r == 0xFFFE || r == 0xFFFF {
		return 0, x.errorf(i, "character U+%04X is not allowed in XML", r)
	}
	return size, nil
}

func isNameStart(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_' || c == ':'
}

func isXMLNameChar(c byte) bool {
	return isNameStart(c) || isDigit(c) || c == '-' || c == '.'
}

func (x *xmlScanner) name() (string, error) {
	start := x.i
	if x.i >= len(x.s) {
		return "", x.errorf(x.i, "unexpected end of input, expected a name")
	}
	if !isNameStart(x.s[x.i]) {
		if x.s[x.i] >= utf8.RuneSelf {
			return "", x.errorf(x.i, "non-ASCII names are not supported")
		}
		return "", x.errorf(x.i, "invalid character %s at the start of a name", quoteChar(x.s[x.i:]))
	}
	for x.i < len(x.s) && isXMLNameChar(x.s[x.i]) {
		x.i++
	}
	if x.i < len(x.s) && x.s[x.i] >= utf8.RuneSelf {
		return "", x.errorf(x.i, "non-ASCII names are not supported")
	}
	return x.s[start:x.i], nil
}

// ref checks an entity or character reference at i and returns its width.
func (x *xmlScanner) ref(i int) (int, error) {
	end := strings.IndexByte(x.s[i:], ';')
	if end < 0 || end > 12 {
		return 0, x.errorf(i, "'&' must start a reference such as &amp;")
	}
	body := x.s[i+1 : i+end]
	if strings.HasPrefix(body, "#") {
		if _, ok := charRef(body); !ok {
			return 0, x.errorf(i, "invalid character reference &%s;", body)
		}
		return end + 1, nil
	}
	if _, ok := namedEntity(body); !ok {
		return 0, x.errorf(i, "undefined entity &%s;", body)
	}
	return end + 1, nil
}

func namedEntity(name string) (byte, bool) {
	switch name {
	case "lt":
		return '<', true
	case "gt":
		return '>', true
	case "amp":
		return '&', true
	case "apos":
		return '\'', true
	case "quot":
		return '"', true
	}
	return 0, false
}

// charRef decodes "#123" or "#x1F" and checks the result is an XML Char.
func charRef(body string) (rune, bool) {
	digits, base := body[1:], rune(10)
	if strings.HasPrefix(digits, "x") {
		digits, base = digits[1:], 16
	}
	if digits == "" || len(digits) > 8 {
		return 0, false
	}
	var r rune
	for i := 0; i < len(digits); i++ {
		c := digits[i]
		var d rune
		switch {
		case isDigit(c):
			d = rune(c - '0')
		case base == 16 && 'a' <= c && c <= 'f':
			d = rune(c-'a') + 10
		case base == 16 && 'A' <= c && c <= 'F':
			d = rune(c-'A') + 10
		default:
			return 0, false
		}
		r = r*base + d
	}
	ok := r == 0x9 || r == 0xA || r == 0xD || 0x20 <= r && r <= 0xD7FF ||
		0xE000 <= r && r <= 0xFFFD || 0x10000 <= r && r <= 0x10FFFF
	return r, ok
}

func (x *xmlScanner) element(depth int) error {
	if depth > maxDepth {
		return x.errorf(x.i, "nesting deeper than %d levels", maxDepth)
	}
	start := x.i
	x.i++ // '<'
	name, err := x.name()
	if err != nil {
		return err
	}
	var attrs []string
	for {
		hadSpace := x.space()
		if x.i >= len(x.s) {
			return x.errorf(start, "unterminated tag <%s", name)
		}
		if x.has("/>") {
			x.i += 2
			return nil
		}
		if x.s[x.i] == '>' {
			x.i++
			break
		}
		if !hadSpace {
			return x.errorf(x.i, "expected whitespace, '>' or '/>' in tag <%s>, found %s", name, quoteChar(x.s[x.i:]))
		}
		attrAt := x.i
		attr, err := x.name()
		if err != nil {
			return err
		}
		for _, a := range attrs {
			if a == attr {
				return x.errorf(attrAt, "attribute %s repeated in <%s>", attr, name)
			}
		}
		attrs = append(attrs, attr)
		x.space()
		if x.i >= len(x.s) || x.s[x.i] != '=' {
			return x.errorf(x.i, "expected '=' after attribute %s", attr)
		}
		x.i++
		x.space()
		if err := x.attrValue(); err != nil {
			return err
		}
	}
	return x.content(name, start, depth)
}

// attrValue scans a quoted attribute value; a value that decodes to an
// expression becomes a hole covering the text between the quotes.
func (x *xmlScanner) attrValue() error {
	if x.i >= len(x.s) || x.s[x.i] != '"' && x.s[x.i] != '\'' {
		return x.errorf(x.i, "expected a quoted attribute value")
	}
	q := x.s[x.i]
	x.i++
	from := x.i
	for {
		if x.i >= len(x.s) {
			return x.errorf(from-1, "unterminated attribute value")
		}
		c := x.s[x.i]
		switch {
		case c == q:
			to := x.i
			x.i++
			return x.maybeHole(from, to, modeXMLAttr)
		case c == '<':
			return x.errorf(x.i, "'<' is not allowed in an attribute value")
		case c == '&':
			n, err := x.ref(x.i)
			if err != nil {
				return err
			}
			x.i += n
		default:
			n, err := x.char(x.i)
			if err != nil {
				return err
			}
			x.i += n
		}
	}
}

// content scans an element's content up to and including its end tag.
func (x *xmlScanner) content(name string, start, depth int) error {
	run := x.i // start of the current run of character data
	for {
		if x.i >= len(x.s) {
			return x.errorf(start, "element <%s> is not closed", name)
		}
		c := x.s[x.i]
		switch {
		case c == '<' && x.has("<![CDATA["):
			end := strings.Index(x.s[x.i+9:], "]]>")
			if end < 0 {
				return x.errorf(x.i, "unterminated CDATA section")
			}
			if err := x.chars(x.i+9, x.i+9+end); err != nil {
				return err
			}
			x.i += 9 + end + 3
		case c == '<':
			if err := x.maybeHole(run, x.i, modeXMLText); err != nil {
				return err
			}
			var err error
			switch {
			case x.has("</"):
				x.i += 2
				at := x.i
				var end string
				if end, err = x.name(); err != nil {
					return err
				}
				if end != name {
					return x.errorf(at, "end tag </%s> does not match <%s>", end, name)
				}
				x.space()
				if x.i >= len(x.s) || x.s[x.i] != '>' {
					return x.errorf(x.i, "expected '>' to end </%s", name)
				}
				x.i++
				return nil
			case x.has("<!--"):
				err = x.comment()
			case x.has("<?"):
				err = x.pi()
			case x.has("<!"):
				err = x.errorf(x.i, "unexpected markup <! in element content")
			default:
				err = x.element(depth + 1)
			}
			if err != nil {
				return err
			}
			run = x.i
		case c == '&':
			n, err := x.ref(x.i)
			if err != nil {
				return err
			}
			x.i += n
		case c == '>' && x.i >= 2 && x.s[x.i-2:x.i] == "]]":
			return x.errorf(x.i-2, "']]>' is not allowed in text")
		default:
			n, err := x.char(x.i)
			if err != nil {
				return err
			}
			x.i += n
		}
	}
}

// maybeHole looks at the character data in s[from:to]; if it decodes to an
// expression, the hole covers it. Element text may be indented, so
// surrounding whitespace is ignored for the decision and kept as literal.
func (x *xmlScanner) maybeHole(from, to int, mode escMode) error {
	if from == to {
		return nil
	}
	raw := x.s[from:to]
	if mode == modeXMLText {
		raw = strings.TrimLeft(raw, " \t\r\n")
	}
	if raw == "" || raw[0] != '&' && raw[0] != '<' && !isSigil(raw) {
		return nil // only a reference or CDATA could decode to a sigil
	}
	val, offs := decodeXML(x.s[from:to], from, mode == modeXMLAttr)
	lo, hi := 0, len(val)
	if mode == modeXMLText {
		for lo < hi && isSpace(val[lo]) {
			lo++
		}
		for hi > lo && isSpace(val[hi-1]) {
			hi--
		}
	}
	if !isSigil(val[lo:hi]) {
		return nil
	}
	h, err := parseHole(val[lo:hi], srcMap{offs: offs[lo : hi+1]}, mode)
	if err != nil {
		return err
	}
	if err := x.b.countTerms(len(h.terms)); err != nil {
		return err
	}
	start, end := offs[lo], offs[hi]
	if strings.Contains(x.s[from:to], "<![CDATA[") {
		// The trimmed span could start or end inside a CDATA section,
		// where escaped output would not be decoded. Replace the whole
		// run instead, carrying the surrounding whitespace as literals.
		start, end = from, to
		terms := make([]term, 0, len(h.terms)+2)
		if lo > 0 {
			terms = append(terms, term{kind: termLit, text: string(escape(nil, val[:lo], mode)), n: -1})
		}
		terms = append(terms, h.terms...)
		if hi < len(val) {
			terms = append(terms, term{kind: termLit, text: string(escape(nil, val[hi:], mode)), n: -1})
		}
		h.terms = terms
	}
	x.b.addHole(start, end, h)
	return nil
}

// decodeXML decodes validated character data (text, references, CDATA)
// and records the source offset of each decoded byte, plus one entry for
// the end. In attributes, literal TAB/CR/LF decode to spaces, as XML
// attribute-value normalisation does.
func decodeXML(raw string, base int, attr bool) (string, []int) {
	out := make([]byte, 0, len(raw))
	offs := make([]int, 0, len(raw)+1)
	for i := 0; i < len(raw); {
		switch {
		case strings.HasPrefix(raw[i:], "<![CDATA["):
			end := strings.Index(raw[i+9:], "]]>")
			for k := 0; k < end; k++ {
				offs = append(offs, base+i+9+k)
			}
			out = append(out, raw[i+9:i+9+end]...)
			i += 9 + end + 3
		case raw[i] == '&':
			end := strings.IndexByte(raw[i:], ';')
			body := raw[i+1 : i+end]
			var enc []byte
			if r, ok := charRef(body); ok && body[0] == '#' {
				enc = utf8.AppendRune(nil, r)
			} else {
				c, _ := namedEntity(body)
				enc = []byte{c}
			}
			for range enc {
				offs = append(offs, base+i)
			}
			out = append(out, enc...)
			i += end + 1
		default:
			c := raw[i]
			if attr && (c == '\t' || c == '\n' || c == '\r') {
				c = ' '
			}
			offs = append(offs, base+i)
			out = append(out, c)
			i++
		}
	}
	offs = append(offs, base+len(raw))
	return string(out), offs
}
