// Package tagexpr parses, evaluates and plans Notification Hubs tag
// expressions: boolean formulas over tags such as
//
//	(follows_RedSox || follows_Cardinals) && location_Boston
//
// # Grammar
//
//	expr  := or
//	or    := and { "||" and }
//	and   := unary { "&&" unary }
//	unary := "!" unary | "(" expr ")" | TAG
//
// "!" binds tighter than "&&", which binds tighter than "||". Whitespace
// (space, tab, CR, LF) between tokens is insignificant. A TAG is a maximal
// run of bytes other than whitespace and ( ) ! & |, and must then be a valid
// user or system tag as defined by package tag. Notification Hubs does not
// document precedence; this is the conventional one, which every SDK's
// examples assume.
//
// Tags match case-insensitively: the expression is folded once at parse
// time and probed against sets that hold folded tags (see tag.Fold).
//
// # Limits
//
// Parsing is bounded by Limits so that hostile input costs little: the
// length is checked before any work, nesting depth during parsing (so deep
// "((((" or "!!!!" input cannot exhaust the stack), and tag occurrences after
// it. Limits.Compat additionally applies the Notification Hubs rule: at most
// 20 tags in an expression that uses only "||", otherwise at most 6.
//
// # Evaluation
//
// An Expr is compiled at parse time into a flat branching program: one
// instruction per tag occurrence, each saying where to go when the tag is
// present or absent. Evaluation walks it with short-circuiting, without
// recursion, a stack or allocation.
//
// # Plans: the contract with stores
//
// A store keeps an inverted index (one set of record ids per folded tag) and
// the universe of all records. NewPlan turns an expression into Steps so that
// a send never has to materialise unions of huge sets. A store executes a
// Plan as follows, and may rely on these guarantees:
//
//   - For each Step, iterate the candidate records: the members of the index
//     set of Step.Driver, or every record when Driver is "".
//   - Emit a candidate c iff Step.Filter == nil || Step.Filter.Eval(tags(c)).
//     Step.Probe lists the folded tags the filter reads, so a store that
//     keeps tags remotely can fetch just those (e.g. with SMISMEMBER) and
//     call Filter.EvalProbe with the answers.
//   - The union of all steps' outputs is exactly the set of records r for
//     which Plan.Expr.Eval(tags(r)) is true (every record for a nil Expr,
//     the broadcast), and no record is emitted by two steps. Stores
//     therefore need no cross-step de-duplication, and may run steps
//     concurrently or stream them in order.
//   - A Plan with zero Steps matches nothing (e.g. "a && !a").
//
// Steps are ordered by ascending estimated cardinality. The planner picks,
// for each expression, a cover: a set of tags at least one of which every
// matching record carries. Step i scans the i-th cover tag and keeps
// candidates satisfying the expression with that tag set to true and the
// earlier cover tags set to false, conjoined with the negation of those
// earlier tags; the negations are what make the steps disjoint. When no
// cover exists (a top-level negation such as "!muted"), or when Stats say
// the cover would scan more records than exist, the plan is a single scan
// of the universe.
package tagexpr
