package fcm

import (
	"bytes"
	"io"
	"net/http"
	"testing"
)

// nopWriter is a ResponseWriter that keeps nothing, so that the benchmark
// measures the handler.
type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *nopWriter) WriteHeader(int)             {}

// BenchmarkHandler is the fake's own cost per accepted message (no
// network): what bounds it under h2load.
func BenchmarkHandler(b *testing.B) {
	srv := New(Options{})
	g := &grant{project: "p", scoped: true}
	g.expires.Store(1 << 62)
	srv.tokens.Store("tok", g)
	body := []byte(`{"message":{"token":"` + Token("bench") + `","notification":{"title":"Breaking","body":"Something happened"},"data":{"id":"42","kind":"news"},"android":{"priority":"HIGH"}}}`)
	req, _ := http.NewRequest(http.MethodPost, "https://127.0.0.1/v1/projects/p/messages:send", nil)
	req.Header.Set("Authorization", "Bearer tok")
	req.Header.Set("Content-Type", "application/json")
	rd := bytes.NewReader(body)
	req.Body = io.NopCloser(rd)
	w := &nopWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(body)
		srv.ServeHTTP(w, req)
	}
	if srv.Log.Accepted() == 0 {
		b.Fatal("nothing accepted")
	}
}
