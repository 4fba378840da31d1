package hubcore

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func patched(t *testing.T, in *Installation, patch string) (*Installation, error) {
	t.Helper()
	ops, err := ParsePatch([]byte(patch))
	if err != nil {
		return nil, err
	}
	return ApplyPatch(in, ops, Limits{})
}

func TestPatchSemantics(t *testing.T) {
	const tpl = `{"body":"{\"aps\":{\"alert\":\"$(m)\"}}","tags":["x"]}`
	cases := []struct {
		name  string
		patch string
		check func(*Installation) string
	}{
		{"add one tag", `[{"op":"add","path":"/tags","value":"sports"}]`, tagsAre("lang_en", "team_blue", "sports")},
		{"add tag array", `[{"op":"add","path":"/tags","value":["a","b","LANG_EN"]}]`, tagsAre("lang_en", "team_blue", "a", "b")},
		{"add tag array as JSON text", `[{"op":"add","path":"/tags","value":"[\"a\",\"b\"]"}]`, tagsAre("lang_en", "team_blue", "a", "b")},
		{"replace tags", `[{"op":"replace","path":"/tags","value":["z"]}]`, tagsAre("z")},
		{"remove one tag, case-insensitive", `[{"op":"remove","path":"/tags/TEAM_BLUE"}]`, tagsAre("lang_en")},
		{"remove absent tag is a no-op", `[{"op":"remove","path":"/tags/nope"}]`, tagsAre("lang_en", "team_blue")},
		{"remove last tags", `[{"op":"remove","path":"/tags/lang_en"},{"op":"remove","path":"/tags/team_blue"}]`, func(i *Installation) string {
			if i.Tags != nil {
				return fmt.Sprint("tags ", i.Tags)
			}
			return ""
		}},
		{"remove all tags", `[{"op":"remove","path":"/tags"}]`, tagsAre()},
		{"set user", `[{"op":"add","path":"/userId","value":"u2"}]`, func(i *Installation) string { return want(i.UserID, "u2") }},
		{"legacy /user path", `[{"op":"replace","path":"/user","value":"u3"}]`, func(i *Installation) string { return want(i.UserID, "u3") }},
		{"remove user", `[{"op":"remove","path":"/userId"}]`, func(i *Installation) string { return want(i.UserID, "") }},
		{"new channel clears expired", `[{"op":"add","path":"/pushChannel","value":"` + strings.ToLower(apnsToken) + `"}]`, func(i *Installation) string {
			if i.PushChannelExpired {
				return "pushChannelExpired still set"
			}
			return want(i.PushChannel.Handle, strings.ToLower(apnsToken))
		}},
		{"add template as object", `[{"op":"add","path":"/templates/alert","value":` + tpl + `}]`, func(i *Installation) string {
			return want(i.Templates["alert"].Body, `{"aps":{"alert":"$(m)"}}`)
		}},
		{"add template as JSON text", `[{"op":"add","path":"/templates/alert","value":` + mustJSON(tpl) + `}]`, func(i *Installation) string {
			if i.Templates["alert"].Compiled() == nil {
				return "not compiled"
			}
			return want(fmt.Sprint(i.Templates["alert"].Tags), "[x]")
		}},
		{"template with slash in name", `[{"op":"add","path":"/templates/a~1b","value":` + tpl + `}]`, func(i *Installation) string {
			if i.Templates["a/b"] == nil {
				return "template a/b missing"
			}
			return ""
		}},
		{"template body then tags", `[{"op":"add","path":"/templates/t/body","value":"{}"},{"op":"add","path":"/templates/t/tags","value":"q"}]`, func(i *Installation) string {
			return want(fmt.Sprint(i.Templates["t"].Tags), "[q]")
		}},
		{"template headers as JSON text", `[{"op":"add","path":"/templates/t","value":{"body":"{}"}},{"op":"add","path":"/templates/t/headers","value":"{\"apns-priority\":\"5\"}"}]`, func(i *Installation) string {
			return want(i.Templates["t"].Headers["apns-priority"], "5")
		}},
		{"expiration", `[{"op":"replace","path":"/expirationTime","value":"2030-01-01T00:00:00Z"}]`, func(i *Installation) string {
			return want(FormatTime(i.ExpirationTime), "2030-01-01T00:00:00Z")
		}},
		{"push variable", `[{"op":"add","path":"/pushVariables/city","value":"Oslo"}]`, func(i *Installation) string { return want(i.PushVariables["city"], "Oslo") }},
		{"ops apply in order", `[{"op":"add","path":"/tags","value":"a"},{"op":"remove","path":"/tags/a"},{"op":"add","path":"/tags","value":"b"}]`, tagsAre("lang_en", "team_blue", "b")},
	}
	for _, c := range cases {
		in := validAPNS()
		in.PushChannelExpired = true
		if err := in.Validate(Limits{}); err != nil {
			t.Fatal(err)
		}
		before := in.Clone()
		out, err := patched(t, in, c.patch)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if msg := c.check(out); msg != "" {
			t.Errorf("%s: %s", c.name, msg)
		}
		if !reflect.DeepEqual(in, before) {
			t.Errorf("%s: the original installation was modified", c.name)
		}
	}
}

func TestPatchErrorsLeaveInstallationAlone(t *testing.T) {
	cases := []struct {
		patch, field, contains string
		code                   Code
	}{
		{`{}`, "patch", "expected an array", CodeInvalid},
		{`[]`, "patch", "non-empty", CodeInvalid},
		{`[{"op":"add"}]`, "patch[0]", "op and path", CodeInvalid},
		{`[{"op":"move","path":"/tags","from":"/x"}]`, "patch[0].op", "not supported", CodeUnsupported},
		{`[{"op":"frob","path":"/tags"}]`, "patch[0].op", "unknown op", CodeInvalid},
		{`[{"op":"add","path":"/tags"}]`, "patch[0].value", "needs a value", CodeInvalid},
		{`[{"op":"add","path":"tags","value":"a"}]`, "patch[0].path", "start with '/'", CodeInvalid},
		{`[{"op":"add","path":"/platform","value":"fcmv1"}]`, "patch[0].path", "identifies the installation", CodeUnsupported},
		{`[{"op":"add","path":"/installationId","value":"x"}]`, "patch[0].path", "identifies", CodeUnsupported},
		{`[{"op":"add","path":"/pushChannelExpired","value":false}]`, "patch[0].path", "read-only", CodeUnsupported},
		{`[{"op":"add","path":"/secret","value":"x"}]`, "patch[0].path", "patchable paths are", CodeUnsupported},
		{`[{"op":"add","path":"/tags/-","value":"x"}]`, "patch[0].path", "can only be removed", CodeUnsupported},
		{`[{"op":"replace","path":"/tags/a","value":"x"}]`, "patch[0].path", "can only be removed", CodeUnsupported},
		{`[{"op":"add","path":"/tags/a/b","value":"x"}]`, "patch[0].path", "too deep", CodeUnsupported},
		{`[{"op":"add","path":"/pushChannel/x","value":"x"}]`, "patch[0].path", "too deep", CodeUnsupported},
		{`[{"op":"add","path":"/templates/t/tags/x","value":"x"}]`, "patch[0].path", "too deep", CodeUnsupported},
		{`[{"op":"add","path":"/templates/t/color","value":"x"}]`, "patch[0].path", "body, headers, expiry and tags", CodeUnsupported},
		{`[{"op":"add","path":"/templates","value":"x"}]`, "patch[0].path", "name the template", CodeUnsupported},
		{`[{"op":"add","path":"/tags~2","value":"x"}]`, "patch[0].path", "'~' must be followed", CodeInvalid},
		// Each of the following parses but the patched installation is invalid.
		{`[{"op":"add","path":"/tags","value":"ok"},{"op":"add","path":"/tags","value":"$UserId:{eve}"}]`, "tags[3]", "reserved", CodeInvalid},
		{`[{"op":"add","path":"/templates/t/tags","value":"$InstallationId:{x}"}]`, "patch[0].path", "does not exist", CodeInvalid},
		{`[{"op":"add","path":"/templates/t","value":{"body":"{}","tags":["$UserId:{eve}"]}}]`, "templates.t.tags[0]", "reserved", CodeInvalid},
		{`[{"op":"add","path":"/tags","value":"bad tag"}]`, "tags[2]", "not allowed", CodeInvalid},
		{`[{"op":"add","path":"/tags","value":5}]`, "patch[0].value", "expected an array", CodeInvalid},
		{`[{"op":"remove","path":"/pushChannel"}]`, "patch[0].path", "cannot be removed", CodeInvalid},
		{`[{"op":"add","path":"/pushChannel","value":"zz"}]`, "pushChannel", "hex", CodeInvalid},
		{`[{"op":"add","path":"/userId","value":"a b"}]`, "userId", "not allowed", CodeInvalid},
		{`[{"op":"add","path":"/expirationTime","value":"later"}]`, "patch[0].value", "ISO 8601", CodeInvalid},
		{`[{"op":"remove","path":"/templates/none/body"}]`, "patch[0].path", "no template", CodeNotFound},
		{`[{"op":"add","path":"/templates/t","value":{"body":"{\"a\":\".(x)\"}"}}]`, "templates.t.body", "length", CodeInvalid},
	}
	for i, c := range cases {
		in := validAPNS()
		if err := in.Validate(Limits{}); err != nil {
			t.Fatal(err)
		}
		before := in.Clone()
		out, err := patched(t, in, c.patch)
		var he *Error
		if !errors.As(err, &he) {
			t.Errorf("%d %s: want an error, got %v / %+v", i, c.patch, err, out)
			continue
		}
		if he.Field != c.field || he.Code != c.code || !strings.Contains(he.Error(), c.contains) {
			t.Errorf("%d %s: got %s (%s); want field %q code %s containing %q", i, c.patch, he.Error(), he.Code, c.field, c.code, c.contains)
		}
		if !reflect.DeepEqual(in, before) {
			t.Errorf("%d: a failed patch modified the installation", i)
		}
	}
}

func TestPatchOpsDescribeTargets(t *testing.T) {
	ops, err := ParsePatch([]byte(`[{"op":"add","path":"/tags","value":"a"},{"op":"remove","path":"/tags/a"},{"op":"add","path":"/templates/x/tags","value":"b"},{"op":"add","path":"/userId","value":"u"},{"op":"add","path":"/templates/x","value":{"body":"{}"}}]`))
	if err != nil {
		t.Fatal(err)
	}
	touches := []bool{true, true, true, false, true}
	for i, op := range ops {
		if op.TouchesTags() != touches[i] {
			t.Errorf("op %d (%s) TouchesTags = %v", i, op.Path, op.TouchesTags())
		}
	}
	if ops[1].Tag != "a" || ops[2].Template != "x" || ops[2].Target != TargetTemplateTags {
		t.Fatalf("targets %+v", ops)
	}
}

func TestPatchOpLimit(t *testing.T) {
	var ops []string
	for i := 0; i <= MaxPatchOps; i++ {
		ops = append(ops, `{"op":"add","path":"/tags","value":"a"}`)
	}
	_, err := ParsePatch([]byte("[" + strings.Join(ops, ",") + "]"))
	if CodeOf(err) != CodeLimit {
		t.Fatalf("got %v", err)
	}
}

func tagsAre(tags ...string) func(*Installation) string {
	return func(i *Installation) string {
		if fmt.Sprint(i.Tags) != fmt.Sprint(tags) {
			return fmt.Sprintf("tags %v, want %v", i.Tags, tags)
		}
		return ""
	}
}

func want(got, w string) string {
	if got != w {
		return fmt.Sprintf("got %q, want %q", got, w)
	}
	return ""
}

func mustJSON(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
