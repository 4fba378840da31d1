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
)

// Sizes of the aes128gcm message (RFC 8188 §2, RFC 8291 §4).
const (
	saltLen    = 16
	keyLen     = 65 // uncompressed P-256 point
	headerLen  = saltLen + 4 + 1 + keyLen
	tagLen     = 16
	recordSize = 4096
	// MaxPlaintext is the largest payload that fits the single 4096-byte
	// record a push service is required to accept: the record minus the
	// header, the padding delimiter and the AES-GCM tag (3993 bytes).
	MaxPlaintext = recordSize - headerLen - 1 - tagLen
)

// Labels of the HKDF steps (RFC 8291 §3.4, RFC 8188 §2.2 and §2.3).
const (
	keyInfoPrefix = "WebPush: info\x00"
	cekInfo       = "Content-Encoding: aes128gcm\x00"
	nonceInfo     = "Content-Encoding: nonce\x00"
)

// seal encrypts plaintext for a subscription as one aes128gcm record: the
// browser holding ua's private key and the auth secret can decrypt it. as is
// the ephemeral key and salt the per-message random salt; both are arguments
// so that the RFC's example can be reproduced byte for byte.
func seal(plaintext []byte, ua *ecdh.PublicKey, auth []byte, as *ecdh.PrivateKey, salt []byte) ([]byte, error) {
	if len(plaintext) > MaxPlaintext {
		return nil, fmt.Errorf("webpush: payload of %d bytes exceeds %d", len(plaintext), MaxPlaintext)
	}
	if len(salt) != saltLen {
		return nil, errors.New("webpush: salt must be 16 bytes")
	}
	secret, err := as.ECDH(ua)
	if err != nil {
		return nil, err
	}
	uaPub := ua.Bytes()
	asPub := as.PublicKey().Bytes()

	// IKM binds the shared secret to both public keys and the auth secret.
	info := make([]byte, 0, len(keyInfoPrefix)+2*keyLen)
	info = append(info, keyInfoPrefix...)
	info = append(info, uaPub...)
	info = append(info, asPub...)
	ikm, err := hkdf.Key(sha256.New, secret, auth, string(info), 32)
	if err != nil {
		return nil, err
	}
	prk, err := hkdf.Extract(sha256.New, ikm, salt)
	if err != nil {
		return nil, err
	}
	cek, err := hkdf.Expand(sha256.New, prk, cekInfo, 16)
	if err != nil {
		return nil, err
	}
	nonce, err := hkdf.Expand(sha256.New, prk, nonceInfo, 12)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}

	out := make([]byte, headerLen, headerLen+len(plaintext)+1+tagLen)
	copy(out, salt)
	binary.BigEndian.PutUint32(out[saltLen:], recordSize)
	out[saltLen+4] = keyLen
	copy(out[saltLen+5:], asPub)
	// The record is the plaintext, then the delimiter 0x02 that marks the
	// last (here the only) record, with no further padding; sealed in place.
	rec := append(out[headerLen:], plaintext...)
	rec = append(rec, 2)
	gcm.Seal(rec[:0], nonce, rec, nil)
	return out[:headerLen+len(plaintext)+1+tagLen], nil
}
