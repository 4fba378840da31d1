package redisstore

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/fanout"
	"github.com/pushgate/pushgate/hubcore/fanout/brokertest"
	"github.com/pushgate/pushgate/internal/redistest"
)

// brokerClient returns a new client on addrs (one: standalone, more: a
// cluster), closed at t's cleanup.
func brokerClient(t testing.TB, addrs []string) redis.UniversalClient {
	t.Helper()
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: addrs, IsClusterMode: len(addrs) > 1})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

func newTestBroker(t testing.TB, rdb redis.UniversalClient, hub string) *Broker {
	t.Helper()
	b, err := NewBroker(rdb, hub, BrokerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func standaloneAddrs(t testing.TB) []string { return []string{redistest.Shared(t).Addr} }
func clusterAddrs(t testing.TB) []string    { return redistest.SharedCluster(t).Addrs }

func TestBrokerStandalone(t *testing.T) {
	brokertest.Run(t, func(t *testing.T) fanout.Broker {
		return newTestBroker(t, brokerClient(t, standaloneAddrs(t)), newHub("brk"))
	})
}

func TestBrokerCluster(t *testing.T) {
	brokertest.Run(t, func(t *testing.T) fanout.Broker {
		return newTestBroker(t, brokerClient(t, clusterAddrs(t)), newHub("brkc"))
	})
}

// TestBrokerReplicas runs two brokers of one hub on separate clients, as
// two replicas would: they share the queue, the schedules, the outcomes
// and the buckets.
func TestBrokerReplicas(t *testing.T) {
	for name, addrs := range map[string]func(testing.TB) []string{"standalone": standaloneAddrs, "cluster": clusterAddrs} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			hub := newHub("rep")
			a := newTestBroker(t, brokerClient(t, addrs(t)), hub)
			b := newTestBroker(t, brokerClient(t, addrs(t)), hub)

			if err := a.Enqueue(ctx, brokertest.NewSpec("n", 4)); err != nil {
				t.Fatal(err)
			}
			if err := b.Enqueue(ctx, brokertest.NewSpec("n", 4)); hubcore.CodeOf(err) != hubcore.CodeConflict {
				t.Fatalf("the other replica enqueued the same id: %v", err)
			}
			var mu sync.Mutex
			var claims []fanout.Claim
			var wg sync.WaitGroup
			for i, br := range []*Broker{a, b} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range 20 {
						cs, err := br.Claim(ctx, fmt.Sprint("c", i), 1, time.Hour, 20*time.Millisecond)
						if err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						claims = append(claims, cs...)
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			if len(claims) != 4 {
				t.Fatalf("two replicas claimed %d jobs of 4", len(claims))
			}
			for i, c := range claims {
				br := a
				if i%2 == 1 {
					br = b
				}
				if _, err := br.Finish(ctx, c, nil, brokertest.Base); err != nil {
					t.Fatal(err)
				}
			}
			if o, err := b.Outcome(ctx, "n"); err != nil || o.State != fanout.NoTargetFound || o.PartsDone != 4 {
				t.Fatalf("outcome seen by the other replica: %+v, %v", o, err)
			}

			s := brokertest.NewSpec("s", 1)
			s.At = brokertest.Base.Add(time.Minute)
			if err := a.Schedule(ctx, s); err != nil {
				t.Fatal(err)
			}
			if ids, err := b.FireDue(ctx, s.At, 10); err != nil || len(ids) != 1 {
				t.Fatalf("the other replica fired %v, %v", ids, err)
			}
			if ids, err := a.FireDue(ctx, s.At, 10); err != nil || len(ids) != 0 {
				t.Fatalf("fired twice: %v, %v", ids, err)
			}

			brokertest.CheckSharedPace(t, []fanout.Broker{a, b}, 8)
		})
	}
}

func pttl(t *testing.T, rdb redis.UniversalClient, key string) time.Duration {
	t.Helper()
	d, err := rdb.PTTL(context.Background(), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func near(got, want time.Duration) bool {
	return got > want-time.Minute && got <= want+time.Second
}

// TestBrokerLayout checks the keys and their lifetimes.
func TestBrokerLayout(t *testing.T) {
	ctx := context.Background()
	rdb := brokerClient(t, standaloneAddrs(t))
	hub := newHub("lay")
	b := newTestBroker(t, rdb, hub)
	now := time.Now()

	spec := brokertest.NewSpec("n", 2)
	spec.Deadline = now.Add(2 * time.Hour)
	if err := b.Enqueue(ctx, spec); err != nil {
		t.Fatal(err)
	}
	note := "{pg:" + hub + ":q}:n:n"
	if d := pttl(t, rdb, note); !near(d, fanout.OutcomeTTL) {
		t.Errorf("notification TTL %v, want about %v", d, fanout.OutcomeTTL)
	}
	s := brokertest.NewSpec("s", 1)
	s.At = now.Add(3 * time.Hour)
	if err := b.Schedule(ctx, s); err != nil {
		t.Fatal(err)
	}
	if d := pttl(t, rdb, "{pg:"+hub+":q}:n:s"); !near(d, 3*time.Hour+fanout.OutcomeTTL) {
		t.Errorf("scheduled TTL %v, want about %v", d, 3*time.Hour+fanout.OutcomeTTL)
	}

	hashes := make([]uint64, 64)
	for i := range hashes {
		hashes[i] = uint64(i)
	}
	if err := b.Dedupe(ctx, "n", 0, 1, hashes, make([]bool, len(hashes))); err != nil {
		t.Fatal(err)
	}
	// A broker that did not enqueue n reads the deadline from Redis.
	b2 := newTestBroker(t, rdb, hub)
	out := make([]bool, 1)
	if err := b2.Dedupe(ctx, "n", 1, 1, []uint64{3}, out); err != nil || out[0] {
		t.Fatalf("Dedupe on another broker: %v, %v", out, err)
	}
	for k := range dedupeKeys {
		key := fmt.Sprintf("{pg:%s:d:n:%d}", hub, k)
		if n, err := rdb.HLen(ctx, key).Result(); err != nil || n != 4 {
			t.Errorf("%s has %d hashes, %v; want 4", key, n, err)
		}
		if d := pttl(t, rdb, key); !near(d, 3*time.Hour) {
			t.Errorf("%s TTL %v, want about 3h (deadline + 1h)", key, d)
		}
	}

	cs, err := b.Claim(ctx, "c", 10, time.Hour, time.Second)
	if err != nil || len(cs) != 2 {
		t.Fatalf("Claim: %v, %v", cs, err)
	}
	jobs := "{pg:" + hub + ":q}:jobs"
	for _, c := range cs {
		if _, err := b.Finish(ctx, c, nil, now); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := rdb.XLen(ctx, jobs).Result(); err != nil || n != 0 {
		t.Errorf("%d entries left in the stream after every job finished, %v", n, err)
	}
	if d := pttl(t, rdb, "{pg:"+hub+":q}:p:n"); !near(d, fanout.OutcomeTTL) {
		t.Errorf("done-parts TTL %v", d)
	}
	if _, _, err := b.Take(ctx, "cred", 10, 100, 1); err != nil {
		t.Fatal(err)
	}
	if d := pttl(t, rdb, "{pg:"+hub+":tb:cred}"); d <= 0 || d > 16*time.Second {
		t.Errorf("bucket TTL %v, want until full again (10 s) plus a margin", d)
	}
}

// TestBrokerRecovers checks that the broker survives its stream being
// deleted and its scripts being flushed.
func TestBrokerRecovers(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Shared(t)
	rdb := brokerClient(t, []string{srv.Addr})
	hub := newHub("rec")
	b := newTestBroker(t, rdb, hub)
	if err := rdb.Del(ctx, "{pg:"+hub+":q}:jobs").Err(); err != nil {
		t.Fatal(err)
	}
	if cs, err := b.Claim(ctx, "c", 1, time.Hour, 10*time.Millisecond); err != nil || len(cs) != 0 {
		t.Fatalf("Claim without a group: %v, %v", cs, err)
	}
	if err := rdb.Del(ctx, "{pg:"+hub+":q}:jobs").Err(); err != nil {
		t.Fatal(err)
	}
	if err := b.Enqueue(ctx, brokertest.NewSpec("n", 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := redistest.Do(srv.Addr, "SCRIPT", "FLUSH"); err != nil {
		t.Fatal(err)
	}
	cs, err := b.Claim(ctx, "c", 1, time.Hour, time.Second)
	if err != nil || len(cs) != 1 {
		t.Fatalf("Claim after the stream was recreated: %v, %v", cs, err)
	}
	out := make([]bool, 3)
	if err := b.Dedupe(ctx, "n", 0, 1, []uint64{1, 2, 1}, out); err != nil || !out[0] || !out[1] || out[2] {
		t.Fatalf("Dedupe after SCRIPT FLUSH: %v, %v", out, err)
	}
	if done, err := b.Finish(ctx, cs[0], nil, time.Now()); err != nil || !done {
		t.Fatalf("Finish after SCRIPT FLUSH: %v, %v", done, err)
	}
}

func TestBrokerFeedbackTrim(t *testing.T) {
	ctx := context.Background()
	rdb := brokerClient(t, standaloneAddrs(t))
	hub := newHub("fbt")
	b, err := NewBroker(rdb, hub, BrokerOptions{FeedbackKeep: 100})
	if err != nil {
		t.Fatal(err)
	}
	var evs []hubcore.FeedbackEvent
	for i := range 2500 {
		evs = append(evs, brokertest.FeedbackEvent(i))
	}
	if err := b.AddFeedback(ctx, evs); err != nil {
		t.Fatal(err)
	}
	n, err := rdb.XLen(ctx, "{pg:"+hub+":fb}").Result()
	if err != nil || n < 100 || n > 400 {
		t.Fatalf("%d events kept with FeedbackKeep 100, %v; want about 100 (trimming is approximate)", n, err)
	}
	got, _, err := b.Feedback(ctx, "", 1000)
	if err != nil || len(got) != int(n) || got[len(got)-1].Handle != evs[len(evs)-1].Handle {
		t.Fatalf("Feedback after trimming: %d events, %v", len(got), err)
	}
}

func BenchmarkBrokerDedupe(b *testing.B) {
	ctx := context.Background()
	rdb := brokerClient(b, standaloneAddrs(b))
	br := newTestBroker(b, rdb, newHub("bdd"))
	if err := br.Enqueue(ctx, brokertest.NewSpec("n", 1000)); err != nil {
		b.Fatal(err)
	}
	const batch = 10_000
	hashes := make([]uint64, batch)
	out := make([]bool, batch)
	var seed uint64 = 1
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		for j := range hashes {
			seed = seed*6364136223846793005 + 1442695040888963407
			hashes[j] = seed
		}
		if err := br.Dedupe(ctx, "n", i%1000, 1, hashes, out); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "hashes/s")
}

func BenchmarkBrokerClaimFinish(b *testing.B) {
	ctx := context.Background()
	rdb := brokerClient(b, standaloneAddrs(b))
	br := newTestBroker(b, rdb, newHub("bcf"))
	counts := fanout.Counts{}
	counts.Add(hubcore.APNS, hubcore.OutcomeSuccess, 10)
	counts.Add(hubcore.APNS, hubcore.OutcomeExpiredChannel, 1)
	id := 0
	b.ResetTimer()
	for b.Loop() {
		id++
		nid := "n" + strconv.Itoa(id)
		if err := br.Enqueue(ctx, brokertest.NewSpec(nid, 4)); err != nil {
			b.Fatal(err)
		}
		var cs []fanout.Claim
		for len(cs) < 4 {
			got, err := br.Claim(ctx, "c", 4-len(cs), time.Hour, time.Second)
			if err != nil {
				b.Fatal(err)
			}
			cs = append(cs, got...)
		}
		sort.Slice(cs, func(i, j int) bool { return cs[i].Part < cs[j].Part })
		for _, c := range cs {
			if _, err := br.Finish(ctx, c, counts, time.Now()); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N*4)/b.Elapsed().Seconds(), "jobs/s")
}

func TestBrokerReapsConsumers(t *testing.T) {
	ctx := context.Background()
	rdb := brokerClient(t, standaloneAddrs(t))
	hub := newHub("reap")
	b := newTestBroker(t, rdb, hub)
	jobs := "{pg:" + hub + ":q}:jobs"
	if err := b.Enqueue(ctx, brokertest.NewSpec("n", 1)); err != nil {
		t.Fatal(err)
	}
	if cs, err := b.Claim(ctx, "holder", 1, time.Hour, 0); err != nil || len(cs) != 1 {
		t.Fatalf("Claim: %v, %v", cs, err)
	}
	for _, c := range []string{"old1", "old2"} {
		if err := rdb.XGroupCreateConsumer(ctx, jobs, brokerGroup, c).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// With no idle bound every consumer that holds nothing goes.
	if n, err := reapScript.Run(ctx, rdb, []string{jobs}, brokerGroup, 0).Int(); err != nil || n != 2 {
		t.Fatalf("reaped %d, %v; want the 2 that hold nothing", n, err)
	}
	cs, err := rdb.XInfoConsumers(ctx, jobs, brokerGroup).Result()
	if err != nil || len(cs) != 1 || cs[0].Name != "holder" || cs[0].Pending != 1 {
		t.Fatalf("consumers left: %+v, %v", cs, err)
	}
	if n, err := reapScript.Run(ctx, rdb, []string{jobs}, brokerGroup, time.Hour.Milliseconds()).Int(); err != nil || n != 0 {
		t.Fatalf("reaped %d fresh consumers, %v", n, err)
	}
}

// TestBrokerTrimmedJob checks that a claimed job whose entry was trimmed
// from the stream is dropped, not handed out empty.
func TestBrokerTrimmedJob(t *testing.T) {
	ctx := context.Background()
	rdb := brokerClient(t, standaloneAddrs(t))
	hub := newHub("trim")
	b := newTestBroker(t, rdb, hub)
	if err := b.Enqueue(ctx, brokertest.NewSpec("n", 2)); err != nil {
		t.Fatal(err)
	}
	cs, err := b.Claim(ctx, "a", 2, time.Hour, 0)
	if err != nil || len(cs) != 2 {
		t.Fatalf("Claim: %v, %v", cs, err)
	}
	jobs := "{pg:" + hub + ":q}:jobs"
	if err := rdb.XDel(ctx, jobs, cs[0].Ref).Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	got, err := b.Claim(ctx, "b", 10, 10*time.Millisecond, 0)
	if err != nil || len(got) != 1 || got[0].Job != cs[1].Job || got[0].Attempt != 2 {
		t.Fatalf("reclaim after a trim: %+v, %v; want only %+v at attempt 2", got, err, cs[1].Job)
	}
	if n, err := rdb.XPending(ctx, jobs, brokerGroup).Result(); err != nil || n.Count != 1 {
		t.Fatalf("pending after the reclaim: %+v, %v; want only the live job", n, err)
	}
}
