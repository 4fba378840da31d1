package redistest

import (
	"strings"
	"testing"
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
