package wns

import (
	"bytes"
	"io"
	"net/http"
	"testing"
)

type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *nopWriter) WriteHeader(int)             {}

// BenchmarkHandler is the fake's own cost per accepted toast (no network).
func BenchmarkHandler(b *testing.B) {
	srv := New(Options{})
	tok := srv.AccessToken("app")
	body := []byte(toast)
	req, _ := http.NewRequest(http.MethodPost, "https://127.0.0.1/w/?token="+Channel("bench"), nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("X-WNS-Type", "wns/toast")
	req.Header.Set("Content-Type", "text/xml")
	req.Header.Set("X-WNS-TTL", "3600")
	req.ContentLength = int64(len(body))
	rd := bytes.NewReader(body)
	req.Body = io.NopCloser(rd)
	w := &nopWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(body)
		clear(w.h)
		srv.ServeHTTP(w, req)
	}
	if srv.Log.Accepted() == 0 {
		b.Fatal("nothing accepted")
	}
}
