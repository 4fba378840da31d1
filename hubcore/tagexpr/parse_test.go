package tagexpr_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/pushgate/pushgate/hubcore/tag"
	"github.com/pushgate/pushgate/hubcore/tagexpr"
)

func mustParse(t testing.TB, src string) *tagexpr.Expr {
	t.Helper()
	e, err := tagexpr.Parse(src, tagexpr.Limits{})
	if err != nil {
		t.Fatalf("Parse(%q): %v", src, err)
	}
	return e
}

func TestParseCanonical(t *testing.T) {
	tests := []struct{ src, want string }{
		// Single tags and every tag character.
		{"a", "a"},
		{"Az09_@#.:-", "Az09_@#.:-"},
		{"$InstallationId:{abc-1}", "$InstallationId:{abc-1}"},
		{"$userid:{u=1}", "$userid:{u=1}"},
		// Operators and whitespace.
		{"a&&b", "a && b"},
		{"a||b", "a || b"},
		{"!a", "!a"},
		{"! a", "!a"},
		{" \t\r\na\n&&\tb\r\n ", "a && b"},
		{"a&&!b", "a && !b"},
		// Precedence: ! over && over ||.
		{"a || b && c", "a || b && c"},
		{"a && b || c", "a && b || c"},
		{"!a && b", "!a && b"},
		{"!a || b", "!a || b"},
		{"(a || b) && c", "(a || b) && c"},
		{"a && (b || c)", "a && (b || c)"},
		{"!(a && b)", "!(a && b)"},
		{"!(a || b) && c", "!(a || b) && c"},
		// Redundant parentheses go, associativity is flattened.
		{"((a))", "a"},
		{"(a && b) || c", "a && b || c"},
		{"a || (b || c)", "a || b || c"},
		{"(a || b) || c", "a || b || c"},
		{"(a && b) && (c && d)", "a && b && c && d"},
		{"(!a)", "!a"},
		{"!(!a)", "!!a"},
		{"!!a", "!!a"},
		{"a && (b || !c) || d", "a && (b || !c) || d"},
		{"((a || b) && (c || d)) || e", "(a || b) && (c || d) || e"},
		// Spelling is kept per occurrence.
		{"News || news", "News || news"},
	}
	for _, tt := range tests {
		e, err := tagexpr.Parse(tt.src, tagexpr.Limits{})
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.src, err)
			continue
		}
		if got := e.String(); got != tt.want {
			t.Errorf("Parse(%q).String() = %q, want %q", tt.src, got, tt.want)
		}
		// Canonical form is a fixed point.
		if again := mustParse(t, e.String()).String(); again != tt.want {
			t.Errorf("re-parse of %q gives %q", tt.want, again)
		}
	}
}

func TestEvalPrecedence(t *testing.T) {
	tests := []struct {
		src  string
		tags []string
		want bool
	}{
		{"a", []string{"a"}, true},
		{"a", nil, false},
		{"!a", nil, true},
		{"!a", []string{"a"}, false},
		{"!!a", []string{"a"}, true},
		// a || (b && c), not (a || b) && c.
		{"a || b && c", []string{"a"}, true},
		{"a || b && c", []string{"b"}, false},
		{"a || b && c", []string{"b", "c"}, true},
		// (a && b) || c.
		{"a && b || c", []string{"c"}, true},
		{"a && b || c", []string{"a"}, false},
		// (!a) && b, not !(a && b).
		{"!a && b", []string{"b"}, true},
		{"!a && b", nil, false},
		{"!a && b", []string{"a", "b"}, false},
		// (!a) || b.
		{"!a || b", nil, true},
		{"!a || b", []string{"a"}, false},
		{"!(a && b)", []string{"a"}, true},
		{"!(a || b)", []string{"a"}, false},
		{"!(a || b)", []string{"c"}, true},
		{"(a || b) && c", []string{"a"}, false},
		{"(a || b) && c", []string{"b", "c"}, true},
		{"a && b && c", []string{"a", "b"}, false},
		{"a && b && c", []string{"a", "b", "c"}, true},
		{"a || b || c", []string{"c"}, true},
		{"a || b || c", []string{"d"}, false},
		{"(a && b) || (c && !d) || e", []string{"c"}, true},
		{"(a && b) || (c && !d) || e", []string{"c", "d"}, false},
		{"(a && b) || (c && !d) || e", []string{"c", "d", "e"}, true},
		{"(a && b) || (c && !d) || e", []string{"a", "b", "d"}, true},
		// Case-insensitive matching both ways.
		{"News", []string{"news"}, true},
		{"news", []string{"NEWS"}, true},
		{"!NEWS", []string{"News"}, false},
		// The Notification Hubs documentation examples.
		{"(follows_RedSox || follows_Cardinals) && location_Boston", []string{"follows_RedSox", "location_Boston"}, true},
		{"(follows_RedSox || follows_Cardinals) && location_Boston", []string{"follows_cardinals", "location_boston"}, true},
		{"(follows_RedSox || follows_Cardinals) && location_Boston", []string{"follows_RedSox", "location_NYC"}, false},
		{"(follows_RedSox || follows_Cardinals) && location_Boston", []string{"location_Boston"}, false},
		{"location_Boston && !follows_Cardinals", []string{"location_Boston", "follows_RedSox"}, true},
		{"location_Boston && !follows_Cardinals", []string{"location_Boston", "follows_Cardinals"}, false},
		{"location_Boston && !follows_Cardinals", []string{"follows_RedSox"}, false},
		// System tags, with the prefix in any case.
		{"$InstallationId:{abc}", []string{tag.ForInstallation("abc")}, true},
		{"$installationid:{ABC}", []string{tag.ForInstallation("abc")}, true},
		{"$UserId:{bob} && !$InstallationId:{abc}", []string{tag.ForUser("bob"), tag.ForInstallation("xyz")}, true},
		{"$UserId:{bob} && !$InstallationId:{abc}", []string{tag.ForUser("bob"), tag.ForInstallation("abc")}, false},
	}
	for _, tt := range tests {
		e := mustParse(t, tt.src)
		if got := e.EvalSet(tag.NewSet(tt.tags...)); got != tt.want {
			t.Errorf("%q.Eval(%v) = %v, want %v", tt.src, tt.tags, got, tt.want)
		}
		// EvalProbe with the memberships of FoldedTags agrees.
		set := tag.NewSet(tt.tags...)
		present := make([]bool, len(e.FoldedTags()))
		for i, f := range e.FoldedTags() {
			present[i] = set.Has(f)
		}
		if got := e.EvalProbe(present); got != tt.want {
			t.Errorf("%q.EvalProbe(%v) = %v, want %v", tt.src, tt.tags, got, tt.want)
		}
	}
}

func TestTags(t *testing.T) {
	e := mustParse(t, "News || sports && !news || SPORTS || $UserId:{Bob}")
	if got, want := e.Tags(), []string{"News", "sports", "$UserId:{Bob}"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Tags() = %q, want %q", got, want)
	}
	if got, want := e.FoldedTags(), []string{"news", "sports", "$userid:{bob}"}; !reflect.DeepEqual(got, want) {
		t.Errorf("FoldedTags() = %q, want %q", got, want)
	}
	// The returned slices are copies: the Expr stays immutable.
	e.Tags()[0] = "x"
	e.FoldedTags()[0] = "x"
	if e.Tags()[0] != "News" || e.FoldedTags()[0] != "news" {
		t.Error("Tags/FoldedTags expose internal state")
	}
}

func TestSyntaxErrors(t *testing.T) {
	long := strings.Repeat("x", tag.MaxLen+1)
	tests := []struct {
		src    string
		pos    int
		reason string
	}{
		{"", 0, "empty expression"},
		{" \t\n", 0, "empty expression"},
		{"a &", 2, "single '&'"},
		{"a & b", 2, "single '&'"},
		{"a | b", 2, "single '|'"},
		{"|", 0, "single '|'"},
		{"a &&& b", 4, "single '&'"},
		{"a ||| b", 4, "single '|'"},
		{"a &&", 4, "after '&&', found end of expression"},
		{"a ||", 4, "after '||', found end of expression"},
		{"a && || b", 5, "expected a tag, '!' or '(' after '&&', found '||'"},
		{"a || && b", 5, "after '||', found '&&'"},
		{"&& a", 0, "expected a tag, '!' or '(', found '&&'"},
		{"!", 1, "after '!', found end of expression"},
		{"a && !", 6, "after '!'"},
		{"!)", 1, "after '!', found ')'"},
		{"()", 0, "empty parentheses"},
		{"a && ( )", 5, "empty parentheses"},
		{"(a", 2, "to close '(' at position 0, found end of expression"},
		{"((a || b)", 9, "to close '(' at position 0"},
		{"(a b)", 3, `found tag "b"`},
		{"(", 1, "after '(', found end of expression"},
		{"a)", 1, "')' without matching '('"},
		{"(a))", 3, "')' without matching '('"},
		{"a b", 2, `expected '&&', '||' or end of expression, found tag "b"`},
		{"a && b c", 7, `found tag "c"`},
		{"a !b", 2, "found '!'"},
		{"a (b)", 2, "found '('"},
		// Invalid tags point at the offending character.
		{"a && bad$tag", 8, `invalid tag "bad$tag"`},
		{"news && caf\xc3\xa9", 11, "not allowed"},
		{"a,b", 1, "','"},
		{"$Foo:{x}", 0, "system tags"},
		{"x || $InstallationId:{}", 22, "empty value"},
		{"$UserId:{abc", 12, "missing closing '}'"},
		{"$UserId:{a}b", 11, "after closing '}'"},
		{"$UserId:{a b}", 10, "missing closing '}'"},
		{"a || " + long, 5, "longer than 120"},
	}
	for _, tt := range tests {
		e, err := tagexpr.Parse(tt.src, tagexpr.Limits{})
		var se *tagexpr.SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("Parse(%q) = %v, %v; want a SyntaxError", tt.src, e, err)
			continue
		}
		if se.Pos != tt.pos || !strings.Contains(se.Reason, tt.reason) {
			t.Errorf("Parse(%q): got pos %d %q, want pos %d containing %q", tt.src, se.Pos, se.Reason, tt.pos, tt.reason)
		}
	}
}

func TestSyntaxErrorMessage(t *testing.T) {
	_, err := tagexpr.Parse("a && b && ", tagexpr.Limits{})
	want := "tag expression: at position 10: expected a tag, '!' or '(' after '&&', found end of expression"
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
}

func limitErr(t *testing.T, src string, lim tagexpr.Limits) *tagexpr.LimitError {
	t.Helper()
	_, err := tagexpr.Parse(src, lim)
	var le *tagexpr.LimitError
	if !errors.As(err, &le) {
		t.Fatalf("Parse(%.40q…) error = %v, want a LimitError", src, err)
	}
	if !strings.HasPrefix(le.Error(), "tag expression: ") {
		t.Errorf("message %q", le.Error())
	}
	return le
}

func ok(t *testing.T, src string, lim tagexpr.Limits) {
	t.Helper()
	if _, err := tagexpr.Parse(src, lim); err != nil {
		t.Errorf("Parse(%.40q…): %v", src, err)
	}
}

func join(n int, op string) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = "t" + strings.Repeat("x", i%3)
	}
	return strings.Join(parts, op)
}

func TestLimits(t *testing.T) {
	def := tagexpr.DefaultLimits()
	if def != (tagexpr.Limits{MaxTags: 200, MaxDepth: 32, MaxLen: 16384}) {
		t.Errorf("DefaultLimits() = %+v", def)
	}
	compat := tagexpr.Limits{Compat: true}
	negative := tagexpr.Limits{MaxTags: -1, MaxDepth: -1, MaxLen: -1}

	// Length, checked before anything else.
	long := strings.Repeat("a", 16385)
	if le := limitErr(t, long, tagexpr.Limits{}); le.Limit != "length" || le.Max != 16384 || le.Got != 16385 {
		t.Errorf("length: %+v", le)
	}
	if le := limitErr(t, "a && b", tagexpr.Limits{MaxLen: 5}); le.Limit != "length" || le.Max != 5 || le.Got != 6 {
		t.Errorf("custom length: %+v", le)
	}
	ok(t, "a && b", tagexpr.Limits{MaxLen: 6})

	// Depth: parentheses and '!' both count, defaults to 32.
	ok(t, strings.Repeat("(", 32)+"a"+strings.Repeat(")", 32), tagexpr.Limits{})
	ok(t, strings.Repeat("!", 32)+"a", negative)
	ok(t, strings.Repeat("!(", 16)+"a"+strings.Repeat(")", 16), tagexpr.Limits{})
	for _, src := range []string{
		strings.Repeat("(", 33) + "a" + strings.Repeat(")", 33),
		strings.Repeat("!", 33) + "a",
		strings.Repeat("!(", 16) + "!a" + strings.Repeat(")", 16),
	} {
		if le := limitErr(t, src, tagexpr.Limits{}); le.Limit != "depth" || le.Max != 32 || le.Got != 33 {
			t.Errorf("depth: %+v", le)
		}
	}
	if le := limitErr(t, "((a))", tagexpr.Limits{MaxDepth: 1}); le.Limit != "depth" || le.Max != 1 {
		t.Errorf("custom depth: %+v", le)
	}
	// Depth is what was nested at once, not the number of parentheses.
	ok(t, strings.TrimSuffix(strings.Repeat("(a) || ", 100), " || "), tagexpr.Limits{MaxDepth: 1})

	// A megabyte of nesting stops at the depth limit, even when length and
	// depth limits are raised absurdly high.
	huge := tagexpr.Limits{MaxLen: 1 << 21, MaxDepth: 1 << 30}
	for _, src := range []string{strings.Repeat("(", 1<<20), strings.Repeat("!", 1<<20)} {
		if le := limitErr(t, src, huge); le.Limit != "depth" || le.Max != tagexpr.HardMaxDepth {
			t.Errorf("huge depth: %+v", le)
		}
		if le := limitErr(t, src, tagexpr.Limits{}); le.Limit != "length" {
			t.Errorf("huge default: %+v", le)
		}
	}

	// Tags: occurrences, duplicates included.
	ok(t, join(200, "&&"), tagexpr.Limits{})
	if le := limitErr(t, join(201, "||"), tagexpr.Limits{}); le.Limit != "tags" || le.Max != 200 || le.Got != 201 {
		t.Errorf("tags: %+v", le)
	}
	if le := limitErr(t, "a || a || a || a", tagexpr.Limits{MaxTags: 3}); le.Limit != "tags" || le.Got != 4 {
		t.Errorf("duplicate tags: %+v", le)
	}

	// Notification Hubs: 20 tags when only || is used, 6 otherwise.
	ok(t, join(20, " || "), compat)
	ok(t, "("+join(10, "||")+") || ("+join(10, "||")+")", compat)
	ok(t, "a", compat)
	ok(t, join(6, " && "), compat)
	ok(t, "!a || "+join(5, " || "), compat)
	ok(t, join(21, " || "), tagexpr.Limits{})
	ok(t, join(7, " && "), tagexpr.Limits{})
	if le := limitErr(t, join(21, " || "), compat); le.Limit != "compat-tags" || le.Max != 20 || le.Got != 21 {
		t.Errorf("compat or: %+v", le)
	}
	if le := limitErr(t, join(6, " || ")+" && x", compat); le.Limit != "compat-tags" || le.Max != 6 || le.Got != 7 {
		t.Errorf("compat and: %+v", le)
	}
	if le := limitErr(t, "!a || "+join(6, " || "), compat); le.Limit != "compat-tags" || le.Max != 6 {
		t.Errorf("compat not: %+v", le)
	}
	if le := limitErr(t, join(201, "||"), compat); le.Limit != "tags" {
		t.Errorf("MaxTags is checked before compat: %+v", le)
	}

	// Syntax errors win over tag limits: the user must fix the syntax first.
	var se *tagexpr.SyntaxError
	if _, err := tagexpr.Parse(join(30, "||")+" &&", compat); !errors.As(err, &se) {
		t.Errorf("got %v, want a syntax error", err)
	}
}

func TestLimitErrorMessages(t *testing.T) {
	for _, tt := range []struct {
		le   tagexpr.LimitError
		want string
	}{
		{tagexpr.LimitError{Limit: "length", Max: 10, Got: 11}, "tag expression: 11 bytes long, at most 10 allowed"},
		{tagexpr.LimitError{Limit: "depth", Max: 32, Got: 33}, "tag expression: nested more than 32 levels deep (parentheses and '!')"},
		{tagexpr.LimitError{Limit: "tags", Max: 200, Got: 201}, "tag expression: 201 tags, at most 200 allowed"},
		{tagexpr.LimitError{Limit: "compat-tags", Max: 20, Got: 21}, "tag expression: 21 tags, Notification Hubs allows at most 20 in an expression using only '||'"},
		{tagexpr.LimitError{Limit: "compat-tags", Max: 6, Got: 7}, "tag expression: 7 tags, Notification Hubs allows at most 6 in an expression using '&&' or '!'"},
	} {
		if got := tt.le.Error(); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
}

// TestEvalDoesNotAllocate pins the allocation-free promise (allocations,
// unlike timings, are deterministic).
func TestEvalDoesNotAllocate(t *testing.T) {
	e := mustParse(t, "(a && b) || (c && !d) || e")
	sets := []tag.Set{tag.NewSet("c", "x", "y")}
	var m tagexpr.Membership = &sets[0]
	present := []bool{false, false, true, false, false}
	if n := testing.AllocsPerRun(100, func() {
		_ = e.Eval(m)
		_ = e.Eval(&sets[0])
		_ = e.EvalSet(sets[0])
		_ = e.EvalProbe(present)
	}); n != 0 {
		t.Errorf("%v allocations per evaluation", n)
	}
}

// TestManyTags covers expressions with enough distinct tags for the
// construction to switch from linear search to a map.
func TestManyTags(t *testing.T) {
	var parts, want []string
	for i := 0; i < 40; i++ {
		name := "T" + strings.Repeat("x", i)
		parts = append(parts, name, strings.ToLower(name))
		want = append(want, name)
	}
	e := mustParse(t, strings.Join(parts, " || ")+" && !z")
	if got := e.Tags(); !reflect.DeepEqual(got, append(want, "z")) {
		t.Errorf("Tags() = %q", got)
	}
	set := tag.NewSet("txxxxxxxxxx")
	present := make([]bool, len(e.FoldedTags()))
	for i, f := range e.FoldedTags() {
		present[i] = set.Has(f)
	}
	if !e.EvalSet(set) || !e.EvalProbe(present) {
		t.Error("a tag deep in the list is not found")
	}
}
