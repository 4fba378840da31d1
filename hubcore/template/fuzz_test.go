package template

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// fuzzProps spreads vals (split on NUL) over the template's properties, so
// the fuzzer controls both the template and every value it reads.
func fuzzProps(names []string, vals string) PropMap {
	parts := strings.Split(vals, "\x00")
	p := make(PropMap, len(names))
	for i, n := range names {
		if v := parts[i%len(parts)]; v != "<absent>" {
			p[n] = v
		}
	}
	return p
}

func FuzzCompile(f *testing.F) {
	seeds := []string{
		`{"aps":{"alert":"{'Order ' + $(orderId) + ' shipped'}","badge":"#(unread)"},"deepLink":"%(url)"}`,
		`{"aps":{"alert":{"title":"$(title)","body":"{'From ' + $(sender) + ': ' + .(msg,60)}"},"badge":"#(badge)","sound":"default"},"url":"%(link)"}`,
		`{"message":{"data":{"a":"$(a:{x\}y})","b":"\u0024(b, 3)"}}}`,
		`["#(n)", ".(t,2)", {"k":"{\"q\"\"\" + $(q)}"}]`,
		toast,
		`<badge value="#(count)"/>`,
		`<a x='{"it""s" + .(b,9)}'>&#x24;(c) <![CDATA[$(d)]]></a>`,
	}
	for _, s := range seeds {
		f.Add(s, strings.HasPrefix(s, "<"), "v\x00<&>\"'\x00\xff\n\x00123")
	}
	f.Fuzz(func(t *testing.T, body string, isXML bool, vals string) {
		kind := JSON
		if isXML {
			kind = XML
		}
		tp, err := Compile(body, kind)
		if err != nil {
			var te *Error
			var le *LimitError
			if !errors.As(err, &te) && !errors.As(err, &le) {
				t.Fatalf("untyped error %T: %v", err, err)
			}
			if te != nil && (te.Offset < 0 || te.Offset > len(body)) {
				t.Fatalf("offset %d outside body of %d bytes", te.Offset, len(body))
			}
			// The scanner must not reject JSON that encoding/json accepts,
			// except for the nesting bound.
			if kind == JSON && te != nil && strings.HasPrefix(te.Reason, "invalid JSON:") &&
				utf8.ValidString(body) && json.Valid([]byte(body)) && !strings.Contains(te.Reason, "nesting") {
				t.Fatalf("valid JSON rejected: %v", err)
			}
			return
		}
		check := checkJSON
		if kind == XML {
			check = checkXML
		}
		for _, p := range []Props{nil, fuzzProps(tp.Properties(), vals)} {
			out, err := tp.Render(nil, p)
			if err != nil {
				if !errors.Is(err, ErrTooLarge) {
					t.Fatalf("render error %v", err)
				}
				continue
			}
			if err := check(out); err != nil {
				t.Fatalf("%v\nbody: %q\nout:  %q", err, body, out)
			}
		}
	})
}

func FuzzValue(f *testing.F) {
	for _, s := range []string{`$(a)`, `{'apns-' + $(a)}`, `#(p)`, `.(a:{x},3)`, `%(a)`, `10`, `$body`, `{'a''b' + "c"}`} {
		f.Add(s, "x\r\ny\x00\xff")
	}
	f.Fuzz(func(t *testing.T, s, vals string) {
		v, err := CompileValue(s)
		if err != nil {
			return
		}
		out, err := v.Render(nil, fuzzProps(v.Properties(), vals))
		if err != nil {
			if !errors.Is(err, ErrTooLarge) {
				t.Fatal(err)
			}
			return
		}
		if !isSigil(s) {
			if string(out) != s {
				t.Fatalf("literal %q rendered as %q", s, out)
			}
			return
		}
		for _, c := range out {
			if c < 0x20 && c != '\t' || c == 0x7f {
				t.Fatalf("control character %#x in header value %q", c, out)
			}
		}
	})
}

func FuzzParseProps(f *testing.F) {
	for _, s := range []string{`{"a":"b","C":1,"d":true,"e":null}`, `{"a":{"b":1}}`, `[]`, `{"a":"\ud800"}`, `{"A":"1","a":"2"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseProps(b)
		var generic map[string]any
		gerr := json.Unmarshal(b, &generic)
		flat := gerr == nil && generic != nil
		for _, v := range generic {
			switch v.(type) {
			case map[string]any, []any:
				flat = false
			}
		}
		if err != nil {
			var te *Error
			if !errors.As(err, &te) {
				t.Fatalf("untyped error %T: %v", err, err)
			}
			if flat {
				t.Fatalf("ParseProps rejected %q (%v), which encoding/json decodes as a flat object", b, err)
			}
			return
		}
		if !flat {
			t.Fatalf("ParseProps accepted %q, which is not a flat JSON object", b)
		}
		for k := range m {
			if Fold(k) != k {
				t.Fatalf("key %q not folded", k)
			}
		}
	})
}
