package template

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"strings"
	"testing"
	"unicode/utf8"
)

// checkXML reports whether b is a well-formed XML document with exactly one
// root element, using encoding/xml as an independent judge.
func checkXML(b []byte) error {
	if !utf8.Valid(b) {
		return errors.New("not valid UTF-8")
	}
	// encoding/xml does not skip a byte order mark.
	b = bytes.TrimPrefix(b, []byte("\uFEFF"))
	d := xml.NewDecoder(bytes.NewReader(b))
	d.Strict = true
	depth, roots := 0, 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				roots++
			}
			depth++
		case xml.EndElement:
			depth--
		case xml.CharData:
			if depth == 0 && len(bytes.TrimSpace(tok)) > 0 {
				return errors.New("text outside the root element")
			}
		case xml.Directive:
			return errors.New("directive")
		}
	}
	if roots != 1 {
		return fmt.Errorf("%d root elements", roots)
	}
	return nil
}

func checkJSON(b []byte) error {
	if !utf8.Valid(b) {
		return errors.New("not valid UTF-8")
	}
	if !json.Valid(b) {
		return errors.New("not valid JSON")
	}
	return nil
}

// nastyStrings are values chosen to break naive substitution.
var nastyStrings = []string{
	"", `"`, `\`, `\"`, "'", "<", ">", "&", "]]>", "&amp;", "\x00", "\x01", "\x1f", "\x7f",
	"\n", "\r", "\t", "\r\n", "\xff", "\xc3", "\xed\xa0\x80", "\uFFFE", "\uFFFF", "\u2028",
	"é", "😀", "\"}]", "</a>", "<!--", "-->", "${x}", "$(x)", "{'", "%", "%41", "0", "1e5",
	"-1", "1.", "01", "NaN", "true", "null", strings.Repeat("ab", 40),
}

func randomValue(r *rand.Rand) string {
	var b strings.Builder
	for n := r.Intn(4); n >= 0; n-- {
		if r.Intn(3) == 0 {
			b.WriteByte(byte(r.Intn(256)))
		} else {
			b.WriteString(nastyStrings[r.Intn(len(nastyStrings))])
		}
	}
	return b.String()
}

// TestRenderAlwaysValid renders templates of every expression form with
// thousands of hostile property values and checks the documents stay
// valid. FuzzCompile extends this to arbitrary templates.
func TestRenderAlwaysValid(t *testing.T) {
	exprs := []string{
		`$(a)`, `$(a,3)`, `.(a,5)`, `.(a,2)`, `%(a)`, `#(a)`, `#(b)`, `$(c:{d\}ef})`,
		`{'x' + $(a) + "y" + .(b,4) + %(c)}`, `{#(a)}`, `{'<&"' + $(b)}`,
	}
	jsonBodies := []string{`"E"`, `{"k":"E","n":["E",1,"E"],"o":{"p":"E"}}`}
	xmlBodies := []string{
		`<r a="E" b='E'>E<c d="E">  E  </c><![CDATA[R]]><d/>E</r>`,
		`<r><t><![CDATA[R]]> </t><u> &#x20;E&#32; </u></r>`,
	}
	r := rand.New(rand.NewSource(1))
	for _, e := range exprs {
		var tps []*Template
		for _, body := range jsonBodies {
			tps = append(tps, mustCompile(t, strings.ReplaceAll(body, "E", strings.Trim(jsonQuote(e), `"`)), JSON))
		}
		xe := strings.NewReplacer(`&`, `&amp;`, `<`, `&lt;`, `"`, `&quot;`, `'`, `&apos;`).Replace(e)
		for _, body := range xmlBodies {
			body = strings.ReplaceAll(body, "R", e)
			tps = append(tps, mustCompile(t, strings.ReplaceAll(body, "E", xe), XML))
		}
		for i := 0; i < 500; i++ {
			p := PropMap{"a": randomValue(r), "b": randomValue(r), "c": randomValue(r)}
			for _, tp := range tps {
				out, err := tp.Render(nil, p)
				if err != nil {
					t.Fatal(err)
				}
				check := checkJSON
				if tp.Kind() == XML {
					check = checkXML
				}
				if err := check(out); err != nil {
					t.Fatalf("%v: props %q rendered %q", err, p, out)
				}
			}
		}
	}
}

// TestXMLScannerAgreesWithEncodingXML checks that what the compiler accepts
// as well-formed, encoding/xml accepts too, on a corpus of edge cases.
func TestXMLScannerAgreesWithEncodingXML(t *testing.T) {
	bodies := []string{
		`<a/>`, `<a></a>`, ` <a/> `, `<a:b xmlns:a="u"/>`, `<a b="1" c='2'/>`, `<a>&lt;&#60;&#x3c;</a>`,
		`<?xml version="1.0"?><a/>`, `<?xml version="1.0" encoding="UTF-8" standalone="yes"?><a/>`,
		`<!-- c --><a/><!-- d -->`, `<a><![CDATA[<>&]]></a>`, `<a>x<b>y</b>z</a>`, `<a >x</a >`,
	}
	for _, body := range bodies {
		if _, err := Compile(body, XML); err != nil {
			t.Errorf("Compile(%q): %v", body, err)
			continue
		}
		if err := checkXML([]byte(body)); err != nil {
			t.Errorf("encoding/xml rejects %q: %v", body, err)
		}
	}
}
