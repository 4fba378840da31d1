package tag

import (
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	cases := []struct {
		in     string
		ok     bool
		offset int
	}{
		{"sports", true, 0},
		{"userId:alice", true, 0},
		{"a_b@c#d.e:f-g", true, 0},
		{strings.Repeat("x", MaxLen), true, 0},
		{strings.Repeat("x", MaxLen+1), false, -1},
		{"", false, -1},
		{"a b", false, 1},
		{"a,b", false, 1},
		{"émoji", false, 0},
		{"a=b", false, 1},
		{"$InstallationId:{abc-123}", true, 0},
		{"$installationid:{abc}", true, 0},
		{"$UserId:{a=b@c.d}", true, 0},
		{"$UserId:{}", false, 9},
		{"$UserId:{a b}", false, 10},
		{"$UserId:abc", false, 0},
		{"$UserId:{abc", false, 12},
		{"$UserId:{abc}x", false, 13},
		{"$Other:{x}", false, 0},
		{"$UserId:{" + strings.Repeat("u", MaxSystemValueLen) + "}", true, 0},
		{"$UserId:{" + strings.Repeat("u", MaxSystemValueLen+1) + "}", false, -1},
	}
	for _, c := range cases {
		err := Validate(c.in)
		if c.ok {
			if err != nil {
				t.Errorf("%q: unexpected %v", c.in, err)
			}
			continue
		}
		se, isSyntax := err.(*SyntaxError)
		if !isSyntax {
			t.Errorf("%q: want *SyntaxError, got %v", c.in, err)
			continue
		}
		if se.Offset != c.offset {
			t.Errorf("%q: offset %d, want %d (%v)", c.in, se.Offset, c.offset, err)
		}
	}
}

func TestSystemTags(t *testing.T) {
	k, v, err := ParseSystem(ForUser("alice"))
	if err != nil || k != UserID || v != "alice" {
		t.Fatalf("%v %q %v", k, v, err)
	}
	k, v, err = ParseSystem(ForInstallation("i-1"))
	if err != nil || k != InstallationID || v != "i-1" {
		t.Fatalf("%v %q %v", k, v, err)
	}
	if !IsSystem("$x") || IsSystem("x$") || IsSystem("") {
		t.Fatal("IsSystem")
	}
}

func TestFoldAndSet(t *testing.T) {
	if Fold("News:AB") != "news:ab" || Fold("abc") != "abc" || !Equal("NEWS", "news") {
		t.Fatal("fold")
	}
	s := NewSet("News", "news", "Sports", "$UserId:{Bob}")
	if s.Len() != 3 || !s.Has("news") || !s.Has("$userid:{bob}") || s.Has("News") || s.Has("other") {
		t.Fatalf("set %v", s.Folded())
	}
	var many []string
	for i := 0; i < 40; i++ {
		many = append(many, strings.Repeat("t", i+1))
	}
	big := NewSet(many...)
	for _, m := range many {
		if !big.Has(m) {
			t.Fatalf("large set lost %q", m)
		}
	}
	if big.Has("x") || (&Set{}).Has("a") {
		t.Fatal("phantom member")
	}
}

func FuzzValidate(f *testing.F) {
	for _, s := range []string{"a", "$UserId:{x}", "$InstallationId:{a=b}", "a b", "$", "${}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := Validate(s)
		if err == nil {
			// A valid tag is made only of its alphabet, and is its own
			// identity once folded.
			if strings.ContainsAny(s, " \t\r\n,()!&|") {
				t.Fatalf("%q accepted", s)
			}
			if Validate(Fold(s)) != nil || !Equal(s, Fold(s)) {
				t.Fatalf("%q: folding breaks validity", s)
			}
			return
		}
		se, ok := err.(*SyntaxError)
		if !ok || se.Offset > len(s) || se.Reason == "" {
			t.Fatalf("%q: bad error %#v", s, err)
		}
	})
}
