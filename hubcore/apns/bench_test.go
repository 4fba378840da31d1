package apns

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
)

// BenchmarkSend drives the sender against the fake on loopback, with many
// requests in flight as the fan-out engine has them.
func BenchmarkSend(b *testing.B) {
	e := newEnv(b, nil)
	s := e.sender(b, nil)
	var n atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(64)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := n.Add(1)
		d := delivery(fmt.Sprintf("%s%016x", tok[:48], i), alert)
		for pb.Next() {
			if err := s.Send(context.Background(), d); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(e.fake.Conns()), "conns")
}
