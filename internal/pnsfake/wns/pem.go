package wns

import "github.com/pushgate/pushgate/internal/pnsfake"

// CertPEM is the fake's self-signed certificate in PEM, for clients in
// other processes (a root CA file).
func (s *Server) CertPEM() []byte { return pnsfake.CertPEM(s.leaf) }
