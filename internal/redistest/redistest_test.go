package redistest

import (
	"net"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) { Main(m) }

func TestStandalone(t *testing.T) {
	s := Start(t, Options{AppendOnly: true})
	if !strings.HasPrefix(s.Addr, "127.0.0.1:") {
		t.Fatalf("address %s is not loopback", s.Addr)
	}
	if got, err := Do(s.Addr, "SET", "k", "v"); err != nil || got != "OK" {
		t.Fatalf("SET: %q %v", got, err)
	}
	if got, err := Do(s.Addr, "GET", "k"); err != nil || got != "v" {
		t.Fatalf("GET: %q %v", got, err)
	}
	if got, err := Do(s.Addr, "INFO", "persistence"); err != nil || !strings.Contains(got, "aof_enabled:1") {
		t.Fatalf("INFO persistence: AOF not enabled: %v\n%s", err, got)
	}
	s.Stop()
	if _, err := Do(s.Addr, "PING"); err == nil {
		t.Fatal("server still answers after Stop")
	}
}

func TestShared(t *testing.T) {
	a, b := Shared(t), Shared(t)
	if a != b {
		t.Fatal("Shared started two servers")
	}
	if _, err := Do(a.Addr, "SET", "x", "1"); err != nil {
		t.Fatal(err)
	}
	a.FlushAll(t)
	if got, err := Do(a.Addr, "GET", "x"); err == nil && got != "" {
		t.Fatalf("FLUSHALL left x=%q", got)
	}
}

func TestCluster(t *testing.T) {
	c := SharedCluster(t)
	if len(c.Addrs) != 3 {
		t.Fatalf("%d masters", len(c.Addrs))
	}
	for _, a := range c.Addrs {
		info, err := Do(a, "CLUSTER", "INFO")
		if err != nil || !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_known_nodes:3") {
			t.Fatalf("%s: %v\n%s", a, err, info)
		}
	}
	c.FlushAll(t)
}

// TestKillRestart kills a server with fsync-always AOF and restarts it on
// the same address: what it acknowledged is there again.
func TestKillRestart(t *testing.T) {
	s := Start(t, Options{AppendOnly: true, AppendFsync: "always"})
	addr := s.Addr
	if _, err := Do(addr, "SET", "k", "v"); err != nil {
		t.Fatal(err)
	}
	s.Kill()
	if _, err := Do(addr, "PING"); err == nil {
		t.Fatal("server still answers after Kill")
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if s.Addr != addr {
		t.Fatalf("restarted on %s, was %s", s.Addr, addr)
	}
	if got, err := Do(addr, "GET", "k"); err != nil || got != "v" {
		t.Fatalf("after restart GET k = %q, %v; the AOF was not replayed", got, err)
	}
	if err := s.Restart(); err == nil {
		t.Fatal("Restart of a running server succeeded")
	}
	s.Stop()
	if err := s.Restart(); err == nil {
		t.Fatal("Restart after Stop succeeded")
	}
}

// TestPauseResume freezes a server: a client gets no answer until Resume.
func TestPauseResume(t *testing.T) {
	s := Start(t, Options{})
	s.Pause()
	conn, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		t.Fatalf("a paused server's port refuses connections: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := conn.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		t.Fatal(err)
	}
	if n, err := conn.Read(make([]byte, 16)); err == nil {
		t.Fatalf("a paused server answered (%d bytes)", n)
	}
	s.Resume()
	if got, err := Do(s.Addr, "PING"); err != nil || got != "PONG" {
		t.Fatalf("after Resume: %q %v", got, err)
	}
	// Stop must not hang on a paused server.
	s.Pause()
	s.Stop()
}
