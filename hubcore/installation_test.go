package hubcore

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

const (
	apnsToken = "0F9A3C5E7B2D4F6A8C1E3B5D7F9A2C4E6B8D0F1A3C5E7B9D2F4A6C8E0B1D3F5A"
	// A real uncompressed P-256 public key and a 16-byte auth secret.
	p256dh  = "BBNQgbHj4Sk1VuyhlNnkrSyoNDV85tir4zsBWDYth4H_o2JJZ46__ixHsy9mjXsm6JF3hoOe_tluGC_rUYJBZXE"
	authKey = "kY9SXZeoT2JajVVidPTv1w"
)

func validAPNS() *Installation {
	return &Installation{
		InstallationID: "a1f0c3e2-0000-4000-8000-000000000001",
		Platform:       APNS,
		PushChannel:    PushChannel{Handle: apnsToken},
		Tags:           []string{"lang_en", "team_blue"},
		UserID:         "user-42",
	}
}

func TestInstallationJSONRoundTrip(t *testing.T) {
	in := validAPNS()
	in.PushVariables = map[string]string{"city": "Oslo"}
	in.Templates = map[string]*Template{"alert": {Body: `{"aps":{"alert":"$(msg)"}}`, Tags: []string{"alert"}}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"installationId":"a1f0c3e2-0000-4000-8000-000000000001","pushChannel":"` + apnsToken + `","pushChannelExpired":false,"platform":"apns","expirationTime":"9999-12-31T23:59:59.9999999Z","tags":["lang_en","team_blue"],"pushVariables":{"city":"Oslo"},"templates":{"alert":{"body":"{\"aps\":{\"alert\":\"$(msg)\"}}","tags":["alert"]}},"userId":"user-42"}`
	if string(b) != want {
		t.Fatalf("marshal:\n got %s\nwant %s", b, want)
	}
	out, err := DecodeInstallation(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := out.Validate(Limits{}); err != nil {
		t.Fatal(err)
	}
	b2, _ := json.Marshal(out)
	if string(b2) != want {
		t.Fatalf("round trip changed the document:\n%s", b2)
	}
}

func TestDecodeInstallationLenient(t *testing.T) {
	// What the .NET SDK sends: nulls for unset properties, mixed-case platform,
	// unknown properties, read-only ones.
	body := `{"installationId":"abc","userId":null,"platform":"FCMV1","pushChannel":"tok:APA91b-x_y","pushChannelExpired":null,
	  "expirationTime":null,"tags":null,"templates":null,"secondaryTiles":null,"somethingNew":{"x":1},"lastUpdate":"whatever"}`
	in, err := DecodeInstallation([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if in.Platform != FCMV1 || in.PushChannel.Handle != "tok:APA91b-x_y" || in.UserID != "" {
		t.Fatalf("decoded %+v", in)
	}
	if err := in.Validate(Limits{}); err != nil {
		t.Fatal(err)
	}
	legacy, err := DecodeInstallation([]byte(`{"installationId":"x","platform":"fcm","pushChannel":"t"}`))
	if err != nil || legacy.Platform != GCM {
		t.Fatalf("fcm alias: %v %v", legacy, err)
	}
}

func TestDecodeBrowserChannel(t *testing.T) {
	body := `{"installationId":"w1","platform":"browser","pushChannel":{"endpoint":"https://push.example.net/send/abc","p256dh":"` + p256dh + `","auth":"` + authKey + `"}}`
	in, err := DecodeInstallation([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Validate(Limits{}); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(in)
	if !strings.Contains(string(b), `"pushChannel":{"endpoint":"https://push.example.net/send/abc","p256dh":"`+p256dh+`","auth":"`+authKey+`"}`) {
		t.Fatalf("browser channel not echoed as an object: %s", b)
	}
}

func TestDecodeInstallationErrors(t *testing.T) {
	cases := []struct {
		body, field, contains string
	}{
		{``, "", "empty body"},
		{`{"installationId":`, "", "truncated"},
		{`{"installationId":"a"} x`, "", "after the JSON value"},
		{`[1]`, "", "expected an object"},
		{`{"installationId":5}`, "installationId", "expected a string"},
		{`{"tags":"a"}`, "tags", "expected an array"},
		{`{"tags":["a",null]}`, "tags[1]", "null"},
		{`{"platform":"nokia"}`, "platform", "unknown platform"},
		{`{"platform":"mpns"}`, "platform", "retired"},
		{`{"pushChannel":5}`, "pushChannel", "must be a string"},
		{`{"pushChannel":{"endpoint":1}}`, "pushChannel.endpoint", "expected a string"},
		{`{"templates":{"t":"x"}}`, "templates.t", "expected an object"},
		{`{"templates":{"t":{"headers":{"a":1}}}}`, "templates.t.headers", "expected a string"},
		{`{"expirationTime":"tomorrow"}`, "expirationTime", "ISO 8601"},
		{`{"secondaryTiles":{"t1":{}}}`, "secondaryTiles", "not supported"},
	}
	for i, c := range cases {
		_, err := DecodeInstallation([]byte(c.body))
		var he *Error
		if !errors.As(err, &he) {
			t.Errorf("%d %s: want *Error, got %v", i, c.body, err)
			continue
		}
		if he.Field != c.field || !strings.Contains(he.Error(), c.contains) {
			t.Errorf("%d %s: got field %q error %q; want field %q containing %q", i, c.body, he.Field, he.Error(), c.field, c.contains)
		}
		if he.Code == "" {
			t.Errorf("%d: no code", i)
		}
	}
}

func TestTimes(t *testing.T) {
	for _, s := range []string{"9999-12-31T23:59:59.9999999Z", "9999-12-31T23:59:59.999", "9999-12-31T23:59:59.999Z"} {
		if tm, err := ParseTime(s); err != nil || !tm.IsZero() {
			t.Errorf("%s: never expected, got %v %v", s, tm, err)
		}
	}
	tm, err := ParseTime("2026-05-01T12:00:00")
	if err != nil || !tm.Equal(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)) {
		t.Fatalf("zone-less time: %v %v", tm, err)
	}
	tm, err = ParseTime("2026-05-01T14:00:00.1234567+02:00")
	if err != nil || FormatTime(tm) != "2026-05-01T12:00:00.1234567Z" {
		t.Fatalf("offset time: %v %v", FormatTime(tm), err)
	}
}

// TestGenericMatchesJSON: Generic is the JSON form decoded, for random
// installations of every shape MarshalJSON distinguishes.
func TestGenericMatchesJSON(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	strs := []string{"", "a", "userId:alice", "é<&>\"\\\n", "topic:news", "x y", "9999"}
	pick := func() string { return strs[rnd.IntN(len(strs))] }
	someStrings := func() []string {
		if rnd.IntN(3) == 0 {
			return nil
		}
		out := []string{}
		for range rnd.IntN(4) {
			out = append(out, pick())
		}
		return out
	}
	someMap := func() map[string]string {
		if rnd.IntN(3) == 0 {
			return nil
		}
		m := map[string]string{}
		for range rnd.IntN(3) {
			m[pick()] = pick()
		}
		return m
	}
	someTime := func() time.Time {
		if rnd.IntN(2) == 0 {
			return time.Time{}
		}
		return time.Unix(rnd.Int64N(4e9), rnd.Int64N(1e9)).UTC()
	}
	platforms := []Platform{APNS, FCMV1, WNS, Browser, Baidu}
	for i := range 2000 {
		in := &Installation{
			InstallationID: pick(), UserID: pick(), Platform: platforms[rnd.IntN(len(platforms))],
			PushChannel:        PushChannel{Handle: pick(), Endpoint: pick(), P256DH: pick(), Auth: pick()},
			PushChannelExpired: rnd.IntN(2) == 0, Tags: someStrings(), PushVariables: someMap(),
			ExpirationTime: someTime(), LastActiveOn: someTime(), LastUpdate: someTime(), Version: rnd.Int64N(9),
		}
		if rnd.IntN(2) == 0 {
			in.Templates = map[string]*Template{}
			for range rnd.IntN(3) {
				in.Templates[pick()] = &Template{Body: pick(), Headers: someMap(), Expiry: pick(), Priority: pick(), Tags: someStrings()}
			}
		}
		data, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		var want any
		if err := json.Unmarshal(data, &want); err != nil {
			t.Fatal(err)
		}
		if got := any(in.Generic()); !reflect.DeepEqual(got, want) {
			t.Fatalf("installation %d: Generic\n%#v\nJSON\n%#v", i, got, want)
		}
	}
}
