package tagexpr_test

import (
	"testing"

	"github.com/pushgate/pushgate/hubcore/tag"
	"github.com/pushgate/pushgate/hubcore/tagexpr"
)

// The benchmark case: a 5-term expression against a record with 10 tags,
// where evaluation has to probe four tags before it knows the answer
// (a present, b absent, c present, d absent: true by the second term).
const benchExpr = "(follows_RedSox && location_Boston) || (lang_en && !muted) || vip"

var benchTags = []string{
	"follows_RedSox", "lang_en", "platform_apns", "app_version_5.2", "region_eu",
	"topic_news", "topic_sports", "tz_utc-5", "$InstallationId:{inst-1234}", "$UserId:{user-42}",
}

var sink bool

func BenchmarkParse(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tagexpr.Parse(benchExpr, tagexpr.Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEval measures the ways a store can hand a record's tags over: a
// Membership built once, a *tag.Set, or a tag.Set value through EvalSet.
// (tag.Set's Has has a pointer receiver, so a value cannot be boxed into a
// Membership by accident, which would allocate on every call.)
func BenchmarkEval(b *testing.B) {
	e := mustParse(b, benchExpr)
	set := tag.NewSet(benchTags...)
	if !e.Eval(&set) || !e.EvalSet(set) {
		b.Fatal("benchmark case should match")
	}
	b.Run("iface", func(b *testing.B) {
		var m tagexpr.Membership = &set
		b.ReportAllocs()
		for b.Loop() {
			sink = e.Eval(m)
		}
	})
	b.Run("ptr", func(b *testing.B) {
		sets := []tag.Set{set}
		b.ReportAllocs()
		for b.Loop() {
			sink = e.Eval(&sets[0])
		}
	})
	b.Run("EvalSet", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sink = e.EvalSet(set)
		}
	})
}

func BenchmarkEvalProbe(b *testing.B) {
	e := mustParse(b, benchExpr)
	set := tag.NewSet(benchTags...)
	present := make([]bool, len(e.FoldedTags()))
	for i, t := range e.FoldedTags() {
		present[i] = set.Has(t)
	}
	b.ReportAllocs()
	for b.Loop() {
		sink = e.EvalProbe(present)
	}
}

// BenchmarkBaselineSetHas is the floor: the same boolean hand-coded over
// tag.Set.Has with pre-folded constants, no interpretation at all.
func BenchmarkBaselineSetHas(b *testing.B) {
	set := tag.NewSet(benchTags...)
	b.ReportAllocs()
	for b.Loop() {
		sink = (set.Has("follows_redsox") && set.Has("location_boston")) ||
			(set.Has("lang_en") && !set.Has("muted")) || set.Has("vip")
	}
}

// BenchmarkBaselineMap is the same hand-coded boolean over a Go map built
// once per tag set, the obvious alternative representation of a record.
func BenchmarkBaselineMap(b *testing.B) {
	m := make(map[string]struct{}, len(benchTags))
	for _, t := range benchTags {
		m[tag.Fold(t)] = struct{}{}
	}
	has := func(t string) bool { _, ok := m[t]; return ok }
	b.ReportAllocs()
	for b.Loop() {
		sink = (has("follows_redsox") && has("location_boston")) ||
			(has("lang_en") && !has("muted")) || has("vip")
	}
}

var planSink *tagexpr.Plan

func BenchmarkPlan(b *testing.B) {
	e := mustParse(b, benchExpr)
	st := fakeStats{universe: 2_000_000, card: map[string]int64{
		"follows_redsox": 80_000, "location_boston": 30_000, "lang_en": 900_000, "muted": 100_000, "vip": 5_000,
	}}
	b.ReportAllocs()
	for b.Loop() {
		planSink = tagexpr.NewPlan(e, st)
	}
}
