package fcm

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	fcmfake "github.com/pushgate/pushgate/internal/pnsfake/fcm"
)

// BenchmarkSend measures sends against the fake on loopback, from many
// goroutines at once (GOMAXPROCS × -cpu, times SetParallelism).
func BenchmarkSend(b *testing.B) {
	srv, s := setup(b, fcmfake.Options{}, nil)
	tokens := make([]string, 1024)
	for i := range tokens {
		tokens[i] = fcmfake.Token(fmt.Sprint("bench-", i))
	}
	body := []byte(`{"message":{"notification":{"title":"Breaking","body":"Something happened"},"data":{"id":"42","kind":"news"},"android":{"priority":"HIGH"}}}`)
	ctx := context.Background()
	if err := s.Send(ctx, delivery(tokens[0], string(body))); err != nil {
		b.Fatal(err)
	}
	var n atomic.Uint64
	b.SetParallelism(16)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		d := delivery("", "")
		d.Body = body
		for pb.Next() {
			d.Channel.Handle = tokens[n.Add(1)%uint64(len(tokens))]
			if err := s.Send(ctx, d); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sends/s")
	if srv.TokensIssued() != 1 {
		b.Errorf("tokens issued = %d", srv.TokensIssued())
	}
}

// BenchmarkSplice is the per-send payload work.
func BenchmarkSplice(b *testing.B) {
	body := []byte(`{"message":{"notification":{"title":"Breaking","body":"Something happened"},"data":{"id":"42","kind":"news"},"android":{"priority":"HIGH"}}}`)
	tok := fcmfake.Token("bench")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := spliceToken(body, tok); err != nil {
			b.Fatal(err)
		}
	}
}
