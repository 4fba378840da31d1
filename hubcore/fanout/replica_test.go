package fanout_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/apns"
	"github.com/pushgate/pushgate/hubcore/fanout"
	"github.com/pushgate/pushgate/internal/pnsfake"
	apnsfake "github.com/pushgate/pushgate/internal/pnsfake/apns"
	"github.com/pushgate/pushgate/internal/redistest"
	"github.com/pushgate/pushgate/redisstore"
)

// replicaEnv carries a replica's configuration (JSON) from the test to the
// child processes it starts.
const replicaEnv = "PUSHGATE_TEST_REPLICA"

type replicaConfig struct {
	Redis, Hub, Consumer string
	APNSURL, CAFile      string
	KeyFile              string
	KeyID, TeamID, Topic string
}

// replicaMain is a replica: this test binary re-executed, running one
// engine against the shared Redis and the parent's fake APNs until killed.
func replicaMain() {
	var c replicaConfig
	if err := json.Unmarshal([]byte(os.Getenv(replicaEnv)), &c); err != nil {
		fmt.Fprintln(os.Stderr, "replica config:", err)
		os.Exit(2)
	}
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "replica:", err)
		os.Exit(2)
	}
	ctx := context.Background()
	st, err := redisstore.New(ctx, redisstore.Options{Redis: redis.UniversalOptions{Addrs: []string{c.Redis}}, Hub: c.Hub})
	if err != nil {
		fail(err)
	}
	b, err := redisstore.NewBroker(st.Client(), c.Hub, redisstore.BrokerOptions{})
	if err != nil {
		fail(err)
	}
	pem, err := os.ReadFile(c.CAFile)
	if err != nil {
		fail(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	key, err := os.ReadFile(c.KeyFile)
	if err != nil {
		fail(err)
	}
	s, err := apns.New(apns.Config{Endpoint: c.APNSURL, KeyPEM: key, KeyID: c.KeyID, TeamID: c.TeamID, Topic: c.Topic, RootCAs: roots})
	if err != nil {
		fail(err)
	}
	en, err := fanout.New(fanout.Config{Store: st, Broker: b, Senders: map[hubcore.Platform]hubcore.Sender{hubcore.APNS: s},
		Consumer: c.Consumer, Workers: 2, Concurrency: 8, ReclaimAfter: time.Second})
	if err != nil {
		fail(err)
	}
	fmt.Println("ready")
	_ = en.Run(ctx) // until SIGKILL
}

// TestReplicaKilled runs a broadcast on two replica processes sharing one
// Redis and SIGKILLs one of them mid-send: the other reclaims its parts,
// the send completes, every device is reached and every target is counted
// exactly once.
func TestReplicaKilled(t *testing.T) {
	srv := redistest.Shared(t)
	ctx := context.Background()
	hub := fmt.Sprintf("replicas%d", hubSeq.Add(1))
	st, err := redisstore.New(ctx, redisstore.Options{Redis: redisOpts(srv.Addr), Hub: hub, Shards: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	p8, pub, err := apnsfake.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	fake := apnsfake.New(apnsfake.Options{Keys: map[string]apnsfake.Key{"KEY1234567": {TeamID: "TEAM123456", Public: pub}},
		Topics: map[string][]string{"TEAM123456": {"com.example.app"}}})
	var mu sync.Mutex
	arrived := map[string]int{}
	fake.Log.OnArrive = func(token string, _ time.Time) {
		mu.Lock()
		arrived[token]++
		mu.Unlock()
	}
	// Slow enough that the send takes seconds and the kill lands mid-part.
	fake.Script.SetDefault(pnsfake.Action{Kind: pnsfake.Slow, Delay: 3 * time.Millisecond})
	if err := fake.Start(); err != nil {
		t.Fatal(err)
	}
	defer fake.Close()

	const n = 2000
	h := hubcore.NewHub(st, hubcore.HubOptions{})
	for i := 0; i < n; i++ {
		in := &hubcore.Installation{InstallationID: fmt.Sprintf("i%d", i), Platform: hubcore.APNS, PushChannel: hubcore.PushChannel{Handle: apnsToken(i)}}
		if _, err := h.PutInstallation(ctx, in, hubcore.Always); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	caFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "key.p8")
	if err := os.WriteFile(caFile, fake.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, p8, 0o600); err != nil {
		t.Fatal(err)
	}
	start := func(name string) *exec.Cmd {
		cfg, _ := json.Marshal(replicaConfig{Redis: srv.Addr, Hub: hub, Consumer: name, APNSURL: fake.URL(), CAFile: caFile, KeyFile: keyFile,
			KeyID: "KEY1234567", TeamID: "TEAM123456", Topic: "com.example.app"})
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), replicaEnv+"="+string(cfg))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	victim := start("victim")
	start("survivor")

	b, err := redisstore.NewBroker(st.Client(), hub, redisstore.BrokerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	submitter, err := fanout.New(fanout.Config{Store: st, Broker: b, Parts: 8, SmallSend: 10})
	if err != nil {
		t.Fatal(err)
	}
	id, err := submitter.Submit(ctx, fanout.Send{Notification: hubcore.Notification{Format: "apple", Body: []byte(`{"aps":{"alert":"hi"}}`)}, Broadcast: true})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(60 * time.Second); fake.Log.Accepted() < n/5; {
		if time.Now().After(deadline) {
			t.Fatalf("only %d deliveries after 60 s", fake.Log.Accepted())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := victim.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = victim.Wait()
	t.Logf("killed the victim after %d deliveries", fake.Log.Accepted())
	o := wait(t, submitter, id)
	if o.State != fanout.Completed || o.Targets != n || o.Counts[hubcore.APNS][hubcore.OutcomeSuccess] != n || o.PartsDone != 8 {
		t.Fatalf("outcome %+v %v", o, o.Counts)
	}
	mu.Lock()
	defer mu.Unlock()
	again := 0
	for i := 0; i < n; i++ {
		c := arrived[apnsToken(i)]
		if c == 0 {
			t.Fatalf("device %d never reached", i)
		}
		again += c - 1
	}
	// Parts the victim held are delivered again from their start
	// (at-least-once for an interrupted part); nothing else is repeated.
	t.Logf("%d deliveries repeated after the kill", again)
}
