// Package tagexprtest holds test helpers for tag expressions: a seeded
// random generator of expressions, tags and records, and a reference
// in-memory inverted index that executes plans exactly as the tagexpr
// contract describes. A store's conformance suite compares its own plan
// execution against Index.Match, the brute-force answer.
package tagexprtest

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"

	"github.com/pushgate/pushgate/hubcore/tag"
	"github.com/pushgate/pushgate/hubcore/tagexpr"
)

// Tags returns n distinct valid tags: mostly user tags over the whole tag
// alphabet, and a few system tags, so that generated inputs exercise every
// lexical form. Distinct means distinct after folding.
func Tags(r *rand.Rand, n int) []string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@#.:-"
	seen := make(map[string]bool, n)
	out := make([]string, 0, n)
	for len(out) < n {
		var t string
		switch r.IntN(8) {
		case 0:
			t = tag.ForInstallation(fmt.Sprintf("inst-%d", r.IntN(1000)))
		case 1:
			t = tag.ForUser(fmt.Sprintf("u%d=x", r.IntN(1000)))
		default:
			b := make([]byte, 1+r.IntN(8))
			for i := range b {
				b[i] = alphabet[r.IntN(len(alphabet))]
			}
			t = string(b)
		}
		if f := tag.Fold(t); !seen[f] {
			seen[f] = true
			out = append(out, t)
		}
	}
	return out
}

// RandomCase flips the case of random letters: the result is the same tag.
func RandomCase(r *rand.Rand, t string) string {
	b := []byte(t)
	for i, c := range b {
		if r.IntN(3) == 0 {
			switch {
			case 'a' <= c && c <= 'z':
				b[i] = c - ('a' - 'A')
			case 'A' <= c && c <= 'Z':
				b[i] = c + ('a' - 'A')
			}
		}
	}
	return string(b)
}

// maxLevels bounds the height of generated trees, and with it their size
// (at most 3^maxLevels tag occurrences, well under the default MaxTags).
const maxLevels = 4

// RandomExpr returns a random valid expression over tags (non-empty), with
// random case, whitespace, redundant parentheses and double negations. Its
// nesting as Parse counts it (parentheses and '!') is at most maxDepth, so
// it parses under Limits{MaxDepth: maxDepth} (with maxDepth <= 0 only
// negation-free expressions needing no parentheses are produced). The same
// r state always yields the same string.
func RandomExpr(r *rand.Rand, tags []string, maxDepth int) string {
	g := &gen{r: r, tags: tags}
	g.expr(max(maxDepth, 0), maxLevels, 0)
	return g.b.String()
}

type gen struct {
	r    *rand.Rand
	tags []string
	b    strings.Builder
}

const (
	precOr = iota + 1
	precAnd
	precUnary
)

func (g *gen) space() {
	switch g.r.IntN(6) {
	case 0, 1, 2:
	case 3:
		g.b.WriteByte(' ')
	case 4:
		g.b.WriteString("  ")
	default:
		g.b.WriteString([]string{"\t", "\n", "\r\n", " \t"}[g.r.IntN(4)])
	}
}

// expr writes an expression usable where precedence min is required, using
// at most depth levels of parentheses and '!' and at most levels tree
// levels.
func (g *gen) expr(depth, levels, min int) {
	r := g.r
	// Wrapping: optionally negate and/or parenthesise this subexpression.
	if depth >= 1 && r.IntN(6) == 0 {
		g.b.WriteByte('!')
		g.space()
		g.expr(depth-1, levels, precUnary)
		return
	}
	if levels <= 0 || r.IntN(4) == 0 {
		g.b.WriteString(RandomCase(r, g.tags[r.IntN(len(g.tags))]))
		return
	}
	op, p := "||", precOr
	if r.IntN(2) == 0 {
		op, p = "&&", precAnd
	}
	paren := p < min || (depth >= 1 && r.IntN(8) == 0)
	if paren {
		if depth < 1 {
			g.b.WriteString(RandomCase(r, g.tags[r.IntN(len(g.tags))]))
			return
		}
		depth--
		g.b.WriteByte('(')
		g.space()
	}
	n := 2 + r.IntN(2)
	for i := 0; i < n; i++ {
		if i > 0 {
			g.space()
			g.b.WriteString(op)
			g.space()
		}
		g.expr(depth, levels-1, p)
	}
	if paren {
		g.space()
		g.b.WriteByte(')')
	}
}

// RandomSet returns a random subset of tags, each included with
// probability p and spelled in random case.
func RandomSet(r *rand.Rand, tags []string, p float64) []string {
	var out []string
	for _, t := range tags {
		if r.Float64() < p {
			out = append(out, RandomCase(r, t))
		}
	}
	return out
}

// Record is one indexed entity: an installation or registration.
type Record struct {
	ID   string
	Tags []string
}

// RandomRecords returns n records with ids "r0", "r1", … whose tags are
// drawn from tags with a skewed probability per tag, so that cardinalities
// differ and the planner's driver order matters. Some records have no tags.
func RandomRecords(r *rand.Rand, n int, tags []string) []Record {
	prob := make([]float64, len(tags))
	for i := range prob {
		prob[i] = r.Float64() * r.Float64()
	}
	recs := make([]Record, n)
	for i := range recs {
		recs[i].ID = fmt.Sprintf("r%d", i)
		for j, t := range tags {
			if r.Float64() < prob[j] {
				recs[i].Tags = append(recs[i].Tags, RandomCase(r, t))
			}
		}
	}
	return recs
}

// Index is a reference in-memory store: per folded tag, the ids of the
// records carrying it, plus the universe. It implements tagexpr.Stats with
// exact counts.
type Index struct {
	recs  []Record
	sets  []tag.Set
	byTag map[string][]int
}

// NewIndex indexes recs.
func NewIndex(recs []Record) *Index {
	ix := &Index{recs: recs, sets: make([]tag.Set, len(recs)), byTag: make(map[string][]int)}
	for i, rec := range recs {
		ix.sets[i] = tag.NewSet(rec.Tags...)
		for _, f := range ix.sets[i].Folded() {
			ix.byTag[f] = append(ix.byTag[f], i)
		}
	}
	return ix
}

// Cardinality implements tagexpr.Stats.
func (ix *Index) Cardinality(folded string) int64 { return int64(len(ix.byTag[folded])) }

// Universe implements tagexpr.Stats.
func (ix *Index) Universe() int64 { return int64(len(ix.recs)) }

func (ix *Index) candidates(s tagexpr.Step) []int {
	if s.Driver != "" {
		return ix.byTag[s.Driver]
	}
	all := make([]int, len(ix.recs))
	for i := range all {
		all[i] = i
	}
	return all
}

// Execute runs p as the contract says (scan each step's driver set or the
// universe, keep candidates passing Filter.Eval) and returns the ids
// emitted, in order and duplicates included, so that Check can catch
// overlapping steps.
func (ix *Index) Execute(p *tagexpr.Plan) []string {
	var out []string
	for _, s := range p.Steps {
		for _, i := range ix.candidates(s) {
			if s.Filter == nil || s.Filter.Eval(&ix.sets[i]) {
				out = append(out, ix.recs[i].ID)
			}
		}
	}
	return out
}

// ExecuteProbe is Execute for a store that looks up only Step.Probe per
// candidate and evaluates with Filter.EvalProbe, as a remote store would.
func (ix *Index) ExecuteProbe(p *tagexpr.Plan) []string {
	var out []string
	for _, s := range p.Steps {
		present := make([]bool, len(s.Probe))
		for _, i := range ix.candidates(s) {
			for j, t := range s.Probe {
				present[j] = ix.sets[i].Has(t)
			}
			if s.Filter == nil || s.Filter.EvalProbe(present) {
				out = append(out, ix.recs[i].ID)
			}
		}
	}
	return out
}

// Match is the brute-force answer: the ids of records for which e.Eval is
// true, every record when e is nil (broadcast).
func (ix *Index) Match(e *tagexpr.Expr) []string {
	var out []string
	for i, rec := range ix.recs {
		if e == nil || e.Eval(&ix.sets[i]) {
			out = append(out, rec.ID)
		}
	}
	return out
}

// Check compares ids a plan execution emitted with the brute-force answer,
// ignoring order. It reports duplicates (records emitted by two steps),
// missing and extra ids.
func Check(got, want []string) error {
	var problems []string
	seen := make(map[string]bool, len(got))
	for _, id := range got {
		if seen[id] {
			problems = append(problems, fmt.Sprintf("%s emitted twice", id))
		}
		seen[id] = true
	}
	wanted := make(map[string]bool, len(want))
	for _, id := range want {
		wanted[id] = true
		if !seen[id] {
			problems = append(problems, fmt.Sprintf("%s missing", id))
		}
	}
	for id := range seen {
		if !wanted[id] {
			problems = append(problems, fmt.Sprintf("%s not a match", id))
		}
	}
	if len(problems) == 0 {
		return nil
	}
	sort.Strings(problems)
	if len(problems) > 10 {
		problems = append(problems[:10], fmt.Sprintf("and %d more", len(problems)-10))
	}
	return fmt.Errorf("plan result differs from brute force: %s", strings.Join(problems, "; "))
}

// CheckPlan plans e with st (which may be nil), executes the plan on ix both
// ways (Eval and EvalProbe) and compares with Match.
func CheckPlan(ix *Index, e *tagexpr.Expr, st tagexpr.Stats) error {
	p := tagexpr.NewPlan(e, st)
	want := ix.Match(e)
	if err := Check(ix.Execute(p), want); err != nil {
		return fmt.Errorf("%w\n%s", err, tagexpr.Explain(p))
	}
	if err := Check(ix.ExecuteProbe(p), want); err != nil {
		return fmt.Errorf("probe: %w\n%s", err, tagexpr.Explain(p))
	}
	return nil
}
