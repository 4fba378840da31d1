package memstore

import "testing"

func TestCursorRoundTrip(t *testing.T) {
	for _, c := range []cursor{
		{kind: 'i', rec: instKey("Dev-1")},
		{kind: 'r', rec: instKey("dev-1"), sub: "inst~dev-1~0744eb43"},
		{kind: 'r', rec: regKey("123-234-1"), sub: "123-234-1"},
	} {
		got, err := decodeCursor(c.encode(), c.kind)
		if err != nil || got != c {
			t.Errorf("decode(encode(%+v)) = %+v, %v", c, got, err)
		}
		other := byte('r')
		if c.kind == 'r' {
			other = 'i'
		}
		if _, err := decodeCursor(c.encode(), other); err == nil {
			t.Errorf("a %c cursor was accepted by the other listing", c.kind)
		}
	}
}

// FuzzCursor checks that the cursor decoder never panics, and that what it
// accepts re-encodes to a cursor it reads back the same.
func FuzzCursor(f *testing.F) {
	f.Add(cursor{kind: 'i', rec: instKey("a")}.encode())
	f.Add(cursor{kind: 'r', rec: regKey("1-2-3"), sub: "1-2-3"}.encode())
	f.Add("")
	f.Add("garbage")
	f.Add("bTFpaS8A")
	f.Fuzz(func(t *testing.T, s string) {
		for _, kind := range []byte{'i', 'r'} {
			c, err := decodeCursor(s, kind)
			if err != nil {
				continue
			}
			back, err := decodeCursor(c.encode(), kind)
			if err != nil || back != c {
				t.Fatalf("accepted %q as %+v, which does not round-trip: %+v, %v", s, c, back, err)
			}
		}
	})
}
