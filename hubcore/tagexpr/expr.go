package tagexpr

import (
	"strings"

	"github.com/pushgate/pushgate/hubcore/tag"
)

// Membership answers whether a record carries a tag. The argument is always
// a folded tag (tag.Fold), so implementations never fold per probe.
// tag.Set satisfies it.
type Membership interface {
	Has(folded string) bool
}

type kind uint8

const (
	kTag kind = iota
	kNot
	kAnd
	kOr
	kTrue  // only inside the planner, never in a parsed tree
	kFalse // only inside the planner, never in a parsed tree
)

// node is one vertex of the syntax tree. AND and OR are n-ary and never have
// a child of their own kind: associativity is flattened away, which is what
// makes String canonical. Nodes are never mutated after construction, so
// trees are shared freely between an Expr and the filters planned from it.
type node struct {
	kind   kind
	text   string // kTag: the spelling in the source
	folded string // kTag: tag.Fold(text)
	kids   []*node
	leaves int // tag occurrences in this subtree, for compile
}

var (
	nodeTrue  = &node{kind: kTrue}
	nodeFalse = &node{kind: kFalse}
)

func leaf(text string) *node {
	return &node{kind: kTag, text: text, folded: tag.Fold(text), leaves: 1}
}

func not(k *node) *node {
	return &node{kind: kNot, kids: []*node{k}, leaves: k.leaves}
}

// nary builds an AND or OR, flattening children of the same kind. A single
// child is returned as is.
func nary(k kind, kids []*node) *node {
	if len(kids) == 1 {
		return kids[0]
	}
	flat := kids
	for _, c := range kids {
		if c.kind == k {
			flat = nil
			break
		}
	}
	if flat == nil {
		for _, c := range kids {
			if c.kind == k {
				flat = append(flat, c.kids...)
			} else {
				flat = append(flat, c)
			}
		}
	}
	n := &node{kind: k, kids: flat}
	for _, c := range flat {
		n.leaves += c.leaves
	}
	return n
}

// Jump targets below zero end evaluation with a result.
const (
	pcFalse int32 = -1
	pcTrue  int32 = -2
)

// instr tests one tag occurrence and jumps to t when it is present, to f
// otherwise.
type instr struct {
	tag  string // folded
	idx  int32  // index of tag in Expr.folded, for EvalProbe
	t, f int32
}

// Expr is a parsed tag expression. It is immutable and safe for concurrent
// use.
type Expr struct {
	root   *node
	tags   []string // distinct by folded identity, first spelling, source order
	folded []string // tags folded, parallel to tags
	prog   []instr
	entry  int32
	occ    int // tag occurrences
	// byFolded indexes folded while a large Expr is built; nil afterwards.
	byFolded map[string]int32
	orOnly   bool // no "&&" and no "!"
}

func newExpr(root *node) *Expr {
	e := &Expr{root: root, orOnly: true}
	e.tags = make([]string, 0, root.leaves)
	e.folded = make([]string, 0, root.leaves)
	var walk func(n *node)
	walk = func(n *node) {
		switch n.kind {
		case kTag:
			e.occ++
			if e.index(n.folded) < 0 {
				e.add(n.text, n.folded)
			}
		case kNot, kAnd:
			e.orOnly = false
		}
		for _, c := range n.kids {
			walk(c)
		}
	}
	walk(root)
	e.prog = make([]instr, 0, root.leaves)
	e.entry = e.compile(root, pcTrue, pcFalse)
	e.byFolded = nil // construction only: the Expr is read-only from here
	return e
}

// index returns the position of folded in e.folded, or -1. Expressions
// usually have a handful of tags, where a linear scan beats allocating a
// map; big ones (limits can be raised) get a map to stay linear overall.
func (e *Expr) index(folded string) int32 {
	if e.byFolded == nil && len(e.folded) > 16 {
		e.byFolded = make(map[string]int32, cap(e.folded))
		for i, f := range e.folded {
			e.byFolded[f] = int32(i)
		}
	}
	if e.byFolded != nil {
		if i, ok := e.byFolded[folded]; ok {
			return i
		}
		return -1
	}
	for i, f := range e.folded {
		if f == folded {
			return int32(i)
		}
	}
	return -1
}

// add records a new distinct tag.
func (e *Expr) add(text, folded string) {
	if e.byFolded != nil {
		e.byFolded[folded] = int32(len(e.folded))
	}
	e.tags = append(e.tags, text)
	e.folded = append(e.folded, folded)
}

// compile appends the instructions of n, which continue at t when n is true
// and at f when it is false, and returns n's entry point. Leaves are emitted
// left to right, so the entry of a subtree is always len(prog) before it is
// compiled and the entry of the next sibling is that plus its leaf count:
// forward targets are known without back-patching.
func (e *Expr) compile(n *node, t, f int32) int32 {
	switch n.kind {
	case kTrue:
		return t
	case kFalse:
		return f
	case kTag:
		e.prog = append(e.prog, instr{tag: n.folded, idx: e.index(n.folded), t: t, f: f})
		return int32(len(e.prog) - 1)
	case kNot:
		return e.compile(n.kids[0], f, t)
	}
	entry := int32(len(e.prog))
	for i, c := range n.kids {
		if i == len(n.kids)-1 {
			e.compile(c, t, f)
			break
		}
		next := int32(len(e.prog) + c.leaves)
		if n.kind == kAnd {
			e.compile(c, next, f)
		} else {
			e.compile(c, t, next)
		}
	}
	return entry
}

// Eval reports whether a record whose tags are m satisfies the expression.
// It does not allocate, but converting a tag.Set value to Membership does
// (the slice header is boxed): pass a *tag.Set, or call EvalSet.
func (e *Expr) Eval(m Membership) bool {
	pc := e.entry
	prog := e.prog
	for pc >= 0 {
		in := &prog[pc]
		if m.Has(in.tag) {
			pc = in.t
		} else {
			pc = in.f
		}
	}
	return pc == pcTrue
}

// EvalSet is Eval specialised to tag.Set, the representation stores keep
// per record: no interface conversion, no dynamic dispatch.
func (e *Expr) EvalSet(s tag.Set) bool {
	pc := e.entry
	prog := e.prog
	for pc >= 0 {
		in := &prog[pc]
		if s.Has(in.tag) {
			pc = in.t
		} else {
			pc = in.f
		}
	}
	return pc == pcTrue
}

// EvalProbe is Eval for a store that has already looked up the tags the
// expression reads: present[i] says whether the record carries
// FoldedTags()[i]. It suits remote stores that fetch all memberships in one
// round trip.
func (e *Expr) EvalProbe(present []bool) bool {
	pc := e.entry
	prog := e.prog
	for pc >= 0 {
		in := &prog[pc]
		if present[in.idx] {
			pc = in.t
		} else {
			pc = in.f
		}
	}
	return pc == pcTrue
}

// Tags returns the distinct tags of the expression in order of first
// occurrence, spelled as at that occurrence. Tags differing only in case
// are the same tag.
func (e *Expr) Tags() []string {
	return append([]string(nil), e.tags...)
}

// FoldedTags returns Tags in folded form: the keys a store probes.
func (e *Expr) FoldedTags() []string {
	return append([]string(nil), e.folded...)
}

// String returns the expression in canonical form: single spaces around
// binary operators, no redundant parentheses, runs of the same operator
// flattened. Parsing the result yields an identical tree. Tags keep the
// spelling of each occurrence.
func (e *Expr) String() string {
	var b strings.Builder
	writeNode(&b, e.root, 0)
	return b.String()
}

// prec orders the node kinds by binding strength, for minimal parentheses.
func prec(k kind) int {
	switch k {
	case kOr:
		return 1
	case kAnd:
		return 2
	}
	return 3
}

// writeNode prints n, parenthesised when it binds more loosely than its
// context requires (min).
func writeNode(b *strings.Builder, n *node, min int) {
	p := prec(n.kind)
	if p < min {
		b.WriteByte('(')
		defer b.WriteByte(')')
	}
	switch n.kind {
	case kTag:
		b.WriteString(n.text)
	case kTrue:
		// Constants never reach a public Expr; this keeps debugging output
		// unambiguous should one ever leak ('<' is not a tag character).
		b.WriteString("<true>")
	case kFalse:
		b.WriteString("<false>")
	case kNot:
		b.WriteByte('!')
		writeNode(b, n.kids[0], 3)
	case kAnd, kOr:
		op := " && "
		if n.kind == kOr {
			op = " || "
		}
		for i, c := range n.kids {
			if i > 0 {
				b.WriteString(op)
			}
			// A same-kind child cannot occur (nary flattens) but, if one
			// did, p+1 keeps the printed form faithful to the tree.
			writeNode(b, c, p+1)
		}
	}
}
