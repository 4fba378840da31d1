package template

import (
	"unicode/utf8"
)

// lookup resolves a term's property, falling back to its default.
func (t *term) lookup(p Props) string {
	if p != nil {
		if v, ok := p.Lookup(t.name); ok {
			return v
		}
	}
	if t.hasDefault {
		return t.text
	}
	return ""
}

// render appends the hole's value to dst. start is where the whole render
// began, so that the output limit covers everything appended by it.
func (h *hole) render(dst []byte, p Props, start, max int) ([]byte, error) {
	if h.number {
		if v := h.terms[0].lookup(p); isJSONNumber(v) {
			if len(dst)-start+len(v) > max {
				return dst, &LimitError{What: "output", Limit: max, Size: len(dst) - start + len(v)}
			}
			return append(dst, v...), nil
		}
	}
	if h.mode == modeJSON {
		dst = append(dst, '"')
	}
	for i := range h.terms {
		t := &h.terms[i]
		if t.kind == termLit {
			dst = append(dst, t.text...)
		} else {
			v := t.lookup(p)
			var ellipsis bool
			switch t.kind {
			case termDollar:
				if t.n >= 0 {
					v, _ = truncate(v, t.n)
				}
			case termDot:
				v, ellipsis = truncateEllipsis(v, t.n)
			}
			// Escaping never shrinks text, so this bound is checked before
			// anything is copied: a template that references a large
			// property a thousand times fails here, not after growing dst.
			if len(dst)-start+len(v) > max {
				return dst, &LimitError{What: "output", Limit: max, Size: len(dst) - start + len(v)}
			}
			if t.kind == termPercent {
				dst = appendPercent(dst, v)
			} else {
				dst = escape(dst, v, h.mode)
			}
			if ellipsis {
				dst = append(dst, "..."[:min(3, t.n)]...)
			}
		}
		if len(dst)-start > max {
			return dst, &LimitError{What: "output", Limit: max, Size: len(dst) - start}
		}
	}
	if h.mode == modeJSON {
		dst = append(dst, '"')
	}
	return dst, nil
}

// truncate returns the first n characters (runes) of s. An invalid UTF-8
// byte counts as one character, as it will be rendered as one U+FFFD.
func truncate(s string, n int) (string, bool) {
	if len(s) <= n {
		return s, false // fewer bytes than n means fewer runes too
	}
	i := 0
	for k := 0; k < n; k++ {
		if i >= len(s) {
			return s, false
		}
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
	if i >= len(s) {
		return s, false
	}
	return s[:i], true
}

// truncateEllipsis implements .(p,n): a value longer than n characters is
// cut so that it plus "..." fits in n. The caller appends the dots (all
// three, or n of them when n < 3 leaves no room for text).
func truncateEllipsis(s string, n int) (string, bool) {
	if _, cut := truncate(s, n); !cut {
		return s, false
	}
	if n < 3 {
		return "", true
	}
	prefix, _ := truncate(s, n-3)
	return prefix, true
}

// isJSONNumber matches (0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, the
// pattern Notification Hubs documents for #(p). Every match is also a valid
// JSON number, so emitting it unquoted keeps the document valid.
func isJSONNumber(s string) bool {
	i := 0
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && '1' <= s[i] && s[i] <= '9':
		for i < len(s) && isDigit(s[i]) {
			i++
		}
	default:
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if i >= len(s) || !isDigit(s[i]) {
			return false
		}
		for i < len(s) && isDigit(s[i]) {
			i++
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if i >= len(s) || !isDigit(s[i]) {
			return false
		}
		for i < len(s) && isDigit(s[i]) {
			i++
		}
	}
	return i == len(s)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

const hexUpper = "0123456789ABCDEF"

// appendPercent percent-encodes every byte outside the RFC 3986 unreserved
// set, which is what the Notification Hubs worked example shows (':' and
// '/' are encoded too). The output is ASCII that needs no further escaping
// in JSON, XML or a header.
func appendPercent(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '-' || c == '_' || c == '.' || c == '~' {
			dst = append(dst, c)
			continue
		}
		dst = append(dst, '%', hexUpper[c>>4], hexUpper[c&15])
	}
	return dst
}

// escape appends s escaped for mode.
func escape(dst []byte, s string, mode escMode) []byte {
	switch mode {
	case modeJSON:
		return appendJSON(dst, s)
	case modeXMLText:
		return appendXML(dst, s, false)
	case modeXMLAttr:
		return appendXML(dst, s, true)
	case modeHeader:
		return appendHeader(dst, s)
	}
	return append(dst, s...)
}

// jsonSafe marks the ASCII bytes that need no escaping in a JSON string.
var jsonSafe = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// appendJSON appends s as JSON string content. Invalid UTF-8 becomes
// U+FFFD so that the document stays valid UTF-8 JSON.
func appendJSON(dst []byte, s string) []byte {
	run := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if jsonSafe[c] {
				i++
				continue
			}
			dst = append(dst, s[run:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexUpper[c>>4], hexUpper[c&15])
			}
			i++
			run = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[run:i]...)
			dst = append(dst, "\uFFFD"...)
			i++
			run = i
			continue
		}
		i += size
	}
	return append(dst, s[run:]...)
}

// appendXML appends s as XML character data. The five markup characters
// become entities in both text and attributes (so the caller's choice of
// attribute quote does not matter), CR always and TAB/LF in attributes
// become character references so that parsers' newline and attribute-value
// normalisation give back the original, and characters XML 1.0 cannot
// carry at all (most C0 controls, U+FFFE, U+FFFF, invalid UTF-8) become
// U+FFFD.
func appendXML(dst []byte, s string, attr bool) []byte {
	run := 0
	for i := 0; i < len(s); {
		c := s[i]
		var rep string
		if c < utf8.RuneSelf {
			switch {
			case c == '&':
				rep = "&amp;"
			case c == '<':
				rep = "&lt;"
			case c == '>':
				rep = "&gt;"
			case c == '"':
				rep = "&quot;"
			case c == '\'':
				rep = "&apos;"
			case c == '\r':
				rep = "&#xD;"
			case c == '\n':
				if attr {
					rep = "&#xA;"
				}
			case c == '\t':
				if attr {
					rep = "&#x9;"
				}
			case c < 0x20:
				rep = "\uFFFD"
			}
			if rep == "" {
				i++
				continue
			}
			dst = append(dst, s[run:i]...)
			dst = append(dst, rep...)
			i++
			run = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || r == 0xFFFE || r == 0xFFFF {
			dst = append(dst, s[run:i]...)
			dst = append(dst, "\uFFFD"...)
			i += size
			run = i
			continue
		}
		i += size
	}
	return append(dst, s[run:]...)
}

// appendHeader appends s with control characters (other than TAB) replaced
// by spaces, so a rendered header value is always one valid field line.
func appendHeader(dst []byte, s string) []byte {
	run := 0
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\t' || c == 0x7f {
			dst = append(dst, s[run:i]...)
			dst = append(dst, ' ')
			run = i + 1
		}
	}
	return append(dst, s[run:]...)
}
