package redisstore

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/tagexpr"
	"github.com/pushgate/pushgate/internal/redistest"
)

// The benchmarks run on the shared test server with a population of
// benchN installations built once (bench/storebench measures a million).
// With PUSHGATE_STOREBENCH_ADDR set to a loopback server that storebench
// loaded (-addr … -flush), they query its hub "bench" instead, for
// profiling at full size.
const benchN = 20000

var benchPop struct {
	once sync.Once
	s    *Store
	err  error
}

func benchStore(b *testing.B) *Store {
	b.Helper()
	benchPop.once.Do(func() {
		ctx := context.Background()
		if addr := os.Getenv("PUSHGATE_STOREBENCH_ADDR"); addr != "" {
			benchPop.s, benchPop.err = New(ctx, Options{Redis: redis.UniversalOptions{Addrs: []string{addr}}, Hub: "bench"})
			return
		}
		srv := redistest.Shared(b)
		s, err := New(ctx, Options{Redis: redis.UniversalOptions{Addrs: []string{srv.Addr}}, Hub: newHub("bench")})
		if err != nil {
			benchPop.err = err
			return
		}
		benchPop.s = s
		var wg sync.WaitGroup
		var next atomic.Int64
		for c := 0; c < 16; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1))
					if i > benchN || benchPop.err != nil {
						return
					}
					if _, err := s.PutInstallation(ctx, benchInstallation(i), hubcore.Always); err != nil {
						benchPop.err = err
						return
					}
				}
			}()
		}
		wg.Wait()
	})
	if benchPop.err != nil {
		b.Fatal(benchPop.err)
	}
	return benchPop.s
}

func benchInstallation(i int) *hubcore.Installation {
	tags := []string{fmt.Sprintf("userId:u%d", i/2), fmt.Sprintf("lang:l%d", i%20), fmt.Sprintf("team:t%d", i%1000), "event:comment"}
	if i%10 == 3 {
		tags = append(tags, "muted")
	}
	if i%10 == 7 {
		tags = append(tags, "a")
	}
	if i%100 == 7 || i%100 == 8 {
		tags = append(tags, "b")
	}
	in := &hubcore.Installation{
		InstallationID: fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i),
		UserID:         fmt.Sprintf("u%d", i/2),
		Platform:       hubcore.FCMV1,
		PushChannel:    hubcore.PushChannel{Handle: fmt.Sprintf("tok%d:APA91b", i)},
		Tags:           tags,
		Templates:      map[string]*hubcore.Template{"alert": {Body: `{"message":{"notification":{"body":"$(body)"}}}`}},
	}
	if err := in.Validate(hubcore.Limits{}); err != nil {
		panic(err)
	}
	return in
}

func benchResolve(b *testing.B, expr string) {
	s := benchStore(b)
	e, err := tagexpr.Parse(expr, tagexpr.Limits{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	q := hubcore.AudienceQuery{Expr: e, Template: true}
	var n int64
	b.ResetTimer()
	for b.Loop() {
		n = 0
		if err := s.Resolve(ctx, q, 1000, func(ts []hubcore.Target) error { n += int64(len(ts)); return nil }); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n), "targets/op")
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "targets/s")
}

func BenchmarkResolveUser(b *testing.B)     { benchResolve(b, "userId:u305000 || userId:u4000") }
func BenchmarkResolveAnd(b *testing.B)      { benchResolve(b, "a && b") }
func BenchmarkResolveNotMuted(b *testing.B) { benchResolve(b, "!muted") }

func BenchmarkPutInstallation(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	var i atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			in := benchInstallation(int(1_000_000 + i.Add(1)))
			if _, err := s.PutInstallation(ctx, in, hubcore.Always); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
