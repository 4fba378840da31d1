package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/tag"
)

// Reasons given when the policy itself did not give one.
const (
	ReasonUndefined = "policy decision is undefined"
	ReasonError     = "policy evaluation failed"
)

// Decision is a policy's answer for one request.
type Decision struct {
	// Allow is false unless the policy says true.
	Allow bool `json:"allow"`
	// Reasons explain a denial (and may annotate an allow).
	Reasons []string `json:"reasons"`
	// Keep lists the requested tags the user may hold; the others are
	// dropped. Matching is case-insensitive, like tags.
	Keep []string `json:"keep"`
	// Inject lists tags the user must have; they are always added.
	Inject []string `json:"inject"`
	// UserID is the installation's userId; "" leaves it unset.
	UserID string `json:"user_id"`
	// Revision is the Engine revision of the policy that decided; it is not
	// part of the policy's document.
	Revision uint64 `json:"-"`
	// Cached is set when the decision was not evaluated but reused: the
	// same policy decided an input equal on every path it reads.
	Cached bool `json:"-"`
}

func deny(reason string, rev uint64) Decision {
	return Decision{Reasons: []string{reason}, Keep: []string{}, Inject: []string{}, Revision: rev}
}

// ErrTimeout is wrapped by Decide's error when evaluation ran out of time
// (Options.EvalTimeout or the caller's deadline): the request was denied
// because the policy was slow, not because it said no, so callers can
// answer "try again" instead of "forbidden".
var ErrTimeout = errors.New("policy: evaluation timed out")

// Decide evaluates the policy for one request. It fails closed: an
// undefined decision denies without an error; an evaluation error, a
// timeout (Options.EvalTimeout or ctx) or a malformed decision denies and
// returns the error.
func (e *Engine) Decide(ctx context.Context, in Input) (Decision, error) {
	c := e.cur.Load()
	v, err := in.Value()
	if err != nil {
		return deny(ReasonError, c.revision), err
	}
	if c.cache == nil {
		return e.eval(ctx, c, rego.EvalParsedInput(v))
	}
	k := c.cache.key(v)
	if d, ok := c.cache.get(k); ok {
		d.Cached = true
		return d, nil
	}
	d, err := e.eval(ctx, c, rego.EvalParsedInput(v))
	if err == nil {
		// Failures (a timeout above all) are not the policy's answer.
		c.cache.put(k, d)
	}
	return d, err
}

// decideRaw evaluates with OPA converting the input itself; the benchmarks
// compare it with Decide's pre-built value.
func (e *Engine) decideRaw(ctx context.Context, in Input) (Decision, error) {
	return e.eval(ctx, e.cur.Load(), rego.EvalInput(in))
}

func (e *Engine) eval(ctx context.Context, c *compiled, input rego.EvalOption) (Decision, error) {
	// OPA checks for cancellation only now and then, so a short policy
	// would run to completion on a context that is already done.
	if err := ctx.Err(); err != nil {
		return deny(ReasonError, c.revision), fmt.Errorf("policy: not evaluated: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, e.opts.EvalTimeout)
	defer cancel()
	rs, err := c.pq.Eval(ctx, input)
	if err != nil {
		if cerr := ctx.Err(); errors.Is(cerr, context.DeadlineExceeded) {
			// Slow is not wrong: the caller may answer "try again".
			return deny(ReasonError, c.revision), fmt.Errorf("%w (%s, revision %d): %w", ErrTimeout, e.opts.EvalTimeout, c.revision, err)
		}
		return deny(ReasonError, c.revision), fmt.Errorf("policy: evaluating %s (revision %d): %w", e.opts.Query, c.revision, err)
	}
	if len(rs) == 0 {
		return deny(ReasonUndefined, c.revision), nil
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return deny(ReasonError, c.revision), fmt.Errorf("policy: %s gave %d results; want one", e.opts.Query, len(rs))
	}
	d, err := parseDecision(rs[0].Expressions[0].Value)
	if err != nil {
		return deny(ReasonError, c.revision), fmt.Errorf("policy: %s (revision %d): %w", e.opts.Query, c.revision, err)
	}
	d.Revision = c.revision
	return d, nil
}

// parseDecision reads the decision document strictly: a wrong type or an
// unknown key is an error rather than a silently ignored field, because
// ignoring "injct" would drop the userId tag the author meant to add.
func parseDecision(v any) (Decision, error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return Decision{}, fmt.Errorf("the decision is %s; want an object with allow, reasons, keep, inject and user_id", describe(v))
	}
	d := Decision{Reasons: []string{}, Keep: []string{}, Inject: []string{}}
	var err error
	for k, x := range obj {
		switch k {
		case "allow":
			b, ok := x.(bool)
			if !ok {
				return Decision{}, fmt.Errorf("decision.allow is %s; want a boolean", describe(x))
			}
			d.Allow = b
		case "reasons":
			d.Reasons, err = stringList(k, x)
		case "keep":
			d.Keep, err = stringList(k, x)
		case "inject":
			d.Inject, err = stringList(k, x)
		case "user_id":
			s, ok := x.(string)
			if !ok {
				return Decision{}, fmt.Errorf("decision.user_id is %s; want a string", describe(x))
			}
			d.UserID = s
		default:
			return Decision{}, fmt.Errorf("decision has unknown key %q (allowed: allow, reasons, keep, inject, user_id)", k)
		}
		if err != nil {
			return Decision{}, err
		}
	}
	// What the policy hands over is written into installations; a value the
	// hub would reject is a policy bug, reported as such rather than as the
	// device's invalid request.
	for _, t := range d.Inject {
		if err := tag.Validate(t); err != nil {
			return Decision{}, fmt.Errorf("decision.inject: %w", err)
		}
		if tag.IsSystem(t) {
			return Decision{}, fmt.Errorf("decision.inject: %q is a system tag; the hub derives those", t)
		}
	}
	if d.UserID != "" {
		if err := hubcore.ValidateUserID(d.UserID); err != nil {
			return Decision{}, fmt.Errorf("decision.user_id: %w", err)
		}
	}
	return d, nil
}

// stringList reads an array (or a set, which OPA returns as a sorted array)
// of strings.
func stringList(key string, x any) ([]string, error) {
	arr, ok := x.([]any)
	if !ok {
		return nil, fmt.Errorf("decision.%s is %s; want an array of strings", key, describe(x))
	}
	out := make([]string, len(arr))
	for i, e := range arr {
		s, ok := e.(string)
		if !ok {
			return nil, fmt.Errorf("decision.%s[%d] is %s; want a string", key, i, describe(e))
		}
		out[i] = s
	}
	return out, nil
}

func describe(x any) string {
	switch x := x.(type) {
	case nil:
		return "null"
	case bool:
		return fmt.Sprintf("the boolean %v", x)
	case string:
		return fmt.Sprintf("the string %q", x)
	case json.Number:
		return "the number " + x.String()
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	default:
		return fmt.Sprintf("a %T", x)
	}
}

// FilterTags returns the tags the decision lets through (those in Keep,
// compared case-insensitively) followed by the Inject tags not already
// present. It does not look at Allow.
func (d Decision) FilterTags(tags []string) []string {
	keep := d.keepSet()
	out := make([]string, 0, len(tags)+len(d.Inject))
	for _, t := range tags {
		if _, ok := keep[tag.Fold(t)]; ok {
			out = uniqueTags(out, []string{t})
		}
	}
	return uniqueTags(out, d.Inject)
}

func (d Decision) keepSet() map[string]struct{} {
	keep := make(map[string]struct{}, len(d.Keep)+len(d.Inject))
	for _, t := range d.Keep {
		keep[tag.Fold(t)] = struct{}{}
	}
	for _, t := range d.Inject {
		keep[tag.Fold(t)] = struct{}{}
	}
	return keep
}

// ApplyInstallation rewrites an allowed installation as the decision says:
// its tags are filtered and the injected tags added; each template's tags
// are filtered; a template whose name is a tag the decision does not keep
// is removed, since the name would be written as a tag; and userId is set
// to UserID, also when that is "" — the device never chooses its userId,
// because the userId becomes the $UserId:{…} tag sends are aimed at. It
// returns the names of removed templates, sorted.
func (d Decision) ApplyInstallation(in *hubcore.Installation) (removedTemplates []string) {
	keep := d.keepSet()
	in.Tags = d.FilterTags(in.Tags)
	for name, t := range in.Templates {
		if tag.Validate(name) == nil && !tag.IsSystem(name) {
			if _, ok := keep[tag.Fold(name)]; !ok {
				delete(in.Templates, name)
				removedTemplates = append(removedTemplates, name)
				continue
			}
		}
		if t != nil && len(t.Tags) > 0 {
			kept := t.Tags[:0:0]
			for _, tg := range t.Tags {
				if _, ok := keep[tag.Fold(tg)]; ok {
					kept = append(kept, tg)
				}
			}
			t.Tags = kept
		}
	}
	in.UserID = d.UserID
	sort.Strings(removedTemplates)
	return removedTemplates
}

// ApplyRegistration filters an allowed registration's tags and adds the
// injected ones.
func (d Decision) ApplyRegistration(r *hubcore.Registration) { r.Tags = d.FilterTags(r.Tags) }

// String summarizes the decision for logs.
func (d Decision) String() string {
	verdict := "deny"
	if d.Allow {
		verdict = "allow"
	}
	return fmt.Sprintf("%s (revision %d) keep=[%s] inject=[%s] user_id=%q reasons=[%s]", verdict, d.Revision,
		strings.Join(d.Keep, " "), strings.Join(d.Inject, " "), d.UserID, strings.Join(d.Reasons, "; "))
}
