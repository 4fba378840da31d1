package tagexpr

import (
	"errors"
	"fmt"

	"github.com/pushgate/pushgate/hubcore/tag"
)

// Defaults for Limits. They are far above anything Notification Hubs
// accepts (see Limits.Compat) yet keep the cost of one parse small.
const (
	DefaultMaxTags  = 200
	DefaultMaxDepth = 32
	DefaultMaxLen   = 16384
)

// HardMaxDepth caps Limits.MaxDepth whatever the caller asks for: parsing,
// compiling and printing recurse once per nesting level, and this bound
// keeps that far from the goroutine stack limit.
const HardMaxDepth = 1024

// NH's documented limits on tag occurrences (§6.3 of the reference).
const (
	CompatMaxTagsOrOnly = 20
	CompatMaxTags       = 6
)

// Limits bound the work one Parse may do. Zero or negative fields mean the
// default.
type Limits struct {
	MaxTags  int // tag occurrences, duplicates included
	MaxDepth int // nesting of parentheses and "!"
	MaxLen   int // bytes of source
	// Compat additionally enforces the Notification Hubs rule: at most 20
	// tag occurrences when the only operator is "||", otherwise at most 6.
	Compat bool
}

// DefaultLimits returns the limits used for fields left at zero.
func DefaultLimits() Limits {
	return Limits{MaxTags: DefaultMaxTags, MaxDepth: DefaultMaxDepth, MaxLen: DefaultMaxLen}
}

func (l Limits) norm() Limits {
	if l.MaxTags <= 0 {
		l.MaxTags = DefaultMaxTags
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	if l.MaxDepth > HardMaxDepth {
		l.MaxDepth = HardMaxDepth
	}
	if l.MaxLen <= 0 {
		l.MaxLen = DefaultMaxLen
	}
	return l
}

// SyntaxError reports malformed input. Pos is the byte offset into the
// source where the problem was detected (len(src) when input ended too
// early); for an invalid tag it is the offending character within the tag.
type SyntaxError struct {
	Pos    int
	Reason string
}

// Error formats the error for API responses: the position comes first so
// that a client can point at it.
func (e *SyntaxError) Error() string {
	return fmt.Sprintf("tag expression: at position %d: %s", e.Pos, e.Reason)
}

// LimitError reports that an expression exceeds a Limits bound. Limit is
// "length", "depth", "tags" or "compat-tags". For "depth", Got is the depth
// at which parsing stopped (Max+1), not the full nesting of the input.
type LimitError struct {
	Limit string
	Max   int
	Got   int
}

// Error names the limit in user terms, since clients see it in a 400.
func (e *LimitError) Error() string {
	switch e.Limit {
	case "length":
		return fmt.Sprintf("tag expression: %d bytes long, at most %d allowed", e.Got, e.Max)
	case "depth":
		return fmt.Sprintf("tag expression: nested more than %d levels deep (parentheses and '!')", e.Max)
	case "tags":
		return fmt.Sprintf("tag expression: %d tags, at most %d allowed", e.Got, e.Max)
	case "compat-tags":
		if e.Max == CompatMaxTagsOrOnly {
			return fmt.Sprintf("tag expression: %d tags, Notification Hubs allows at most %d in an expression using only '||'", e.Got, e.Max)
		}
		return fmt.Sprintf("tag expression: %d tags, Notification Hubs allows at most %d in an expression using '&&' or '!'", e.Got, e.Max)
	}
	return fmt.Sprintf("tag expression: limit %s exceeded: %d > %d", e.Limit, e.Got, e.Max)
}

type tokKind uint8

const (
	tEOF tokKind = iota
	tTag
	tAnd
	tOr
	tNot
	tLParen
	tRParen
)

type token struct {
	kind     tokKind
	pos, end int
}

type parser struct {
	src   string
	off   int // scan position
	tok   token
	depth int
	max   int
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

func isDelim(c byte) bool {
	return isSpace(c) || c == '(' || c == ')' || c == '!' || c == '&' || c == '|'
}

// next advances to the next token.
func (p *parser) next() error {
	s := p.src
	i := p.off
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	t := token{pos: i, end: i + 1}
	if i >= len(s) {
		t = token{kind: tEOF, pos: len(s), end: len(s)}
	} else {
		switch c := s[i]; c {
		case '(':
			t.kind = tLParen
		case ')':
			t.kind = tRParen
		case '!':
			t.kind = tNot
		case '&', '|':
			if i+1 >= len(s) || s[i+1] != c {
				op := "&&"
				if c == '|' {
					op = "||"
				}
				return &SyntaxError{Pos: i, Reason: fmt.Sprintf("single '%c'; the operator is '%s'", c, op)}
			}
			t.kind, t.end = tAnd, i+2
			if c == '|' {
				t.kind = tOr
			}
		default:
			j := i + 1
			for j < len(s) && !isDelim(s[j]) {
				j++
			}
			t.kind, t.end = tTag, j
		}
	}
	p.tok = t
	p.off = t.end
	return nil
}

func (p *parser) describe(t token) string {
	switch t.kind {
	case tEOF:
		return "end of expression"
	case tTag:
		return fmt.Sprintf("tag %q", p.src[t.pos:t.end])
	}
	return fmt.Sprintf("'%s'", p.src[t.pos:t.end])
}

// Parse parses src under lim. Errors are *SyntaxError or *LimitError.
func Parse(src string, lim Limits) (*Expr, error) {
	lim = lim.norm()
	if len(src) > lim.MaxLen {
		return nil, &LimitError{Limit: "length", Max: lim.MaxLen, Got: len(src)}
	}
	p := &parser{src: src, max: lim.MaxDepth}
	if err := p.next(); err != nil {
		return nil, err
	}
	if p.tok.kind == tEOF {
		return nil, &SyntaxError{Pos: 0, Reason: "empty expression"}
	}
	root, err := p.parseOr("")
	if err != nil {
		return nil, err
	}
	if p.tok.kind != tEOF {
		if p.tok.kind == tRParen {
			return nil, &SyntaxError{Pos: p.tok.pos, Reason: "')' without matching '('"}
		}
		return nil, &SyntaxError{Pos: p.tok.pos, Reason: "expected '&&', '||' or end of expression, found " + p.describe(p.tok)}
	}
	e := newExpr(root)
	if e.occ > lim.MaxTags {
		return nil, &LimitError{Limit: "tags", Max: lim.MaxTags, Got: e.occ}
	}
	if lim.Compat {
		max := CompatMaxTags
		if e.orOnly {
			max = CompatMaxTagsOrOnly
		}
		if e.occ > max {
			return nil, &LimitError{Limit: "compat-tags", Max: max, Got: e.occ}
		}
	}
	return e, nil
}

// parseOr parses an OR chain; after names the token before it, for errors.
func (p *parser) parseOr(after string) (*node, error) {
	first, err := p.parseAnd(after)
	if err != nil || p.tok.kind != tOr {
		return first, err
	}
	kids := make([]*node, 1, 4)
	kids[0] = first
	for p.tok.kind == tOr {
		if err := p.next(); err != nil {
			return nil, err
		}
		k, err := p.parseAnd("'||'")
		if err != nil {
			return nil, err
		}
		kids = append(kids, k)
	}
	return nary(kOr, kids), nil
}

// parseAnd parses an AND chain; after names the token before it, for errors.
func (p *parser) parseAnd(after string) (*node, error) {
	first, err := p.parseUnary(after)
	if err != nil || p.tok.kind != tAnd {
		return first, err
	}
	kids := make([]*node, 1, 4)
	kids[0] = first
	for p.tok.kind == tAnd {
		if err := p.next(); err != nil {
			return nil, err
		}
		k, err := p.parseUnary("'&&'")
		if err != nil {
			return nil, err
		}
		kids = append(kids, k)
	}
	return nary(kAnd, kids), nil
}

func (p *parser) enter() error {
	p.depth++
	if p.depth > p.max {
		return &LimitError{Limit: "depth", Max: p.max, Got: p.depth}
	}
	return nil
}

func (p *parser) parseUnary(after string) (*node, error) {
	switch t := p.tok; t.kind {
	case tNot:
		if err := p.enter(); err != nil {
			return nil, err
		}
		if err := p.next(); err != nil {
			return nil, err
		}
		k, err := p.parseUnary("'!'")
		if err != nil {
			return nil, err
		}
		p.depth--
		return not(k), nil
	case tLParen:
		if err := p.enter(); err != nil {
			return nil, err
		}
		if err := p.next(); err != nil {
			return nil, err
		}
		if p.tok.kind == tRParen {
			return nil, &SyntaxError{Pos: t.pos, Reason: "empty parentheses"}
		}
		k, err := p.parseOr("'('")
		if err != nil {
			return nil, err
		}
		if p.tok.kind != tRParen {
			return nil, &SyntaxError{Pos: p.tok.pos, Reason: fmt.Sprintf("expected '&&', '||' or ')' to close '(' at position %d, found %s", t.pos, p.describe(p.tok))}
		}
		if err := p.next(); err != nil {
			return nil, err
		}
		p.depth--
		return k, nil
	case tTag:
		text := p.src[t.pos:t.end]
		if err := tag.Validate(text); err != nil {
			pos, reason := t.pos, err.Error()
			var se *tag.SyntaxError
			if errors.As(err, &se) {
				reason = fmt.Sprintf("invalid tag %q: %s", text, se.Reason)
				if se.Offset >= 0 {
					pos += se.Offset
				}
			}
			return nil, &SyntaxError{Pos: pos, Reason: reason}
		}
		if err := p.next(); err != nil {
			return nil, err
		}
		return leaf(text), nil
	}
	reason := "expected a tag, '!' or '('"
	if after != "" {
		reason += " after " + after
	}
	return nil, &SyntaxError{Pos: p.tok.pos, Reason: reason + ", found " + p.describe(p.tok)}
}
