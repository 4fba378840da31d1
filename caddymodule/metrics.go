package caddymodule

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gate's Prometheus collectors, registered in Caddy's
// metrics registry so they appear on its /metrics endpoint.
type metrics struct {
	decisions     *prometheus.CounterVec
	registrations *prometheus.CounterVec
	tokenFailures *prometheus.CounterVec
	requests      *prometheus.CounterVec
	policyLatency prometheus.Histogram
}

func registerMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "pushgate", "gate"
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "decisions_total",
			Help: "Policy decisions on device requests, by result (allow, deny)."}, []string{"result"}),
		registrations: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "registrations_total",
			Help: "Installations written through the gate, by operation (create, replace, patch, signoff)."}, []string{"operation"}),
		tokenFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "token_failures_total",
			Help: "Bearer tokens refused, by reason."}, []string{"reason"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "requests_total",
			Help: "Device requests answered, by status code."}, []string{"code"}),
		policyLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "policy_duration_seconds",
			Help:    "Time to evaluate the policy for one request.",
			Buckets: prometheus.ExponentialBuckets(0.00001, 2.5, 12)}),
	}
	m.decisions = register(reg, m.decisions)
	m.registrations = register(reg, m.registrations)
	m.tokenFailures = register(reg, m.tokenFailures)
	m.requests = register(reg, m.requests)
	m.policyLatency = register(reg, m.policyLatency)
	return m, nil
}

// register registers c, or returns the collector already registered under
// its name: a config reload provisions new handlers into the same registry,
// and their counters must continue, not fail or restart.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}
