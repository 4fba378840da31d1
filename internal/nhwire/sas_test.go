package nhwire

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"
)

var testRules = []Rule{
	{Name: "DefaultListenSharedAccessSignature", Key: []byte("bGlzdGVuLWtleQ=="), Rights: Listen},
	{Name: "DefaultFullSharedAccessSignature", Key: []byte("c2VjcmV0LWtleS1mb3ItZXhhbXBsZQ=="), Rights: Listen | Send | Manage},
	{Name: "DefaultFullSharedAccessSignature", Key: []byte("c2Vjb25kYXJ5"), Rights: Listen | Send | Manage},
}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestSignKnownAnswer recomputes the JS client's token by hand, independently
// of Sign, and checks the worked example of the client reference.
func TestSignKnownAnswer(t *testing.T) {
	key := "c2VjcmV0LWtleS1mb3ItZXhhbXBsZQ=="
	sr := "https%3A%2F%2Flocalhost%3A8443%2F" // encodeURIComponent("https://localhost:8443/")
	h := hmac.New(sha256.New, []byte(key))
	h.Write([]byte(sr + "\n" + "1700000000"))
	sig := base64.StdEncoding.EncodeToString(h.Sum(nil))
	sig = strings.NewReplacer("+", "%2B", "/", "%2F", "=", "%3D").Replace(sig)
	if sig != "515Nwv2SJS1imNzlOJxVgsll5aTuXdJAg%2BR%2FuL4Wlnk%3D" {
		t.Fatalf("hand-computed sig %s disagrees with the reference", sig)
	}
	want := "SharedAccessSignature sr=" + sr + "&sig=" + sig + "&se=1700000000&skn=DefaultFullSharedAccessSignature"
	got := Sign("https://LOCALHOST:8443/", "DefaultFullSharedAccessSignature", []byte(key), time.Unix(1700000000, 0))
	if got != want {
		t.Fatalf("Sign:\n got %s\nwant %s", got, want)
	}
}

func TestSignVerifyRoundTrip(t *testing.T) {
	now := time.Unix(1700000000, 0)
	for _, aud := range []string{
		"https://localhost:8443/", "https://localhost:8443", "https://localhost:8443/hub",
		"http://localhost/hub/installations/abc/", "sb://localhost:8443/hub/",
	} {
		tok := Sign(aud, "DefaultFullSharedAccessSignature", testRules[1].Key, now.Add(time.Hour))
		r, err := Verify(tok, mustURL(t, "https://localhost:8443/hub/installations/abc?api-version=2020-06"), testRules, now)
		if err != nil {
			t.Fatalf("%s: %v", aud, err)
		}
		if r != &testRules[1] {
			t.Fatalf("%s: wrong rule %+v", aud, r)
		}
	}
	// The secondary key of the same rule name.
	tok := Sign("https://localhost:8443/", "DefaultFullSharedAccessSignature", testRules[2].Key, now.Add(time.Hour))
	if r, err := Verify(tok, mustURL(t, "https://localhost:8443/hub"), testRules, now); err != nil || r != &testRules[2] {
		t.Fatalf("secondary key: %v %v", r, err)
	}
}

// handToken builds a token by hand with the given sr text (already encoded).
func handToken(key, rawSr, se, skn string) (sig string) {
	h := hmac.New(sha256.New, []byte(key))
	h.Write([]byte(rawSr + "\n" + se))
	return url.QueryEscape(base64.StdEncoding.EncodeToString(h.Sum(nil)))
}

func TestVerifyClientVariants(t *testing.T) {
	now := time.Unix(1700000000, 0)
	key := string(testRules[1].Key)
	skn := "DefaultFullSharedAccessSignature"
	req := mustURL(t, "https://ns.example.net/hub/installations/a%20b")
	for name, rawSr := range map[string]string{
		".NET lower hex":   "http%3a%2f%2fns.example.net%2fhub%2finstallations%2fa+b%2f",
		"Java whole query": strings.ToLower(url.QueryEscape("https://ns.example.net/hub/installations/a%20b?api-version=2020-06")),
		"Go host only":     url.QueryEscape("https://ns.example.net"),
	} {
		sig := handToken(key, rawSr, "1700003600", skn)
		for _, hdr := range []string{
			"SharedAccessSignature sr=" + rawSr + "&sig=" + sig + "&se=1700003600&skn=" + skn,
			"sharedaccesssignature  se=1700003600&sig=" + sig + "&skn=" + skn + "&sr=" + rawSr + "&extra=1",
		} {
			if _, err := Verify(hdr, req, testRules, now); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
	}
	// A proxy upper-cased the escapes after a .NET client signed lower-case ones.
	rawSr := "http%3a%2f%2fns.example.net%2fhub"
	sig := handToken(key, rawSr, "1700003600", skn)
	hdr := "SharedAccessSignature sr=" + hexCase(rawSr, true) + "&sig=" + sig + "&se=1700003600&skn=" + skn
	if _, err := Verify(hdr, req, testRules, now); err != nil {
		t.Errorf("hex case fallback: %v", err)
	}
	// An unencoded sig (raw base64 with "+" and "/") is still accepted.
	raw, _ := url.QueryUnescape(sig)
	hdr = "SharedAccessSignature sr=" + rawSr + "&sig=" + raw + "&se=1700003600&skn=" + skn
	if _, err := Verify(hdr, req, testRules, now); err != nil {
		t.Errorf("raw sig: %v", err)
	}
}

func TestVerifyRejections(t *testing.T) {
	now := time.Unix(1700000000, 0)
	req := mustURL(t, "https://localhost:8443/hub/messages/")
	full := testRules[1]
	good := Sign("https://localhost:8443/", full.Name, full.Key, now.Add(time.Hour))
	cases := []struct {
		name, header string
		want         SASReason
	}{
		{"empty", "", ReasonMalformed},
		{"no scheme", strings.TrimPrefix(good, "SharedAccessSignature "), ReasonMalformed},
		{"wrong scheme", strings.Replace(good, "SharedAccessSignature", "Bearer", 1), ReasonMalformed},
		{"no space", strings.Replace(good, "SharedAccessSignature ", "SharedAccessSignature", 1), ReasonMalformed},
		{"missing sig", strings.Replace(good, "&sig=", "&xsig=", 1), ReasonMalformed},
		{"missing se", strings.Replace(good, "&se=", "&xse=", 1), ReasonMalformed},
		{"missing skn", strings.Replace(good, "&skn=", "&xskn=", 1), ReasonMalformed},
		{"missing sr", strings.Replace(good, "sr=", "xsr=", 1), ReasonMalformed},
		{"duplicate se", good + "&se=1", ReasonMalformed},
		{"se not int", strings.Replace(good, "&se=", "&se=x", 1), ReasonMalformed},
		{"sig not base64", strings.Replace(good, "&sig=", "&sig=%25%25", 1), ReasonMalformed},
		{"bad escape", strings.Replace(good, "sr=", "sr=%zz", 1), ReasonMalformed},
		{"too long", good + "&x=" + strings.Repeat("a", maxHeader), ReasonMalformed},
		{"unknown key name", Sign("https://localhost:8443/", "Nope", full.Key, now.Add(time.Hour)), ReasonUnknownKeyName},
		{"key name case", Sign("https://localhost:8443/", strings.ToLower(full.Name), full.Key, now.Add(time.Hour)), ReasonUnknownKeyName},
		{"wrong key", Sign("https://localhost:8443/", full.Name, []byte("wrong"), now.Add(time.Hour)), ReasonSignatureMismatch},
		{"listen key under full name", Sign("https://localhost:8443/", full.Name, testRules[0].Key, now.Add(time.Hour)), ReasonSignatureMismatch},
		{"tampered se", strings.Replace(good, "&se=1700003600", "&se=1700007200", 1), ReasonSignatureMismatch},
		{"tampered sr", strings.Replace(good, "8443", "8444", 1), ReasonSignatureMismatch},
		{"expired", Sign("https://localhost:8443/", full.Name, full.Key, now.Add(-ClockSkew)), ReasonExpired},
		{"other host", Sign("https://otherhost:8443/", full.Name, full.Key, now.Add(time.Hour)), ReasonResourceMismatch},
		{"other hub", Sign("https://localhost:8443/hub2", full.Name, full.Key, now.Add(time.Hour)), ReasonResourceMismatch},
		{"other port", Sign("https://localhost:9443/", full.Name, full.Key, now.Add(time.Hour)), ReasonResourceMismatch},
		{"deeper path", Sign("https://localhost:8443/hub/messages/x", full.Name, full.Key, now.Add(time.Hour)), ReasonResourceMismatch},
	}
	for _, c := range cases {
		_, err := Verify(c.header, req, testRules, now)
		if !errors.Is(err, &SASError{Reason: c.want}) {
			t.Errorf("%s: got %v, want %s", c.name, err, c.want)
		}
		var se *SASError
		if errors.As(err, &se) && se.ServiceDetail() == "" {
			t.Errorf("%s: empty service detail", c.name)
		}
	}
	if _, err := Verify(good, &url.URL{Path: "/hub"}, testRules, now); !errors.Is(err, &SASError{Reason: ReasonResourceMismatch}) {
		t.Errorf("relative request URL: %v", err)
	}
}

func TestVerifyExpiryBoundary(t *testing.T) {
	now := time.Unix(1700000000, 0)
	full := testRules[1]
	req := mustURL(t, "https://localhost/hub")
	at := func(se time.Time) error {
		_, err := Verify(Sign("https://localhost/", full.Name, full.Key, se), req, testRules, now)
		return err
	}
	if err := at(now.Add(-ClockSkew + time.Second)); err != nil {
		t.Errorf("one second inside the skew: %v", err)
	}
	if err := at(now.Add(-ClockSkew)); !errors.Is(err, &SASError{Reason: ReasonExpired}) {
		t.Errorf("exactly at se+skew: %v", err)
	}
	if err := at(time.Unix(-1<<62, 0)); !errors.Is(err, &SASError{Reason: ReasonExpired}) {
		t.Errorf("far past: %v", err)
	}
}

func TestVerifyAudience(t *testing.T) {
	now := time.Unix(1700000000, 0)
	full := testRules[1]
	cases := []struct {
		aud, req string
		ok       bool
	}{
		{"https://h/hub", "https://h/hub", true},
		{"https://h/hub", "https://h/hub/", true},
		{"https://h/hub/", "https://h/hub", true},
		{"https://h/hub", "https://h/hub/messages", true},
		{"https://h/hub", "https://h/hub2/messages", false},
		{"https://h/hub2", "https://h/hub", false},
		{"https://h/HUB", "https://h/hub/x", true},
		{"https://h/hub", "https://H/Hub/x", true},
		{"http://h/hub", "https://h/hub", true},
		{"sb://h/hub", "https://h/hub", true},
		{"https://h:8443/hub", "https://h:8443/hub", true},
		{"https://h/hub", "https://h:8443/hub", true},
		{"https://h:443/hub", "https://h/hub", true},
		{"https://h:8443/hub", "https://h/hub", false},
		{"https://h:8443/hub", "https://h:9443/hub", false},
		{"https://h/hub/tags/a%23b", "https://h/hub/tags/a%23b/registrations", true},
		{"https://h/hub/tags/a#b", "https://h/hub/tags/a%23b/registrations", false}, // "#" starts a fragment
		{"https://h/hub?api-version=2020-06", "https://h/hub/x?api-version=2020-06", true},
		{"https://h/hub/installations/a b", "https://h/hub/installations/a%20b", true},
		{"https://h.evil/hub", "https://h/hub", false},
		{"https://[::1]:8443/", "https://[::1]:8443/hub", true},
	}
	for _, c := range cases {
		tok := Sign(c.aud, full.Name, full.Key, now.Add(time.Hour))
		_, err := Verify(tok, mustURL(t, c.req), testRules, now)
		if (err == nil) != c.ok {
			t.Errorf("sr %s, request %s: err %v, want ok=%v", c.aud, c.req, err, c.ok)
		}
		if err != nil && !errors.Is(err, &SASError{Reason: ReasonResourceMismatch}) {
			t.Errorf("sr %s: wrong reason %v", c.aud, err)
		}
	}
}

func TestParseConnectionString(t *testing.T) {
	ep, kn, k, err := ParseConnectionString("Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=DefaultFullSharedAccessSignature;SharedAccessKey=abc+/def==")
	if err != nil || ep != "https://ns.servicebus.windows.net/" || kn != "DefaultFullSharedAccessSignature" || k != "abc+/def==" {
		t.Fatalf("got %q %q %q %v", ep, kn, k, err)
	}
	ep, kn, k, err = ParseConnectionString(" sharedaccesskey = k= ; ENDPOINT=SB://h:8443 ;; SharedAccessKeyName=n;OperationTimeout=00:01:00;")
	if err != nil || ep != "https://h:8443" || kn != "n" || k != "k=" {
		t.Fatalf("lenient: got %q %q %q %v", ep, kn, k, err)
	}
	for _, bad := range []string{
		"", "SharedAccessKeyName=n;SharedAccessKey=k", "Endpoint=sb://h/;SharedAccessKeyName=n",
		"Endpoint=sb://h/;SharedAccessKey=k", "Endpoint=sb://h/;Endpoint=sb://g/", "Endpoint", "Endpoint=ftp://h/",
		"Endpoint=/relative", "Endpoint=sb://h/;SharedAccessKeyName=n;SharedAccessKey=" + strings.Repeat("k", 300),
	} {
		if _, _, _, err := ParseConnectionString(bad); !errors.Is(err, &SASError{Reason: ReasonMalformed}) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestRights(t *testing.T) {
	if !Manage.Has(Listen|Send) || !(Listen | Send).Has(Send) || Listen.Has(Send) || Send.Has(Manage) {
		t.Fatal("Has")
	}
	if RightsFor(OpPutInstallation) != Listen || RightsFor(OpCreateRegistrationID) != Listen ||
		RightsFor(OpSend) != Send || RightsFor(OpSchedule) != Send ||
		RightsFor(OpListRegistrationsByTag) != Manage || RightsFor(OpListRegistrations) != Manage || RightsFor(OpManageHub) != Manage {
		t.Fatal("RightsFor")
	}
	if (Listen | Manage).String() != "Listen,Manage" {
		t.Fatal("String")
	}
}

// TestRightsExtensions pins the rights of pushgate's own operations: the
// bulk extensions need Manage, the feedback listing what its container URL
// needed (Send), so a Send key can read the URL it was given.
func TestRightsExtensions(t *testing.T) {
	for op, want := range map[Operation]Rights{
		OpFeedbackContainer: Send,
		OpFeedbackList:      Send,
		OpListInstallations: Manage,
		OpAudience:          Manage,
		OpEditTags:          Manage,
		OpExport:            Manage,
		OpImport:            Manage,
	} {
		if got := RightsFor(op); got != want {
			t.Errorf("RightsFor(%d) = %s, want %s", op, got, want)
		}
		if want == Manage && (Listen | Send).Has(RightsFor(op)) {
			t.Errorf("operation %d is open to a Listen+Send key", op)
		}
	}
}

// TestVerifyScopedToken checks the property the feedback container URL
// relies on: a token whose sr is one resource's full URL is accepted for
// that resource only, not for a sibling that shares a prefix, nor for any
// other path of the hub.
func TestVerifyScopedToken(t *testing.T) {
	now := time.Unix(1700000000, 0)
	r := testRules[1]
	tok := Sign("https://h.example/hub/x-pushgate/feedback", r.Name, r.Key, now.Add(time.Hour))
	for _, ok := range []string{
		"https://h.example/hub/x-pushgate/feedback",
		"https://h.example/hub/x-pushgate/feedback/?$top=5&continuationtoken=9",
		"https://H.EXAMPLE/Hub/X-Pushgate/Feedback",
	} {
		if _, err := Verify(tok, mustURL(t, ok), testRules, now); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{
		"https://h.example/hub/x-pushgate/feedbackcontainer",
		"https://h.example/hub/x-pushgate/export",
		"https://h.example/hub/feedbackcontainer",
		"https://h.example/hub/installations/x",
		"https://h.example/hub",
		"https://other.example/hub/x-pushgate/feedback",
	} {
		if _, err := Verify(tok, mustURL(t, bad), testRules, now); !errors.Is(err, &SASError{Reason: ReasonResourceMismatch}) {
			t.Errorf("%s: %v, want a resource mismatch", bad, err)
		}
	}
}

func FuzzVerify(f *testing.F) {
	now := time.Unix(1700000000, 0)
	f.Add(Sign("https://localhost:8443/", testRules[1].Name, testRules[1].Key, now.Add(time.Hour)), "https://localhost:8443/hub")
	f.Add("SharedAccessSignature sr=a&sig=b&se=c&skn=d", "https://h/")
	f.Add("SharedAccessSignature sr=%&sig=%3D&se=-1&skn=%2B", "https://[::1]:x/")
	f.Fuzz(func(t *testing.T, header, req string) {
		u, err := url.Parse(req)
		if err != nil {
			return
		}
		r, err := Verify(header, u, testRules, now)
		if err == nil && r == nil {
			t.Fatal("nil rule without error")
		}
		var se *SASError
		if err != nil && !errors.As(err, &se) {
			t.Fatalf("untyped error %v", err)
		}
	})
}

func FuzzParseConnectionString(f *testing.F) {
	f.Add("Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=n;SharedAccessKey=k=")
	f.Add(";;=;Endpoint==")
	f.Fuzz(func(t *testing.T, s string) {
		ep, kn, k, err := ParseConnectionString(s)
		if err != nil {
			var se *SASError
			if !errors.As(err, &se) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if ep == "" || (kn == "") != (k == "") {
			t.Fatalf("bad result %q %q %q", ep, kn, k)
		}
	})
}

// TestConstantTimeCompare guards the signature check against a refactor to
// a comparison that leaks timing: the MAC must be compared with hmac.Equal.
func TestConstantTimeCompare(t *testing.T) {
	src, err := os.ReadFile("sas.go")
	if err != nil {
		t.Fatal(err)
	}
	s := string(src)
	if !strings.Contains(s, "hmac.Equal(mac(") || strings.Contains(s, "bytes.Equal") {
		t.Fatal("the signature must be compared with hmac.Equal")
	}
}

func TestSASErrorText(t *testing.T) {
	if (&SASError{Reason: ReasonExpired}).Error() != "sas: expired" || (&SASError{Reason: ReasonMalformed, Detail: "x"}).Error() != "sas: malformed: x" {
		t.Fatal("Error text")
	}
}
