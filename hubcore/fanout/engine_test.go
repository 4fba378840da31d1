package fanout_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/fanout"
	"github.com/pushgate/pushgate/hubcore/payload"
	"github.com/pushgate/pushgate/internal/redistest"
	"github.com/pushgate/pushgate/memstore"
	"github.com/pushgate/pushgate/redisstore"
)

func TestMain(m *testing.M) {
	if os.Getenv(replicaEnv) != "" {
		replicaMain() // a child process of TestReplicaKilled
		return
	}
	redistest.Main(m)
}

// env is a hub's registry and broker, in memory or in a real Redis.
type env struct {
	store  hubcore.Store
	broker func() fanout.Broker // a new client on the same shared state
	hub    *hubcore.Hub
}

var hubSeq atomic.Int64

func backends(t *testing.T, fn func(t *testing.T, e *env)) {
	t.Run("memory", func(t *testing.T) {
		st, err := memstore.Open(memstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		b := memstore.NewBroker(memstore.BrokerOptions{})
		fn(t, &env{store: st, broker: func() fanout.Broker { return b }, hub: hubcore.NewHub(st, hubcore.HubOptions{})})
	})
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Shared(t)
		name := fmt.Sprintf("fanout%d", hubSeq.Add(1))
		ctx := context.Background()
		st, err := redisstore.New(ctx, redisstore.Options{Redis: redisOpts(srv.Addr), Hub: name, Shards: 4})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		mk := func() fanout.Broker {
			rdb := redisClient(srv.Addr)
			t.Cleanup(func() { rdb.Close() })
			b, err := redisstore.NewBroker(rdb, name, redisstore.BrokerOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		fn(t, &env{store: st, broker: mk, hub: hubcore.NewHub(st, hubcore.HubOptions{})})
	})
}

// recorder is an in-process sender: it records each delivery and answers
// from a per-handle script. Engine tests use it to look at the engine's
// decisions; the senders against the strict fakes are tested in their own
// packages and end to end in e2e_test.go.
type recorder struct {
	mu     sync.Mutex
	got    map[string]int // handle key → deliveries
	bodies map[string]string
	script map[string][]error
	block  chan struct{} // when set, Send waits on it (or ctx)
}

func newRecorder() *recorder {
	return &recorder{got: map[string]int{}, bodies: map[string]string{}, script: map[string][]error{}}
}

func (r *recorder) Send(ctx context.Context, d *hubcore.Delivery) error {
	if r.block != nil {
		select {
		case <-r.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	k := d.Channel.Key(d.Platform)
	r.mu.Lock()
	defer r.mu.Unlock()
	if q := r.script[k]; len(q) > 0 {
		r.script[k] = q[1:]
		if q[0] != nil {
			return q[0]
		}
	}
	r.got[k]++
	r.bodies[k] = string(d.Body)
	return nil
}

func (r *recorder) count(k string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got[k]
}

func (r *recorder) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.got {
		n += c
	}
	return n
}

func fcmToken(i int) string { return fmt.Sprintf("tok-%06d", i) }

func apnsToken(i int) string { return fmt.Sprintf("%064x", i+1) }

// putInstallations writes n installations, alternately FCM v1 and APNs,
// each with a template "t" rendering the property "msg" and the tags given.
func putInstallations(t *testing.T, e *env, n int, tags func(i int) []string) {
	t.Helper()
	for i := 0; i < n; i++ {
		in := &hubcore.Installation{InstallationID: fmt.Sprintf("inst-%d", i), Tags: tags(i)}
		if i%2 == 0 {
			in.Platform = hubcore.FCMV1
			in.PushChannel = hubcore.PushChannel{Handle: fcmToken(i)}
			in.Templates = map[string]*hubcore.Template{"t": {Body: `{"message":{"data":{"m":"$(msg)"}}}`}}
		} else {
			in.Platform = hubcore.APNS
			in.PushChannel = hubcore.PushChannel{Handle: apnsToken(i)}
			in.Templates = map[string]*hubcore.Template{"t": {Body: `{"aps":{"alert":"$(msg)"}}`}}
		}
		if _, err := e.hub.PutInstallation(context.Background(), in, hubcore.Always); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
}

func newEngine(t *testing.T, e *env, b fanout.Broker, senders map[hubcore.Platform]hubcore.Sender, mod func(*fanout.Config)) *fanout.Engine {
	t.Helper()
	cfg := fanout.Config{
		Store: e.store, Broker: b, Senders: senders, ParseExpr: e.hub.ParseExpression,
		Parts: 4, SmallSend: 10, ReclaimAfter: 300 * time.Millisecond, RetryBase: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond,
		Poll: 20 * time.Millisecond, Concurrency: 16,
	}
	if mod != nil {
		mod(&cfg)
	}
	en, err := fanout.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return en
}

func run(t *testing.T, en *fanout.Engine) context.CancelFunc {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { en.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return cancel
}

func templateSend(e *env, t *testing.T, expr string, msg string) fanout.Send {
	t.Helper()
	s := fanout.Send{Notification: hubcore.Notification{Format: payload.Template, Body: []byte(`{"msg":"` + msg + `"}`)}}
	if expr == "*" {
		s.Broadcast = true
		return s
	}
	s.ExprSource = expr
	if expr != "" {
		x, err := e.hub.ParseExpression(expr)
		if err != nil {
			t.Fatal(err)
		}
		s.Notification.Expr = x
	}
	return s
}

// wait polls a send's outcome until it is final.
func wait(t *testing.T, en *fanout.Engine, id string) *fanout.Outcome {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		o, err := en.Outcome(context.Background(), id)
		if err != nil {
			t.Fatalf("outcome %s: %v", id, err)
		}
		if o.State.Final() {
			return o
		}
		if time.Now().After(deadline) {
			t.Fatalf("send %s still %s after 30 s: %+v", id, o.State, o.Counts)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestBroadcastCountsEveryTarget(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		const n = 300
		putInstallations(t, e, n, func(i int) []string { return []string{fmt.Sprintf("group:%d", i%3)} })
		// A second installation on an existing handle: a duplicate.
		dup := &hubcore.Installation{InstallationID: "dup", Platform: hubcore.FCMV1, PushChannel: hubcore.PushChannel{Handle: fcmToken(0)},
			Templates: map[string]*hubcore.Template{"t": {Body: `{"message":{"data":{"m":"$(msg)"}}}`}}}
		if _, err := e.hub.PutInstallation(context.Background(), dup, hubcore.Always); err != nil {
			t.Fatal(err)
		}
		rec := newRecorder()
		en := newEngine(t, e, e.broker(), map[hubcore.Platform]hubcore.Sender{hubcore.APNS: rec, hubcore.FCMV1: rec}, nil)
		run(t, en)
		id, err := en.Submit(context.Background(), templateSend(e, t, "*", "hello"))
		if err != nil {
			t.Fatal(err)
		}
		o := wait(t, en, id)
		if o.State != fanout.Completed || o.Targets != n+1 || o.Parts != 4 || o.PartsDone != 4 {
			t.Fatalf("outcome %+v", o)
		}
		fc, ac := o.Counts[hubcore.FCMV1], o.Counts[hubcore.APNS]
		if fc[hubcore.OutcomeSuccess] != n/2 || fc[hubcore.OutcomeSkipped] != 1 || ac[hubcore.OutcomeSuccess] != n/2 {
			t.Fatalf("counts %v", o.Counts)
		}
		if rec.total() != n || rec.count(fcmToken(0)) != 1 {
			t.Fatalf("sender got %d deliveries (%d to the duplicated handle); want %d and 1", rec.total(), rec.count(fcmToken(0)), n)
		}
		if got := rec.bodies[strings.ToUpper(apnsToken(1))]; got != `{"aps":{"alert":"hello"}}` {
			t.Fatalf("APNs body %q", got)
		}

		// A tag send reaches its group only; a small one runs as one part.
		id, err = en.Submit(context.Background(), templateSend(e, t, "group:1 && !group:2", "x"))
		if err != nil {
			t.Fatal(err)
		}
		if o := wait(t, en, id); o.Targets != n/3 || o.Counts.Total() != n/3 {
			t.Fatalf("tag send outcome %+v", o)
		}
		id, err = en.Submit(context.Background(), templateSend(e, t, "$InstallationId:{inst-7}", "one"))
		if err != nil {
			t.Fatal(err)
		}
		if o := wait(t, en, id); o.Parts != 1 || o.Counts[hubcore.APNS][hubcore.OutcomeSuccess] != 1 {
			t.Fatalf("single send outcome %+v", o)
		}
		// A small send is one part, de-duplicated in memory.
		id, err = en.Submit(context.Background(), templateSend(e, t, "$InstallationId:{dup} || $InstallationId:{inst-0}", "d"))
		if err != nil {
			t.Fatal(err)
		}
		if o := wait(t, en, id); o.Parts != 1 || o.Counts[hubcore.FCMV1][hubcore.OutcomeSuccess] != 1 || o.Counts[hubcore.FCMV1][hubcore.OutcomeSkipped] != 1 {
			t.Fatalf("small send with a duplicate: %+v %v", o, o.Counts)
		}
		// An empty expression reaches nobody.
		id, err = en.Submit(context.Background(), templateSend(e, t, "", "x"))
		if err != nil {
			t.Fatal(err)
		}
		if o := wait(t, en, id); o.State != fanout.NoTargetFound || o.Targets != 0 {
			t.Fatalf("empty send outcome %+v", o)
		}
	})
}

func TestRetriesExpiryAndFailures(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		putInstallations(t, e, 8, func(int) []string { return []string{"all"} })
		rec := newRecorder()
		throttled := &hubcore.PushError{Outcome: hubcore.OutcomeThrottled, Status: 429, Retry: true, RetryAfter: 20 * time.Millisecond}
		rec.script[fcmToken(0)] = []error{throttled, throttled}           // then succeeds
		rec.script[fcmToken(2)] = []error{fmt.Errorf("connection reset")} // transport: retried
		rec.script[fcmToken(4)] = []error{&hubcore.PushError{Outcome: hubcore.OutcomeExpiredChannel, Status: 404, ExpireHandle: true, Reason: "UNREGISTERED"}}
		rec.script[fcmToken(6)] = []error{&hubcore.PushError{Outcome: hubcore.OutcomeInvalidCredentials, Status: 401}}
		var retried atomic.Int64
		en := newEngine(t, e, e.broker(), map[hubcore.Platform]hubcore.Sender{hubcore.FCMV1: rec}, func(c *fanout.Config) {
			c.Observer = observer{retried: &retried}
		})
		run(t, en)
		id, err := en.Submit(context.Background(), templateSend(e, t, "all", "m"))
		if err != nil {
			t.Fatal(err)
		}
		o := wait(t, en, id)
		fc := o.Counts[hubcore.FCMV1]
		if fc[hubcore.OutcomeSuccess] != 2 || fc[hubcore.OutcomeExpiredChannel] != 1 || fc[hubcore.OutcomeInvalidCredentials] != 1 {
			t.Fatalf("FCM counts %v", fc)
		}
		// No APNs sender configured: counted, not lost.
		if o.Counts[hubcore.APNS][hubcore.OutcomeNoCredentials] != 4 {
			t.Fatalf("APNs counts %v", o.Counts[hubcore.APNS])
		}
		if retried.Load() != 3 {
			t.Fatalf("%d retries; want 3", retried.Load())
		}
		in, err := e.store.GetInstallation(context.Background(), "inst-4")
		if err != nil || !in.PushChannelExpired {
			t.Fatalf("inst-4 after UNREGISTERED: %+v, %v", in, err)
		}
		evs, _, err := en.Feedback(context.Background(), "", 10)
		if err != nil || len(evs) != 1 || evs[0].Handle != fcmToken(4) || evs[0].Outcome != hubcore.OutcomeExpiredChannel || evs[0].NotificationID != id || evs[0].InstallationID != "inst-4" {
			t.Fatalf("feedback %+v, %v", evs, err)
		}
		// The expired handle has left the audience.
		id, err = en.Submit(context.Background(), templateSend(e, t, "all", "again"))
		if err != nil {
			t.Fatal(err)
		}
		if o := wait(t, en, id); o.Counts[hubcore.FCMV1][hubcore.OutcomeSuccess] != 3 || rec.count(fcmToken(4)) != 0 {
			t.Fatalf("second send %v", o.Counts)
		}
	})
}

type observer struct{ retried *atomic.Int64 }

func (observer) Delivered(hubcore.Platform, hubcore.OutcomeName, time.Duration) {}
func (o observer) Retried(hubcore.Platform, hubcore.OutcomeName)                { o.retried.Add(1) }

func TestAbandonAfterWindow(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		putInstallations(t, e, 4, func(int) []string { return []string{"all"} })
		rec := newRecorder()
		down := &hubcore.PushError{Outcome: hubcore.OutcomePnsUnavailable, Status: 503, Retry: true}
		for i := 0; i < 4; i++ {
			rec.script[fcmToken(i)] = []error{down, down, down, down, down, down, down, down, down, down, down, down, down, down, down, down, down, down, down, down, down, down, down, down, down, down, down, down}
			rec.script[strings.ToUpper(apnsToken(i))] = rec.script[fcmToken(i)]
		}
		en := newEngine(t, e, e.broker(), map[hubcore.Platform]hubcore.Sender{hubcore.APNS: rec, hubcore.FCMV1: rec}, func(c *fanout.Config) {
			c.Window = 200 * time.Millisecond
		})
		run(t, en)
		id, err := en.Submit(context.Background(), templateSend(e, t, "all", "m"))
		if err != nil {
			t.Fatal(err)
		}
		o := wait(t, en, id)
		if o.State != fanout.Abandoned || o.Counts[hubcore.FCMV1][hubcore.OutcomeAbandoned] != 2 || o.Counts[hubcore.APNS][hubcore.OutcomeAbandoned] != 2 || rec.total() != 0 {
			t.Fatalf("outcome %+v %v, %d delivered", o, o.Counts, rec.total())
		}
	})
}

func TestScheduledSends(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		putInstallations(t, e, 2, func(int) []string { return []string{"all"} })
		rec := newRecorder()
		en := newEngine(t, e, e.broker(), map[hubcore.Platform]hubcore.Sender{hubcore.APNS: rec, hubcore.FCMV1: rec}, nil)
		run(t, en)
		s := templateSend(e, t, "all", "later")
		s.At = time.Now().Add(300 * time.Millisecond)
		id, err := en.Submit(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		s.At = time.Now().Add(time.Hour)
		cancelled, err := en.Submit(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		if o, err := en.Outcome(context.Background(), cancelled); err != nil || o.State != fanout.Scheduled {
			t.Fatalf("scheduled outcome %+v, %v", o, err)
		}
		if err := en.Cancel(context.Background(), cancelled); err != nil {
			t.Fatal(err)
		}
		if o := wait(t, en, id); o.State != fanout.Completed || o.Counts.Total() != 2 || o.Started.Before(o.At) {
			t.Fatalf("fired outcome %+v", o)
		}
		if o, _ := en.Outcome(context.Background(), cancelled); o.State != fanout.Cancelled {
			t.Fatalf("cancelled send is %s", o.State)
		}
		if err := en.Cancel(context.Background(), id); hubcore.CodeOf(err) != hubcore.CodeConflict {
			t.Fatalf("cancel after firing: %v; want conflict", err)
		}
		s.At = time.Now().Add(8 * 24 * time.Hour)
		if _, err := en.Submit(context.Background(), s); hubcore.CodeOf(err) != hubcore.CodeInvalid {
			t.Fatalf("scheduling 8 days ahead: %v", err)
		}
		if rec.total() != 2 {
			t.Fatalf("%d deliveries; want 2", rec.total())
		}
	})
}

// TestReclaim runs a send on a replica that stops mid-part (its context ends
// while its sender hangs), and a second replica that takes the parts over:
// the send completes with every target counted once.
func TestReclaim(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		const n = 200
		putInstallations(t, e, n, func(int) []string { return []string{"all"} })
		stuck := newRecorder()
		stuck.block = make(chan struct{}) // never closed
		a := newEngine(t, e, e.broker(), map[hubcore.Platform]hubcore.Sender{hubcore.APNS: stuck, hubcore.FCMV1: stuck}, func(c *fanout.Config) { c.Consumer = "a" })
		stopA := run(t, a)
		id, err := a.Submit(context.Background(), templateSend(e, t, "*", "m"))
		if err != nil {
			t.Fatal(err)
		}
		// Wait until A holds parts, then kill it.
		for deadline := time.Now().Add(10 * time.Second); ; {
			o, err := a.Outcome(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			if o.State == fanout.Processing {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica A never started: %+v", o)
			}
			time.Sleep(5 * time.Millisecond)
		}
		stopA()
		good := newRecorder()
		b := newEngine(t, e, e.broker(), map[hubcore.Platform]hubcore.Sender{hubcore.APNS: good, hubcore.FCMV1: good}, func(c *fanout.Config) { c.Consumer = "b" })
		run(t, b)
		o := wait(t, b, id)
		if o.State != fanout.Completed || o.Targets != n || o.Counts[hubcore.APNS][hubcore.OutcomeSuccess]+o.Counts[hubcore.FCMV1][hubcore.OutcomeSuccess] != n {
			t.Fatalf("outcome %+v %v", o, o.Counts)
		}
		if good.total() != n {
			t.Fatalf("replica B delivered %d; want %d", good.total(), n)
		}
	})
}

func TestTestSend(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		putInstallations(t, e, 40, func(int) []string { return []string{"all"} })
		rec := newRecorder()
		rec.script[fcmToken(0)] = []error{&hubcore.PushError{Outcome: hubcore.OutcomeExpiredChannel, Status: 404, ExpireHandle: true}}
		en := newEngine(t, e, e.broker(), map[hubcore.Platform]hubcore.Sender{hubcore.APNS: rec, hubcore.FCMV1: rec}, nil)
		res, err := en.TestSend(context.Background(), templateSend(e, t, "all", "t"))
		if err != nil {
			t.Fatal(err)
		}
		if len(res) != fanout.MaxTestTargets || rec.total() > fanout.MaxTestTargets {
			t.Fatalf("%d results, %d deliveries", len(res), rec.total())
		}
		seen := map[string]bool{}
		for _, r := range res {
			if seen[r.Handle] {
				t.Fatalf("handle %s twice", r.Handle)
			}
			seen[r.Handle] = true
			if r.Outcome != hubcore.OutcomeSuccess && !(r.Handle == fcmToken(0) && r.Outcome == hubcore.OutcomeExpiredChannel) {
				t.Fatalf("result %+v", r)
			}
		}
		// Direct: to a handle, registered or not.
		d := fanout.Send{Notification: hubcore.Notification{Format: payload.FCMV1, Body: []byte(`{"message":{"data":{"a":"b"}}}`)}, Handles: []hubcore.PushChannel{{Handle: "direct-1"}}}
		res, err = en.TestSend(context.Background(), d)
		if err != nil || len(res) != 1 || res[0].Outcome != hubcore.OutcomeSuccess || rec.count("direct-1") != 1 {
			t.Fatalf("direct test send %+v, %v", res, err)
		}
	})
}

func TestSubmitRefusesBadInput(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		en := newEngine(t, e, e.broker(), nil, nil)
		bad := []fanout.Send{
			{Notification: hubcore.Notification{Format: payload.Template, Body: []byte(`[1]`)}, Broadcast: true},
			{Notification: hubcore.Notification{Format: payload.Apple, Body: []byte(`not json`)}, Broadcast: true},
			{Notification: hubcore.Notification{Format: payload.Template, Body: []byte(`{}`)}, Handles: []hubcore.PushChannel{{Handle: "x"}}},
		}
		for i, s := range bad {
			if _, err := en.Submit(context.Background(), s); hubcore.CodeOf(err) != hubcore.CodeInvalid && hubcore.CodeOf(err) != hubcore.CodeLimit {
				t.Errorf("send %d: %v; want a 4xx-class error", i, err)
			}
		}
	})
}

func redisOpts(addr string) redis.UniversalOptions {
	return redis.UniversalOptions{Addrs: []string{addr}}
}

func redisClient(addr string) redis.UniversalClient {
	return redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{addr}})
}
