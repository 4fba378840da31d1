package hubcore

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
)

func TestRegistrationsProjection(t *testing.T) {
	in := validAPNS()
	in.Templates = map[string]*Template{
		"alert":         {Body: `{"aps":{"alert":"$(m)"}}`, Tags: []string{"loud"}},
		"Template Name": {Body: `{"aps":{"badge":"#(n)"}}`},
	}
	if err := in.Validate(Limits{}); err != nil {
		t.Fatal(err)
	}
	regs := in.Registrations()
	if len(regs) != 3 {
		t.Fatalf("%d registrations; want native + 2 templates", len(regs))
	}
	implicit := "$InstallationId:{" + in.InstallationID + "} $UserId:{user-42}"
	if got := strings.Join(regs[0].Tags, " "); got != "lang_en team_blue "+implicit || regs[0].IsTemplate() {
		t.Errorf("native: %q", got)
	}
	// Names sort: "Template Name" < "alert".
	if regs[1].TemplateName != "Template Name" || strings.Join(regs[1].Tags, " ") != "lang_en team_blue "+implicit {
		t.Errorf("a name that is not a valid tag is not added: %q %v", regs[1].TemplateName, regs[1].Tags)
	}
	if got := strings.Join(regs[2].Tags, " "); got != "lang_en team_blue "+implicit+" loud alert" {
		t.Errorf("template: %q", got)
	}
	seen := map[string]bool{}
	for _, r := range regs {
		if seen[r.RegistrationID] {
			t.Errorf("duplicate id %s", r.RegistrationID)
		}
		seen[r.RegistrationID] = true
		id, h, ok := ParseProjectionID(r.RegistrationID)
		if !ok || id != in.InstallationID || (h == "") != (r.TemplateName == "") {
			t.Errorf("ParseProjectionID(%s) = %q %q %v", r.RegistrationID, id, h, ok)
		}
		if ValidateRegistrationID(r.RegistrationID) == nil {
			t.Errorf("projected id %s must not be claimable by a client", r.RegistrationID)
		}
		if ts := r.TagSet(); !ts.Has("$installationid:{" + strings.ToLower(in.InstallationID) + "}") {
			t.Errorf("%s: no implicit tag in TagSet", r.RegistrationID)
		}
	}
	if ProjectionID(in.InstallationID, "alert") != regs[2].RegistrationID {
		t.Error("projection ids must be stable")
	}
	idx := strings.Join(in.IndexTags(), " ")
	if idx != "$installationid:{a1f0c3e2-0000-4000-8000-000000000001} $userid:{user-42} alert lang_en loud team_blue" {
		t.Errorf("IndexTags %q", idx)
	}
}

func TestNewRegistrationID(t *testing.T) {
	shape := regexp.MustCompile(`^[0-9]+-[0-9]+-[1-9]$`)
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id := NewRegistrationID()
		if !shape.MatchString(id) || ValidateRegistrationID(id) != nil {
			t.Fatalf("bad id %q", id)
		}
		if seen[id] {
			t.Fatalf("repeated id %q", id)
		}
		seen[id] = true
	}
}

func TestValidateRegistration(t *testing.T) {
	base := func() *Registration {
		return &Registration{RegistrationID: "123-234-1", Platform: APNS, PushChannel: PushChannel{Handle: apnsToken}, Tags: []string{"a", "A"}}
	}
	r := base()
	if err := r.Validate(Limits{}); err != nil || fmt.Sprint(r.Tags) != "[a]" {
		t.Fatalf("%v %v", err, r.Tags)
	}
	cases := []struct {
		mut   func(*Registration)
		field string
	}{
		{func(r *Registration) { r.RegistrationID = "inst~x" }, "RegistrationId"},
		{func(r *Registration) { r.InstallationID = "x" }, "RegistrationId"},
		{func(r *Registration) { r.PushChannel.Handle = "xyz" }, "DeviceToken"},
		{func(r *Registration) { r.Tags = []string{"$UserId:{x}"} }, "Tags[0]"},
		{func(r *Registration) { r.TemplateName = "n" }, "TemplateName"},
		{func(r *Registration) { r.Template = &Template{Body: `{"a":"$(x"}`} }, "BodyTemplate.body"},
		{func(r *Registration) { r.Template = &Template{Body: `{}`, Priority: "3"} }, "BodyTemplate.priority"},
		{func(r *Registration) { r.Platform, r.PushChannel.Handle = WNS, "ftp://x" }, "ChannelUri"},
	}
	for i, c := range cases {
		r := base()
		c.mut(r)
		err := r.Validate(Limits{})
		if e, ok := err.(*Error); !ok || e.Field != c.field {
			t.Errorf("%d: got %v; want error on %q", i, err, c.field)
		}
	}
	tr := base()
	tr.Template, tr.TemplateName = &Template{Body: `{"aps":{"alert":"$(m)"}}`, Priority: "10", Expiry: "$(exp)"}, "t1"
	if err := tr.Validate(Limits{}); err != nil || tr.Template.Compiled().Priority == nil {
		t.Fatalf("template registration: %v", err)
	}
}

func TestInstallationKeyFoldsCase(t *testing.T) {
	if InstallationKey("ABC-def") != InstallationKey("abc-DEF") {
		t.Fatal("installation ids must compare case-insensitively, as their system tag does")
	}
}

func TestRegistrationJSONRoundTrip(t *testing.T) {
	r := &Registration{RegistrationID: "1-2-3", Platform: Browser,
		PushChannel: PushChannel{Endpoint: "https://p/x", P256DH: p256dh, Auth: authKey},
		Tags:        []string{"a"}, PushVariables: map[string]string{"v": "1"},
		Template: &Template{Body: `{"title":"$(t)"}`, Headers: map[string]string{"TTL": "60"}}, TemplateName: "t1"}
	if err := r.Validate(Limits{}); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back Registration
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if err := back.Validate(Limits{}); err != nil {
		t.Fatal(err)
	}
	b2, _ := json.Marshal(&back)
	if string(b) != string(b2) {
		t.Fatalf("round trip:\n%s\n%s", b, b2)
	}
}
