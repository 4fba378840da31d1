package wns

import (
	"bytes"
	"encoding/xml"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

// FuzzXMLRoot compares the root check with encoding/xml's own reading: a
// document the fake accepts decodes, and its first element is the root
// reported.
func FuzzXMLRoot(f *testing.F) {
	for _, s := range []string{`<toast/>`, `<?xml version="1.0"?><tile><a/></tile>`, "\uFEFF<badge value='1'/>", `<a/><b/>`, `x<a/>`, `<a>`, ``, `<!DOCTYPE a><a/>`, `<!-- c --><a/>`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		root, err := xmlRoot(body)
		if err != nil {
			return
		}
		d := xml.NewDecoder(bytes.NewReader(bytes.TrimPrefix(body, []byte("\uFEFF"))))
		for {
			tok, err := d.Token()
			if err == io.EOF {
				t.Fatalf("xmlRoot(%q) = %q but there is no element", body, root)
			}
			if err != nil {
				t.Fatalf("xmlRoot(%q) = %q but decoding fails: %v", body, root, err)
			}
			if se, ok := tok.(xml.StartElement); ok {
				if se.Name.Local != root {
					t.Fatalf("xmlRoot(%q) = %q, first element %q", body, root, se.Name.Local)
				}
				return
			}
		}
	})
}

// FuzzCheckHeaders checks every X-WNS-* rule on arbitrary values: no
// panic, and what passes is one of the documented forms.
func FuzzCheckHeaders(f *testing.F) {
	f.Add("wns/toast", "text/xml", "X-WNS-TTL", "60")
	f.Add("wns/raw", "application/octet-stream", "X-WNS-Cache-Policy", "cache")
	f.Add("wns/toast", "text/xml; charset=utf-8", "X-WNS-Match", "type:wns/toast;group=a;tag=b")
	f.Add("wns/tile", "text/xml", "X-WNS-Tag", "0123456789abcdef")
	f.Add("wns/badge", "text/xml", "X-WNS-RequestForStatus", "TRUE")
	f.Fuzz(func(t *testing.T, typ, ct, name, value string) {
		h := http.Header{}
		h.Set("X-WNS-Type", typ)
		h.Set("Content-Type", ct)
		h.Set(name, value)
		got, code, desc := checkHeaders(h, 10)
		if code != 0 {
			if code != 400 || desc == "" {
				t.Fatalf("checkHeaders: %d %q", code, desc)
			}
			return
		}
		if got != typ {
			t.Fatalf("checkHeaders returned type %q for %q", got, typ)
		}
		switch ln := strings.ToLower(http.CanonicalHeaderKey(name)); ln {
		case "x-wns-ttl":
			if _, err := strconv.ParseUint(value, 10, 32); err != nil {
				t.Fatalf("TTL %q accepted", value)
			}
		case "x-wns-tag", "x-wns-group":
			if value == "" || len(value) > 16 {
				t.Fatalf("%s %q accepted", ln, value)
			}
		case "x-wns-cache-policy":
			if v := strings.ToLower(value); v != "cache" && v != "no-cache" {
				t.Fatalf("cache policy %q accepted", value)
			}
		}
	})
}

// FuzzNotify feeds arbitrary payloads and types through the handler with a
// valid token: every answer is a documented status with a description.
func FuzzNotify(f *testing.F) {
	f.Add("wns/toast", []byte(`<toast/>`))
	f.Add("wns/tile", []byte(`<toast/>`))
	f.Add("wns/raw", []byte{0, 1, 2})
	f.Add("wns/badge", []byte(`<badge`))
	srv := New(Options{})
	tok := srv.AccessToken("app")
	f.Fuzz(func(t *testing.T, typ string, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/w/?token="+Channel("f"), bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("X-WNS-Type", typ)
		ct := "text/xml"
		if typ == "wns/raw" {
			ct = "application/octet-stream"
		}
		req.Header.Set("Content-Type", ct)
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, req)
		switch w.Code {
		case 200:
			if w.Header().Get("X-WNS-NotificationStatus") != "received" {
				t.Fatalf("200 without received: %v", w.Header())
			}
		case 400, 413:
			if w.Header().Get("X-WNS-Error-Description") == "" {
				t.Fatalf("%d without a description", w.Code)
			}
		default:
			t.Fatalf("answer %d", w.Code)
		}
	})
}
