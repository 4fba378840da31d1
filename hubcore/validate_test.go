package hubcore

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestValidateInstallation(t *testing.T) {
	long := func(n int, c string) string { return strings.Repeat(c, n) }
	manyTags := func(n int) []string {
		var s []string
		for i := 0; i < n; i++ {
			s = append(s, fmt.Sprintf("t%d", i))
		}
		return s
	}
	cases := []struct {
		name  string
		mut   func(*Installation)
		lim   Limits
		code  Code
		field string
	}{
		{"valid", func(*Installation) {}, Limits{}, "", ""},
		{"missing id", func(i *Installation) { i.InstallationID = "" }, Limits{}, CodeInvalid, "installationId"},
		{"colon in id", func(i *Installation) { i.InstallationID = "a:b" }, Limits{}, CodeInvalid, "installationId"},
		{"id too long", func(i *Installation) { i.InstallationID = long(129, "a") }, Limits{}, CodeLimit, "installationId"},
		{"id at limit", func(i *Installation) { i.InstallationID = long(128, "a") }, Limits{}, "", ""},
		{"no platform", func(i *Installation) { i.Platform = "" }, Limits{}, CodeInvalid, "platform"},
		{"no channel", func(i *Installation) { i.PushChannel = PushChannel{} }, Limits{}, CodeInvalid, "pushChannel"},
		{"apns not hex", func(i *Installation) { i.PushChannel.Handle = long(64, "g") }, Limits{}, CodeInvalid, "pushChannel"},
		{"apns odd", func(i *Installation) { i.PushChannel.Handle = long(65, "a") }, Limits{}, CodeInvalid, "pushChannel"},
		{"apns short", func(i *Installation) { i.PushChannel.Handle = long(62, "a") }, Limits{}, CodeInvalid, "pushChannel"},
		{"apns lower-case ok", func(i *Installation) { i.PushChannel.Handle = strings.ToLower(apnsToken) }, Limits{}, "", ""},
		{"apns object channel", func(i *Installation) { i.PushChannel = PushChannel{Endpoint: "https://x"} }, Limits{}, CodeInvalid, "pushChannel"},
		{"bad user id", func(i *Installation) { i.UserID = "bob smith" }, Limits{}, CodeInvalid, "userId"},
		{"user id with =", func(i *Installation) { i.UserID = "a=b@c.d" }, Limits{}, "", ""},
		{"system tag", func(i *Installation) { i.Tags = []string{"ok", "$UserId:{bob}"} }, Limits{}, CodeInvalid, "tags[1]"},
		{"bad tag char", func(i *Installation) { i.Tags = []string{"a b"} }, Limits{}, CodeInvalid, "tags[0]"},
		{"tag 120", func(i *Installation) { i.Tags = []string{long(120, "x")} }, Limits{}, "", ""},
		{"tag 121", func(i *Installation) { i.Tags = []string{long(121, "x")} }, Limits{}, CodeInvalid, "tags[0]"},
		{"60 tags", func(i *Installation) { i.Tags = manyTags(60) }, Limits{}, "", ""},
		{"61 tags", func(i *Installation) { i.Tags = manyTags(61) }, Limits{}, CodeLimit, "tags"},
		{"61 tags configured", func(i *Installation) { i.Tags = manyTags(61) }, Limits{MaxTags: 100}, "", ""},
		{"dup tags count once", func(i *Installation) { i.Tags = append(manyTags(60), "T0", "t1") }, Limits{}, "", ""},
		{"push var name", func(i *Installation) { i.PushVariables = map[string]string{"a-b": "x"} }, Limits{}, CodeInvalid, "pushVariables.a-b"},
		{"template no body", func(i *Installation) { i.Templates = map[string]*Template{"t": {}} }, Limits{}, CodeInvalid, "templates.t.body"},
		{"template bad json", func(i *Installation) { i.Templates = map[string]*Template{"t": {Body: `{"a":`}} }, Limits{}, CodeInvalid, "templates.t.body"},
		{"template bad expr", func(i *Installation) { i.Templates = map[string]*Template{"t": {Body: `{"a":".(x)"}`}} }, Limits{}, CodeInvalid, "templates.t.body"},
		{"template name with space", func(i *Installation) {
			i.Templates = map[string]*Template{"Template Name": {Body: `{"aps":{"alert":"$(m)"}}`}}
		}, Limits{}, "", ""},
		{"template name $", func(i *Installation) { i.Templates = map[string]*Template{"$x": {Body: `{}`}} }, Limits{}, CodeInvalid, "templates.$x"},
		{"template system tag", func(i *Installation) {
			i.Templates = map[string]*Template{"t": {Body: `{}`, Tags: []string{"$InstallationId:{x}"}}}
		}, Limits{}, CodeInvalid, "templates.t.tags[0]"},
		{"apns header ok", func(i *Installation) {
			i.Templates = map[string]*Template{"t": {Body: `{}`, Headers: map[string]string{"apns-push-type": "background", "apns-priority": "5"}}}
		}, Limits{}, "", ""},
		{"apns header name", func(i *Installation) {
			i.Templates = map[string]*Template{"t": {Body: `{}`, Headers: map[string]string{"X-Foo": "1"}}}
		}, Limits{}, CodeInvalid, "templates.t.headers.X-Foo"},
		{"apns priority", func(i *Installation) {
			i.Templates = map[string]*Template{"t": {Body: `{}`, Headers: map[string]string{"apns-priority": "7"}}}
		}, Limits{}, CodeInvalid, "templates.t.headers.apns-priority"},
		{"apns priority expression", func(i *Installation) {
			i.Templates = map[string]*Template{"t": {Body: `{}`, Headers: map[string]string{"apns-priority": "$(prio)"}}}
		}, Limits{}, "", ""},
		{"apns expiry date", func(i *Installation) {
			i.Templates = map[string]*Template{"t": {Body: `{}`, Expiry: "2026-12-01T00:00:00Z"}}
		}, Limits{}, "", ""},
		{"apns expiry expr", func(i *Installation) { i.Templates = map[string]*Template{"t": {Body: `{}`, Expiry: "$(exp)"}} }, Limits{}, "", ""},
		{"apns expiry junk", func(i *Installation) { i.Templates = map[string]*Template{"t": {Body: `{}`, Expiry: "soon"}} }, Limits{}, CodeInvalid, "templates.t.expiry"},
		{"installation template priority", func(i *Installation) { i.Templates = map[string]*Template{"t": {Body: `{}`, Priority: "10"}} }, Limits{}, CodeInvalid, "templates.t.priority"},
		{"33 templates", func(i *Installation) {
			i.Templates = map[string]*Template{}
			for n := 0; n < 33; n++ {
				i.Templates[fmt.Sprint("t", n)] = &Template{Body: `{}`}
			}
		}, Limits{}, CodeLimit, "templates"},
	}
	for _, c := range cases {
		in := validAPNS()
		c.mut(in)
		err := in.Validate(c.lim)
		if c.code == "" {
			if err != nil {
				t.Errorf("%s: unexpected error %v", c.name, err)
			}
			continue
		}
		var he *Error
		if !errors.As(err, &he) || he.Code != c.code || he.Field != c.field {
			t.Errorf("%s: got %#v (%v); want code %s field %q", c.name, he, err, c.code, c.field)
		}
	}
}

func TestValidateCanonicalises(t *testing.T) {
	in := validAPNS()
	in.Tags = []string{"News", "news", "Sports", "NEWS"}
	in.Templates = map[string]*Template{"t": {Body: `{"aps":{"alert":"$(m)"}}`}}
	if err := in.Validate(Limits{}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(in.Tags) != "[News Sports]" {
		t.Fatalf("tags %v: duplicates must fold case-insensitively keeping the first spelling", in.Tags)
	}
	if in.Templates["t"].Compiled() == nil || in.Templates["t"].Compiled().Body == nil {
		t.Fatal("template not compiled by Validate")
	}
}

func TestValidatePlatformChannels(t *testing.T) {
	cases := []struct {
		p     Platform
		ch    PushChannel
		ok    bool
		field string
	}{
		{FCMV1, PushChannel{Handle: "dGVzdA:APA91bH-x_y.z"}, true, ""},
		{FCMV1, PushChannel{Handle: "has space"}, false, "pushChannel"},
		{GCM, PushChannel{Handle: "abc"}, true, ""},
		{WNS, PushChannel{Handle: "https://db5p.notify.windows.com/?token=AwYAAAB"}, true, ""},
		{WNS, PushChannel{Handle: "http://db5p.notify.windows.com/?token=x"}, false, "pushChannel"},
		{WNS, PushChannel{Handle: "https://user:pw@host/x"}, false, "pushChannel"},
		{ADM, PushChannel{Handle: "amzn1.adm-registration.v3.Y29t"}, true, ""},
		{Xiaomi, PushChannel{Handle: "xmtoken=="}, true, ""},
		{Baidu, PushChannel{Handle: "3645698458"}, true, ""},
		{Browser, PushChannel{Endpoint: "https://push.example.net/x", P256DH: p256dh, Auth: authKey}, true, ""},
		{Browser, PushChannel{Endpoint: "https://push.example.net/x", P256DH: p256dh + "==", Auth: authKey + "=="}, true, ""},
		{Browser, PushChannel{Handle: "https://push.example.net/x"}, false, "pushChannel"},
		{Browser, PushChannel{Endpoint: "http://push.example.net/x", P256DH: p256dh, Auth: authKey}, false, "pushChannel.endpoint"},
		{Browser, PushChannel{Endpoint: "https://push.example.net/x", P256DH: authKey, Auth: authKey}, false, "pushChannel.p256dh"},
		{Browser, PushChannel{Endpoint: "https://push.example.net/x", P256DH: offCurve(p256dh), Auth: authKey}, false, "pushChannel.p256dh"},
		{Browser, PushChannel{Endpoint: "https://push.example.net/x", P256DH: p256dh, Auth: "AAAA"}, false, "pushChannel.auth"},
		{Browser, PushChannel{Endpoint: "https://push.example.net/x", P256DH: p256dh, Auth: "!!"}, false, "pushChannel.auth"},
	}
	for i, c := range cases {
		in := &Installation{InstallationID: "i", Platform: c.p, PushChannel: c.ch}
		err := in.Validate(Limits{})
		var he *Error
		switch {
		case c.ok && err != nil:
			t.Errorf("%d %s: unexpected %v", i, c.p, err)
		case !c.ok && (!errors.As(err, &he) || he.Field != c.field):
			t.Errorf("%d %s: got %v; want an error on %q", i, c.p, err, c.field)
		}
	}
}

func TestValidateTemplatesPerPlatform(t *testing.T) {
	wnsToast := `<toast><visual><binding template="ToastText01"><text id="1">$(msg)</text></binding></visual></toast>`
	cases := []struct {
		name  string
		p     Platform
		ch    PushChannel
		tpl   Template
		ok    bool
		field string
		wns   string
	}{
		{"wns derived type", WNS, PushChannel{Handle: "https://h/x"}, Template{Body: wnsToast}, true, "", "wns/toast"},
		{"wns explicit", WNS, PushChannel{Handle: "https://h/x"}, Template{Body: wnsToast, Headers: map[string]string{"X-WNS-Type": "wns/toast", "X-WNS-Tag": "$(t)"}}, true, "", "wns/toast"},
		{"wns raw", WNS, PushChannel{Handle: "https://h/x"}, Template{Body: "raw bytes here", Headers: map[string]string{"X-WNS-Type": "wns/raw"}}, true, "", "wns/raw"},
		{"wns bad type", WNS, PushChannel{Handle: "https://h/x"}, Template{Body: wnsToast, Headers: map[string]string{"X-WNS-Type": "wns/foo"}}, false, "templates.t.headers.X-WNS-Type", ""},
		{"wns unknown root", WNS, PushChannel{Handle: "https://h/x"}, Template{Body: "<x/>"}, false, "templates.t.headers", ""},
		{"wns json body", WNS, PushChannel{Handle: "https://h/x"}, Template{Body: `{"a":1}`, Headers: map[string]string{"X-WNS-Type": "wns/toast"}}, false, "templates.t.body", ""},
		{"wns header name", WNS, PushChannel{Handle: "https://h/x"}, Template{Body: wnsToast, Headers: map[string]string{"apns-x": "1"}}, false, "templates.t.headers.apns-x", ""},
		{"fcm headers", FCMV1, PushChannel{Handle: "tok"}, Template{Body: `{"message":{}}`, Headers: map[string]string{"a": "b"}}, false, "templates.t.headers", ""},
		{"fcm expiry", FCMV1, PushChannel{Handle: "tok"}, Template{Body: `{"message":{}}`, Expiry: "0"}, false, "templates.t.expiry", ""},
		{"fcm xml body", FCMV1, PushChannel{Handle: "tok"}, Template{Body: `<a/>`}, false, "templates.t.body", ""},
		{"browser headers", Browser, PushChannel{Endpoint: "https://p/x", P256DH: p256dh, Auth: authKey}, Template{Body: `{"title":"$(t)"}`, Headers: map[string]string{"TTL": "60", "Urgency": "high", "Topic": "news"}}, true, "", ""},
		{"browser urgency", Browser, PushChannel{Endpoint: "https://p/x", P256DH: p256dh, Auth: authKey}, Template{Body: `{}`, Headers: map[string]string{"Urgency": "now"}}, false, "templates.t.headers.Urgency", ""},
	}
	for _, c := range cases {
		in := &Installation{InstallationID: "i", Platform: c.p, PushChannel: c.ch, Templates: map[string]*Template{"t": &c.tpl}}
		err := in.Validate(Limits{})
		var he *Error
		switch {
		case c.ok && err != nil:
			t.Errorf("%s: unexpected %v", c.name, err)
		case c.ok && c.wns != "" && in.Templates["t"].Compiled().WNSType != c.wns:
			t.Errorf("%s: WNS type %q, want %q", c.name, in.Templates["t"].Compiled().WNSType, c.wns)
		case !c.ok && (!errors.As(err, &he) || he.Field != c.field):
			t.Errorf("%s: got %v; want an error on %q", c.name, err, c.field)
		}
	}
}

func TestStampTTL(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	in := validAPNS()
	in.Stamp(now, Limits{})
	if !in.ExpirationTime.IsZero() || !in.LastUpdate.Equal(now) {
		t.Fatalf("no TTL: %v %v", in.ExpirationTime, in.LastUpdate)
	}
	in.Stamp(now, Limits{TTL: 24 * time.Hour})
	if !in.ExpirationTime.Equal(now.Add(24 * time.Hour)) {
		t.Fatalf("TTL cap: %v", in.ExpirationTime)
	}
	in.ExpirationTime = now.Add(time.Hour)
	in.Stamp(now, Limits{TTL: 24 * time.Hour})
	if !in.ExpirationTime.Equal(now.Add(time.Hour)) {
		t.Fatalf("an earlier client expiry must be kept: %v", in.ExpirationTime)
	}
	if in.Expired(now) || !in.Expired(now.Add(time.Hour)) {
		t.Fatal("Expired")
	}
}

// offCurve changes one coordinate byte of a public key, which leaves the point
// off the curve.
func offCurve(key string) string {
	b := []byte(key)
	if b[40] == 'A' {
		b[40] = 'B'
	} else {
		b[40] = 'A'
	}
	return string(b)
}
