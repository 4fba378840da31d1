package redisstore

import (
	"encoding/binary"
	"encoding/hex"
	"strconv"

	"github.com/cespare/xxhash/v2"
)

// recordsPerBucket is how many records share one record hash (a listpack:
// well under hash-max-listpack-entries). Reading one record scans its
// bucket, so buckets are kept small: at 16 records (~3.5 KB) a lookup costs
// half of what it does at 32 and an eighth of 128, for ~4 bytes more key
// overhead per record than at 32. Selective audiences read one record per
// target, so this is what they pay for most.
const recordsPerBucket = 16

// Tier thresholds of the tag index (per shard). A tag moves up when its
// count passes the upper bound and down, with hysteresis, at the lower one.
const (
	tier1Max = 16  // packed in a bucket hash while at most 16 members (64-byte value)
	tier1Min = 8   // back from a set to the bucket at 8
	tier2Max = 512 // an intset (set-max-intset-entries) while at most 512
	tier2Min = 128 // back from the bitmap to a set at 128
)

// Key name parts. Every key of shard s of hub h starts with the hash tag
// {pg:h:s}, so that one shard's keys share a cluster slot and the write
// scripts may touch them all.
const (
	kMeta     = ":m"  // HASH n (records), nx (next iid)
	kRec      = ":r:" // HASH bucket of records: slot -> record
	kSpill    = ":R:" // STRING a record too large for a bucket
	kUniverse = ":u"  // STRING bitmap of live iids
	kIDMap    = ":i:" // HASH bucket: 6-byte id hash -> iid list
	kHandle   = ":h:" // HASH bucket: 6-byte handle hash -> iid list
	kSmall    = ":s:" // HASH bucket: 6-byte tag hash -> packed iids (tier 1)
	kSet      = ":t:" // SET (intset) of iids (tier 2), by tag hash in hex
	kBitmap   = ":b:" // STRING bitmap of iids (tier 3), by tag hash in hex
	kDir      = ":c"  // HASH 8-byte tag hash -> count, for tier 2 and 3 tags
	kExpiry   = ":x"  // HASH record bucket -> earliest expiration (unix ms)
	kTplRefs  = ":tr" // HASH 8-byte template hash -> reference count
	kTpl      = ":tp" // HASH 8-byte template hash -> template content
	kFree     = ":f"  // LIST iids freed by deletes, for reuse
	kRegIDs   = ":g"  // HASH registration id -> issued or gone marker
)

// layout computes key names and hashes. It is fixed at hub creation.
type layout struct {
	hub     string
	shards  int
	buckets int
	prefix  []string // per shard: "{pg:<hub>:<s>}"
}

func newLayout(hub string, shards, buckets int) *layout {
	l := &layout{hub: hub, shards: shards, buckets: buckets}
	for s := 0; s < shards; s++ {
		l.prefix = append(l.prefix, "{pg:"+hub+":"+strconv.Itoa(s)+"}")
	}
	return l
}

// configKey is the hub's configuration (shard and bucket counts); it lives
// in its own slot, read only when a store opens.
func configKey(hub string) string { return "{pg:" + hub + "}:cfg" }

func (l *layout) meta(s int) string     { return l.prefix[s] + kMeta }
func (l *layout) universe(s int) string { return l.prefix[s] + kUniverse }
func (l *layout) dir(s int) string      { return l.prefix[s] + kDir }
func (l *layout) expiry(s int) string   { return l.prefix[s] + kExpiry }
func (l *layout) tplRefs(s int) string  { return l.prefix[s] + kTplRefs }
func (l *layout) tpl(s int) string      { return l.prefix[s] + kTpl }
func (l *layout) free(s int) string     { return l.prefix[s] + kFree }
func (l *layout) regIDs(s int) string   { return l.prefix[s] + kRegIDs }

// recBucket is built in one allocation: a selective send names one bucket
// per target.
func (l *layout) recBucket(s int, b int64) string {
	var buf [40]byte
	k := append(append(buf[:0], l.prefix[s]...), kRec...)
	return string(strconv.AppendInt(k, b, 10))
}

func (l *layout) spill(s int, iid int64) string {
	return l.prefix[s] + kSpill + strconv.FormatInt(iid, 10)
}

func (l *layout) idBucket(s, b int) string     { return l.prefix[s] + kIDMap + strconv.Itoa(b) }
func (l *layout) handleBucket(s, b int) string { return l.prefix[s] + kHandle + strconv.Itoa(b) }
func (l *layout) smallBucket(s, b int) string  { return l.prefix[s] + kSmall + strconv.Itoa(b) }

func (l *layout) set(s int, th uint64) string    { return l.prefix[s] + kSet + hex16(th) }
func (l *layout) bitmap(s int, th uint64) string { return l.prefix[s] + kBitmap + hex16(th) }

func hex16(h uint64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], h)
	return hex.EncodeToString(b[:])
}

// slotOf and bucketOf place an iid in its record bucket.
func slotOf(iid int64) byte    { return byte(iid % recordsPerBucket) }
func bucketOf(iid int64) int64 { return iid / recordsPerBucket }

// hashed is a 64-bit hash of an id, handle or tag, split into the parts the
// layout uses: the low 48 bits are the field in a bucket hash, the high 16
// pick the bucket; the shard of an id is the hash modulo the shard count.
type hashed uint64

func hashOf(kind byte, s string) hashed {
	var d xxhash.Digest
	d.Reset()
	_, _ = d.Write([]byte{kind})
	_, _ = d.WriteString(s)
	return hashed(d.Sum64())
}

// Hash kinds keep the id spaces apart.
const (
	hInstallation = 'i'
	hRegistration = 'r'
	hHandle       = 'h'
	hTag          = 't'
)

func (h hashed) field() string {
	var b [6]byte
	v := uint64(h)
	for i := 5; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
	return string(b[:])
}

func (h hashed) full() string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(h))
	return string(b[:])
}

func (h hashed) bucket(n int) int { return int((uint64(h) >> 48) % uint64(n)) }
func (h hashed) shard(n int) int  { return int(uint64(h) % uint64(n)) }

// tagKeys are the three places a tag's index entries may be in one shard.
type tagKeys struct {
	small, set, bitmap string
	f6, f8             string
}

func (l *layout) tagKeys(s int, folded string) tagKeys {
	h := hashOf(hTag, folded)
	return tagKeys{
		small:  l.smallBucket(s, h.bucket(l.buckets)),
		set:    l.set(s, uint64(h)),
		bitmap: l.bitmap(s, uint64(h)),
		f6:     h.field(),
		f8:     h.full(),
	}
}
