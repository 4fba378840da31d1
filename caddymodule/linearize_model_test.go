package caddymodule

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/anishathalye/porcupine"
)

// The sequential specification of one installation under the installation
// API of pushgate_nh, for porcupine. Every write carries values no other
// write carries (tags and a template marker derived from the operation's
// sequence number), so a read names the write it saw and a stale or lost
// write cannot hide behind an equal value.

// linKind is an operation of the history.
type linKind uint8

const (
	// linPut replaces (or creates) the installation with two fresh tags and
	// a fresh template marker.
	linPut linKind = iota
	// linPatch adds one fresh tag ({"op":"add","path":"/tags"}) and, when
	// its marker is set, replaces the template body in the same patch.
	linPatch
	// linDelete deletes; the API answers 204 whether or not it existed.
	linDelete
	// linGet reads the tags and the template marker.
	linGet
	// linBadPut is a PUT with a system tag: 400 whatever is stored.
	linBadPut
	// linBadPatch is a PATCH on /tags/- (JSON-Pointer append, which the API
	// does not support): 400 whatever is stored, even when absent, because
	// the patch is parsed before anything is read.
	linBadPatch
)

var linKindNames = [...]string{"PUT", "PATCH", "DELETE", "GET", "PUT(bad)", "PATCH(bad)"}

func (k linKind) String() string { return linKindNames[k] }

// linInput is an operation's call.
type linInput struct {
	kind linKind
	key  string // the folded installation id: the partition
	tags string // linPut: the tags written, sorted and comma-joined
	tag  string // linPatch: the tag added
	mark string // linPut: the template marker; linPatch: the new one, or "" to keep it
}

// linOutput is what the client saw. unknown is an outcome the client cannot
// know (a transport error, a timeout, a 5xx): the write may or may not have
// taken effect, so its return time is recorded as infinity (linInfinity)
// and the model accepts it applied at any point after its call, which
// includes "after everything else", i.e. never observed.
type linOutput struct {
	unknown bool
	status  int
	tags    string // linGet 200: sorted, comma-joined
	mark    string // linGet 200: the template marker
}

// linInfinity is the return time of an operation whose outcome is unknown.
const linInfinity = math.MaxInt64

// linState is one installation: absent, or present with its tags (sorted,
// comma-joined; n of them) and the marker of its template body.
type linState struct {
	present bool
	tags    string
	n       int
	mark    string
}

// joinTags is the canonical form of a tag set in states and outputs.
func joinTags(tags []string) string {
	s := slices.Clone(tags)
	slices.Sort(s)
	return strings.Join(s, ",")
}

func addTag(tags, tag string) string {
	if tags == "" {
		return tag
	}
	return joinTags(append(strings.Split(tags, ","), tag))
}

// linModel is the specification with the hub's tag limit: a PATCH that
// would give the installation more than maxTags tags is refused (400) and
// changes nothing. These are the documented semantics of pushgate_nh
// (README, reference §3.1/§3.5): PUT 200, PATCH 200 or 404 when absent,
// DELETE 204 even when absent, GET 200 or 404; every write is visible to
// every request that starts after it returned.
func linModel(maxTags int) porcupine.Model {
	return porcupine.Model{
		Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
			by := map[string][]porcupine.Operation{}
			var keys []string
			for _, op := range h {
				k := op.Input.(linInput).key
				if _, ok := by[k]; !ok {
					keys = append(keys, k)
				}
				by[k] = append(by[k], op)
			}
			slices.Sort(keys)
			out := make([][]porcupine.Operation, 0, len(keys))
			for _, k := range keys {
				out = append(out, by[k])
			}
			return out
		},
		Init: func() any { return linState{} },
		Step: func(state, input, output any) (bool, any) {
			return linStep(maxTags, state.(linState), input.(linInput), output.(linOutput))
		},
		DescribeOperation: func(input, output any) string {
			return linDescribe(input.(linInput), output.(linOutput))
		},
		DescribeState: func(state any) string {
			s := state.(linState)
			if !s.present {
				return "absent"
			}
			return fmt.Sprintf("[%s] %s", s.tags, s.mark)
		},
	}
}

func linStep(maxTags int, s linState, in linInput, out linOutput) (bool, linState) {
	switch in.kind {
	case linGet:
		if out.unknown {
			return true, s
		}
		if !s.present {
			return out.status == 404, s
		}
		return out.status == 200 && out.tags == s.tags && out.mark == s.mark, s
	case linPut:
		next := linState{present: true, tags: in.tags, n: strings.Count(in.tags, ",") + 1, mark: in.mark}
		return out.unknown || out.status == 200, next
	case linPatch:
		next, want := s, 200
		switch {
		case !s.present:
			want = 404
		case s.n+1 > maxTags:
			want = 400
		default:
			next.tags, next.n = addTag(s.tags, in.tag), s.n+1
			if in.mark != "" {
				next.mark = in.mark
			}
		}
		return out.unknown || out.status == want, next
	case linDelete:
		return out.unknown || out.status == 204, linState{}
	case linBadPut, linBadPatch:
		return out.unknown || out.status == 400, s
	}
	return false, s
}

func linDescribe(in linInput, out linOutput) string {
	var b strings.Builder
	b.WriteString(in.kind.String())
	switch in.kind {
	case linPut:
		fmt.Fprintf(&b, " [%s] %s", in.tags, in.mark)
	case linPatch:
		fmt.Fprintf(&b, " +%s", in.tag)
		if in.mark != "" {
			fmt.Fprintf(&b, " body %s", in.mark)
		}
	}
	switch {
	case out.unknown && out.status != 0:
		fmt.Fprintf(&b, " → %d (outcome unknown)", out.status)
	case out.unknown:
		b.WriteString(" → ? (outcome unknown)")
	case in.kind == linGet && out.status == 200:
		fmt.Fprintf(&b, " → 200 [%s] %s", out.tags, out.mark)
	default:
		fmt.Fprintf(&b, " → %d", out.status)
	}
	return b.String()
}

// linOp builds a history entry for the model tests.
func linOp(client int, call, ret int64, in linInput, out linOutput) porcupine.Operation {
	return porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret}
}

func linPutOp(key string, n int) linInput {
	return linInput{kind: linPut, key: key, tags: joinTags([]string{fmt.Sprintf("p%d", n), fmt.Sprintf("q%d", n)}), mark: fmt.Sprintf("m%d", n)}
}

func linSeen(st linState) linOutput {
	if !st.present {
		return linOutput{status: 404}
	}
	return linOutput{status: 200, tags: st.tags, mark: st.mark}
}

// TestLinearizeModel runs the checker on small hand-made histories: correct
// ones must pass and each deliberately broken one (the bugs a store could
// have: a stale read, a lost update, a torn patch, a write that a refused
// request made anyway, a resurrected delete) must be found. It is what
// shows that the HTTP test below can fail.
func TestLinearizeModel(t *testing.T) {
	const maxTags = 4
	put1, put2 := linPutOp("a", 1), linPutOp("a", 2)
	s1 := linState{present: true, tags: put1.tags, n: 2, mark: "m1"}
	s2 := linState{present: true, tags: put2.tags, n: 2, mark: "m2"}
	patch3 := linInput{kind: linPatch, key: "a", tag: "a3"}
	s1p3 := linState{present: true, tags: addTag(s1.tags, "a3"), n: 3, mark: "m1"}
	patch4 := linInput{kind: linPatch, key: "a", tag: "a4", mark: "m4"}
	s1p34 := linState{present: true, tags: addTag(s1p3.tags, "a4"), n: 4, mark: "m4"}
	patch5 := linInput{kind: linPatch, key: "a", tag: "a5"}
	get := linInput{kind: linGet, key: "a"}
	del := linInput{kind: linDelete, key: "a"}
	ok := func(status int) linOutput { return linOutput{status: status} }
	unknown := linOutput{unknown: true}

	cases := []struct {
		name  string
		hist  []porcupine.Operation
		legal bool
	}{
		{"put then read", []porcupine.Operation{
			linOp(0, 0, 10, put1, ok(200)), linOp(1, 20, 30, get, linSeen(s1)),
		}, true},
		{"read absent before any write", []porcupine.Operation{
			linOp(1, 0, 5, get, ok(404)), linOp(0, 10, 20, put1, ok(200)),
		}, true},
		{"concurrent read may see either side", []porcupine.Operation{
			linOp(0, 0, 10, put1, ok(200)), linOp(0, 20, 40, put2, ok(200)),
			linOp(1, 25, 30, get, linSeen(s1)), linOp(2, 26, 35, get, linSeen(s2)),
		}, true},
		{"stale read after a newer put returned", []porcupine.Operation{
			linOp(0, 0, 10, put1, ok(200)), linOp(0, 20, 30, put2, ok(200)), linOp(1, 40, 50, get, linSeen(s1)),
		}, false},
		{"patches accumulate", []porcupine.Operation{
			linOp(0, 0, 10, put1, ok(200)), linOp(0, 20, 30, patch3, ok(200)), linOp(1, 21, 31, patch4, ok(200)),
			linOp(2, 40, 50, get, linSeen(s1p34)),
		}, true},
		{"lost update: a 200 patch missing from a later read", []porcupine.Operation{
			linOp(0, 0, 10, put1, ok(200)), linOp(0, 20, 30, patch3, ok(200)), linOp(1, 21, 31, patch4, ok(200)),
			linOp(2, 40, 50, get, linSeen(linState{present: true, tags: addTag(s1.tags, "a4"), n: 3, mark: "m4"})),
		}, false},
		{"torn patch: the tag without the body of the same patch", []porcupine.Operation{
			linOp(0, 0, 10, put1, ok(200)), linOp(0, 20, 30, patch4, ok(200)),
			linOp(1, 40, 50, get, linSeen(linState{present: true, tags: addTag(s1.tags, "a4"), n: 3, mark: "m1"})),
		}, false},
		{"patch on absent is 404", []porcupine.Operation{
			linOp(0, 0, 10, patch3, ok(404)), linOp(1, 20, 30, get, ok(404)),
		}, true},
		{"patch on absent answered 200", []porcupine.Operation{
			linOp(0, 0, 10, patch3, ok(200)),
		}, false},
		{"delete of absent is 204", []porcupine.Operation{
			linOp(0, 0, 10, del, ok(204)), linOp(0, 20, 30, del, ok(204)),
		}, true},
		{"deleted installation read back", []porcupine.Operation{
			linOp(0, 0, 10, put1, ok(200)), linOp(0, 20, 30, del, ok(204)), linOp(1, 40, 50, get, linSeen(s1)),
		}, false},
		{"tag limit refuses the patch and keeps the state", []porcupine.Operation{
			linOp(0, 0, 10, put1, ok(200)), linOp(0, 11, 12, patch3, ok(200)), linOp(0, 13, 14, patch4, ok(200)),
			linOp(0, 15, 16, patch5, ok(400)), linOp(1, 20, 30, get, linSeen(s1p34)),
		}, true},
		{"a refused patch that changed the state anyway", []porcupine.Operation{
			linOp(0, 0, 10, put1, ok(200)), linOp(0, 11, 12, patch3, ok(200)), linOp(0, 13, 14, patch4, ok(200)),
			linOp(0, 15, 16, patch5, ok(400)),
			linOp(1, 20, 30, get, linSeen(linState{present: true, tags: addTag(s1p34.tags, "a5"), n: 5, mark: "m4"})),
		}, false},
		{"bad input is 400 and changes nothing", []porcupine.Operation{
			linOp(0, 0, 10, put1, ok(200)), linOp(0, 20, 30, linInput{kind: linBadPatch, key: "a"}, ok(400)),
			linOp(0, 31, 32, linInput{kind: linBadPut, key: "a"}, ok(400)), linOp(1, 40, 50, get, linSeen(s1)),
		}, true},
		{"bad input answered 200", []porcupine.Operation{
			linOp(0, 0, 10, linInput{kind: linBadPut, key: "a"}, ok(200)),
		}, false},
		{"unknown write seen", []porcupine.Operation{
			linOp(0, 0, 10, put1, ok(200)), linOp(2, 15, linInfinity, put2, unknown),
			linOp(1, 40, 50, get, linSeen(s2)),
		}, true},
		{"unknown write never seen", []porcupine.Operation{
			linOp(0, 0, 10, put1, ok(200)), linOp(2, 15, linInfinity, put2, unknown),
			linOp(1, 40, 50, get, linSeen(s1)), linOp(1, 60, 70, get, linSeen(s1)),
		}, true},
		{"unknown write seen, then unseen", []porcupine.Operation{
			linOp(0, 0, 10, put1, ok(200)), linOp(2, 15, linInfinity, put2, unknown),
			linOp(1, 40, 50, get, linSeen(s2)), linOp(1, 60, 70, get, linSeen(s1)),
		}, false},
		{"read seen before the write was called", []porcupine.Operation{
			linOp(1, 0, 5, get, linSeen(s1)), linOp(0, 10, 20, put1, ok(200)),
		}, false},
		{"partitions are independent", []porcupine.Operation{
			linOp(0, 0, 10, put1, ok(200)), linOp(1, 20, 30, linInput{kind: linGet, key: "b"}, ok(404)),
			linOp(1, 40, 50, get, linSeen(s1)),
		}, true},
	}
	m := linModel(maxTags)
	for _, c := range cases {
		got := porcupine.CheckOperations(m, c.hist)
		if got != c.legal {
			t.Errorf("%s: linearizable = %v, want %v", c.name, got, c.legal)
		}
	}
}
