package template

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func mustCompile(t testing.TB, body string, kind BodyKind) *Template {
	t.Helper()
	tp, err := Compile(body, kind)
	if err != nil {
		t.Fatalf("Compile(%q): %v", body, err)
	}
	return tp
}

func render(t testing.TB, tp *Template, p Props) string {
	t.Helper()
	out, err := tp.Render(nil, p)
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	return string(out)
}

// The worked example of the reference, §7.3.
func TestWorkedExample(t *testing.T) {
	tp := mustCompile(t, `{"aps":{"alert":"{'Order ' + $(orderId) + ' shipped'}","badge":"#(unread)"},"deepLink":"%(url)"}`, JSON)
	p, err := ParseProps([]byte(`{"orderId":"1042","unread":"3","url":"app://orders/1042?x=1"}`))
	if err != nil {
		t.Fatal(err)
	}
	got := render(t, tp, p)
	want := `{"aps":{"alert":"Order 1042 shipped","badge":3},"deepLink":"app%3A%2F%2Forders%2F1042%3Fx%3D1"}`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if props := tp.Properties(); strings.Join(props, ",") != "orderid,unread,url" {
		t.Errorf("Properties() = %v", props)
	}
}

// The documented .(title, 20) example.
func TestEllipsisExample(t *testing.T) {
	tp := mustCompile(t, `{"t":".(title, 20)"}`, JSON)
	got := render(t, tp, PropMap{"title": "This is the title line"})
	if want := `{"t":"This is the title..."}`; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestExpressions(t *testing.T) {
	props := NewPropMap(map[string]string{
		"Name":   "Ada",
		"long":   "abcdefghij",
		"uni":    "héllo wörld",
		"num":    "40",
		"neg":    "-3",
		"float":  "3.25e+10",
		"lead0":  "007",
		"empty":  "",
		"url":    "a b/c?d=é&e~f",
		"quote":  `say "hi" \ now`,
		"ctl":    "a\nb\tc\x01d",
		"BadUTF": "ok\xffok",
	})
	tests := []struct {
		name, value, want string
	}{
		{"dollar", `$(name)`, `"Ada"`},
		{"case-insensitive", `$(NAME)`, `"Ada"`},
		{"missing", `$(nope)`, `""`},
		{"spaces", `$( name )`, `"Ada"`},
		{"dollar-trunc", `$(long,3)`, `"abc"`},
		{"dollar-trunc-space", `$(long , 3 )`, `"abc"`},
		{"dollar-trunc-noop", `$(long,10)`, `"abcdefghij"`},
		{"dollar-trunc-zero", `$(long,0)`, `""`},
		{"dollar-trunc-runes", `$(uni,2)`, `"hé"`},
		{"dot-fits", `.(long,10)`, `"abcdefghij"`},
		{"dot-cut", `.(long,9)`, `"abcdef..."`},
		{"dot-cut-3", `.(long,3)`, `"..."`},
		{"dot-cut-2", `.(long,2)`, `".."`},
		{"dot-zero", `.(long,0)`, `""`},
		{"dot-runes", `.(uni,6)`, `"hél..."`},
		{"dot-missing", `.(nope,5)`, `""`},
		{"percent", `%(url)`, `"a%20b%2Fc%3Fd%3D%C3%A9%26e~f"`},
		{"percent-missing", `%(nope)`, `""`},
		{"hash-int", `#(num)`, `40`},
		{"hash-float", `#(float)`, `3.25e+10`},
		{"hash-negative-is-string", `#(neg)`, `"-3"`},
		{"hash-leading-zero-is-string", `#(lead0)`, `"007"`},
		{"hash-text", `#(name)`, `"Ada"`},
		{"hash-missing", `#(nope)`, `""`},
		{"hash-empty", `#(empty)`, `""`},
		{"composite", `{'Hi, ' + $(name) + "!"}`, `"Hi, Ada!"`},
		{"composite-spaces", `{  $(name)+$(name)  }`, `"AdaAda"`},
		{"composite-single", `{$(name)}`, `"Ada"`},
		{"composite-hash-alone", `{#(num)}`, `"40"`},
		{"composite-doubled-quote", `{'it''s ' + "a ""b"""}`, `"it's a \"b\""`},
		{"composite-trunc", `{.(long,5) + '|' + $(long,2)}`, `"ab...|ab"`},
		{"composite-percent", `{'x=' + %(url)}`, `"x=a%20b%2Fc%3Fd%3D%C3%A9%26e~f"`},
		{"default-used", `$(nope:{fallback})`, `"fallback"`},
		{"default-unused", `$(name:{fallback})`, `"Ada"`},
		{"default-not-for-empty", `$(empty:{fallback})`, `""`},
		{"default-escaped-brace", `$(nope:{a\}b\\c})`, `"a}b\\c"`},
		{"default-dot", `.(nope:{a long default},8)`, `"a lon..."`},
		{"default-with-comma-paren", `$(nope:{a,b)c})`, `"a,b)c"`},
		{"default-hash-number", `#(nope:{12})`, `12`},
		{"escape-quote", `$(quote)`, `"say \"hi\" \\ now"`},
		{"escape-control", `$(ctl)`, `"a\nb\tc\u0001d"`},
		{"escape-bad-utf8", `$(badutf)`, "\"ok\uFFFDok\""},
		{"literal-only-composite", `{'a' + "b"}`, `"ab"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := `{"k":` + jsonQuote(tt.value) + `}`
			tp := mustCompile(t, body, JSON)
			got := render(t, tp, props)
			if want := `{"k":` + tt.want + `}`; got != want {
				t.Errorf("%s:\n got %s\nwant %s", tt.value, got, want)
			}
			if !json.Valid([]byte(got)) {
				t.Errorf("invalid JSON %s", got)
			}
		})
	}
}

func jsonQuote(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func TestLiteralsPassThrough(t *testing.T) {
	bodies := []string{
		`{"a":"plain","b":" $(x)","c":"","d":"Hi $(x)","e":1.5e3,"f":[true,false,null,"x"]}`,
		"{\n  \"aps\" : {\"alert\":\"hello\\u0020\\\"w\\\"\"},\t\"z\":\"\\ud83d\\ude00\"\n}\n",
		`"just a string"`,
		`{"$(key)":"keys are never expressions"}`,
	}
	for _, body := range bodies {
		tp := mustCompile(t, body, JSON)
		if !tp.IsLiteral() {
			t.Errorf("%q: IsLiteral() = false", body)
		}
		if got := render(t, tp, PropMap{"x": "X"}); got != body {
			t.Errorf("literal body changed:\n got %q\nwant %q", got, body)
		}
	}
}

func TestPreservesLayout(t *testing.T) {
	body := "{ \"z\" : \"$(a)\" ,\n\t\"a\":[ \"#(n)\" , 2 ] }"
	tp := mustCompile(t, body, JSON)
	got := render(t, tp, PropMap{"a": "x", "n": "5"})
	if want := "{ \"z\" : \"x\" ,\n\t\"a\":[ 5 , 2 ] }"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestJSONEscapedExpressionSource(t *testing.T) {
	// Whether a value is an expression is decided after JSON unescaping.
	tp := mustCompile(t, `{"a":"\u0024(x)","b":"{'say \"' + $(x) + '\"'}"}`, JSON)
	got := render(t, tp, PropMap{"x": "hi"})
	if want := `{"a":"hi","b":"say \"hi\""}`; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name, body string
		kind       BodyKind
		offset     int
		reason     string
	}{
		{"dot-needs-length", `{"title":".(prop)"}`, JSON, 16, `'.(' requires a length argument: .(prop, n)`},
		{"dot-needs-length-offset17", `{"a":"b","t":".(p)"}`, JSON, 17, `'.(' requires a length argument`},
		{"missing-paren-open", `{"a":"$5.00"}`, JSON, 7, `expected '(' after '$'`},
		{"dot-literal-text", `{"a":".NET"}`, JSON, 7, `expected '(' after '.'`},
		{"missing-paren-close", `{"a":"$(x"}`, JSON, 6, `missing ')'`},
		{"empty-name", `{"a":"$()"}`, JSON, 8, `missing property name`},
		{"bad-name-char", `{"a":"$(a-b)"}`, JSON, 9, `invalid character '-' in property name`},
		{"name-too-long", `{"a":"$(` + strings.Repeat("n", 121) + `)"}`, JSON, 8, `property name is 121 characters; the limit is 120`},
		{"name-120-ok-control", `{"a":"$(` + strings.Repeat("n", 120) + `,x)"}`, JSON, 129, `length argument must be a non-negative integer`},
		{"negative-length", `{"a":"$(a,-1)"}`, JSON, 10, `non-negative integer`},
		{"percent-length", `{"a":"%(a,3)"}`, JSON, 9, `'%(' takes no length argument`},
		{"hash-length", `{"a":"#(a,3)"}`, JSON, 9, `'#(' takes no length argument`},
		{"hash-in-composite", `{"a":"{#(a) + 'x'}"}`, JSON, 17, `'#(' is not allowed in a composite`},
		{"plus-without-braces", `{"a":"$(a) + $(b)"}`, JSON, 11, `'+' may only be used inside braces`},
		{"trailing-text", `{"a":"$(a) tail"}`, JSON, 11, `unexpected 't' after the expression`},
		{"body-reserved", `{"a":"$body"}`, JSON, 6, `'$body' is reserved`},
		{"body-reserved-in-composite", `{"a":"{'x' + $BODY}"}`, JSON, 13, `'$body' is reserved`},
		{"unterminated-composite", `{"a":"{$(a) + $(b)"}`, JSON, 6, `missing '}'`},
		{"empty-composite", `{"a":"{ }"}`, JSON, 8, `empty composite`},
		{"dangling-plus", `{"a":"{$(a) + }"}`, JSON, 14, `expected a term after '+'`},
		{"bad-composite-sep", `{"a":"{$(a) $(b)}"}`, JSON, 12, `expected '+' or '}'`},
		{"after-composite", `{"a":"{$(a)} x"}`, JSON, 13, `after the closing '}'`},
		{"unterminated-literal", `{"a":"{'abc}"}`, JSON, 7, `unterminated quoted literal`},
		{"unterminated-default", `{"a":"$(a:{xx)"}`, JSON, 10, `unterminated default value`},
		{"default-needs-brace", `{"a":"$(a:x)"}`, JSON, 10, `expected '{' after ':'`},
		{"nested-composite", `{"a":"{{$(a)}}"}`, JSON, 7, `cannot be nested`},
		{"escaped-source-offset", `{"a":"\u0024(a-b)"}`, JSON, 14, `invalid character '-'`},
		{"json-syntax", `{"a":"x",}`, JSON, 9, `invalid JSON: invalid character '}' looking for an object key`},
		{"json-trailing", `{} {}`, JSON, 3, `invalid JSON: invalid character '{' after the top-level JSON value`},
		{"json-eof", `{"a":`, JSON, 5, `unexpected end of input`},
		{"json-ctl", "{\"a\":\"x\ny\"}", JSON, 7, `control character`},
		{"json-bad-utf8", "{\"a\":\"x\xffy\"}", JSON, 7, `invalid UTF-8`},
		{"json-bad-escape", `{"a":"\x"}`, JSON, 6, `invalid escape`},
		{"json-bad-number", `{"a":01}`, JSON, 6, `expected ',' or '}' in object, found '1'`},
		{"json-bad-number-frac", `{"a":1.}`, JSON, 7, `expected a digit after '.'`},
		{"xml-mismatch", `<toast><visual></toast>`, XML, 17, `end tag </toast> does not match <visual>`},
		{"xml-unclosed", `<toast>`, XML, 0, `element <toast> is not closed`},
		{"xml-two-roots", `<a/><b/>`, XML, 4, `only one root element`},
		{"xml-doctype", `<!DOCTYPE x><a/>`, XML, 0, `DOCTYPE is not allowed`},
		{"xml-entity", `<a>&nbsp;</a>`, XML, 3, `undefined entity &nbsp;`},
		{"xml-bare-amp", `<a>a & b</a>`, XML, 5, `'&' must start a reference`},
		{"xml-lt-in-attr", `<a b="<"/>`, XML, 6, `'<' is not allowed in an attribute value`},
		{"xml-dup-attr", `<a b="1" b="2"/>`, XML, 9, `attribute b repeated`},
		{"xml-expr-in-name", `<binding $(x)>`, XML, 9, `invalid character '$' at the start of a name`},
		{"xml-expr-error", `<a><b c=".(x)"/></a>`, XML, 12, `'.(' requires a length argument`},
		{"xml-expr-error-text", `<a> $(x-y) </a>`, XML, 7, `invalid character '-'`},
		{"xml-expr-error-ref", `<a b="&#x24;(x-y)"/>`, XML, 14, `invalid character '-'`},
		{"xml-encoding", `<?xml version="1.0" encoding="utf-16"?><a/>`, XML, 20, `encoding "utf-16" is not supported`},
		{"xml-text-outside", `<a/>x`, XML, 4, `text is not allowed outside the root element`},
		{"xml-cdata-end-in-text", `<a>x]]>y</a>`, XML, 4, `']]>' is not allowed in text`},
		{"xml-ctl", "<a>\x01</a>", XML, 3, `control character`},
		{"raw-expr", `$(a`, Raw, 0, `missing ')'`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(tt.body, tt.kind)
			var te *Error
			if !errors.As(err, &te) {
				t.Fatalf("Compile(%q) error = %v, want *Error", tt.body, err)
			}
			if te.Offset != tt.offset || !strings.Contains(te.Reason, tt.reason) {
				t.Errorf("Compile(%q):\n got offset %d %q\nwant offset %d containing %q", tt.body, te.Offset, te.Reason, tt.offset, tt.reason)
			}
			if !strings.HasPrefix(err.Error(), "template: at offset ") {
				t.Errorf("Error() = %q", err.Error())
			}
		})
	}
}

func TestErrorMessage(t *testing.T) {
	_, err := Compile(`{"a":"b","t":".(p)"}`, JSON)
	if got, want := err.Error(), `template: at offset 17: '.(' requires a length argument: .(prop, n)`; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

const toast = `<?xml version="1.0" encoding="utf-8"?>
<toast launch="$(launch)">
  <visual>
    <binding template="ToastGeneric">
      <text id="1">
        $(title)
      </text>
      <text id="2">{'From ' + $(sender) + ': ' + .(msg,20)}</text>
      <image src="https://example.com/i.png?q=%(q)" placement='{"appLogoOverride"}'/>
    </binding>
  </visual>
  <!-- comment with $(notAnExpression) -->
</toast>`

func TestXML(t *testing.T) {
	tp := mustCompile(t, toast, XML)
	p := PropMap{
		"launch": `a"b'c<d>&e`,
		"title":  "Tom & Jerry\r",
		"sender": "<script>",
		"msg":    "this message is longer than twenty",
		"q":      "x y",
	}
	got := render(t, tp, p)
	want := `<?xml version="1.0" encoding="utf-8"?>
<toast launch="a&quot;b&apos;c&lt;d&gt;&amp;e">
  <visual>
    <binding template="ToastGeneric">
      <text id="1">
        Tom &amp; Jerry&#xD;
      </text>
      <text id="2">From &lt;script&gt;: this message is l...</text>
      <image src="https://example.com/i.png?q=%(q)" placement='appLogoOverride'/>
    </binding>
  </visual>
  <!-- comment with $(notAnExpression) -->
</toast>`
	if got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	if err := checkXML([]byte(got)); err != nil {
		t.Fatal(err)
	}
}

func TestXMLForms(t *testing.T) {
	p := PropMap{"x": "v<&>", "n": "7", "nl": "a\tb\nc"}
	tests := []struct{ body, want string }{
		{`<a b="$(x)"/>`, `<a b="v&lt;&amp;&gt;"/>`},
		{`<a b='$(x)'/>`, `<a b='v&lt;&amp;&gt;'/>`},
		{`<a b="$(nl)">$(nl)</a>`, "<a b=\"a&#x9;b&#xA;c\">a\tb\nc</a>"},
		{`<badge value="#(n)"/>`, `<badge value="7"/>`},
		{`<a>&#x24;(x)</a>`, `<a>v&lt;&amp;&gt;</a>`},
		{`<a> <![CDATA[$(x)]]> </a>`, `<a> v&lt;&amp;&gt; </a>`},
		{`<a><![CDATA[ $(x) ]]></a>`, `<a> v&lt;&amp;&gt; </a>`},
		{`<a><![CDATA[<b>$(x)</b>]]></a>`, `<a><![CDATA[<b>$(x)</b>]]></a>`},
		{`<a>text $(x)</a>`, `<a>text $(x)</a>`},
		{`<a>$(x)<b/>$(n)</a>`, `<a>v&lt;&amp;&gt;<b/>7</a>`},
		{`<a>$(x)<!-- c -->$(n)</a>`, `<a>v&lt;&amp;&gt;<!-- c -->7</a>`},
		{"\uFEFF<a>$(n)</a>", "\uFEFF<a>7</a>"},
		{`<?xml version='1.0'?><?pi data?><a/>`, `<?xml version='1.0'?><?pi data?><a/>`},
	}
	for _, tt := range tests {
		tp := mustCompile(t, tt.body, XML)
		if got := render(t, tp, p); got != tt.want {
			t.Errorf("%s:\n got %s\nwant %s", tt.body, got, tt.want)
		} else if err := checkXML([]byte(got)); err != nil {
			t.Errorf("%s: %v", got, err)
		}
	}
}

func TestRaw(t *testing.T) {
	p := PropMap{"x": "a\"<b>\n"}
	tests := []struct{ body, want string }{
		{`$(x)`, "a\"<b>\n"},
		{`{'raw: ' + $(x)}`, "raw: a\"<b>\n"},
		{`not $(x) an expression`, `not $(x) an expression`},
		{"\xff\x00 opaque", "\xff\x00 opaque"},
		{``, ``},
	}
	for _, tt := range tests {
		tp := mustCompile(t, tt.body, Raw)
		if got := render(t, tp, p); got != tt.want {
			t.Errorf("%q: got %q, want %q", tt.body, got, tt.want)
		}
	}
}

func TestValue(t *testing.T) {
	p := PropMap{"type": "alert", "prio": "10", "evil": "x\r\nX-Injected: 1", "when": "2024-05-01T12:00:00Z"}
	tests := []struct{ src, want string }{
		{`alert`, `alert`},
		{`$(type)`, `alert`},
		{`#(prio)`, `10`},
		{`{'apns-' + $(type)}`, `apns-alert`},
		{`$(evil)`, `x  X-Injected: 1`},
		{`%(when)`, `2024-05-01T12%3A00%3A00Z`},
		{`$(missing:{background})`, `background`},
		{` $(type)`, ` $(type)`},
	}
	for _, tt := range tests {
		v, err := CompileValue(tt.src)
		if err != nil {
			t.Fatalf("CompileValue(%q): %v", tt.src, err)
		}
		got, err := v.String(p)
		if err != nil || got != tt.want {
			t.Errorf("%q: got %q, %v; want %q", tt.src, got, err, tt.want)
		}
		if v.IsLiteral() != !isSigil(tt.src) {
			t.Errorf("%q: IsLiteral() = %v", tt.src, v.IsLiteral())
		}
	}
	if _, err := CompileValue(`$(a`); err == nil {
		t.Error("CompileValue accepted a broken expression")
	}
	v, _ := CompileValue(`{$(A) + $(b) + $(a)}`)
	if got := strings.Join(v.Properties(), ","); got != "a,b" {
		t.Errorf("Properties() = %s", got)
	}
}

func TestIsLiteralAndConstantFolding(t *testing.T) {
	tp := mustCompile(t, `{"a":"{'x' + 'y'}","b":"lit"}`, JSON)
	if !tp.IsLiteral() {
		t.Error("template of constant expressions should be literal")
	}
	if got := render(t, tp, nil); got != `{"a":"xy","b":"lit"}` {
		t.Errorf("got %s", got)
	}
	tp = mustCompile(t, `{"a":"$(x)"}`, JSON)
	if tp.IsLiteral() {
		t.Error("IsLiteral() = true for a template with a property")
	}
	if got := render(t, tp, nil); got != `{"a":""}` {
		t.Errorf("nil props: got %s", got)
	}
}

func TestRenderAppends(t *testing.T) {
	tp := mustCompile(t, `{"a":"$(x)"}`, JSON)
	dst := []byte("prefix:")
	out, err := tp.Render(dst, PropMap{"x": "1"})
	if err != nil || string(out) != `prefix:{"a":"1"}` {
		t.Fatalf("got %q, %v", out, err)
	}
}

func TestLimits(t *testing.T) {
	t.Run("body", func(t *testing.T) {
		_, err := Compile(`"`+strings.Repeat("x", DefaultMaxBody)+`"`, JSON)
		var le *LimitError
		if !errors.As(err, &le) || le.What != "body" || !errors.Is(err, ErrTooLarge) {
			t.Fatalf("err = %v", err)
		}
		if _, err := (Limits{MaxBody: 10}).Compile(`{"a":"bcd"}`, JSON); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("custom MaxBody: err = %v", err)
		}
	})
	t.Run("expressions", func(t *testing.T) {
		many := func(n int) string {
			var b strings.Builder
			b.WriteString("[")
			for i := 0; i < n; i++ {
				if i > 0 {
					b.WriteString(",")
				}
				b.WriteString(`"$(a)"`)
			}
			b.WriteString("]")
			return b.String()
		}
		if _, err := Compile(many(DefaultMaxExpressions), JSON); err != nil {
			t.Fatalf("at the limit: %v", err)
		}
		_, err := Compile(many(DefaultMaxExpressions+1), JSON)
		var le *LimitError
		if !errors.As(err, &le) || le.What != "expressions" {
			t.Fatalf("over the limit: err = %v", err)
		}
		comp := `{"a":"{` + strings.Repeat("$(a)+", 5) + `$(a)}"}`
		if _, err := (Limits{MaxExpressions: 5}).Compile(comp, JSON); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("composite terms count: err = %v", err)
		}
	})
	t.Run("output-bomb", func(t *testing.T) {
		// A thousand references to a 60 KB property must fail fast
		// instead of producing 60 MB.
		var b strings.Builder
		b.WriteString("[")
		for i := 0; i < 1000; i++ {
			if i > 0 {
				b.WriteString(",")
			}
			b.WriteString(`"$(big)"`)
		}
		b.WriteString("]")
		tp := mustCompile(t, b.String(), JSON)
		p := PropMap{"big": strings.Repeat("x", 60<<10)}
		out, err := tp.Render(make([]byte, 0, 16), p)
		var le *LimitError
		if !errors.As(err, &le) || le.What != "output" || le.Limit != DefaultMaxOutput || !errors.Is(err, ErrTooLarge) {
			t.Fatalf("err = %v", err)
		}
		if len(out) != 0 {
			t.Errorf("output on error has %d bytes, want dst unchanged", len(out))
		}
		if cap(out) > 2*DefaultMaxOutput {
			t.Errorf("buffer grew to %d bytes", cap(out))
		}
	})
	t.Run("output-exact", func(t *testing.T) {
		tp, err := (Limits{MaxOutput: 10}).Compile(`"$(x)"`, JSON)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tp.Render(nil, PropMap{"x": "12345678"}); err != nil {
			t.Errorf("10 bytes: %v", err)
		}
		if _, err := tp.Render(nil, PropMap{"x": "123456789"}); !errors.Is(err, ErrTooLarge) {
			t.Errorf("11 bytes: err = %v", err)
		}
		if _, err := tp.Render(nil, PropMap{"x": "1234567\n"}); !errors.Is(err, ErrTooLarge) {
			t.Errorf("escaping growth past the limit: err = %v", err)
		}
		if tp.MaxOutput() != 10 {
			t.Errorf("MaxOutput() = %d", tp.MaxOutput())
		}
	})
	t.Run("literal-output", func(t *testing.T) {
		tp, err := (Limits{MaxOutput: 4}).Compile(`"abcdef"`, JSON)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tp.Render(nil, nil); !errors.Is(err, ErrTooLarge) {
			t.Errorf("err = %v", err)
		}
	})
}

func TestParseProps(t *testing.T) {
	m, err := ParseProps([]byte(`{"Title":"Hi","n":3,"f":1.5e2,"b":true,"c":false,"gone":null,"TITLE2":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	want := PropMap{"title": "Hi", "n": "3", "f": "1.5e2", "b": "true", "c": "false", "title2": "x"}
	if len(m) != len(want) {
		t.Fatalf("got %v, want %v", m, want)
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %q, want %q", k, m[k], v)
		}
	}
	if _, ok := m.Lookup("gone"); ok {
		t.Error("null should mean absent")
	}
	m, err = ParseProps([]byte(`{"a":"1","A":"2"}`))
	if err != nil || m["a"] != "2" {
		t.Errorf("last duplicate should win: %v %v", m, err)
	}
	bad := []struct{ body, reason string }{
		{`{"a":{"b":"c"}}`, `property "a" is an object; template properties must be strings`},
		{`{"a":["x"]}`, `property "a" is an array`},
		{`["a"]`, `must be a JSON object`},
		{`"a"`, `must be a JSON object`},
		{`{"a":"b"`, `unexpected end of JSON input`},
		{`{"a":"b"} x`, `template properties:`},
		{`{"a":}`, `template properties:`},
		{``, `unexpected end of JSON input`},
	}
	for _, tt := range bad {
		_, err := ParseProps([]byte(tt.body))
		var te *Error
		if !errors.As(err, &te) || !strings.Contains(te.Reason, tt.reason) {
			t.Errorf("ParseProps(%q) = %v, want reason containing %q", tt.body, err, tt.reason)
		}
	}
}

func TestOverlay(t *testing.T) {
	tp := mustCompile(t, `{"a":"$(city)","b":"$(name)","c":"$(only)"}`, JSON)
	msg := PropMap{"city": "Oslo"}
	ov := &Overlay{Over: msg}
	for _, dev := range []struct {
		vars PropMap
		want string
	}{
		{NewPropMap(map[string]string{"City": "Bergen", "Name": "Kari"}), `{"a":"Oslo","b":"Kari","c":""}`},
		{NewPropMap(map[string]string{"only": "dev"}), `{"a":"Oslo","b":"","c":"dev"}`},
		{nil, `{"a":"Oslo","b":"","c":""}`},
	} {
		ov.Under = dev.vars
		if dev.vars == nil {
			ov.Under = nil
		}
		if got := render(t, tp, ov); got != dev.want {
			t.Errorf("got %s, want %s", got, dev.want)
		}
	}
	if _, ok := (&Overlay{}).Lookup("x"); ok {
		t.Error("empty overlay found a property")
	}
}

func TestFold(t *testing.T) {
	if Fold("AbC_9") != "abc_9" || Fold("abc") != "abc" {
		t.Error("Fold")
	}
}

func TestBodyKindString(t *testing.T) {
	if JSON.String() != "JSON" || XML.String() != "XML" || Raw.String() != "raw" || BodyKind(9).String() != "BodyKind(9)" {
		t.Error("BodyKind.String")
	}
	if _, err := Compile("{}", BodyKind(9)); err == nil {
		t.Error("unknown kind accepted")
	}
}

func TestConcurrentRender(t *testing.T) {
	tp := mustCompile(t, `{"a":"{$(x) + '-' + .(y,4)}"}`, JSON)
	done := make(chan struct{})
	for g := 0; g < 4; g++ {
		go func() {
			defer func() { done <- struct{}{} }()
			var buf []byte
			for i := 0; i < 200; i++ {
				var err error
				buf, err = tp.Render(buf[:0], PropMap{"x": "1", "y": "abcdef"})
				if err != nil || string(buf) != `{"a":"1-a..."}` {
					t.Errorf("got %s %v", buf, err)
					return
				}
			}
		}()
	}
	for g := 0; g < 4; g++ {
		<-done
	}
}
