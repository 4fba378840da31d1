package redisstore

import "testing"

// TestLocCacheTwoWay: two ids of one set are both kept; a third replaces
// the one used less recently; a dropped id is forgotten alone.
func TestLocCacheTwoWay(t *testing.T) {
	var c locCache
	const stride = locStripes * locSetsStripe // hashes this far apart share a set
	a, b, d := hashed(5), hashed(5+stride), hashed(5+2*stride)
	if _, s1 := c.set(a); func() bool { _, s2 := c.set(b); _, s3 := c.set(d); return s1 != s2 || s2 != s3 }() {
		t.Fatal("the test's hashes do not share a set")
	}
	c.putSnap(a, "a", "va", 1, "ra")
	c.put(b, "vb")
	if v, ok := c.get(a); !ok || v != "va" {
		t.Fatalf("a: %q %v; both ids of a set must be kept", v, ok)
	}
	if v, ok := c.get(b); !ok || v != "vb" {
		t.Fatalf("b: %q %v", v, ok)
	}
	// a was used before b: d replaces a.
	c.put(d, "vd")
	if _, ok := c.get(a); ok {
		t.Fatal("a, the entry used less recently, was kept over b")
	}
	if v, ok := c.get(b); !ok || v != "vb" {
		t.Fatalf("b after d came: %q %v", v, ok)
	}
	// Now d is the one used less recently; a new value of b stays in b's entry.
	c.putSnap(b, "b", "vb2", 7, "rb")
	if v, iid, raw, ok := c.snap(b, "b"); !ok || v != "vb2" || iid != 7 || raw != "rb" {
		t.Fatalf("b's snapshot: %q %d %q %v", v, iid, raw, ok)
	}
	if _, _, _, ok := c.snap(b, "other key"); ok {
		t.Fatal("a snapshot answered for another key with the same hash")
	}
	if v, ok := c.get(d); !ok || v != "vd" {
		t.Fatalf("d after b's update: %q %v", v, ok)
	}
	c.drop(d)
	if _, ok := c.get(d); ok {
		t.Fatal("d survived its drop")
	}
	if _, ok := c.get(b); !ok {
		t.Fatal("dropping d dropped b")
	}
}
