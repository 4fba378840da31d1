package template

import (
	"fmt"
	"unicode/utf16"
	"unicode/utf8"
)

// maxDepth bounds nesting in JSON and XML bodies. Real payloads nest a
// handful of levels; the bound keeps recursion shallow on hostile input.
const maxDepth = 1000

// jsonScanner validates a JSON body (RFC 8259, UTF-8 only) and reports
// every string value, not key, to the builder. It is hand-written rather
// than built on encoding/json because compilation needs the exact byte
// span of each value, and must leave every other byte untouched.
type jsonScanner struct {
	b *builder
	s string
	i int
}

func (b *builder) scanJSON() error {
	x := jsonScanner{b: b, s: b.src}
	x.space()
	if err := x.value(0); err != nil {
		return err
	}
	x.space()
	if x.i < len(x.s) {
		return x.errorf(x.i, "invalid character %s after the top-level JSON value", quoteChar(x.s[x.i:]))
	}
	return nil
}

func (x *jsonScanner) errorf(off int, format string, args ...any) error {
	return &Error{Offset: off, Reason: "invalid JSON: " + fmt.Sprintf(format, args...)}
}

func (x *jsonScanner) space() {
	for x.i < len(x.s) && isSpace(x.s[x.i]) {
		x.i++
	}
}

func (x *jsonScanner) eof() error {
	return x.errorf(len(x.s), "unexpected end of input")
}

func (x *jsonScanner) value(depth int) error {
	if x.i >= len(x.s) {
		return x.eof()
	}
	switch c := x.s[x.i]; {
	case c == '{':
		return x.object(depth + 1)
	case c == '[':
		return x.array(depth + 1)
	case c == '"':
		return x.str(true)
	case c == 't':
		return x.word("true")
	case c == 'f':
		return x.word("false")
	case c == 'n':
		return x.word("null")
	case c == '-' || isDigit(c):
		return x.number()
	default:
		return x.errorf(x.i, "invalid character %s looking for a value", quoteChar(x.s[x.i:]))
	}
}

func (x *jsonScanner) word(w string) error {
	if len(x.s)-x.i >= len(w) && x.s[x.i:x.i+len(w)] == w {
		x.i += len(w)
		return nil
	}
	return x.errorf(x.i, "invalid literal (expected %s)", w)
}

func (x *jsonScanner) object(depth int) error {
	if depth > maxDepth {
		return x.errorf(x.i, "nesting deeper than %d levels", maxDepth)
	}
	x.i++ // '{'
	x.space()
	if x.i < len(x.s) && x.s[x.i] == '}' {
		x.i++
		return nil
	}
	for {
		x.space()
		if x.i >= len(x.s) {
			return x.eof()
		}
		if x.s[x.i] != '"' {
			return x.errorf(x.i, "invalid character %s looking for an object key", quoteChar(x.s[x.i:]))
		}
		if err := x.str(false); err != nil {
			return err
		}
		x.space()
		if x.i >= len(x.s) {
			return x.eof()
		}
		if x.s[x.i] != ':' {
			return x.errorf(x.i, "expected ':' after object key, found %s", quoteChar(x.s[x.i:]))
		}
		x.i++
		x.space()
		if err := x.value(depth); err != nil {
			return err
		}
		x.space()
		if x.i >= len(x.s) {
			return x.eof()
		}
		switch x.s[x.i] {
		case ',':
			x.i++
		case '}':
			x.i++
			return nil
		default:
			return x.errorf(x.i, "expected ',' or '}' in object, found %s", quoteChar(x.s[x.i:]))
		}
	}
}

func (x *jsonScanner) array(depth int) error {
	if depth > maxDepth {
		return x.errorf(x.i, "nesting deeper than %d levels", maxDepth)
	}
	x.i++ // '['
	x.space()
	if x.i < len(x.s) && x.s[x.i] == ']' {
		x.i++
		return nil
	}
	for {
		x.space()
		if err := x.value(depth); err != nil {
			return err
		}
		x.space()
		if x.i >= len(x.s) {
			return x.eof()
		}
		switch x.s[x.i] {
		case ',':
			x.i++
		case ']':
			x.i++
			return nil
		default:
			return x.errorf(x.i, "expected ',' or ']' in array, found %s", quoteChar(x.s[x.i:]))
		}
	}
}

func (x *jsonScanner) number() error {
	start := x.i
	if x.s[x.i] == '-' {
		x.i++
	}
	switch {
	case x.i < len(x.s) && x.s[x.i] == '0':
		x.i++
	case x.i < len(x.s) && '1' <= x.s[x.i] && x.s[x.i] <= '9':
		for x.i < len(x.s) && isDigit(x.s[x.i]) {
			x.i++
		}
	default:
		return x.errorf(start, "invalid number")
	}
	if x.i < len(x.s) && x.s[x.i] == '.' {
		x.i++
		if x.i >= len(x.s) || !isDigit(x.s[x.i]) {
			return x.errorf(x.i, "invalid number: expected a digit after '.'")
		}
		for x.i < len(x.s) && isDigit(x.s[x.i]) {
			x.i++
		}
	}
	if x.i < len(x.s) && (x.s[x.i] == 'e' || x.s[x.i] == 'E') {
		x.i++
		if x.i < len(x.s) && (x.s[x.i] == '+' || x.s[x.i] == '-') {
			x.i++
		}
		if x.i >= len(x.s) || !isDigit(x.s[x.i]) {
			return x.errorf(x.i, "invalid number: expected a digit in the exponent")
		}
		for x.i < len(x.s) && isDigit(x.s[x.i]) {
			x.i++
		}
	}
	return nil
}

// str scans a string; when it is a value that may be an expression, the
// decoded content is parsed and the whole string becomes a hole.
func (x *jsonScanner) str(isValue bool) error {
	open := x.i
	x.i++
	plain := true // no escapes: decoded == raw
	for {
		if x.i >= len(x.s) {
			return x.errorf(open, "unterminated string")
		}
		c := x.s[x.i]
		switch {
		case c == '"':
			x.i++
			if isValue {
				return x.maybeHole(open, x.i, plain)
			}
			return nil
		case c == '\\':
			plain = false
			if err := x.escape(); err != nil {
				return err
			}
		case c < 0x20:
			return x.errorf(x.i, "control character %s in string must be escaped", quoteChar(x.s[x.i:]))
		case c < utf8.RuneSelf:
			x.i++
		default:
			r, size := utf8.DecodeRuneInString(x.s[x.i:])
			if r == utf8.RuneError && size == 1 {
				return x.errorf(x.i, "invalid UTF-8")
			}
			x.i += size
		}
	}
}

func (x *jsonScanner) escape() error {
	at := x.i
	x.i++
	if x.i >= len(x.s) {
		return x.errorf(at, "unterminated escape")
	}
	switch x.s[x.i] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		x.i++
		return nil
	case 'u':
		if len(x.s)-x.i < 5 {
			return x.errorf(at, "invalid \\u escape")
		}
		for k := 1; k <= 4; k++ {
			if !isHex(x.s[x.i+k]) {
				return x.errorf(at, "invalid \\u escape")
			}
		}
		x.i += 5
		return nil
	}
	return x.errorf(at, "invalid escape %s", quoteChar(x.s[at:]))
}

func isHex(c byte) bool {
	return isDigit(c) || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// maybeHole turns the string value at s[open:end] (quotes included) into a
// hole when its decoded content begins with a sigil.
func (x *jsonScanner) maybeHole(open, end int, plain bool) error {
	raw := x.s[open+1 : end-1]
	var val string
	var m srcMap
	if plain {
		if !isSigil(raw) {
			return nil
		}
		val, m = raw, srcMap{base: open + 1}
	} else {
		if raw[0] != '\\' && !isSigil(raw) {
			return nil // an escape cannot change the first character
		}
		val, m = decodeJSONString(raw, open+1)
		if !isSigil(val) {
			return nil
		}
	}
	h, err := parseHole(val, m, modeJSON)
	if err != nil {
		return err
	}
	if err := x.b.countTerms(len(h.terms)); err != nil {
		return err
	}
	x.b.addHole(open, end, h)
	return nil
}

// decodeJSONString decodes validated string content, recording for each
// decoded byte the source offset it came from.
func decodeJSONString(raw string, base int) (string, srcMap) {
	out := make([]byte, 0, len(raw))
	offs := make([]int, 0, len(raw)+1)
	put := func(src int, b ...byte) {
		for range b {
			offs = append(offs, base+src)
		}
		out = append(out, b...)
	}
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			put(i, c)
			i++
			continue
		}
		switch raw[i+1] {
		case 'b':
			put(i, '\b')
		case 'f':
			put(i, '\f')
		case 'n':
			put(i, '\n')
		case 'r':
			put(i, '\r')
		case 't':
			put(i, '\t')
		case 'u':
			r := hex4(raw[i+2 : i+6])
			n := 6
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if i+12 <= len(raw) && raw[i+6] == '\\' && raw[i+7] == 'u' {
					r2 = hex4(raw[i+8 : i+12])
				}
				if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
					r, n = dec, 12
				} else {
					r = utf8.RuneError
				}
			}
			put(i, utf8.AppendRune(nil, r)...)
			i += n
			continue
		default: // '"', '\\', '/'
			put(i, raw[i+1])
		}
		i += 2
	}
	offs = append(offs, base+len(raw))
	return string(out), srcMap{offs: offs}
}

func hex4(s string) rune {
	var r rune
	for i := 0; i < 4; i++ {
		c := s[i]
		switch {
		case isDigit(c):
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		default:
			c -= 'A' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}
