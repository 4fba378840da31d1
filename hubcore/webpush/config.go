// Package webpush delivers notifications to browsers through their push
// services (FCM for Chrome, Mozilla autopush, Apple's web push, …) with the
// Web Push protocol: RFC 8030 requests, payloads encrypted per RFC 8291 with
// the aes128gcm content coding of RFC 8188, and VAPID (RFC 8292)
// application-server identification.
//
// A Sender is safe for use by many goroutines at once. Each push service
// origin gets one VAPID token, shared by every request and re-minted shortly
// before it expires; connections are HTTP/2, reused across requests and
// bounded per host.
package webpush

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Defaults for the zero values of Config.
const (
	// DefaultTTL is how long a push service keeps a message for a browser
	// that is offline when no TTL header says otherwise. A day covers a
	// device switched off overnight without surfacing stale alerts weeks
	// later (the services keep messages for up to four weeks).
	DefaultTTL = 24 * time.Hour
	// DefaultConns is the number of connections kept per push service host.
	DefaultConns = 2
	// DefaultTimeout bounds one request, from sending to the response
	// headers and body.
	DefaultTimeout = 30 * time.Second
)

// Config is what a Sender needs: the application server's VAPID key pair and
// contact, and how to reach the push services.
type Config struct {
	// VAPIDPrivateKey is the application server's P-256 signing key: the
	// base64url raw 32-byte scalar that web-push tools generate (standard
	// base64 and padding are accepted too), or a PEM "PRIVATE KEY" (PKCS #8)
	// or "EC PRIVATE KEY" (SEC 1) block. Required.
	VAPIDPrivateKey string
	// VAPIDPublicKey is the matching public key, base64url of the 65-byte
	// uncompressed point: the applicationServerKey the web app subscribed
	// with. Optional: it is derived from the private key, and when given it
	// must match, so that a key pair mix-up fails at start-up rather than as
	// refused sends.
	VAPIDPublicKey string
	// Subject is the contact the push services may use to reach the
	// operator: a mailto: address or an https: URL. Required (Apple's
	// service refuses tokens without it).
	Subject string
	// TTL is how long the push service should keep a message the browser is
	// not connected for, when the delivery has no TTL header. Zero means
	// DefaultTTL. It is sent in whole seconds, rounded down, so a positive
	// TTL under a second asks for "now or never" (TTL: 0).
	TTL time.Duration
	// RootCAs verifies the push services' certificates; nil means the
	// system roots. Tests set it to the fake's certificate pool.
	RootCAs *x509.CertPool
	// Conns bounds the connections to each push service host; zero means
	// DefaultConns. Requests spread over them, each carrying as many
	// concurrent requests as the service's SETTINGS_MAX_CONCURRENT_STREAMS
	// allows; beyond that, requests wait for a free stream. A service that
	// only speaks HTTP/1.1 gets up to 16 × Conns connections, one request
	// each.
	Conns int
	// Timeout bounds each request; zero means DefaultTimeout.
	Timeout time.Duration
}

// There is no endpoint base URL: every subscription carries the full URL of
// its push resource, so tests point the sender at the fake through the
// subscriptions the fake hands out.

// vapidKey is a parsed, checked VAPID key pair.
type vapidKey struct {
	priv *ecdsa.PrivateKey
	// k is the base64url public key, as the k parameter carries it.
	k string
	// pub is the uncompressed public point.
	pub []byte
}

func (c Config) withDefaults() (Config, error) {
	if c.TTL < 0 {
		return c, fmt.Errorf("webpush: TTL %v is negative", c.TTL)
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.Conns < 0 {
		return c, fmt.Errorf("webpush: Conns %d is negative", c.Conns)
	}
	if c.Conns == 0 {
		c.Conns = DefaultConns
	}
	if c.Timeout < 0 {
		return c, fmt.Errorf("webpush: Timeout %v is negative", c.Timeout)
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if err := checkSubject(c.Subject); err != nil {
		return c, err
	}
	return c, nil
}

// checkSubject enforces RFC 8292 §2.1: a mailto: or https: contact URI.
func checkSubject(sub string) error {
	if sub == "" {
		return errors.New("webpush: Subject is required (a mailto: address or an https: URL the push services can contact)")
	}
	if strings.TrimSpace(sub) != sub || strings.ContainsAny(sub, "\r\n\t") {
		return fmt.Errorf("webpush: Subject %q contains white space", sub)
	}
	u, err := url.Parse(sub)
	if err != nil {
		return fmt.Errorf("webpush: Subject %q is not a URI: %v", sub, err)
	}
	switch u.Scheme {
	case "mailto":
		if u.Opaque == "" || !strings.Contains(u.Opaque, "@") {
			return fmt.Errorf("webpush: Subject %q: a mailto: subject needs an address such as mailto:ops@example.com", sub)
		}
	case "https":
		if u.Host == "" {
			return fmt.Errorf("webpush: Subject %q: an https: subject needs a host", sub)
		}
	default:
		return fmt.Errorf("webpush: Subject %q must be a mailto: or https: URI", sub)
	}
	return nil
}

// parseVAPIDKeys reads the configured key pair and checks that the halves
// belong together.
func parseVAPIDKeys(privText, pubText string) (*vapidKey, error) {
	priv, err := parsePrivateKey(privText)
	if err != nil {
		return nil, err
	}
	pub, err := priv.PublicKey.Bytes()
	if err != nil {
		return nil, fmt.Errorf("webpush: VAPIDPrivateKey: %v", err)
	}
	if pubText != "" {
		given, err := decodeB64URL(strings.TrimSpace(pubText))
		if err != nil {
			return nil, fmt.Errorf("webpush: VAPIDPublicKey is not base64url: %v", err)
		}
		if len(given) != 65 || given[0] != 4 {
			return nil, fmt.Errorf("webpush: VAPIDPublicKey is %d bytes; want the 65-byte uncompressed P-256 point", len(given))
		}
		if !bytes.Equal(given, pub) {
			return nil, errors.New("webpush: VAPIDPublicKey does not belong to VAPIDPrivateKey")
		}
	}
	return &vapidKey{priv: priv, pub: pub, k: base64.RawURLEncoding.EncodeToString(pub)}, nil
}

// parsePrivateKey accepts the raw scalar web-push tools print and the PEM
// forms openssl writes.
func parsePrivateKey(s string) (*ecdsa.PrivateKey, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("webpush: VAPIDPrivateKey is required")
	}
	if strings.HasPrefix(s, "-----BEGIN") {
		block, rest := pem.Decode([]byte(s))
		if block == nil {
			return nil, errors.New("webpush: VAPIDPrivateKey: malformed PEM")
		}
		if len(bytes.TrimSpace(rest)) != 0 {
			return nil, errors.New("webpush: VAPIDPrivateKey: more than one PEM block")
		}
		var key any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		default:
			return nil, fmt.Errorf("webpush: VAPIDPrivateKey: PEM block %q; want PRIVATE KEY or EC PRIVATE KEY", block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("webpush: VAPIDPrivateKey: %v", err)
		}
		ec, ok := key.(*ecdsa.PrivateKey)
		if !ok || ec.Curve != elliptic.P256() {
			return nil, errors.New("webpush: VAPIDPrivateKey must be a P-256 (prime256v1) key")
		}
		return ec, nil
	}
	raw, err := decodeB64URL(s)
	if err != nil {
		return nil, fmt.Errorf("webpush: VAPIDPrivateKey is neither PEM nor base64url: %v", err)
	}
	if len(raw) != 32 {
		return nil, fmt.Errorf("webpush: VAPIDPrivateKey is %d bytes; want the 32-byte P-256 scalar", len(raw))
	}
	priv, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), raw)
	if err != nil {
		return nil, fmt.Errorf("webpush: VAPIDPrivateKey: %v", err)
	}
	return priv, nil
}

// decodeB64URL accepts base64url as PushSubscription.toJSON and web-push
// tools write it and, leniently, standard base64, padded or not (as the hub
// does when it validates a subscription).
func decodeB64URL(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if strings.ContainsAny(s, "+/") {
		s = strings.NewReplacer("+", "-", "/", "_").Replace(s)
	}
	return base64.RawURLEncoding.DecodeString(s)
}
