package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/tag"
)

// Operations and resources named in Input.
const (
	OpCreate  = "create"
	OpReplace = "replace"
	OpPatch   = "patch"
	OpDelete  = "delete"
	OpRead    = "read"

	ResourceInstallation = "installation"
	ResourceRegistration = "registration"
)

// Input is the document a policy sees as input. Its JSON form is the
// contract with policy authors (see the package documentation).
type Input struct {
	User      User   `json:"user"`
	Operation string `json:"operation"`
	Resource  string `json:"resource"`
	// Request is the installation or registration as it would be stored
	// (for a patch, the result of applying it) in its Notification Hubs JSON
	// shape; nil for read and delete.
	Request any `json:"request"`
	// Patch lists a patch's operations; empty otherwise.
	Patch []PatchOp `json:"patch,omitempty"`
	// Stored is the record now stored, or nil.
	Stored any `json:"stored"`
	// RequestedTags is every tag the request would write, in its original
	// case, once each (compared case-insensitively).
	RequestedTags []string `json:"requested_tags"`
}

// User is the verified identity behind a request.
type User struct {
	Subject string `json:"sub"`
	// UserID is the identifier pushgate derived from the token (the claim
	// is configurable); policies usually set it as the installation's userId.
	UserID string         `json:"user_id"`
	Issuer string         `json:"iss"`
	Claims map[string]any `json:"claims"`
}

// PatchOp is a hubcore.PatchOp as a policy sees it.
type PatchOp struct {
	Op   string `json:"op"`
	Path string `json:"path"`
	// Target names what the path addresses: push_channel, user_id,
	// expiration_time, tags, tag, push_variables, push_variable, template,
	// template_body, template_headers, template_expiry or template_tags.
	Target string `json:"target"`
	// TouchesTags is set for operations that may change a tag set.
	TouchesTags bool   `json:"touches_tags"`
	Template    string `json:"template,omitempty"`
	Tag         string `json:"tag,omitempty"`
	Variable    string `json:"variable,omitempty"`
	// Value is the operation's value as sent. The SDKs may send JSON text
	// inside a string; Request holds the interpreted result.
	Value any `json:"value,omitempty"`
}

var targetNames = map[hubcore.PatchTarget]string{
	hubcore.TargetPushChannel:     "push_channel",
	hubcore.TargetUserID:          "user_id",
	hubcore.TargetExpirationTime:  "expiration_time",
	hubcore.TargetTags:            "tags",
	hubcore.TargetTag:             "tag",
	hubcore.TargetPushVariables:   "push_variables",
	hubcore.TargetPushVariable:    "push_variable",
	hubcore.TargetTemplate:        "template",
	hubcore.TargetTemplateBody:    "template_body",
	hubcore.TargetTemplateHeaders: "template_headers",
	hubcore.TargetTemplateExpiry:  "template_expiry",
	hubcore.TargetTemplateTags:    "template_tags",
}

// TargetName is the name under which a patch target appears in the input.
func TargetName(t hubcore.PatchTarget) string {
	if n, ok := targetNames[t]; ok {
		return n
	}
	return fmt.Sprintf("unknown_%d", int(t))
}

// InputFor builds the input for an operation on an installation. req is the
// installation as it would be stored (for a patch, after applying ops; nil
// for read and delete), stored the one stored now (nil if none).
//
// RequestedTags holds the installation's tags, its templates' tags, and the
// names of templates that are valid tags: hubcore adds such a name to its
// template registration's tags, so a template named "userId:bob" writes
// that tag as surely as the tags array does.
func InputFor(op string, req, stored *hubcore.Installation, ops []hubcore.PatchOp, user User) (Input, error) {
	in := Input{User: user.normalized(), Operation: op, Resource: ResourceInstallation, RequestedTags: []string{}}
	var err error
	if req != nil {
		if in.Request, err = generic(req); err != nil {
			return Input{}, fmt.Errorf("policy: encoding the request: %w", err)
		}
		in.RequestedTags = installationTags(req)
	}
	if stored != nil {
		if in.Stored, err = generic(stored); err != nil {
			return Input{}, fmt.Errorf("policy: encoding the stored installation: %w", err)
		}
	}
	if len(ops) > 0 {
		in.Patch = make([]PatchOp, len(ops))
		for i, o := range ops {
			p := PatchOp{
				Op: o.Op, Path: o.Path, Target: TargetName(o.Target), TouchesTags: o.TouchesTags(),
				Template: o.Template, Tag: o.Tag, Variable: o.Variable,
			}
			if len(o.Value) > 0 {
				if p.Value, err = decodeJSON(o.Value); err != nil {
					return Input{}, fmt.Errorf("policy: patch[%d].value: %w", i, err)
				}
			}
			in.Patch[i] = p
		}
	}
	return in, nil
}

// RegistrationInputFor builds the input for an operation on a registration
// written through the registrations API.
func RegistrationInputFor(op string, req, stored *hubcore.Registration, user User) (Input, error) {
	in := Input{User: user.normalized(), Operation: op, Resource: ResourceRegistration, RequestedTags: []string{}}
	var err error
	if req != nil {
		if in.Request, err = generic(req); err != nil {
			return Input{}, fmt.Errorf("policy: encoding the request: %w", err)
		}
		in.RequestedTags = uniqueTags(nil, req.Tags)
	}
	if stored != nil {
		if in.Stored, err = generic(stored); err != nil {
			return Input{}, fmt.Errorf("policy: encoding the stored registration: %w", err)
		}
	}
	return in, nil
}

// normalized gives claims an empty object rather than null, so a policy's
// input.user.claims.x is simply undefined when absent.
func (u User) normalized() User {
	if u.Claims == nil {
		u.Claims = map[string]any{}
	}
	return u
}

func installationTags(in *hubcore.Installation) []string {
	out := uniqueTags(nil, in.Tags)
	names := make([]string, 0, len(in.Templates))
	for name := range in.Templates {
		names = append(names, name)
	}
	sort.Strings(names) // map order must not leak into the input
	for _, name := range names {
		if t := in.Templates[name]; t != nil {
			out = uniqueTags(out, t.Tags)
		}
		if tag.Validate(name) == nil && !tag.IsSystem(name) {
			out = uniqueTags(out, []string{name})
		}
	}
	return out
}

// uniqueTags appends the tags of add not yet in out, compared folded.
func uniqueTags(out, add []string) []string {
	if out == nil {
		out = make([]string, 0, len(add))
	}
	for _, t := range add {
		dup := false
		for _, have := range out {
			if tag.Equal(have, t) {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, t)
		}
	}
	return out
}

// generic turns a hubcore value into plain maps and slices through its
// MarshalJSON (the Notification Hubs shape), once when the input is built,
// so evaluation converts it to Rego values without reflection.
func generic(v any) (any, error) {
	if in, ok := v.(*hubcore.Installation); ok {
		return in.Generic(), nil // the same value, without the round trip
	}
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return decodeJSON(data)
}

func decodeJSON(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // exact numbers, as OPA itself reads JSON
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// Value converts the input to a Rego value, equal to what OPA would build
// from its JSON encoding, without the JSON round trip OPA makes for a Go
// struct. Request, Stored, claims and patch values are converted
// directly when they are plain maps, slices and scalars (as InputFor makes
// them) and through JSON otherwise.
func (in *Input) Value() (ast.Value, error) {
	claims, err := toValue(in.User.Claims)
	if err != nil {
		return nil, fmt.Errorf("policy: user.claims: %w", err)
	}
	user := ast.NewObject(
		item("sub", ast.String(in.User.Subject)),
		item("user_id", ast.String(in.User.UserID)),
		item("iss", ast.String(in.User.Issuer)),
		item("claims", claims),
	)
	req, err := toValue(in.Request)
	if err != nil {
		return nil, fmt.Errorf("policy: request: %w", err)
	}
	stored, err := toValue(in.Stored)
	if err != nil {
		return nil, fmt.Errorf("policy: stored: %w", err)
	}
	var tags ast.Value = ast.NullValue
	if in.RequestedTags != nil {
		tags = stringArray(in.RequestedTags)
	}
	obj := ast.NewObject(
		item("user", user),
		item("operation", ast.String(in.Operation)),
		item("resource", ast.String(in.Resource)),
		item("request", req),
		item("stored", stored),
		item("requested_tags", tags),
	)
	if len(in.Patch) > 0 {
		ops := make([]*ast.Term, len(in.Patch))
		for i, p := range in.Patch {
			o := ast.NewObject(
				item("op", ast.String(p.Op)),
				item("path", ast.String(p.Path)),
				item("target", ast.String(p.Target)),
				item("touches_tags", ast.Boolean(p.TouchesTags)),
			)
			for _, kv := range [...][2]string{{"template", p.Template}, {"tag", p.Tag}, {"variable", p.Variable}} {
				if kv[1] != "" {
					o.Insert(ast.StringTerm(kv[0]), ast.StringTerm(kv[1]))
				}
			}
			if p.Value != nil {
				v, err := toValue(p.Value)
				if err != nil {
					return nil, fmt.Errorf("policy: patch[%d].value: %w", i, err)
				}
				o.Insert(ast.StringTerm("value"), ast.NewTerm(v))
			}
			ops[i] = ast.NewTerm(o)
		}
		obj.Insert(ast.StringTerm("patch"), ast.ArrayTerm(ops...))
	}
	return obj, nil
}

func item(k string, v ast.Value) [2]*ast.Term { return ast.Item(ast.StringTerm(k), ast.NewTerm(v)) }

func stringArray(ss []string) ast.Value {
	terms := make([]*ast.Term, len(ss))
	for i, s := range ss {
		terms[i] = ast.StringTerm(s)
	}
	return ast.NewArray(terms...)
}

// toValue converts a value as encoding/json would encode it, so it means
// the same to a policy however the caller built it. ast.InterfaceToValue
// converts plain maps, slices and scalars directly, but its JSON fallback
// dereferences pointers first and so skips a pointer-receiver MarshalJSON
// such as *hubcore.Installation's; marshalers are encoded here instead.
func toValue(v any) (ast.Value, error) {
	switch x := v.(type) {
	case nil:
		return ast.NullValue, nil
	case map[string]any:
		if x == nil {
			return ast.NullValue, nil
		}
	case json.RawMessage:
		if x == nil {
			return ast.NullValue, nil
		}
		g, err := decodeJSON(x)
		if err != nil {
			return nil, err
		}
		return ast.InterfaceToValue(g)
	case json.Marshaler:
		g, err := generic(x)
		if err != nil {
			return nil, err
		}
		return ast.InterfaceToValue(g)
	}
	return ast.InterfaceToValue(v)
}
