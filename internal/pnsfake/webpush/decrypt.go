package webpush

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
)

// subscription is what the fake keeps of one PushManager subscription: the
// browser's side of RFC 8291.
type subscription struct {
	key   *ecdh.PrivateKey
	pub   []byte // uncompressed public key
	auth  []byte
	bound string // raw applicationServerKey, or "" when unrestricted
	gone  atomic.Bool
	// last caches the derivation for the last (message key, salt) seen,
	// so that replayed requests skip the ECDH.
	last atomic.Pointer[derived]
}

type derived struct {
	keyid string
	salt  [16]byte
	cek   []byte
	nonce []byte
}

// Sizes of the aes128gcm header with the RFC 8291 key id (RFC 8188 §2.1).
const (
	headerLen = 16 + 4 + 1 + 65
	tagLen    = 16
	// maxBody is what a push service must accept (RFC 8030 §7.2).
	maxBody = 4096
)

// header is the parsed aes128gcm content-coding header.
type header struct {
	salt  []byte
	rs    uint32
	keyid []byte
	rec   []byte // the ciphertext that follows
}

// parseHeader reads the aes128gcm header and applies RFC 8291 §4's
// restrictions: the key id is the sender's 65-byte public key and the
// ciphertext is a single record.
func parseHeader(body []byte) (header, error) {
	var h header
	if len(body) < 21 {
		return h, errors.New("the body is shorter than the aes128gcm header")
	}
	h.salt = body[:16]
	h.rs = binary.BigEndian.Uint32(body[16:20])
	idlen := int(body[20])
	if h.rs < 18 {
		return h, fmt.Errorf("record size %d is below the minimum of 18 (RFC 8188 §2.1)", h.rs)
	}
	if idlen != 65 {
		return h, fmt.Errorf("idlen is %d; Web Push puts the 65-byte application server key in keyid (RFC 8291 §4)", idlen)
	}
	if len(body) < headerLen {
		return h, errors.New("the body ends inside the keyid")
	}
	h.keyid = body[21:headerLen]
	h.rec = body[headerLen:]
	if len(h.rec) < tagLen+1 {
		return h, errors.New("the record is shorter than a padding delimiter and a tag")
	}
	if uint64(len(h.rec)) > uint64(h.rs) {
		return h, fmt.Errorf("%d bytes of ciphertext exceed the record size %d: Web Push allows a single record (RFC 8291 §4)", len(h.rec), h.rs)
	}
	return h, nil
}

// open decrypts a push message body in place as the browser would (RFC 8291
// §3.4, RFC 8188 §2) and returns the plaintext without its padding.
func (sub *subscription) open(h header) ([]byte, error) {
	d, err := sub.derive(h)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(d.cek)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	pt, err := gcm.Open(h.rec[:0], d.nonce, h.rec, nil)
	if err != nil {
		return nil, errors.New("the record does not decrypt with the subscription's keys (wrong p256dh, auth, salt or key derivation)")
	}
	// Padding is zeros after a delimiter: 2 ends the last record, 1 would
	// announce another, which a single-record message cannot have.
	i := len(pt) - 1
	for i >= 0 && pt[i] == 0 {
		i--
	}
	if i < 0 {
		return nil, errors.New("the record has no padding delimiter")
	}
	if pt[i] != 2 {
		return nil, fmt.Errorf("the padding delimiter is 0x%02x; the last record ends with 0x02 (RFC 8188 §2)", pt[i])
	}
	return pt[:i], nil
}

func (sub *subscription) derive(h header) (*derived, error) {
	if d := sub.last.Load(); d != nil && d.keyid == string(h.keyid) && string(d.salt[:]) == string(h.salt) {
		return d, nil
	}
	as, err := ecdh.P256().NewPublicKey(h.keyid)
	if err != nil {
		return nil, errors.New("the keyid is not an uncompressed P-256 public key")
	}
	secret, err := sub.key.ECDH(as)
	if err != nil {
		return nil, err
	}
	info := make([]byte, 0, 14+65+65)
	info = append(info, "WebPush: info\x00"...)
	info = append(info, sub.pub...)
	info = append(info, h.keyid...)
	ikm, err := hkdf.Key(sha256.New, secret, sub.auth, string(info), 32)
	if err != nil {
		return nil, err
	}
	prk, err := hkdf.Extract(sha256.New, ikm, h.salt)
	if err != nil {
		return nil, err
	}
	d := &derived{keyid: string(h.keyid)}
	copy(d.salt[:], h.salt)
	if d.cek, err = hkdf.Expand(sha256.New, prk, "Content-Encoding: aes128gcm\x00", 16); err != nil {
		return nil, err
	}
	if d.nonce, err = hkdf.Expand(sha256.New, prk, "Content-Encoding: nonce\x00", 12); err != nil {
		return nil, err
	}
	sub.last.Store(d)
	return d, nil
}
