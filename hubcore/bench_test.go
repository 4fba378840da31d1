package hubcore

import (
	"encoding/json"
	"testing"
)

var benchInstallation = []byte(`{"installationId":"a1f0c3e2-0000-4000-8000-000000000001","platform":"apns","pushChannel":"` + apnsToken + `",
 "tags":["userId:alice","event:comment","team:redsox","lang:en","city:boston"],"userId":"alice",
 "templates":{"alert":{"body":"{\"aps\":{\"alert\":{\"title\":\"$(title)\",\"body\":\"{'From ' + $(sender) + ': ' + .(msg,60)}\"},\"badge\":\"#(badge)\"}}"}}}`)

// BenchmarkDecodeValidate is what every installation PUT pays in the hub
// core: decode, validate, compile one template.
func BenchmarkDecodeValidate(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		in, err := DecodeInstallation(benchInstallation)
		if err != nil {
			b.Fatal(err)
		}
		if err := in.Validate(Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeBaseline is the floor for the above: encoding/json decoding
// the same document into a plain struct, no checks.
func BenchmarkDecodeBaseline(b *testing.B) {
	var v struct {
		InstallationID string                       `json:"installationId"`
		Platform       string                       `json:"platform"`
		PushChannel    string                       `json:"pushChannel"`
		Tags           []string                     `json:"tags"`
		UserID         string                       `json:"userId"`
		Templates      map[string]map[string]string `json:"templates"`
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := json.Unmarshal(benchInstallation, &v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkApplyPatch(b *testing.B) {
	in, _ := DecodeInstallation(benchInstallation)
	if err := in.Validate(Limits{}); err != nil {
		b.Fatal(err)
	}
	ops, err := ParsePatch([]byte(`[{"op":"add","path":"/tags","value":"event:like"},{"op":"remove","path":"/tags/lang:en"}]`))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ApplyPatch(in, ops, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}
