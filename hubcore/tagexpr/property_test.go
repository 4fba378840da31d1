package tagexpr_test

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/pushgate/pushgate/hubcore/tag"
	"github.com/pushgate/pushgate/hubcore/tagexpr"
	"github.com/pushgate/pushgate/hubcore/tagexpr/tagexprtest"
)

// refEval evaluates a valid expression straight from its text, with a
// deliberately naive recursive reading of the grammar that shares no code
// with the parser or the compiled program: an independent oracle.
type refEval struct {
	s   string
	i   int
	set tag.Set
}

func (r *refEval) skip() {
	for r.i < len(r.s) && strings.IndexByte(" \t\r\n", r.s[r.i]) >= 0 {
		r.i++
	}
}

func (r *refEval) or() bool {
	v := r.and()
	for r.skip(); strings.HasPrefix(r.s[r.i:], "||"); r.skip() {
		r.i += 2
		w := r.and() // always parsed, so no short-circuit here
		v = v || w
	}
	return v
}

func (r *refEval) and() bool {
	v := r.unary()
	for r.skip(); strings.HasPrefix(r.s[r.i:], "&&"); r.skip() {
		r.i += 2
		w := r.unary()
		v = v && w
	}
	return v
}

func (r *refEval) unary() bool {
	r.skip()
	switch r.s[r.i] {
	case '!':
		r.i++
		return !r.unary()
	case '(':
		r.i++
		v := r.or()
		r.skip()
		r.i++ // ')'
		return v
	}
	j := r.i
	for j < len(r.s) && strings.IndexByte(" \t\r\n()!&|", r.s[j]) < 0 {
		j++
	}
	t := r.s[r.i:j]
	r.i = j
	return r.set.Has(strings.ToLower(t))
}

func reference(src string, set tag.Set) bool {
	r := &refEval{s: src, set: set}
	return r.or()
}

// TestPropertyEvalAndString checks, over thousands of random expressions
// and tag sets, that Eval agrees with the oracle and that the canonical
// String re-parses to an expression that evaluates identically and prints
// identically.
func TestPropertyEvalAndString(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 50; round++ {
		tags := tagexprtest.Tags(r, 2+r.IntN(8))
		sets := make([]tag.Set, 40)
		for i := range sets {
			sets[i] = tag.NewSet(tagexprtest.RandomSet(r, tags, r.Float64())...)
		}
		for n := 0; n < 100; n++ {
			depth := r.IntN(8)
			src := tagexprtest.RandomExpr(r, tags, depth)
			e, err := tagexpr.Parse(src, tagexpr.Limits{MaxDepth: max(depth, 1)})
			if err != nil {
				t.Fatalf("Parse(%q) at depth %d: %v", src, depth, err)
			}
			canon := e.String()
			e2, err := tagexpr.Parse(canon, tagexpr.Limits{})
			if err != nil {
				t.Fatalf("re-parse of %q (from %q): %v", canon, src, err)
			}
			if again := e2.String(); again != canon {
				t.Fatalf("String not a fixed point: %q -> %q", canon, again)
			}
			for _, s := range sets {
				want := reference(src, s)
				if got := e.EvalSet(s); got != want {
					t.Fatalf("%q.Eval(%v) = %v, oracle says %v", src, s.Folded(), got, want)
				}
				if got := e.EvalSet(s); got != want {
					t.Fatalf("%q.EvalSet(%v) = %v, oracle says %v", src, s.Folded(), got, want)
				}
				if got := e2.EvalSet(s); got != want {
					t.Fatalf("canonical %q.Eval(%v) = %v, oracle says %v (source %q)", canon, s.Folded(), got, want, src)
				}
			}
		}
	}
}

// liar reports made-up statistics: plans must stay correct whatever the
// estimates say, they only get slower.
type liar struct {
	r        *rand.Rand
	universe int64
}

func (l liar) Cardinality(string) int64 { return l.r.Int64N(100) }
func (l liar) Universe() int64          { return l.universe }

// TestPropertyPlan executes plans of random expressions over a random
// in-memory inverted index and checks that the steps' outputs are exactly
// the brute-force matches, without duplicates, with no statistics, exact
// ones and wrong ones.
func TestPropertyPlan(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for round := 0; round < 30; round++ {
		tags := tagexprtest.Tags(r, 2+r.IntN(8))
		ix := tagexprtest.NewIndex(tagexprtest.RandomRecords(r, 150, tags))
		stats := []tagexpr.Stats{nil, ix, liar{r, 50}, liar{r, 1000}}
		if err := tagexprtest.CheckPlan(ix, nil, ix); err != nil {
			t.Fatalf("broadcast: %v", err)
		}
		for n := 0; n < 100; n++ {
			src := tagexprtest.RandomExpr(r, tags, 6)
			e := mustParse(t, src)
			for _, st := range stats {
				if err := tagexprtest.CheckPlan(ix, e, st); err != nil {
					t.Fatalf("expression %q, stats %T: %v", src, st, err)
				}
			}
		}
	}
}

// TestRandomExprDeterministic pins the generator: a store suite relies on
// seeds reproducing the same cases.
func TestRandomExprDeterministic(t *testing.T) {
	gen := func() string {
		r := rand.New(rand.NewPCG(7, 7))
		return tagexprtest.RandomExpr(r, tagexprtest.Tags(r, 5), 4)
	}
	if a, b := gen(), gen(); a != b {
		t.Errorf("same seed, different expressions: %q, %q", a, b)
	}
}
