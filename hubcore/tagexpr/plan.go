package tagexpr

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Stats gives the planner the sizes of the store's index sets. Estimates
// may be stale or approximate: they only steer the choice of drivers, never
// correctness.
type Stats interface {
	// Cardinality is the number of records carrying the folded tag.
	Cardinality(foldedTag string) int64
	// Universe is the number of records in the store.
	Universe() int64
}

// Plan is how a store resolves an expression without unions of large sets.
// See the package documentation for the execution contract.
type Plan struct {
	Expr  *Expr // the planned expression; nil means broadcast
	Steps []Step
	// Estimate is the total number of candidates the steps scan: an upper
	// bound on the records matched. 0 when no Stats were given.
	Estimate int64
	// Universe is Stats.Universe() at planning time; 0 when no Stats.
	Universe int64
	// Estimated reports whether Stats were given, i.e. whether the
	// estimates mean anything.
	Estimated bool

	why string // why the plan scans the universe, for Explain
}

// Step scans one set of candidates and keeps those satisfying Filter.
type Step struct {
	// Driver is the folded tag whose index set is scanned; "" scans every
	// record.
	Driver string
	// Filter is the residual predicate on a candidate's tags; nil keeps
	// every candidate.
	Filter *Expr
	// Probe is Filter.FoldedTags(): the only tags a store needs to look up
	// per candidate (for Filter.EvalProbe). Nil when Filter is nil.
	Probe []string
	// Estimate is the number of candidates this step scans, from Stats; 0
	// when unknown.
	Estimate int64
}

// NewPlan plans e against st, which may be nil. A nil e is a broadcast: one
// step over the universe without a filter.
func NewPlan(e *Expr, st Stats) *Plan {
	pl := &planner{st: st, card: make(map[string]int64), universe: math.MaxInt64}
	p := &Plan{Expr: e}
	if st != nil {
		p.Estimated = true
		p.Universe = max(st.Universe(), 0)
		pl.universe = p.Universe
	}
	if e == nil {
		p.why = "no tag expression: broadcast"
		p.addUniverse(nodeTrue)
		return p
	}
	root := simplify(e.root, nil)
	switch root.kind {
	case kFalse:
		return p
	case kTrue:
		p.why = "the expression is always true"
		p.addUniverse(nodeTrue)
		return p
	}
	cov := pl.cover(nnf(root, false))
	if cov.universe {
		if cov.costly {
			p.why = "cheaper than scanning the sets of the tags every match must carry"
		} else {
			p.why = "no tag is carried by every match (the expression is true for records lacking tags)"
		}
		p.addUniverse(root)
		return p
	}
	drivers := cov.tags
	sort.SliceStable(drivers, func(i, j int) bool { return pl.cost(drivers[i]) < pl.cost(drivers[j]) })
	// The negated drivers are printed in the user's spelling, not folded.
	spelling := make(map[string]string, len(e.tags))
	for i, f := range e.folded {
		spelling[f] = e.tags[i]
	}
	assign := make(map[string]bool, len(drivers))
	for i, d := range drivers {
		assign[d] = true
		f := simplify(root, assign)
		assign[d] = false
		if i > 0 {
			conj := make([]*node, 0, i+1)
			conj = append(conj, f)
			for _, prev := range drivers[:i] {
				conj = append(conj, not(leaf(spelling[prev])))
			}
			f = simplify(nary(kAnd, conj), nil)
		}
		if f.kind == kFalse {
			continue
		}
		s := Step{Driver: d}
		if st != nil {
			s.Estimate = pl.cost(d)
		}
		s.setFilter(f)
		p.Steps = append(p.Steps, s)
		p.Estimate = satAdd(p.Estimate, s.Estimate)
	}
	return p
}

func (p *Plan) addUniverse(filter *node) {
	s := Step{Estimate: p.Universe}
	s.setFilter(filter)
	p.Steps = append(p.Steps, s)
	p.Estimate = s.Estimate
}

func (s *Step) setFilter(f *node) {
	if f.kind == kTrue {
		return
	}
	s.Filter = newExpr(f)
	s.Probe = s.Filter.FoldedTags()
}

type planner struct {
	st       Stats
	card     map[string]int64
	universe int64 // math.MaxInt64 without Stats: never preferred
}

// cost is the number of candidates scanning the tag's set yields.
func (pl *planner) cost(folded string) int64 {
	if pl.st == nil {
		return 1
	}
	c, ok := pl.card[folded]
	if !ok {
		c = max(pl.st.Cardinality(folded), 0)
		pl.card[folded] = c
	}
	return c
}

// coverSet is a set of folded tags at least one of which every record
// satisfying the subtree carries, or universe when there is no such set
// worth scanning. costly tells the two reasons for universe apart: a cover
// exists but scans more than the store holds, or none exists at all.
type coverSet struct {
	tags     []string
	cost     int64
	universe bool
	costly   bool
}

// cover works on a tree in negation normal form, where a NOT can only sit on
// a tag: a negated tag is satisfied by records lacking every tag, so it has
// no cover.
func (pl *planner) cover(n *node) coverSet {
	var c coverSet
	switch n.kind {
	case kTag:
		c = coverSet{tags: []string{n.folded}, cost: pl.cost(n.folded)}
	case kNot, kTrue:
		return coverSet{universe: true}
	case kFalse:
		return coverSet{}
	case kAnd:
		// Any child's cover covers the conjunction: take the cheapest.
		c.universe = true
		for _, k := range n.kids {
			kc := pl.cover(k)
			switch {
			case !kc.universe && (c.universe || kc.cost < c.cost):
				c = kc
			case kc.costly && c.universe:
				c.costly = true
			}
		}
		return c
	case kOr:
		// Each child's matches need their own cover: take the union.
		seen := make(map[string]bool)
		for _, k := range n.kids {
			kc := pl.cover(k)
			if kc.universe {
				if !kc.costly {
					return kc
				}
				c.universe, c.costly = true, true
			}
			for _, t := range kc.tags {
				if !seen[t] {
					seen[t] = true
					c.tags = append(c.tags, t)
					c.cost = satAdd(c.cost, pl.cost(t))
				}
			}
		}
		if c.universe {
			return c
		}
	}
	if c.cost > pl.universe {
		c.universe, c.costly = true, true
	}
	return c
}

func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// nnf pushes negations down to the tags (De Morgan), negating n when neg.
func nnf(n *node, neg bool) *node {
	switch n.kind {
	case kTag:
		if neg {
			return not(n)
		}
		return n
	case kNot:
		return nnf(n.kids[0], !neg)
	case kTrue, kFalse:
		if (n.kind == kTrue) != neg {
			return nodeTrue
		}
		return nodeFalse
	}
	k := n.kind
	if neg {
		k = kAnd + kOr - k
	}
	kids := make([]*node, len(n.kids))
	for i, c := range n.kids {
		kids[i] = nnf(c, neg)
	}
	return nary(k, kids)
}

// simplify substitutes the assigned tags with constants and folds the
// constants away. Beyond that it removes double negations and, among the
// literal children of one AND or OR, duplicates and complementary pairs
// (x && !x is false). The result is either a lone constant or a tree
// without constants. Unchanged subtrees are shared, not copied.
func simplify(n *node, assign map[string]bool) *node {
	switch n.kind {
	case kTag:
		if v, ok := assign[n.folded]; ok {
			return constNode(v)
		}
		return n
	case kTrue, kFalse:
		return n
	case kNot:
		c := simplify(n.kids[0], assign)
		switch c.kind {
		case kTrue:
			return nodeFalse
		case kFalse:
			return nodeTrue
		case kNot:
			return c.kids[0]
		}
		if c == n.kids[0] {
			return n
		}
		return not(c)
	}
	// absorb is the constant that decides the whole node (false for AND,
	// true for OR); the other constant is the identity and is dropped.
	absorb := n.kind == kOr
	var kids []*node
	var pol map[string]bool // literal tag -> negated?
	changed := false
	var add func(c *node) bool
	add = func(c *node) bool {
		switch {
		case c.kind == kTrue || c.kind == kFalse:
			changed = true
			return (c.kind == kTrue) == absorb
		case c.kind == n.kind:
			changed = true
			for _, g := range c.kids {
				if add(g) {
					return true
				}
			}
			return false
		case c.kind == kTag || (c.kind == kNot && c.kids[0].kind == kTag):
			neg := c.kind == kNot
			t := c.folded
			if neg {
				t = c.kids[0].folded
			}
			if pol == nil {
				pol = make(map[string]bool)
			}
			if was, ok := pol[t]; ok {
				changed = true
				return was != neg // x and !x together decide the node
			}
			pol[t] = neg
		}
		kids = append(kids, c)
		return false
	}
	for _, k := range n.kids {
		c := simplify(k, assign)
		if c != k {
			changed = true
		}
		if add(c) {
			return constNode(absorb)
		}
	}
	switch {
	case len(kids) == 0:
		return constNode(!absorb)
	case !changed:
		return n
	}
	return nary(n.kind, kids)
}

func constNode(v bool) *node {
	if v {
		return nodeTrue
	}
	return nodeFalse
}

// Explain describes a plan for people wondering why a send reached the
// records it did: the expression, what each step scans and keeps, and the
// total scanned against the size of the store.
func Explain(p *Plan) string {
	var b strings.Builder
	if p.Expr == nil {
		b.WriteString("tag expression: none (broadcast to every record)\n")
	} else {
		fmt.Fprintf(&b, "tag expression: %s\n", p.Expr)
	}
	if len(p.Steps) == 0 {
		b.WriteString("no steps: the expression can never be true, so nothing matches\n")
		return b.String()
	}
	for i, s := range p.Steps {
		fmt.Fprintf(&b, "step %d: ", i+1)
		if s.Driver == "" {
			b.WriteString("scan ALL records")
			if p.Estimated {
				fmt.Fprintf(&b, " (~%s)", thousands(s.Estimate))
			}
		} else {
			fmt.Fprintf(&b, "scan tag %q", s.Driver)
			if p.Estimated {
				fmt.Fprintf(&b, " (~%s candidates)", thousands(s.Estimate))
			}
		}
		if s.Filter == nil {
			b.WriteString(", keep all")
		} else {
			fmt.Fprintf(&b, ", keep if %s", s.Filter)
		}
		if s.Driver == "" && p.why != "" {
			fmt.Fprintf(&b, " [full scan: %s]", p.why)
		}
		b.WriteByte('\n')
	}
	if p.Estimated {
		pct := ""
		if p.Universe > 0 {
			pct = fmt.Sprintf(" (%.1f%%)", 100*float64(p.Estimate)/float64(p.Universe))
		}
		fmt.Fprintf(&b, "total: ~%s candidates scanned of ~%s records%s; matches are at most that many\n",
			thousands(p.Estimate), thousands(p.Universe), pct)
	} else {
		b.WriteString("total: unknown (no statistics)\n")
	}
	return b.String()
}

func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
