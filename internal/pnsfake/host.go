package pnsfake

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// HostOptions configure the TLS server a fake runs on.
type HostOptions struct {
	// Name is the certificate's subject ("pnsfake fcm").
	Name string
	// Hosts are extra certificate names or IP addresses besides loopback.
	Hosts []string
	// MaxConcurrentStreams is the HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS
	// (default 1000).
	MaxConcurrentStreams int
	// IdleTimeout closes idle connections (default: none).
	IdleTimeout time.Duration
	// ErrorLog receives the HTTP server's errors; discarded when nil.
	ErrorLog *log.Logger
	// ClientCAs, when set, makes every connection present a client
	// certificate signed by one of them (APNs' certificate mode).
	ClientCAs *x509.CertPool
	// ConnContext, when set, adds a fake's own per-connection state.
	ConnContext func(context.Context) context.Context
}

// Host is a fake's TLS server: HTTP/2 and HTTP/1.1 on a self-signed
// certificate, counting connections and handing each handler its
// connection (ConnContext) so that Drop works. Fakes embed it.
type Host struct {
	srv     *http.Server
	leaf    *x509.Certificate
	certErr error
	conns   atomic.Int64

	mu   sync.Mutex
	addr string
}

// NewHost makes the server for h; Start or Serve runs it.
func NewHost(h http.Handler, o HostOptions) *Host {
	if o.MaxConcurrentStreams <= 0 {
		o.MaxConcurrentStreams = 1000
	}
	if o.ErrorLog == nil {
		o.ErrorLog = log.New(io.Discard, "", 0)
	}
	s := &Host{}
	var cert tls.Certificate
	cert, s.leaf, s.certErr = ServerCert(o.Name, o.Hosts)
	tc := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2", "http/1.1"},
	}
	if o.ClientCAs != nil {
		tc.ClientAuth = tls.RequireAndVerifyClientCert
		tc.ClientCAs = o.ClientCAs
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetHTTP2(true)
	s.srv = &http.Server{
		Handler:   h,
		TLSConfig: tc,
		Protocols: &protos,
		HTTP2:     &http.HTTP2Config{MaxConcurrentStreams: o.MaxConcurrentStreams},
		ErrorLog:  o.ErrorLog,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			s.conns.Add(1)
			ctx = ConnContext(ctx, c)
			if o.ConnContext != nil {
				ctx = o.ConnContext(ctx)
			}
			return ctx
		},
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       o.IdleTimeout,
	}
	return s
}

// Start serves on a new loopback port.
func (s *Host) Start() error {
	if s.certErr != nil {
		return s.certErr
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s.setAddr(l.Addr().String())
	go s.Serve(l) //nolint:errcheck // Close ends it
	return nil
}

// Serve serves TLS (HTTP/2 and HTTP/1.1) on l until Close.
func (s *Host) Serve(l net.Listener) error {
	if s.certErr != nil {
		return s.certErr
	}
	s.setAddr(l.Addr().String())
	err := s.srv.ServeTLS(l, "", "")
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func (s *Host) setAddr(a string) {
	s.mu.Lock()
	if s.addr == "" {
		s.addr = a
	}
	s.mu.Unlock()
}

// URL is the fake's base URL (https://127.0.0.1:port).
func (s *Host) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return "https://" + s.addr
}

// CertPool holds the fake's certificate, for a client's RootCAs.
func (s *Host) CertPool() *x509.CertPool {
	p := x509.NewCertPool()
	if s.leaf != nil {
		p.AddCert(s.leaf)
	}
	return p
}

// CertPEM is the fake's certificate in PEM, for clients in other processes.
func (s *Host) CertPEM() []byte { return CertPEM(s.leaf) }

// Conns is the number of connections accepted so far.
func (s *Host) Conns() int64 { return s.conns.Load() }

// Close stops serving and closes every connection.
func (s *Host) Close() error { return s.srv.Close() }
