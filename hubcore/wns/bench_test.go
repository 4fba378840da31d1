package wns

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/pushgate/pushgate/hubcore"
	wnsfake "github.com/pushgate/pushgate/internal/pnsfake/wns"
)

// BenchmarkSend measures sends against the fake on loopback from many
// goroutines, over HTTP/1.1 (as WNS is used) and HTTP/2.
func BenchmarkSend(b *testing.B) {
	for _, h2 := range []bool{false, true} {
		b.Run(map[bool]string{false: "http1", true: "http2"}[h2], func(b *testing.B) {
			srv, s := setup(b, wnsfake.Options{}, func(c *Config) { c.HTTP2 = h2 })
			channels := make([]string, 1024)
			for i := range channels {
				channels[i] = wnsfake.ChannelURI(wnsfake.Channel(fmt.Sprint("bench-", i)))
			}
			headers := []hubcore.Header{{Name: "X-WNS-Type", Value: "wns/toast"}, {Name: "X-WNS-TTL", Value: "3600"}}
			body := []byte(toast)
			if err := s.Send(context.Background(), &hubcore.Delivery{Channel: hubcore.PushChannel{Handle: channels[0]}, Rendered: hubcore.Rendered{Body: body, Headers: headers}}); err != nil {
				b.Fatal(err)
			}
			var n atomic.Uint64
			b.SetParallelism(16)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				d := &hubcore.Delivery{Rendered: hubcore.Rendered{Body: body, Headers: headers}}
				for pb.Next() {
					d.Channel.Handle = channels[n.Add(1)%uint64(len(channels))]
					if err := s.Send(context.Background(), d); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sends/s")
			b.ReportMetric(float64(srv.Conns()), "conns")
		})
	}
}
