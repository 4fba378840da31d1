// Command soak runs pushgate in this process against Redis under mixed
// load for a long time and checks that nothing fails and nothing grows:
// devices register, patch, read and sign off through the gate (OIDC
// tokens from the development issuer, the per-user policy), a backend
// sends to users and tag expressions and keeps Atom registrations through
// the Notification Hubs API, and the hub delivers to the strict APNs and
// FCM fakes. Every 30 s it prints the requests by kind, the errors, the
// live heap, heap in use, RSS and goroutines, and the delivery outcomes.
//
//	go run ./bench/soak -duration 10m      # what `make soak` runs
//
// It exits non-zero when any request got an answer other than the one
// expected (or none), when a delivery did not succeed, or when, after the
// warm-up, the goroutine count or the live heap grew beyond the limits
// described at DefaultLimits. It starts its own redis-server on a free
// loopback port unless -redis names one (loopback only; the run then uses
// a hub of its own there and leaves its keys behind).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	cfg := Config{Out: os.Stdout, CheckGrowth: true, Limits: DefaultLimits}
	flag.DurationVar(&cfg.Duration, "duration", 10*time.Minute, "how long the load runs")
	flag.IntVar(&cfg.Clients, "clients", 32, "concurrent clients, each with its own HTTP/2 connection")
	flag.IntVar(&cfg.Users, "users", 400, "device users")
	flag.IntVar(&cfg.DevicesPerUser, "devices", 3, "devices per user")
	flag.Float64Var(&cfg.Rate, "rate", 400, "requests per second over all clients (0: as fast as possible)")
	flag.StringVar(&cfg.Redis, "redis", "", "use this loopback Redis instead of starting one")
	flag.StringVar(&cfg.Policy, "policy", "policy/examples/per_user", "the gate's policy directory")
	flag.DurationVar(&cfg.Warmup, "warmup", 0, "excluded from the growth checks (default: a fifth of the run, at least a minute)")
	flag.DurationVar(&cfg.Report, "every", 30*time.Second, "progress line interval")
	flag.BoolVar(&cfg.CheckGrowth, "check-growth", true, "fail on goroutine or heap growth after warm-up")
	flag.Float64Var(&cfg.Limits.HeapPerHour, "heap-per-hour", DefaultLimits.HeapPerHour, "live heap growth bound, bytes per hour")
	flag.BoolVar(&cfg.Verbose, "v", false, "print every sample in the summary")
	flag.Parse()

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	res, err := run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(2)
	}
	fmt.Print(summary(res, &cfg))
	if !res.Passed() {
		os.Exit(1)
	}
}
