package tagexpr_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/pushgate/pushgate/hubcore/tag"
	"github.com/pushgate/pushgate/hubcore/tagexpr"
)

// fakeStats serves fixed cardinalities; unknown tags have none.
type fakeStats struct {
	card     map[string]int64
	universe int64
}

func (s fakeStats) Cardinality(t string) int64 { return s.card[t] }
func (s fakeStats) Universe() int64            { return s.universe }

// stepView is a Step in comparable form.
type stepView struct {
	Driver, Filter string
	Estimate       int64
}

func view(p *tagexpr.Plan) []stepView {
	out := []stepView{}
	for _, s := range p.Steps {
		v := stepView{Driver: s.Driver, Estimate: s.Estimate}
		if s.Filter != nil {
			v.Filter = s.Filter.String()
		}
		out = append(out, v)
	}
	return out
}

func TestPlan(t *testing.T) {
	st := fakeStats{universe: 1_000_000, card: map[string]int64{
		"a": 100_000, "b": 10_000, "c": 500, "d": 700_000, "e": 600_000, "muted": 50_000,
	}}
	tests := []struct {
		name string
		src  string // "" plans a nil Expr
		st   tagexpr.Stats
		want []stepView
	}{
		{"single tag", "userId:u123", nil, []stepView{{Driver: "userid:u123"}}},
		{"single tag folded", "News", st, []stepView{{Driver: "news"}}},
		{"and picks the rarer tag", "a && b", st, []stepView{{"b", "a", 10_000}}},
		{"and without stats takes the first", "a && b", nil, []stepView{{"a", "b", 0}}},
		{"negation needs the universe", "!muted", st, []stepView{{"", "!muted", 1_000_000}}},
		{"or", "a || b", nil, []stepView{{"a", "", 0}, {"b", "!a", 0}}},
		{"or by cardinality", "a || b", st, []stepView{{"b", "", 10_000}, {"a", "!b", 100_000}}},
		{"broadcast", "", st, []stepView{{"", "", 1_000_000}}},
		{"broadcast without stats", "", nil, []stepView{{"", "", 0}}},
		{"contradiction", "a && !a", st, []stepView{}},
		{"nested contradiction", "b && !(a || !a)", nil, []stepView{}},
		{"tautology", "a || !a", nil, []stepView{{"", "", 0}}},
		{"double negation", "!!a", nil, []stepView{{Driver: "a"}}},
		{"and with negation", "a && !muted", st, []stepView{{"a", "!muted", 100_000}}},
		{"de morgan gives a cover", "!(!a || !b)", st, []stepView{{"b", "a", 10_000}}},
		{"or of ands", "(a && b) || (c && !d) || e", st, []stepView{
			{"c", "a && b || !d || e", 500},
			{"b", "(a || e) && !c", 10_000},
			{"e", "!c && !b", 600_000},
		}},
		{"and of or picks the cheaper cover", "a && (b || c)", st, []stepView{
			{"c", "a", 500},
			{"b", "a && !c", 10_000},
		}},
		{"cover costlier than the universe", "d || e", st, []stepView{{"", "d || e", 1_000_000}}},
		{"costly child of an and is skipped", "(d || e) && c", st, []stepView{{"c", "d || e", 500}}},
		{"or with a negated child", "a || !b", st, []stepView{{"", "a || !b", 1_000_000}}},
		{"duplicates are one driver", "a || A || a && c", nil, []stepView{{"a", "", 0}}},
		{"unknown tag has no records", "zzz || a", st, []stepView{{"zzz", "", 0}, {"a", "!zzz", 100_000}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var e *tagexpr.Expr
			if tt.src != "" {
				e = mustParse(t, tt.src)
			}
			p := tagexpr.NewPlan(e, tt.st)
			if got := view(p); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("NewPlan(%q) steps\n got %+v\nwant %+v\n%s", tt.src, got, tt.want, tagexpr.Explain(p))
			}
			if p.Expr != e {
				t.Error("Plan.Expr is not the planned expression")
			}
			var total int64
			for _, s := range p.Steps {
				total += s.Estimate
				var probe []string
				if s.Filter != nil {
					probe = s.Filter.FoldedTags()
				}
				if !reflect.DeepEqual(s.Probe, probe) {
					t.Errorf("Probe = %q, want %q", s.Probe, probe)
				}
			}
			if p.Estimate != total || p.Estimated != (tt.st != nil) {
				t.Errorf("Estimate %d (want %d), Estimated %v", p.Estimate, total, p.Estimated)
			}
		})
	}
}

func TestExplain(t *testing.T) {
	st := fakeStats{universe: 2_000_000, card: map[string]int64{"a": 40_000, "b": 10_000, "muted": 30_000}}
	tests := []struct {
		src  string
		st   tagexpr.Stats
		want []string
	}{
		{"a && b", st, []string{
			"tag expression: a && b\n",
			`step 1: scan tag "b" (~10,000 candidates), keep if a` + "\n",
			"total: ~10,000 candidates scanned of ~2,000,000 records (0.5%)",
		}},
		{"!muted", st, []string{
			"step 1: scan ALL records (~2,000,000), keep if !muted [full scan: no tag is carried by every match",
			"total: ~2,000,000 candidates scanned of ~2,000,000 records (100.0%)",
		}},
		{"a || b", nil, []string{
			`step 1: scan tag "a", keep all`,
			`step 2: scan tag "b", keep if !a`,
			"total: unknown (no statistics)",
		}},
		{"", st, []string{"tag expression: none (broadcast to every record)", "scan ALL records (~2,000,000), keep all [full scan: no tag expression: broadcast]"}},
		{"a && !A", st, []string{"no steps: the expression can never be true"}},
		{"a || b", fakeStats{universe: 5, card: map[string]int64{"a": 4, "b": 3}}, []string{"[full scan: cheaper than scanning"}},
	}
	for _, tt := range tests {
		var e *tagexpr.Expr
		if tt.src != "" {
			e = mustParse(t, tt.src)
		}
		got := tagexpr.Explain(tagexpr.NewPlan(e, tt.st))
		for _, w := range tt.want {
			if !strings.Contains(got, w) {
				t.Errorf("Explain(%q) =\n%s\nmissing %q", tt.src, got, w)
			}
		}
	}
}

// TestConcurrentUse shares one Expr and one Plan among goroutines; run
// with -race it checks the immutability promise.
func TestConcurrentUse(t *testing.T) {
	e := mustParse(t, "(a && b) || (c && !d) || E")
	st := fakeStats{universe: 100, card: map[string]int64{"a": 5, "b": 7, "c": 9, "e": 11}}
	p := tagexpr.NewPlan(e, st)
	sets := []tag.Set{tag.NewSet("a", "b"), tag.NewSet("c", "d"), tag.NewSet("e")}
	want := []bool{true, false, true}
	done := make(chan struct{})
	for g := 0; g < 4; g++ {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := 0; i < 200; i++ {
				for j, s := range sets {
					if e.EvalSet(s) != want[j] {
						t.Errorf("Eval(%v) wrong", s.Folded())
					}
				}
				_ = e.String()
				_ = e.Tags()
				_ = tagexpr.Explain(p)
				_ = tagexpr.NewPlan(e, st)
				for _, s := range p.Steps {
					if s.Filter != nil {
						_ = s.Filter.EvalSet(sets[i%3])
					}
				}
			}
		}()
	}
	for g := 0; g < 4; g++ {
		<-done
	}
}
