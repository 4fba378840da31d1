package hubcore

import (
	"errors"
	"strings"
	"testing"

	"github.com/pushgate/pushgate/hubcore/template"
)

func compiled(t *testing.T, p Platform, tpl *Template) *CompiledTemplate {
	t.Helper()
	in := &Installation{InstallationID: "i", Platform: p, PushChannel: PushChannel{Handle: apnsToken}, Templates: map[string]*Template{"t": tpl}}
	if p == WNS {
		in.PushChannel.Handle = "https://h/x"
	}
	if err := in.Validate(Limits{}); err != nil {
		t.Fatal(err)
	}
	return tpl.Compiled()
}

func TestRenderReferenceExample(t *testing.T) {
	// The worked example of the reference's §7.3, with the device's push
	// variables under the message's properties.
	c := compiled(t, APNS, &Template{
		Body:    `{"aps":{"alert":"{'Order ' + $(orderId) + ' shipped'}","badge":"#(unread)"},"deepLink":"%(url)"}`,
		Headers: map[string]string{"apns-push-type": "alert", "apns-collapse-id": "$(orderId)"},
		Expiry:  "$(expires)",
	})
	msg, err := template.ParseProps([]byte(`{"orderId":"1042","unread":"3","url":"app://orders/1042?x=1"}`))
	if err != nil {
		t.Fatal(err)
	}
	props := &template.Overlay{Over: msg, Under: template.NewPropMap(map[string]string{"expires": "2030-01-01T00:00:00Z", "orderId": "shadowed"})}
	r, err := c.Render(nil, APNS, props)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"aps":{"alert":"Order 1042 shipped","badge":3},"deepLink":"app%3A%2F%2Forders%2F1042%3Fx%3D1"}`; string(r.Body) != want {
		t.Fatalf("body\n got %s\nwant %s", r.Body, want)
	}
	if r.Expiration != "1893456000" {
		t.Fatalf("expiration %q", r.Expiration)
	}
	if len(r.Headers) != 2 || r.Headers[0] != (Header{"apns-collapse-id", "1042"}) || r.Headers[1] != (Header{"apns-push-type", "alert"}) {
		t.Fatalf("headers %v", r.Headers)
	}
}

func TestRenderEnforcesPlatformLimits(t *testing.T) {
	c := compiled(t, APNS, &Template{Body: `{"aps":{"alert":"$(msg)"}}`})
	ok := strings.Repeat("x", 4096-len(`{"aps":{"alert":""}}`))
	if _, err := c.Render(nil, APNS, template.NewPropMap(map[string]string{"msg": ok})); err != nil {
		t.Fatalf("4096 bytes must pass: %v", err)
	}
	_, err := c.Render(nil, APNS, template.NewPropMap(map[string]string{"msg": ok + "y"}))
	var he *Error
	if !errors.As(err, &he) || he.Code != CodeLimit || !strings.Contains(err.Error(), "4096") {
		t.Fatalf("4097 bytes: %v", err)
	}

	w := compiled(t, WNS, &Template{Body: `<toast><visual><binding template="ToastText01"><text id="1">$(msg)</text></binding></visual></toast>`})
	r, err := w.Render(nil, WNS, template.NewPropMap(map[string]string{"msg": `<script>&"`}))
	if err != nil || !strings.Contains(string(r.Body), `&lt;script&gt;&amp;&#34;`) && !strings.Contains(string(r.Body), `&lt;script&gt;&amp;&quot;`) {
		t.Fatalf("xml escaping: %s %v", r.Body, err)
	}
	if len(r.Headers) != 1 || r.Headers[0].Value != "wns/toast" {
		t.Fatalf("derived X-WNS-Type: %v", r.Headers)
	}
}

func TestRenderChecksRenderedHeaders(t *testing.T) {
	c := compiled(t, APNS, &Template{Body: `{}`, Headers: map[string]string{"apns-priority": "$(p)"}})
	if _, err := c.Render(nil, APNS, template.NewPropMap(map[string]string{"p": "10"})); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Render(nil, APNS, template.NewPropMap(map[string]string{"p": "11"})); CodeOf(err) != CodeInvalid {
		t.Fatalf("priority 11: %v", err)
	}
	r := &Registration{RegistrationID: "1-2-3", Platform: APNS, PushChannel: PushChannel{Handle: apnsToken}, Template: &Template{Body: `{}`, Priority: "$(p)", Expiry: "0"}}
	if err := r.Validate(Limits{}); err != nil {
		t.Fatal(err)
	}
	got, err := r.Template.Compiled().Render(nil, APNS, template.NewPropMap(map[string]string{"p": "5"}))
	if err != nil || got.Priority != "5" || got.Expiration != "0" {
		t.Fatalf("%+v %v", got, err)
	}
}

func TestCompiledTemplatesAreShared(t *testing.T) {
	a := compiled(t, APNS, &Template{Body: `{"aps":{"alert":"$(m)"}}`, Headers: map[string]string{"apns-priority": "5"}})
	b := compiled(t, APNS, &Template{Body: `{"aps":{"alert":"$(m)"}}`, Headers: map[string]string{"apns-priority": "5"}})
	c := compiled(t, APNS, &Template{Body: `{"aps":{"alert":"$(m)"}}`, Headers: map[string]string{"apns-priority": "10"}})
	if a != b {
		t.Fatal("the same template source must share one compiled template")
	}
	if a == c {
		t.Fatal("templates differing in a header must not share a compiled template")
	}
	// A part boundary must not be movable: body "ab"+expiry "" differs from
	// body "a"+expiry "b".
	k1 := (&Template{Body: "ab"}).cacheKey(APNS)
	k2 := (&Template{Body: "a", Expiry: "b"}).cacheKey(APNS)
	if k1 == k2 {
		t.Fatal("cache keys collide")
	}
}
