package hubcore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/pushgate/pushgate/hubcore/tag"
)

// MaxPatchOps bounds the operations of one PATCH.
const MaxPatchOps = 100

// PatchOp is one JSON-Patch operation on an installation, parsed and checked
// against the paths Notification Hubs supports. Target and the fields after
// it say what the path names, so that a policy can reason about an operation
// without re-parsing the path.
type PatchOp struct {
	Op    string          // "add", "remove" or "replace"
	Path  string          // as sent
	Value json.RawMessage // as sent (absent for remove)

	Target   PatchTarget
	Template string // template name for TargetTemplate*
	Tag      string // tag for TargetTag
	Variable string // variable name for TargetPushVariable
}

// PatchTarget is what a patch path names.
type PatchTarget int

// The patchable parts of an installation.
const (
	TargetPushChannel PatchTarget = iota + 1
	TargetUserID
	TargetExpirationTime
	TargetTags
	TargetTag
	TargetPushVariables
	TargetPushVariable
	TargetTemplate
	TargetTemplateBody
	TargetTemplateHeaders
	TargetTemplateExpiry
	TargetTemplateTags
)

// TouchesTags reports whether the operation may change a tag set (the
// installation's or a template's): the operations a tag policy must see.
func (op PatchOp) TouchesTags() bool {
	switch op.Target {
	case TargetTags, TargetTag, TargetTemplate, TargetTemplateTags:
		return true
	}
	return false
}

// ParsePatch reads a JSON-Patch document and checks each operation's op and
// path. It accepts values as real JSON or as JSON text inside a string, as
// the SDKs send them.
func ParsePatch(data []byte) ([]PatchOp, error) {
	var raw []struct {
		Op    *string         `json:"op"`
		Path  *string         `json:"path"`
		Value json.RawMessage `json:"value"`
	}
	if err := decodeStrict(data, &raw); err != nil {
		return nil, retarget(err, "patch")
	}
	if len(raw) == 0 {
		return nil, invalid("patch", "a patch is a non-empty JSON array of operations")
	}
	if len(raw) > MaxPatchOps {
		return nil, limit("patch", "%d operations; at most %d are allowed", len(raw), MaxPatchOps)
	}
	ops := make([]PatchOp, len(raw))
	for i, r := range raw {
		field := fmt.Sprintf("patch[%d]", i)
		if r.Op == nil || r.Path == nil {
			return nil, invalid(field, "an operation needs op and path")
		}
		op := PatchOp{Op: strings.ToLower(*r.Op), Path: *r.Path, Value: r.Value}
		switch op.Op {
		case "add", "replace":
			if isNull(r.Value) {
				return nil, invalid(field+".value", "%s needs a value", op.Op)
			}
		case "remove":
		case "test", "move", "copy":
			return nil, unsupported(field+".op", "op %q is not supported (add, remove and replace are)", *r.Op)
		default:
			return nil, invalid(field+".op", "unknown op %q", *r.Op)
		}
		if err := op.parsePath(field); err != nil {
			return nil, err
		}
		ops[i] = op
	}
	return ops, nil
}

func (op *PatchOp) parsePath(field string) error {
	bad := func(why string) error {
		return unsupported(field+".path", "path %q is not supported: %s", op.Path, why)
	}
	if !strings.HasPrefix(op.Path, "/") {
		return invalid(field+".path", "path %q must start with '/'", op.Path)
	}
	segs := strings.Split(op.Path[1:], "/")
	for i, s := range segs {
		s, err := unescapePointer(s)
		if err != nil {
			return invalid(field+".path", "path %q: %v", op.Path, err)
		}
		segs[i] = s
	}
	switch strings.ToLower(segs[0]) {
	case "pushchannel":
		op.Target = TargetPushChannel
	case "userid", "user":
		op.Target = TargetUserID
	case "expirationtime":
		op.Target = TargetExpirationTime
	case "tags":
		op.Target = TargetTags
		if len(segs) == 2 {
			if op.Op != "remove" {
				return bad("a single tag can only be removed; add tags with {\"op\":\"add\",\"path\":\"/tags\",\"value\":…}")
			}
			op.Target, op.Tag = TargetTag, segs[1]
		}
	case "pushvariables":
		op.Target = TargetPushVariables
		if len(segs) == 2 {
			op.Target, op.Variable = TargetPushVariable, segs[1]
		}
	case "templates":
		if len(segs) < 2 || segs[1] == "" {
			return bad("name the template: /templates/{name}")
		}
		op.Template = segs[1]
		op.Target = TargetTemplate
		if len(segs) == 3 {
			switch strings.ToLower(segs[2]) {
			case "body":
				op.Target = TargetTemplateBody
			case "headers":
				op.Target = TargetTemplateHeaders
			case "expiry":
				op.Target = TargetTemplateExpiry
			case "tags":
				op.Target = TargetTemplateTags
			default:
				return bad("a template has body, headers, expiry and tags")
			}
		}
		if len(segs) > 3 {
			return bad("too deep")
		}
	case "platform", "installationid":
		return bad("it identifies the installation; PUT the whole installation to change it")
	case "pushchannelexpired", "lastactiveon", "lastupdate":
		return bad("it is read-only")
	default:
		return bad("patchable paths are /pushChannel, /userId, /expirationTime, /tags, /tags/{tag}, /pushVariables[/{name}], /templates/{name}[/body|headers|expiry|tags]")
	}
	if len(segs) > 1 && op.Target != TargetTag && op.Target != TargetPushVariable && op.Template == "" {
		return bad("too deep")
	}
	return nil
}

// unescapePointer decodes a JSON Pointer segment (RFC 6901: ~1 is '/', ~0 is
// '~'; any other '~' is an error).
func unescapePointer(s string) (string, error) {
	if !strings.Contains(s, "~") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '~' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 >= len(s) || (s[i+1] != '0' && s[i+1] != '1') {
			return "", fmt.Errorf("'~' must be followed by 0 or 1")
		}
		if s[i+1] == '0' {
			b.WriteByte('~')
		} else {
			b.WriteByte('/')
		}
		i++
	}
	return b.String(), nil
}

// ApplyPatch applies the operations to a copy of in and validates the
// result: the patch applies whole or not at all, and in is never modified.
// A change of pushChannel clears pushChannelExpired.
func ApplyPatch(in *Installation, ops []PatchOp, lim Limits) (*Installation, error) {
	out := in.Clone()
	for i, op := range ops {
		if err := out.apply(op); err != nil {
			return nil, retarget(err, fmt.Sprintf("patch[%d]", i))
		}
	}
	if err := out.Validate(lim); err != nil {
		return nil, err
	}
	return out, nil
}

func (in *Installation) apply(op PatchOp) error {
	remove := op.Op == "remove"
	replace := op.Op == "replace"
	switch op.Target {
	case TargetPushChannel:
		if remove {
			return invalid("path", "pushChannel is required and cannot be removed")
		}
		c, err := parsePushChannel(unwrapJSONString(op.Value, '{'))
		if err != nil {
			return retarget(err, "value")
		}
		in.PushChannel, in.PushChannelExpired = c, false
	case TargetUserID:
		if remove {
			in.UserID = ""
			return nil
		}
		s, err := stringValue(op.Value)
		if err != nil {
			return err
		}
		in.UserID = s
	case TargetExpirationTime:
		if remove {
			in.ExpirationTime = time.Time{}
			return nil
		}
		s, err := stringValue(op.Value)
		if err != nil {
			return err
		}
		t, err := ParseTime(s)
		if err != nil {
			return invalid("value", "%v", err)
		}
		in.ExpirationTime = t
	case TargetTags:
		if remove {
			in.Tags = nil
			return nil
		}
		tags, err := tagsValue(op.Value)
		if err != nil {
			return err
		}
		if replace {
			in.Tags = nil
		}
		in.Tags = unionTags(in.Tags, tags)
	case TargetTag:
		in.Tags = removeTag(in.Tags, op.Tag)
	case TargetPushVariables:
		if remove {
			in.PushVariables = nil
			return nil
		}
		var m map[string]*string
		if err := decodeStrict(unwrapJSONString(op.Value, '{'), &m); err != nil {
			return retarget(err, "value")
		}
		vars, _ := nonNullMap("value", m)
		in.PushVariables = vars
	case TargetPushVariable:
		if remove {
			delete(in.PushVariables, op.Variable)
			return nil
		}
		s, err := stringValue(op.Value)
		if err != nil {
			return err
		}
		if in.PushVariables == nil {
			in.PushVariables = map[string]string{}
		}
		in.PushVariables[op.Variable] = s
	case TargetTemplate:
		if remove {
			delete(in.Templates, op.Template)
			return nil
		}
		t, err := parseTemplateJSON("value", unwrapJSONString(op.Value, '{'))
		if err != nil {
			return err
		}
		if in.Templates == nil {
			in.Templates = map[string]*Template{}
		}
		in.Templates[op.Template] = t
	default:
		return in.applyTemplatePart(op)
	}
	return nil
}

func (in *Installation) applyTemplatePart(op PatchOp) error {
	t := in.Templates[op.Template]
	if t == nil {
		if op.Op == "remove" {
			return &Error{Code: CodeNotFound, Field: "path", Reason: fmt.Sprintf("no template named %q", op.Template)}
		}
		if op.Target != TargetTemplateBody {
			return invalid("path", "template %q does not exist; add it whole with /templates/{name} or its body first", op.Template)
		}
		t = &Template{}
		if in.Templates == nil {
			in.Templates = map[string]*Template{}
		}
		in.Templates[op.Template] = t
	}
	// The compiled form belongs to the old text; Validate recompiles.
	t.compiled = nil
	remove := op.Op == "remove"
	switch op.Target {
	case TargetTemplateBody:
		if remove {
			return invalid("path", "a template body is required and cannot be removed; remove the template")
		}
		s, err := stringValue(op.Value)
		if err != nil {
			return err
		}
		t.Body = s
	case TargetTemplateExpiry:
		if remove {
			t.Expiry = ""
			return nil
		}
		s, err := stringValue(op.Value)
		if err != nil {
			return err
		}
		t.Expiry = s
	case TargetTemplateHeaders:
		if remove {
			t.Headers = nil
			return nil
		}
		var m map[string]*string
		if err := decodeStrict(unwrapJSONString(op.Value, '{'), &m); err != nil {
			return retarget(err, "value")
		}
		t.Headers, _ = nonNullMap("value", m)
	case TargetTemplateTags:
		if remove {
			t.Tags = nil
			return nil
		}
		tags, err := tagsValue(op.Value)
		if err != nil {
			return err
		}
		if op.Op == "replace" {
			t.Tags = nil
		}
		t.Tags = unionTags(t.Tags, tags)
	}
	return nil
}

// unwrapJSONString returns the JSON text inside a JSON string when that text
// starts with open ('{' or '['): the SDKs send structured values that way.
func unwrapJSONString(v json.RawMessage, open byte) json.RawMessage {
	v = bytes.TrimSpace(v)
	if len(v) == 0 || v[0] != '"' {
		return v
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		return v
	}
	if t := strings.TrimSpace(s); t != "" && t[0] == open {
		return json.RawMessage(t)
	}
	return v
}

func stringValue(v json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", invalid("value", "expected a string")
	}
	return s, nil
}

// tagsValue reads a tag list: an array, JSON array text in a string, or one
// tag as a string ('[' is not a tag character, so the forms cannot collide).
func tagsValue(v json.RawMessage) ([]string, error) {
	v = unwrapJSONString(v, '[')
	if len(v) > 0 && v[0] == '"' {
		s, err := stringValue(v)
		return []string{s}, err
	}
	var arr []*string
	if err := decodeStrict(v, &arr); err != nil {
		return nil, retarget(err, "value")
	}
	return nonNullStrings("value", arr)
}

func unionTags(have, add []string) []string {
	for _, t := range add {
		if !containsTag(have, t) {
			have = append(have, t)
		}
	}
	return have
}

func containsTag(tags []string, t string) bool {
	for _, x := range tags {
		if tag.Equal(x, t) {
			return true
		}
	}
	return false
}

func removeTag(tags []string, t string) []string {
	out := tags[:0:0]
	for _, x := range tags {
		if !tag.Equal(x, t) {
			out = append(out, x)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
