package template

import (
	"fmt"
	"strings"
)

// MaxPropertyName is the longest property name an expression may use, as
// enforced by the Notification Hubs SDK validator.
const MaxPropertyName = 120

// maxLengthArg bounds length arguments. Any larger value cannot truncate a
// value that fits the output limit, so it only guards the integer parse.
const maxLengthArg = 1 << 30

// escMode says how substituted text is escaped where a hole lands.
type escMode uint8

const (
	// modeJSON: the hole replaces a whole JSON string value, quotes
	// included, so that #(p) can drop them.
	modeJSON escMode = iota + 1
	// modeXMLText and modeXMLAttr: the hole replaces decoded character
	// data; the surrounding markup stays literal.
	modeXMLText
	modeXMLAttr
	// modeText: raw bodies, byte for byte.
	modeText
	// modeHeader: plain text that must stay a single header line.
	modeHeader
)

type termKind uint8

const (
	termLit     termKind = iota // 'text' or "text"
	termDollar                  // $(p) and $(p,n)
	termDot                     // .(p,n)
	termPercent                 // %(p)
	termHash                    // #(p)
)

// term is one function or quoted literal of an expression.
type term struct {
	kind termKind
	// name is the folded property name; empty for literals.
	name string
	// text is the literal (already escaped for the hole's mode) for
	// termLit, and the raw default value otherwise.
	text       string
	hasDefault bool
	// n is the length argument, or -1 when absent.
	n int
}

// hole is a whole expression in one value position.
type hole struct {
	mode escMode
	// number: a lone #(p) in a JSON template, which is emitted unquoted
	// when the value is a JSON number.
	number bool
	terms  []term
}

// constant reports whether the hole reads no property, so that it can be
// evaluated once at compile time.
func (h *hole) constant() bool {
	for i := range h.terms {
		if h.terms[i].kind != termLit {
			return false
		}
	}
	return true
}

// isSigil reports whether a value is an expression: Notification Hubs
// decides on the first character alone.
func isSigil(s string) bool {
	if s == "" {
		return false
	}
	switch s[0] {
	case '$', '.', '%', '#', '{':
		return true
	}
	return false
}

// srcMap maps byte offsets in a decoded value back to the template source,
// so that errors point into what the client sent even when the value was
// written with JSON escapes or XML references.
type srcMap struct {
	base int
	// offs, when set, holds the source offset of every decoded byte plus
	// one final entry for the end of the value.
	offs []int
}

func (m srcMap) at(i int) int {
	if m.offs == nil {
		return m.base + i
	}
	if i < len(m.offs) {
		return m.offs[i]
	}
	return m.offs[len(m.offs)-1]
}

type exprParser struct {
	s string
	i int
	m srcMap
}

func (p *exprParser) errorf(i int, format string, args ...any) error {
	return &Error{Offset: p.m.at(i), Reason: fmt.Sprintf(format, args...)}
}

func (p *exprParser) space() {
	for p.i < len(p.s) && isSpace(p.s[p.i]) {
		p.i++
	}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// parseHole parses s, a decoded value that begins with a sigil, as a whole
// expression.
func parseHole(s string, m srcMap, mode escMode) (hole, error) {
	p := exprParser{s: s, m: m}
	h := hole{mode: mode}
	if s[0] == '{' {
		terms, err := p.composite(mode)
		if err != nil {
			return hole{}, err
		}
		h.terms = terms
		return h, nil
	}
	t, err := p.function()
	if err != nil {
		return hole{}, err
	}
	p.space()
	if p.i < len(p.s) {
		if p.s[p.i] == '+' {
			return hole{}, p.errorf(p.i, "'+' may only be used inside braces: {a + b}")
		}
		return hole{}, p.errorf(p.i, "unexpected %s after the expression (a value that begins with $ . %% # or { must be a single expression)", quoteChar(p.s[p.i:]))
	}
	if t.kind == termHash && mode == modeJSON {
		h.number = true
	}
	h.terms = []term{t}
	return h, nil
}

// composite parses { t1 + t2 + ... }.
func (p *exprParser) composite(mode escMode) ([]term, error) {
	open := p.i
	p.i++ // '{'
	var terms []term
	for {
		p.space()
		if p.i >= len(p.s) {
			return nil, p.errorf(open, "unterminated composite expression: missing '}'")
		}
		if p.s[p.i] == '}' {
			if len(terms) == 0 {
				return nil, p.errorf(p.i, "empty composite expression")
			}
			return nil, p.errorf(p.i, "expected a term after '+'")
		}
		var t term
		var err error
		switch p.s[p.i] {
		case '\'', '"':
			t, err = p.quoted(mode)
		default:
			t, err = p.function()
		}
		if err != nil {
			return nil, err
		}
		terms = append(terms, t)
		p.space()
		if p.i >= len(p.s) {
			return nil, p.errorf(open, "unterminated composite expression: missing '}'")
		}
		switch p.s[p.i] {
		case '+':
			p.i++
			continue
		case '}':
		default:
			return nil, p.errorf(p.i, "expected '+' or '}' in composite expression, found %s", quoteChar(p.s[p.i:]))
		}
		end := p.i
		p.i++
		p.space()
		if p.i < len(p.s) {
			return nil, p.errorf(p.i, "unexpected %s after the closing '}'", quoteChar(p.s[p.i:]))
		}
		if len(terms) > 1 {
			for j := range terms {
				if terms[j].kind == termHash {
					return nil, p.errorf(end, "'#(' is not allowed in a composite expression; use '$('")
				}
			}
		}
		// A lone #(p) in braces is a string, as in Notification Hubs.
		return terms, nil
	}
}

// quoted parses 'text' or "text", where the delimiter is escaped by doubling.
func (p *exprParser) quoted(mode escMode) (term, error) {
	open := p.i
	q := p.s[p.i]
	p.i++
	var b strings.Builder
	for {
		j := strings.IndexByte(p.s[p.i:], q)
		if j < 0 {
			return term{}, p.errorf(open, "unterminated quoted literal: missing closing %c", q)
		}
		b.WriteString(p.s[p.i : p.i+j])
		p.i += j + 1
		if p.i < len(p.s) && p.s[p.i] == q {
			b.WriteByte(q)
			p.i++
			continue
		}
		break
	}
	return term{kind: termLit, text: string(escape(nil, b.String(), mode)), n: -1}, nil
}

// function parses $(p), $(p,n), .(p,n), %(p), #(p), each with an optional
// :{default} after the name.
func (p *exprParser) function() (term, error) {
	start := p.i
	c := p.s[p.i]
	t := term{n: -1}
	switch c {
	case '$':
		if len(p.s)-p.i >= 5 && strings.EqualFold(p.s[p.i:p.i+5], "$body") {
			return term{}, p.errorf(p.i, "'$body' is reserved and cannot be used in a template")
		}
		t.kind = termDollar
	case '.':
		t.kind = termDot
	case '%':
		t.kind = termPercent
	case '#':
		t.kind = termHash
	case '{':
		return term{}, p.errorf(p.i, "composite expressions cannot be nested")
	default:
		return term{}, p.errorf(p.i, "expected $( .( %%( #( or a quoted literal, found %s", quoteChar(p.s[p.i:]))
	}
	p.i++
	if p.i >= len(p.s) || p.s[p.i] != '(' {
		return term{}, p.errorf(p.i, "expected '(' after '%c' (a value that begins with $ . %% # or { is an expression)", c)
	}
	p.i++
	p.space()
	nameStart := p.i
	for p.i < len(p.s) && isNameChar(p.s[p.i]) {
		p.i++
	}
	name := p.s[nameStart:p.i]
	if name == "" {
		if p.i >= len(p.s) || p.s[p.i] == ')' || p.s[p.i] == ',' || p.s[p.i] == ':' {
			return term{}, p.errorf(p.i, "missing property name in '%c('", c)
		}
		return term{}, p.errorf(p.i, "invalid character %s in property name (allowed: A-Z a-z 0-9 _)", quoteChar(p.s[p.i:]))
	}
	if len(name) > MaxPropertyName {
		return term{}, p.errorf(nameStart, "property name is %d characters; the limit is %d", len(name), MaxPropertyName)
	}
	t.name = Fold(name)
	p.space()
	if p.i < len(p.s) && p.s[p.i] == ':' {
		p.i++
		if p.i >= len(p.s) || p.s[p.i] != '{' {
			return term{}, p.errorf(p.i, "expected '{' after ':' (default value syntax: %c(prop:{default}))", c)
		}
		def, err := p.defaultValue()
		if err != nil {
			return term{}, err
		}
		t.text, t.hasDefault = def, true
		p.space()
	}
	if p.i < len(p.s) && p.s[p.i] == ',' {
		if t.kind == termPercent || t.kind == termHash {
			return term{}, p.errorf(p.i, "'%c(' takes no length argument", c)
		}
		p.i++
		p.space()
		numStart := p.i
		n := 0
		for p.i < len(p.s) && '0' <= p.s[p.i] && p.s[p.i] <= '9' {
			if n > maxLengthArg/10 {
				return term{}, p.errorf(numStart, "length argument is too large")
			}
			n = n*10 + int(p.s[p.i]-'0')
			p.i++
		}
		if p.i == numStart {
			return term{}, p.errorf(p.i, "length argument must be a non-negative integer")
		}
		if n > maxLengthArg {
			return term{}, p.errorf(numStart, "length argument is too large")
		}
		t.n = n
		p.space()
	}
	if p.i >= len(p.s) {
		return term{}, p.errorf(start, "missing ')' to close '%c('", c)
	}
	if p.s[p.i] != ')' {
		if p.i == nameStart+len(name) {
			return term{}, p.errorf(p.i, "invalid character %s in property name (allowed: A-Z a-z 0-9 _)", quoteChar(p.s[p.i:]))
		}
		return term{}, p.errorf(p.i, "expected ')' to close '%c(', found %s", c, quoteChar(p.s[p.i:]))
	}
	if t.kind == termDot && t.n < 0 {
		return term{}, p.errorf(p.i, "'.(' requires a length argument: .(prop, n)")
	}
	p.i++
	return t, nil
}

// defaultValue parses {text} where a backslash escapes '}' or '\'.
func (p *exprParser) defaultValue() (string, error) {
	open := p.i
	p.i++ // '{'
	var b strings.Builder
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '}':
			p.i++
			return b.String(), nil
		case c == '\\' && p.i+1 < len(p.s) && (p.s[p.i+1] == '}' || p.s[p.i+1] == '\\'):
			b.WriteByte(p.s[p.i+1])
			p.i += 2
		default:
			b.WriteByte(c)
			p.i++
		}
	}
	return "", p.errorf(open, "unterminated default value: missing '}'")
}

func isNameChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_'
}

// quoteChar renders the first character of s for an error message.
func quoteChar(s string) string {
	if s == "" {
		return "end of value"
	}
	r := []rune(s[:min(len(s), 4)])
	return fmt.Sprintf("%q", r[0])
}

// Fold returns name in the form Props are keyed by: ASCII lower case.
// Property names are ASCII by definition, so Unicode folding is not needed.
func Fold(name string) string {
	for i := 0; i < len(name); i++ {
		if c := name[i]; 'A' <= c && c <= 'Z' {
			b := []byte(name)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return name
}
