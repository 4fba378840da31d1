package redisstore

import (
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/pushgate/pushgate/hubcore/tagexpr"
	"github.com/pushgate/pushgate/hubcore/tagexpr/tagexprtest"
)

// TestEvalWords checks that each of the 64 lanes of evalWords is what eval
// gives for that lane's values, on random expressions with every lane's
// tags drawn from false and unknown (the values the index can give).
func TestEvalWords(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	tags := tagexprtest.Tags(r, 10)
	for i := 0; i < 2000; i++ {
		kx := randomKexpr(t, r, tags)
		f := make([]uint64, len(kx.tags))
		for j := range f {
			f[j] = r.Uint64()
		}
		isFalse, isTrue := kx.root.evalWords(f)
		if isFalse&isTrue != 0 {
			t.Fatalf("lanes both false and true: %x", isFalse&isTrue)
		}
		vals := make([]kval, len(kx.tags))
		for lane := 0; lane < 64; lane++ {
			for j := range vals {
				vals[j] = kUnknown
				if f[j]>>lane&1 == 1 {
					vals[j] = kFalse
				}
			}
			want := kx.eval(vals)
			got := kUnknown
			switch {
			case isFalse>>lane&1 == 1:
				got = kFalse
			case isTrue>>lane&1 == 1:
				got = kTrue
			}
			if got != want {
				t.Fatalf("expression %d, lane %d: evalWords %v, eval %v", i, lane, got, want)
			}
		}
	}
}

// TestTakeWords checks the word-at-a-time scan of a bitmap driver against
// the plain reading of take's rules, candidate by candidate: keep a driver
// member unless an earlier driver has it or the expression is false with
// the absent probes false. Probes are of every tier (absent, bucket field,
// intset, bitmap, shorter bitmaps) and chunks start at nonzero offsets and
// end mid-word.
func TestTakeWords(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	tags := tagexprtest.Tags(r, 8)
	for i := 0; i < 1500; i++ {
		kx := randomKexpr(t, r, tags)
		w := &worker{kx: kx, kv: make([]kval, len(kx.tags))}
		off := r.IntN(4) * 8
		chunk := 1 + r.IntN(40)
		density := []float64{0.02, 0.3, 0.9}[r.IntN(3)]
		sc := &scan{w: w, off: off, dtier: 3, driverKX: -1}
		// The driver is one of the expression's tags or none of them.
		driver := r.IntN(len(kx.tags) + 1)
		ddata := randomBitmap(r, chunk, density)
		for j := range kx.tags {
			if j == driver {
				sc.driverKX = j
				continue
			}
			sc.probes = append(sc.probes, randomProbe(r, off, chunk, j, false))
		}
		if r.IntN(3) == 0 {
			sc.probes = append(sc.probes, randomProbe(r, off, chunk, -1, true))
		}
		sc.takeWords(ddata)

		var want []int64
		for b := 0; b < 8*len(ddata); b++ {
			if ddata[b/8]&(0x80>>(b%8)) == 0 {
				continue
			}
			iid := int64(off*8 + b)
			for j := range w.kv {
				w.kv[j] = kUnknown
			}
			reached := false
			for _, p := range sc.probes {
				var has bool
				switch p.tier {
				case 1, 2:
					has = p.members[iid]
				case 3:
					has = b/8 < len(p.data) && p.data[b/8]&(0x80>>(b%8)) != 0
				}
				reached = reached || has && p.earlier
				if !has && p.kxIndex >= 0 {
					w.kv[p.kxIndex] = kFalse
				}
			}
			if !reached && kx.eval(w.kv) != kFalse {
				want = append(want, iid)
			}
		}
		if !slices.Equal(sc.cands, want) {
			t.Fatalf("case %d (%d tags, chunk %d at %d): takeWords %v, want %v", i, len(kx.tags), chunk, off, sc.cands, want)
		}
	}
}

func randomKexpr(t *testing.T, r *rand.Rand, tags []string) *kexpr {
	_, kx := randomExpr(t, r, tags)
	return kx
}

// randomExpr is a random expression of depth at most 4 over tags, parsed
// and rebuilt for three-valued evaluation.
func randomExpr(t *testing.T, r *rand.Rand, tags []string) (*tagexpr.Expr, *kexpr) {
	t.Helper()
	src := tagexprtest.RandomExpr(r, tags, 4)
	e, err := tagexpr.Parse(src, tagexpr.Limits{MaxDepth: 4})
	if err != nil {
		t.Fatal(err)
	}
	kx, err := newKexpr(e)
	if err != nil {
		t.Fatalf("%q: %v", e.String(), err)
	}
	return e, kx
}

func randomBitmap(r *rand.Rand, n int, density float64) string {
	b := make([]byte, n)
	for i := range b {
		for k := 0; k < 8; k++ {
			if r.Float64() < density {
				b[i] |= 0x80 >> k
			}
		}
	}
	return string(b)
}

// randomProbe is a probe of a random tier whose members fall in, and
// around, the chunk of n bytes at byte offset off.
func randomProbe(r *rand.Rand, off, n, kxIndex int, earlier bool) *probe {
	p := &probe{kxIndex: kxIndex, earlier: earlier, tier: r.IntN(4)}
	switch p.tier {
	case 1, 2:
		p.members = map[int64]bool{}
		for k := r.IntN(64); k > 0; k-- {
			p.members[int64(r.IntN(8*(off+n+2)))] = true
		}
		var packed []byte
		for m := range p.members {
			packed = binary.BigEndian.AppendUint32(packed, uint32(m))
		}
		p.data = string(packed)
	case 3:
		p.data = randomBitmap(r, r.IntN(n+1), 0.5) // a bitmap may end before the chunk does
	}
	return p
}
