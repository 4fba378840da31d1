package redisstore

import (
	"errors"

	"github.com/pushgate/pushgate/hubcore/tag"
	"github.com/pushgate/pushgate/hubcore/tagexpr"
)

// Candidate pruning. A record is found by its index tags, the union of its
// registrations' tags, but each registration is matched against its own
// tags; so before a record is fetched, the index can only say "the record
// lacks t" (then every registration lacks it) or "some registration may
// carry t". Evaluating the expression in three-valued (Kleene) logic with
// absent tags false and present ones unknown gives false only when no
// registration of the record can match, which makes it a safe filter.
//
// tagexpr does not export its tree, so the tree is rebuilt from the
// expression's canonical String form, which its package documentation
// guarantees re-parses to the same tree.

type kval uint8

const (
	kFalse kval = iota
	kUnknown
	kTrue
)

type knode struct {
	op   byte // 't' tag, '!' not, '&' and, '|' or
	tag  int  // index into kexpr.tags for 't'
	kids []*knode
}

// kexpr is an expression ready for three-valued evaluation.
type kexpr struct {
	root *knode
	tags []string // folded, distinct
}

var errKleene = errors.New("redisstore: cannot rebuild the expression tree")

// newKexpr rebuilds e's tree; nil e gives nil.
func newKexpr(e *tagexpr.Expr) (*kexpr, error) {
	if e == nil {
		return nil, nil
	}
	return parseKexpr(e.String())
}

func parseKexpr(src string) (*kexpr, error) {
	p := &kparser{s: src, idx: map[string]int{}}
	n, err := p.or()
	if err != nil {
		return nil, err
	}
	p.space()
	if p.i != len(p.s) {
		return nil, errKleene
	}
	return &kexpr{root: n, tags: p.tags}, nil
}

type kparser struct {
	s     string
	i     int
	depth int
	tags  []string
	idx   map[string]int
}

func (p *kparser) space() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == '\r' || p.s[p.i] == '\n') {
		p.i++
	}
}

func (p *kparser) or() (*knode, error) {
	n, err := p.and()
	if err != nil {
		return nil, err
	}
	for {
		p.space()
		if p.i+1 < len(p.s) && p.s[p.i] == '|' && p.s[p.i+1] == '|' {
			p.i += 2
			k, err := p.and()
			if err != nil {
				return nil, err
			}
			n = &knode{op: '|', kids: []*knode{n, k}}
			continue
		}
		return n, nil
	}
}

func (p *kparser) and() (*knode, error) {
	n, err := p.unary()
	if err != nil {
		return nil, err
	}
	for {
		p.space()
		if p.i+1 < len(p.s) && p.s[p.i] == '&' && p.s[p.i+1] == '&' {
			p.i += 2
			k, err := p.unary()
			if err != nil {
				return nil, err
			}
			n = &knode{op: '&', kids: []*knode{n, k}}
			continue
		}
		return n, nil
	}
}

func (p *kparser) unary() (*knode, error) {
	p.depth++
	defer func() { p.depth-- }()
	if p.depth > 10000 {
		return nil, errKleene
	}
	p.space()
	if p.i >= len(p.s) {
		return nil, errKleene
	}
	switch p.s[p.i] {
	case '!':
		p.i++
		k, err := p.unary()
		if err != nil {
			return nil, err
		}
		return &knode{op: '!', kids: []*knode{k}}, nil
	case '(':
		p.i++
		n, err := p.or()
		if err != nil {
			return nil, err
		}
		p.space()
		if p.i >= len(p.s) || p.s[p.i] != ')' {
			return nil, errKleene
		}
		p.i++
		return n, nil
	}
	start := p.i
	for p.i < len(p.s) {
		c := p.s[p.i]
		if c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '(' || c == ')' || c == '!' || c == '&' || c == '|' {
			break
		}
		p.i++
	}
	if p.i == start {
		return nil, errKleene
	}
	f := tag.Fold(p.s[start:p.i])
	ix, ok := p.idx[f]
	if !ok {
		ix = len(p.tags)
		p.idx[f] = ix
		p.tags = append(p.tags, f)
	}
	return &knode{op: 't', tag: ix}, nil
}

// eval evaluates with vals[i] the value of tags[i].
func (k *kexpr) eval(vals []kval) kval { return k.root.eval(vals) }

func (n *knode) eval(vals []kval) kval {
	switch n.op {
	case 't':
		return vals[n.tag]
	case '!':
		return kTrue - n.kids[0].eval(vals)
	case '&':
		a := n.kids[0].eval(vals)
		if a == kFalse {
			return kFalse
		}
		return min(a, n.kids[1].eval(vals))
	default:
		a := n.kids[0].eval(vals)
		if a == kTrue {
			return kTrue
		}
		return max(a, n.kids[1].eval(vals))
	}
}

// evalWords evaluates 64 independent lanes at once: f[i] has a lane's bit
// set where tags[i] is false there, and is unknown elsewhere (the index
// never knows a tag to be true). It returns the lanes where the
// expression is false and those where it is true; with one bit per lane
// for each, Kleene's and/or/not become plain bitwise operations.
func (n *knode) evalWords(f []uint64) (isFalse, isTrue uint64) {
	switch n.op {
	case 't':
		return f[n.tag], 0
	case '!':
		a, b := n.kids[0].evalWords(f)
		return b, a
	case '&':
		f1, t1 := n.kids[0].evalWords(f)
		f2, t2 := n.kids[1].evalWords(f)
		return f1 | f2, t1 & t2
	default:
		f1, t1 := n.kids[0].evalWords(f)
		f2, t2 := n.kids[1].evalWords(f)
		return f1 & f2, t1 | t2
	}
}
