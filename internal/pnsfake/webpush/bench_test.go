package webpush

import (
	"bytes"
	"io"
	"net/http"
	"testing"
)

// discardWriter is a minimal ResponseWriter, so that the benchmark measures
// the handler rather than a recorder.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(s int)           { w.status = s }

// BenchmarkHandlerReplay is the fake's cost per request when a load
// generator (h2load) replays one valid request: the token and the key
// derivation come from the caches, leaving checks, AES-GCM and the answer.
func BenchmarkHandlerReplay(b *testing.B) {
	s := start(b, Options{})
	a := newAppServer(b)
	ch, err := s.Subscribe()
	if err != nil {
		b.Fatal(err)
	}
	body := seal(b, ch, bytes.Repeat([]byte("x"), 512), sealOpts{})
	proto := pushRequest(b, s, a, ch, body)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := proto.Clone(proto.Context())
		rd := bytes.NewReader(nil)
		buf := make([]byte, len(body))
		w := &discardWriter{h: make(http.Header)}
		for pb.Next() {
			// Decryption is in place, so each request gets a fresh copy.
			copy(buf, body)
			rd.Reset(buf)
			r.Body = io.NopCloser(rd)
			clear(w.h)
			s.ServeHTTP(w, r)
			if w.status != http.StatusCreated {
				b.Fatalf("status %d", w.status)
			}
		}
	})
}
