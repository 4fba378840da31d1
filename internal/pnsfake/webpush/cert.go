package webpush

import (
	"crypto/tls"
	"crypto/x509"

	"github.com/pushgate/pushgate/internal/pnsfake"
)

// selfSigned makes the fake's TLS certificate (loopback only, its own
// root) and the pool that trusts it and nothing else.
func selfSigned() (tls.Certificate, *x509.CertPool, error) {
	cert, leaf, err := pnsfake.ServerCert("pnsfake webpush", nil)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return cert, pool, nil
}
