package tagexpr_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/pushgate/pushgate/hubcore/tag"
	"github.com/pushgate/pushgate/hubcore/tagexpr"
)

// occurrences counts tag tokens in a valid expression.
func occurrences(src string) int {
	return len(strings.FieldsFunc(src, func(r rune) bool { return strings.ContainsRune(" \t\r\n()!&|", r) }))
}

// subsets returns tag sets to compare two expressions over tags: all
// subsets when there are few tags, otherwise a deterministic sample.
func subsets(tags []string) []tag.Set {
	n := len(tags)
	var out []tag.Set
	if n <= 6 {
		for m := 0; m < 1<<n; m++ {
			var s []string
			for i, t := range tags {
				if m&(1<<i) != 0 {
					s = append(s, t)
				}
			}
			out = append(out, tag.NewSet(s...))
		}
		return out
	}
	x := uint64(0x9e3779b97f4a7c15)
	for k := 0; k < 64; k++ {
		var s []string
		for _, t := range tags {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			if x&1 != 0 {
				s = append(s, t)
			}
		}
		out = append(out, tag.NewSet(s...))
	}
	return out
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"a", "a && b", "a||b", "!a", "!!a", "(a || b) && !c", "a || b && c",
		"(follows_RedSox || follows_Cardinals) && location_Boston",
		"location_Boston && !follows_Cardinals",
		"$InstallationId:{abc} || $UserId:{u=1}",
		" \t(a)\r\n", "((((a))))", "a && (b || (c && !(d || e)))",
		"", "&", "a &", "a &&& b", "a |", "()", "(a", "a)", "a b", "!", "a && ",
		"bad$tag", "caf\xc3\xa9", "$UserId:{", "$Foo:{x}", "\x00", "((((((((((((((((((((((((((((((((((a",
		strings.Repeat("!", 40) + "a",
		strings.Repeat("a||", 21) + "a",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, src string, compat bool) {
		lim := tagexpr.Limits{Compat: compat}
		e, err := tagexpr.Parse(src, lim)
		if err != nil {
			var se *tagexpr.SyntaxError
			var le *tagexpr.LimitError
			switch {
			case errors.As(err, &se):
				if se.Pos < 0 || se.Pos > len(src) {
					t.Fatalf("position %d outside source of %d bytes", se.Pos, len(src))
				}
			case errors.As(err, &le):
			default:
				t.Fatalf("error of unexpected type %T: %v", err, err)
			}
			return
		}
		def := tagexpr.DefaultLimits()
		if len(src) > def.MaxLen {
			t.Fatalf("accepted %d bytes", len(src))
		}
		occ := occurrences(src)
		if occ > def.MaxTags || (compat && occ > tagexpr.CompatMaxTagsOrOnly) {
			t.Fatalf("accepted %d tag occurrences", occ)
		}
		if compat && occ > tagexpr.CompatMaxTags && strings.ContainsAny(src, "&!") {
			t.Fatalf("compat accepted %d tags with && or !", occ)
		}
		canon := e.String()
		// Canonical form can be longer (spaces), never deeper or with more
		// tags, so only the length limit is relaxed.
		e2, err := tagexpr.Parse(canon, tagexpr.Limits{Compat: compat, MaxLen: 1 << 20})
		if err != nil {
			t.Fatalf("String() = %q does not re-parse: %v", canon, err)
		}
		if again := e2.String(); again != canon {
			t.Fatalf("String not a fixed point: %q -> %q", canon, again)
		}
		for _, s := range subsets(e.Tags()) {
			if e.EvalSet(s) != e2.EvalSet(s) {
				t.Fatalf("%q and its canonical form %q differ on %v", src, canon, s.Folded())
			}
		}
		// Planning must not panic either, and must cover at most its tags.
		p := tagexpr.NewPlan(e, nil)
		for _, st := range p.Steps {
			if st.Driver != "" && st.Driver != tag.Fold(st.Driver) {
				t.Fatalf("driver %q not folded", st.Driver)
			}
		}
	})
}
