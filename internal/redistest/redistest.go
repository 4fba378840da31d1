// Package redistest runs real Redis servers for tests: a standalone
// redis-server and a three-master Redis Cluster, each on free loopback
// ports in a temporary directory, stopped when the tests are done.
//
// Starting a server costs tens of milliseconds and a cluster about a second,
// so a test package shares one of each: Shared and SharedCluster start them
// on first use, and Main (called from TestMain) stops them after the
// package's tests. Tests keep out of each other's way with FlushAll or with
// distinct key prefixes.
//
// When redis-server is not installed the tests are skipped, except in CI
// (the environment variable CI=true), where a missing server is a failure:
// CI must never pass by skipping.
package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Options configure a standalone server.
type Options struct {
	// AppendOnly turns on the append-only file, for tests of behaviour
	// under persistence.
	AppendOnly bool
	// AppendFsync is the AOF fsync policy when AppendOnly is set:
	// "everysec" (the default), "always" (a write is on disk before Redis
	// answers it, so an acknowledged write survives a SIGKILL) or "no".
	AppendFsync string
	// Args are extra redis-server arguments, e.g. "--maxmemory", "100mb".
	Args []string
}

// Server is a running redis-server.
type Server struct {
	// Addr is its host:port, always on 127.0.0.1.
	Addr string
	// Dir is its working directory (AOF files, cluster state).
	Dir string

	port    int
	opts    Options
	extra   []string
	cmd     *exec.Cmd
	done    chan struct{}
	stopped bool
	mu      sync.Mutex
}

// Cluster is a running three-master Redis Cluster.
type Cluster struct {
	// Addrs are the masters' host:port.
	Addrs []string
	Nodes []*Server
}

// Binary is the redis-server executable the package runs.
const Binary = "redis-server"

// Available reports whether redis-server and redis-cli can be run.
func Available() bool {
	if _, err := exec.LookPath(Binary); err != nil {
		return false
	}
	_, err := exec.LookPath("redis-cli")
	return err == nil
}

// Require skips tb when Redis is not installed, or fails it in CI.
func Require(tb testing.TB) {
	tb.Helper()
	if Available() {
		return
	}
	if os.Getenv("CI") == "true" {
		tb.Fatal("redis-server and redis-cli are required in CI (CI=true) but were not found in PATH")
	}
	tb.Skip("redis-server or redis-cli not found in PATH; skipping (set CI=true to make this a failure)")
}

// StartServer starts a standalone server in dir for a program that is not a
// test (a benchmark tool); the caller stops it.
func StartServer(dir string, opts Options) (*Server, error) {
	if !Available() {
		return nil, errors.New("redis-server or redis-cli not found in PATH")
	}
	return start(dir, opts, nil)
}

// Start starts a standalone server for tb and stops it at tb's cleanup.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	Require(tb)
	s, err := start(tb.TempDir(), opts, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Stop)
	return s
}

var shared struct {
	mu      sync.Mutex
	server  *Server
	cluster *Cluster
	dirs    []string
	err     error
	cerr    error
}

// Shared returns the package's shared standalone server, starting it on
// first use. Call Main from TestMain so that it is stopped.
func Shared(tb testing.TB) *Server {
	tb.Helper()
	Require(tb)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.server == nil && shared.err == nil {
		dir, err := os.MkdirTemp("", "redistest-")
		if err == nil {
			shared.dirs = append(shared.dirs, dir)
			shared.server, err = start(dir, Options{}, nil)
		}
		shared.err = err
	}
	if shared.err != nil {
		tb.Fatalf("starting the shared redis-server: %v", shared.err)
	}
	return shared.server
}

// SharedCluster returns the package's shared three-master cluster,
// starting it on first use. Call Main from TestMain so that it is stopped.
func SharedCluster(tb testing.TB) *Cluster {
	tb.Helper()
	Require(tb)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.cluster == nil && shared.cerr == nil {
		dir, err := os.MkdirTemp("", "redistest-cluster-")
		if err == nil {
			shared.dirs = append(shared.dirs, dir)
			shared.cluster, err = startCluster(dir)
		}
		shared.cerr = err
	}
	if shared.cerr != nil {
		tb.Fatalf("starting the shared redis cluster: %v", shared.cerr)
	}
	return shared.cluster
}

// StartCluster starts a cluster for tb alone and stops it at tb's cleanup.
func StartCluster(tb testing.TB) *Cluster {
	tb.Helper()
	Require(tb)
	c, err := startCluster(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Stop)
	return c
}

// Main runs the package's tests and then stops the shared servers:
//
//	func TestMain(m *testing.M) { redistest.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	StopShared()
	os.Exit(code)
}

// StopShared stops the shared server and cluster, if started.
func StopShared() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.server != nil {
		shared.server.Stop()
		shared.server = nil
	}
	if shared.cluster != nil {
		shared.cluster.Stop()
		shared.cluster = nil
	}
	for _, d := range shared.dirs {
		os.RemoveAll(d)
	}
	shared.dirs = nil
	shared.err, shared.cerr = nil, nil
}

// Stop stops every node.
func (c *Cluster) Stop() {
	for _, n := range c.Nodes {
		n.Stop()
	}
}

// Stop shuts the server down and waits for it to exit.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	s.stopped = true
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	// A paused server would hold the SIGTERM until continued.
	_ = s.cmd.Process.Signal(syscall.SIGCONT)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// Kill ends the server with SIGKILL, as a crash or the OOM killer would:
// no shutdown, no final AOF rewrite or RDB save; only what was already
// written (with AppendFsync "always": every acknowledged write) survives.
// It returns once the process is gone; Restart brings the server back.
func (s *Server) Kill() {
	s.signal(syscall.SIGKILL)
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	<-done
}

// Pause freezes the server (SIGSTOP): connections are still accepted by
// the kernel, but nothing is answered until Resume, which is what a
// client sees of a hung or unreachable-but-not-refusing Redis.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.stopped {
		_ = s.cmd.Process.Signal(sig)
	}
}

// Restart starts the server again, after Kill, on the same port and in
// the same directory with the same options, so that it replays its AOF and
// clients reconnect to the same address. It returns when the server
// answers PING (not while it is still loading its data), so the caller
// can time recovery from that moment.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errors.New("redistest: Restart after Stop")
	}
	select {
	case <-s.done:
	default:
		return errors.New("redistest: Restart of a server that is still running (Kill it first)")
	}
	var err error
	// The port was ours a moment ago; another process may have bound it
	// meanwhile, so a failure is reported rather than retried elsewhere.
	for attempt := 0; attempt < 3; attempt++ {
		var n *Server
		n, err = startOn(s.Dir, s.port, s.opts, s.extra)
		if err == nil {
			s.cmd, s.done = n.cmd, n.done
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("redistest: restarting %s: %w", s.Addr, err)
}

// freePort returns a loopback port nobody listens on; with bus it also
// checks port+10000, the cluster bus port Redis derives from it. The port
// is released before the server binds it, so start retries on a clash.
func freePort(bus bool) (int, error) {
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		if !bus {
			l.Close()
			return port, nil
		}
		if port+10000 > 65535 {
			l.Close()
			continue
		}
		b, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+10000))
		l.Close()
		if err != nil {
			continue
		}
		b.Close()
		return port, nil
	}
	return 0, errors.New("no free loopback port found")
}

func start(dir string, opts Options, extra []string) (*Server, error) {
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort(len(extra) > 0)
		if err != nil {
			return nil, err
		}
		s, err := startOn(dir, port, opts, extra)
		if err == nil {
			return s, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func startOn(dir string, port int, opts Options, extra []string) (*Server, error) {
	args := []string{
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--dir", dir,
		"--save", "",
		"--daemonize", "no",
		"--logfile", "",
		"--protected-mode", "yes",
	}
	if opts.AppendOnly {
		fsync := opts.AppendFsync
		if fsync == "" {
			fsync = "everysec"
		}
		args = append(args, "--appendonly", "yes", "--appendfsync", fsync)
	} else {
		args = append(args, "--appendonly", "no")
	}
	args = append(args, extra...)
	args = append(args, opts.Args...)
	cmd := exec.Command(Binary, args...)
	cmd.Dir = dir
	// Should the test binary die without cleanup, the server follows it
	// rather than lingering on the machine.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", Binary, err)
	}
	s := &Server{Addr: "127.0.0.1:" + strconv.Itoa(port), Dir: dir, port: port, opts: opts, extra: extra, cmd: cmd, done: make(chan struct{})}
	var logMu sync.Mutex
	var logTail []string
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			logMu.Lock()
			logTail = append(logTail, sc.Text())
			if len(logTail) > 20 {
				logTail = logTail[1:]
			}
			logMu.Unlock()
		}
	}()
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			logMu.Lock()
			defer logMu.Unlock()
			return nil, fmt.Errorf("redis-server on port %d exited: %s", port, strings.Join(logTail, "\n"))
		default:
		}
		if reply, err := command(s.Addr, "PING"); err == nil && reply == "PONG" {
			return s, nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.Stop()
	return nil, fmt.Errorf("redis-server on port %d did not answer PING within 10s", port)
}

func startCluster(dir string) (*Cluster, error) {
	c := &Cluster{}
	for i := 0; i < 3; i++ {
		d := filepath.Join(dir, "node"+strconv.Itoa(i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			c.Stop()
			return nil, err
		}
		s, err := start(d, Options{}, []string{
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "5000",
		})
		if err != nil {
			c.Stop()
			return nil, err
		}
		c.Nodes = append(c.Nodes, s)
		c.Addrs = append(c.Addrs, s.Addr)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	out, err := exec.Command("redis-cli", args...).CombinedOutput()
	if err != nil {
		c.Stop()
		return nil, fmt.Errorf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok := true
		for _, a := range c.Addrs {
			info, err := command(a, "CLUSTER", "INFO")
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				ok = false
				break
			}
		}
		if ok {
			return c, nil
		}
		if time.Now().After(deadline) {
			c.Stop()
			return nil, errors.New("the cluster did not reach cluster_state:ok within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// command sends one command over a fresh connection and returns a simple
// or bulk string reply: just enough RESP for PING and CLUSTER INFO, so that
// the harness does not depend on the client library under test.
func command(addr string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return "", err
	}
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	switch {
	case strings.HasPrefix(line, "+"):
		return line[1:], nil
	case strings.HasPrefix(line, "-"):
		return "", errors.New(line[1:])
	case strings.HasPrefix(line, "$"):
		n, err := strconv.Atoi(line[1:])
		if n == -1 {
			return "", nil // nil bulk: no such key
		}
		if err != nil || n < 0 {
			return "", fmt.Errorf("unexpected reply %q", line)
		}
		buf := make([]byte, n+2)
		if _, err := readFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}

func readFull(r *bufio.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Do sends one command to addr and returns its simple or bulk string reply.
// It is for test set-up (CONFIG SET, FLUSHALL) without a client library.
func Do(addr string, args ...string) (string, error) { return command(addr, args...) }

// FlushAll empties the server.
func (s *Server) FlushAll(tb testing.TB) {
	tb.Helper()
	if _, err := command(s.Addr, "FLUSHALL"); err != nil {
		tb.Fatalf("FLUSHALL %s: %v", s.Addr, err)
	}
}

// FlushAll empties every master.
func (c *Cluster) FlushAll(tb testing.TB) {
	tb.Helper()
	for _, n := range c.Nodes {
		n.FlushAll(tb)
	}
}
