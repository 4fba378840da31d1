package redisstore

import (
	"encoding/binary"
	"errors"
	"sort"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/tag"
)

// The record encoding. One record is one installation or one stored
// registration, packed so that a million of them fit the memory budget:
//
//	format   byte     recordFormat
//	slot     byte     iid % recordsPerBucket, so that a bucket's values
//	                  can be read without their fields (HVALS)
//	version  uvarint
//	flags    byte     flagRegistration | flagExpired
//	platform byte     index in hubcore.Platforms, plus one
//	id       packed id (see putID)
//	times    3 × time (LastUpdate, ExpirationTime, LastActiveOn)
//	channel  byte mask of present parts, then each part; the handle packed
//	userID   string
//	tags     uvarint n, n × string
//	pushVars uvarint n, n × (string, string), sorted by name
//	tmpls    uvarint n, n × (byte kind, 8-byte content hash | string content)
//
// Strings are a uvarint length and the bytes. Decoding never copies: the
// decoded strings share the record's memory.
const recordFormat = 1

// spillMarker is stored in a record bucket in place of a record too large
// for a listpack hash; the record itself is then in its own string key.
const spillMarker = "\xff"

const (
	flagRegistration = 1 << 0
	flagExpired      = 1 << 1
)

// id encodings.
const (
	idRaw       = 0
	idGUIDLower = 1
	idGUIDUpper = 2
)

// handle encodings.
const (
	handleRaw      = 0
	handleHexLower = 1
	handleHexUpper = 2
)

// template entry kinds.
const (
	tmplRef    = 0 // 8-byte content hash into the shard's template table
	tmplInline = 1 // the content itself (used on a hash collision)
)

// channel part bits.
const (
	chHandle = 1 << iota
	chEndpoint
	chP256DH
	chAuth
	chBaidu
)

// record is the decoded form of a stored entry.
type record struct {
	slot       byte
	version    int64
	reg        bool // a stored registration, not an installation
	expired    bool // PushChannelExpired
	platform   hubcore.Platform
	id         string
	lastUpdate time.Time
	expiration time.Time
	lastActive time.Time
	channel    hubcore.PushChannel
	userID     string
	tags       []string
	vars       []kv
	tmpls      []tmplEntry
}

type kv struct{ k, v string }

// tmplEntry is one template of a record: its content hash, and the
// content when stored inline.
type tmplEntry struct {
	hash   uint64
	inline string // encoded content; "" for a reference
}

// errCorrupt is returned for bytes that are not a record.
var errCorrupt = errors.New("redisstore: corrupt record")

// --- encoding ---

type enc struct{ b []byte }

func (e *enc) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *enc) str(s string)     { e.uvarint(uint64(len(s))); e.b = append(e.b, s...) }
func (e *enc) byte1(c byte)     { e.b = append(e.b, c) }

func (e *enc) time(t time.Time) {
	if t.IsZero() {
		e.uvarint(0)
		return
	}
	sec := t.Unix()
	zz := uint64(sec<<1) ^ uint64(sec>>63)
	e.uvarint(zz + 1)
	e.uvarint(uint64(t.Nanosecond()))
}

func platformIndex(p hubcore.Platform) byte {
	for i, q := range hubcore.Platforms {
		if q == p {
			return byte(i + 1)
		}
	}
	return 0
}

func (e *enc) id(s string) {
	if g, upper, ok := packGUID(s); ok {
		if upper {
			e.byte1(idGUIDUpper)
		} else {
			e.byte1(idGUIDLower)
		}
		e.b = append(e.b, g[:]...)
		return
	}
	e.byte1(idRaw)
	e.str(s)
}

func (e *enc) handle(p hubcore.Platform, h string) {
	if p == hubcore.APNS {
		if k := hexCase(h); k != handleRaw {
			e.byte1(k)
			e.uvarint(uint64(len(h) / 2))
			for i := 0; i < len(h); i += 2 {
				e.b = append(e.b, unhex(h[i])<<4|unhex(h[i+1]))
			}
			return
		}
	}
	e.byte1(handleRaw)
	e.str(h)
}

// encodeRecord appends r's encoding to dst.
func encodeRecord(dst []byte, r *record) []byte {
	e := enc{b: dst}
	e.byte1(recordFormat)
	e.byte1(r.slot)
	e.uvarint(uint64(r.version))
	var fl byte
	if r.reg {
		fl |= flagRegistration
	}
	if r.expired {
		fl |= flagExpired
	}
	e.byte1(fl)
	e.byte1(platformIndex(r.platform))
	e.id(r.id)
	e.time(r.lastUpdate)
	e.time(r.expiration)
	e.time(r.lastActive)
	c := r.channel
	var mask byte
	for i, s := range []string{c.Handle, c.Endpoint, c.P256DH, c.Auth, c.BaiduUserID} {
		if s != "" {
			mask |= 1 << i
		}
	}
	e.byte1(mask)
	if c.Handle != "" {
		e.handle(r.platform, c.Handle)
	}
	for i, s := range []string{c.Endpoint, c.P256DH, c.Auth, c.BaiduUserID} {
		if mask&(2<<i) != 0 {
			e.str(s)
		}
	}
	e.str(r.userID)
	e.uvarint(uint64(len(r.tags)))
	for _, t := range r.tags {
		e.str(t)
	}
	e.uvarint(uint64(len(r.vars)))
	for _, p := range r.vars {
		e.str(p.k)
		e.str(p.v)
	}
	e.uvarint(uint64(len(r.tmpls)))
	for _, t := range r.tmpls {
		if t.inline != "" {
			e.byte1(tmplInline)
			e.str(t.inline)
			continue
		}
		e.byte1(tmplRef)
		e.b = binary.BigEndian.AppendUint64(e.b, t.hash)
	}
	return e.b
}

// --- decoding ---

type dec struct {
	s   string
	i   int
	err bool
}

func (d *dec) byte1() byte {
	if d.i >= len(d.s) {
		d.err = true
		return 0
	}
	c := d.s[d.i]
	d.i++
	return c
}

func (d *dec) uvarint() uint64 {
	var v uint64
	for shift := uint(0); shift < 64; shift += 7 {
		if d.i >= len(d.s) {
			d.err = true
			return 0
		}
		c := d.s[d.i]
		d.i++
		if shift == 63 && c > 1 {
			d.err = true
			return 0
		}
		v |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return v
		}
	}
	d.err = true
	return 0
}

func (d *dec) bytesN(n int) string {
	if n < 0 || n > len(d.s)-d.i {
		d.err = true
		return ""
	}
	s := d.s[d.i : d.i+n]
	d.i += n
	return s
}

func (d *dec) str() string {
	n := d.uvarint()
	if n > uint64(len(d.s)) {
		d.err = true
		return ""
	}
	return d.bytesN(int(n))
}

// count reads a collection length, bounded by the bytes left so that a
// corrupt length cannot make the decoder allocate wildly.
func (d *dec) count() int {
	n := d.uvarint()
	if n > uint64(len(d.s)-d.i) {
		d.err = true
		return 0
	}
	return int(n)
}

func (d *dec) time() time.Time {
	zz := d.uvarint()
	if zz == 0 {
		return time.Time{}
	}
	zz--
	sec := int64(zz>>1) ^ -int64(zz&1)
	ns := d.uvarint()
	if ns >= 1e9 {
		d.err = true
		return time.Time{}
	}
	return time.Unix(sec, int64(ns)).UTC()
}

func (d *dec) id() string {
	switch d.byte1() {
	case idRaw:
		return d.str()
	case idGUIDLower:
		return unpackGUID(d.bytesN(16), false)
	case idGUIDUpper:
		return unpackGUID(d.bytesN(16), true)
	}
	d.err = true
	return ""
}

func (d *dec) handle() string {
	k := d.byte1()
	switch k {
	case handleRaw:
		return d.str()
	case handleHexLower, handleHexUpper:
		n := d.count()
		raw := d.bytesN(n)
		digits := "0123456789abcdef"
		if k == handleHexUpper {
			digits = "0123456789ABCDEF"
		}
		b := make([]byte, 2*len(raw))
		for i := 0; i < len(raw); i++ {
			b[2*i] = digits[raw[i]>>4]
			b[2*i+1] = digits[raw[i]&15]
		}
		return string(b)
	}
	d.err = true
	return ""
}

// decodeRecord decodes s into r, reusing r's slices. The strings in r
// share s's memory.
func decodeRecord(s string, r *record) error {
	d := dec{s: s}
	if d.byte1() != recordFormat {
		return errCorrupt
	}
	r.slot = d.byte1()
	v := d.uvarint()
	if v > 1<<62 {
		return errCorrupt
	}
	r.version = int64(v)
	fl := d.byte1()
	if fl&^(flagRegistration|flagExpired) != 0 {
		return errCorrupt
	}
	r.reg = fl&flagRegistration != 0
	r.expired = fl&flagExpired != 0
	pi := int(d.byte1())
	if pi < 1 || pi > len(hubcore.Platforms) {
		return errCorrupt
	}
	r.platform = hubcore.Platforms[pi-1]
	r.id = d.id()
	r.lastUpdate = d.time()
	r.expiration = d.time()
	r.lastActive = d.time()
	mask := d.byte1()
	if mask >= 1<<5 {
		return errCorrupt
	}
	r.channel = hubcore.PushChannel{}
	if mask&chHandle != 0 {
		r.channel.Handle = d.handle()
	}
	if mask&chEndpoint != 0 {
		r.channel.Endpoint = d.str()
	}
	if mask&chP256DH != 0 {
		r.channel.P256DH = d.str()
	}
	if mask&chAuth != 0 {
		r.channel.Auth = d.str()
	}
	if mask&chBaidu != 0 {
		r.channel.BaiduUserID = d.str()
	}
	r.userID = d.str()
	n := d.count()
	r.tags = r.tags[:0]
	for i := 0; i < n && !d.err; i++ {
		r.tags = append(r.tags, d.str())
	}
	n = d.count()
	r.vars = r.vars[:0]
	for i := 0; i < n && !d.err; i++ {
		k := d.str()
		r.vars = append(r.vars, kv{k, d.str()})
	}
	n = d.count()
	r.tmpls = r.tmpls[:0]
	for i := 0; i < n && !d.err; i++ {
		switch d.byte1() {
		case tmplRef:
			h := d.bytesN(8)
			if len(h) == 8 {
				r.tmpls = append(r.tmpls, tmplEntry{hash: binary.BigEndian.Uint64([]byte(h))})
			}
		case tmplInline:
			c := d.str()
			if c == "" {
				d.err = true
			}
			r.tmpls = append(r.tmpls, tmplEntry{hash: xxhash.Sum64String(c), inline: c})
		default:
			d.err = true
		}
	}
	if d.err || d.i != len(s) {
		return errCorrupt
	}
	return nil
}

// --- template content ---

// tmplContent is a template with its name: what records share by hash.
type tmplContent struct {
	name string
	t    hubcore.Template
	// ftags and fname are what the template adds to its registration's
	// tags, folded once: its tags, and its name when the name is a user tag.
	ftags []string
	fname string
}

func encodeTemplate(name string, t *hubcore.Template) string {
	e := enc{}
	e.str(name)
	e.str(t.Body)
	keys := make([]string, 0, len(t.Headers))
	for k := range t.Headers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	e.uvarint(uint64(len(keys)))
	for _, k := range keys {
		e.str(k)
		e.str(t.Headers[k])
	}
	e.str(t.Expiry)
	e.str(t.Priority)
	e.uvarint(uint64(len(t.Tags)))
	for _, tg := range t.Tags {
		e.str(tg)
	}
	return string(e.b)
}

// decodeTemplate decodes template content into a fresh template (its
// strings copied out of s, since templates are cached for long).
func decodeTemplate(s string) (*tmplContent, error) {
	s = strings.Clone(s)
	d := dec{s: s}
	c := &tmplContent{}
	c.name = d.str()
	c.t.Body = d.str()
	n := d.count()
	if n > 0 {
		c.t.Headers = make(map[string]string, n)
		for i := 0; i < n && !d.err; i++ {
			k := d.str()
			c.t.Headers[k] = d.str()
		}
	}
	c.t.Expiry = d.str()
	c.t.Priority = d.str()
	n = d.count()
	for i := 0; i < n && !d.err; i++ {
		c.t.Tags = append(c.t.Tags, d.str())
	}
	if d.err || d.i != len(s) {
		return nil, errCorrupt
	}
	for _, t := range c.t.Tags {
		c.ftags = append(c.ftags, tag.Fold(t))
	}
	if tag.Validate(c.name) == nil && !tag.IsSystem(c.name) {
		c.fname = tag.Fold(c.name)
	}
	return c, nil
}

// --- packing helpers ---

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// hexCase reports how s can be packed as binary: handleHexLower or
// handleHexUpper when it is non-empty, even-length hex in one case (digits
// alone count as lower), handleRaw otherwise, so that decoding gives back
// exactly s.
func hexCase(s string) byte {
	if s == "" || len(s)%2 != 0 {
		return handleRaw
	}
	lower, upper := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case '0' <= c && c <= '9':
		case 'a' <= c && c <= 'f':
			lower = true
		case 'A' <= c && c <= 'F':
			upper = true
		default:
			return handleRaw
		}
	}
	switch {
	case lower && upper:
		return handleRaw
	case upper:
		return handleHexUpper
	default:
		return handleHexLower
	}
}

// packGUID packs a GUID in canonical 8-4-4-4-12 form, in one case, into 16
// bytes; upper reports the case.
func packGUID(s string) (g [16]byte, upper, ok bool) {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return g, false, false
	}
	hexOnly := s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:]
	switch hexCase(hexOnly) {
	case handleHexLower:
	case handleHexUpper:
		upper = true
	default:
		return g, false, false
	}
	for i := 0; i < 16; i++ {
		g[i] = unhex(hexOnly[2*i])<<4 | unhex(hexOnly[2*i+1])
	}
	return g, upper, true
}

func unpackGUID(raw string, upper bool) string {
	if len(raw) != 16 {
		return ""
	}
	digits := "0123456789abcdef"
	if upper {
		digits = "0123456789ABCDEF"
	}
	b := make([]byte, 0, 36)
	for i := 0; i < 16; i++ {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, digits[raw[i]>>4], digits[raw[i]&15])
	}
	return string(b)
}
