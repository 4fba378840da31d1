package webpush

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"testing"

	"github.com/pushgate/pushgate/hubcore"
	fake "github.com/pushgate/pushgate/internal/pnsfake/webpush"
)

// BenchmarkSend measures end-to-end sends against the fake on loopback: the
// sender's encryption and the fake's decryption both run in this process.
func BenchmarkSend(b *testing.B) {
	f := startFake(b, fake.Options{})
	s := newSender(b, f, nil)
	subs := make([]hubcore.PushChannel, 64)
	for i := range subs {
		subs[i] = subscribe(b, f)
	}
	body := `{"notification":{"title":"Order 1042 shipped","body":"Your order is on its way."}}`
	// Many sends in flight, as the fan-out engine runs them.
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		ctx := context.Background()
		for pb.Next() {
			d := delivery(subs[i%len(subs)], body, hubcore.Header{Name: "Urgency", Value: "high"})
			if err := s.Send(ctx, d); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(f.Conns()), "conns")
}

// BenchmarkSeal is the per-message encryption alone: key generation, ECDH,
// HKDF and AES-GCM.
func BenchmarkSeal(b *testing.B) {
	ua, _ := ecdh.P256().GenerateKey(rand.Reader)
	auth := make([]byte, 16)
	pt := make([]byte, 256)
	b.ReportAllocs()
	for b.Loop() {
		as, salt, err := randomEphemeral()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := seal(pt, ua.PublicKey(), auth, as, salt); err != nil {
			b.Fatal(err)
		}
	}
}
