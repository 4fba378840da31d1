package wns

import "encoding/pem"

// CertPEM is the fake's self-signed certificate in PEM, for clients in
// other processes (a root CA file).
func (s *Server) CertPEM() []byte {
	if s.leaf == nil {
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.leaf.Raw})
}
