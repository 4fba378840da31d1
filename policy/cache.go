package policy

import (
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
)

// DefaultDecisionCacheSize is how many decisions a compiled policy keeps
// when Options.DecisionCacheSize is zero.
const DefaultDecisionCacheSize = 16384

// decisionCache remembers the decisions of one compiled policy, keyed by
// the parts of the input the policy reads. Devices register again and
// again with what they had (on every launch, after every token refresh),
// and a policy reads little of the input: the user, the requested tags,
// the stored owner. Those parts repeat even where the rest (versions,
// timestamps, the handle) does not, so the key is made of them alone.
//
// The cache belongs to one compiled policy and goes with it on a reload,
// so data and rules never change under an entry. It is used only for a
// policy whose decision depends on nothing but its input and data (see
// inputPaths).
type decisionCache struct {
	paths [][]*ast.Term // input paths the policy reads, without "input"
	max   int           // entries per generation

	mu       sync.Mutex
	cur, old map[[sha256.Size]byte]Decision
}

func newDecisionCache(paths [][]*ast.Term, size int) *decisionCache {
	half := max(size/2, 1)
	return &decisionCache{paths: paths, max: half, cur: make(map[[sha256.Size]byte]Decision, half)}
}

// key digests the values at the cache's paths. The digest is the key, not
// a shortcut to one: two inputs share an entry only if they agree on every
// path the policy reads, and a collision would need one in SHA-256.
func (c *decisionCache) key(input ast.Value) [sha256.Size]byte {
	var b strings.Builder
	for _, p := range c.paths {
		for _, t := range p {
			canonical(&b, t.Value)
			b.WriteByte('.')
		}
		b.WriteByte('=')
		if v, err := input.Find(p); err != nil {
			b.WriteString("undefined")
		} else {
			canonical(&b, v)
		}
		b.WriteByte('\n')
	}
	return sha256.Sum256([]byte(b.String()))
}

// get returns a copy of the cached decision, so callers may change it.
func (c *decisionCache) get(k [sha256.Size]byte) (Decision, bool) {
	c.mu.Lock()
	d, ok := c.cur[k]
	if !ok {
		if d, ok = c.old[k]; ok {
			c.putLocked(k, d) // still in use: keep it through the next turnover
		}
	}
	c.mu.Unlock()
	if !ok {
		return Decision{}, false
	}
	return d.clone(), true
}

func (c *decisionCache) put(k [sha256.Size]byte, d Decision) {
	d = d.clone()
	c.mu.Lock()
	c.putLocked(k, d)
	c.mu.Unlock()
}

// putLocked adds to the current generation; when that is full it becomes
// the old one and the old one is dropped, so at most two generations are
// held and an entry read in each generation stays.
func (c *decisionCache) putLocked(k [sha256.Size]byte, d Decision) {
	if len(c.cur) >= c.max {
		c.old, c.cur = c.cur, make(map[[sha256.Size]byte]Decision, c.max)
	}
	c.cur[k] = d
}

// String describes the cache for the reload log.
func (c *decisionCache) String() string {
	if c == nil {
		return "off (the policy is nondeterministic or prints, or the cache is disabled)"
	}
	keys := make([]string, len(c.paths))
	for i, p := range c.paths {
		keys[i] = ast.Ref(append([]*ast.Term{ast.InputRootDocument}, p...)).String()
	}
	return fmt.Sprintf("keyed by %s, %d entries", strings.Join(keys, ", "), 2*c.max)
}

func (d Decision) clone() Decision {
	d.Reasons = slices.Clone(d.Reasons)
	d.Keep = slices.Clone(d.Keep)
	d.Inject = slices.Clone(d.Inject)
	return d
}

// canonical writes v so that equal values write equal text: objects and
// sets in sorted order, whatever order they were built in.
func canonical(b *strings.Builder, v ast.Value) {
	switch x := v.(type) {
	case ast.Object:
		keys := x.Keys()
		slices.SortFunc(keys, func(p, q *ast.Term) int { return ast.Compare(p, q) })
		b.WriteByte('{')
		for _, k := range keys {
			canonical(b, k.Value)
			b.WriteByte(':')
			canonical(b, x.Get(k).Value)
			b.WriteByte(',')
		}
		b.WriteByte('}')
	case ast.Set:
		b.WriteString("set(")
		sorted := x.Sorted()
		for i := range sorted.Len() {
			canonical(b, sorted.Elem(i).Value)
			b.WriteByte(',')
		}
		b.WriteByte(')')
	case *ast.Array:
		b.WriteByte('[')
		for i := range x.Len() {
			canonical(b, x.Elem(i).Value)
			b.WriteByte(',')
		}
		b.WriteByte(']')
	default:
		// Scalars: strings quoted, numbers as written (json.Number keeps
		// the text, which is what a policy compares).
		b.WriteString(v.String())
	}
}

// inputPaths lists the input paths the compiled modules read: each
// reference to input cut at its first part that is not a constant string
// (input.user.claims[k] reads all of input.user.claims). A bare input, or
// input[k], yields the empty path: the whole document is the key.
//
// ok is false when a decision may differ between two evaluations of the
// same input and data, so none may be reused: a call to a builtin OPA marks
// nondeterministic (time.now_ns, rand.intn, uuid.rfc4122…), or to one that
// reads the clock (io.jwt.decode_verify without a time), and print, whose
// output an author debugging the policy expects on every request.
func inputPaths(modules map[string]*ast.Module, builtins map[string]*ast.Builtin) (paths [][]*ast.Term, ok bool) {
	ok = true
	seen := map[string]bool{}
	for _, m := range modules {
		ast.WalkRefs(m, func(r ast.Ref) bool {
			name := r.String()
			if b := builtins[name]; b != nil && (b.Nondeterministic || name == "io.jwt.decode_verify" || name == "print" || name == "internal.print") {
				ok = false
			}
			if !r[0].Equal(ast.InputRootDocument) {
				return false
			}
			n := 1
			for n < len(r) {
				if _, isString := r[n].Value.(ast.String); !isString {
					break
				}
				n++
			}
			p := r[1:n]
			if k := ast.Ref(p).String(); !seen[k] {
				seen[k] = true
				paths = append(paths, p)
			}
			return false
		})
	}
	if !ok {
		return nil, false
	}
	// A path under another is implied by it.
	slices.SortFunc(paths, func(a, b []*ast.Term) int { return ast.Ref(a).Compare(ast.Ref(b)) })
	kept := paths[:0]
	for _, p := range paths {
		if len(kept) > 0 && ast.Ref(p).HasPrefix(ast.Ref(kept[len(kept)-1])) {
			continue
		}
		kept = append(kept, p)
	}
	return kept, true
}
