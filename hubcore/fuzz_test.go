package hubcore

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

// FuzzDecodeInstallation: any body either decodes to an installation or
// fails with a typed error; a valid installation survives a JSON round trip.
func FuzzDecodeInstallation(f *testing.F) {
	f.Add([]byte(`{"installationId":"a","platform":"apns","pushChannel":"` + apnsToken + `","tags":["x"],"templates":{"t":{"body":"{\"a\":\"$(b)\"}"}}}`))
	f.Add([]byte(`{"installationId":"w","platform":"browser","pushChannel":{"endpoint":"https://p/x","p256dh":"` + p256dh + `","auth":"` + authKey + `"}}`))
	f.Add([]byte(`{"installationId":"w","platform":"wns","pushChannel":"https://h/x","templates":{"t":{"body":"<toast>$(a)</toast>"}}}`))
	f.Add([]byte(`{"tags":null,"userId":null}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := DecodeInstallation(data)
		if err != nil {
			var he *Error
			if !errors.As(err, &he) || he.Code == "" {
				t.Fatalf("untyped error %T %v", err, err)
			}
			return
		}
		if in.Validate(Limits{}) != nil {
			return
		}
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatalf("marshal of a valid installation: %v", err)
		}
		again, err := DecodeInstallation(b)
		if err != nil {
			t.Fatalf("re-decode: %v\n%s", err, b)
		}
		if err := again.Validate(Limits{}); err != nil {
			t.Fatalf("re-validate: %v\n%s", err, b)
		}
		b2, _ := json.Marshal(again)
		if string(b) != string(b2) {
			t.Fatalf("round trip differs:\n%s\n%s", b, b2)
		}
	})
}

// FuzzPatch: a patch applies whole or not at all, never modifies its input,
// and its result is always a valid installation.
func FuzzPatch(f *testing.F) {
	f.Add([]byte(`[{"op":"add","path":"/tags","value":"a"}]`))
	f.Add([]byte(`[{"op":"remove","path":"/tags/lang_en"},{"op":"add","path":"/templates/t","value":"{\"body\":\"{}\"}"}]`))
	f.Add([]byte(`[{"op":"replace","path":"/templates/t/body","value":"{\"a\":\"#(n)\"}"}]`))
	f.Add([]byte(`[{"op":"add","path":"/tags/~1x","value":"$UserId:{x}"}]`))
	f.Add([]byte(`[{"op":"add","path":"/pushVariables","value":{"a":"b"}}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		in := validAPNS()
		if err := in.Validate(Limits{}); err != nil {
			t.Fatal(err)
		}
		before := in.Clone()
		ops, err := ParsePatch(data)
		if err != nil {
			if CodeOf(err) == "" {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		out, err := ApplyPatch(in, ops, Limits{})
		if !reflect.DeepEqual(in, before) {
			t.Fatal("patch modified its input")
		}
		if err != nil {
			if CodeOf(err) == "" {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if err := out.Clone().Validate(Limits{}); err != nil {
			t.Fatalf("patched installation is invalid: %v", err)
		}
		for _, tg := range out.Tags {
			if tg != "" && tg[0] == '$' {
				t.Fatalf("system tag %q written by a patch", tg)
			}
		}
	})
}
