package caddymodule

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushgate/pushgate/hubcore"
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

// deliveryMetrics are the fan-out engine's collectors.
type deliveryMetrics struct {
	deliveries *prometheus.CounterVec
	retries    *prometheus.CounterVec
	latency    *prometheus.HistogramVec
}

func registerDeliveryMetrics(reg prometheus.Registerer) *deliveryMetrics {
	const ns, sub = "pushgate", "delivery"
	m := &deliveryMetrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "notifications_total",
			Help: "Targets of sends by final outcome (Notification Hubs' outcome names)."}, []string{"hub", "platform", "outcome"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "retries_total",
			Help: "Delivery attempts that will be retried, by the outcome of the attempt."}, []string{"hub", "platform", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "push_duration_seconds",
			Help:    "Time of the last request to the push service for a delivered target.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 12)}, []string{"hub", "platform"}),
	}
	m.deliveries = register(reg, m.deliveries)
	m.retries = register(reg, m.retries)
	m.latency = register(reg, m.latency)
	return m
}

// deliveryObserver feeds one hub's engine events to the collectors.
type deliveryObserver struct {
	hub string
	m   *deliveryMetrics
}

func (o deliveryObserver) Delivered(p hubcore.Platform, out hubcore.OutcomeName, took time.Duration) {
	o.m.deliveries.WithLabelValues(o.hub, string(p), string(out)).Inc()
	if took > 0 {
		o.m.latency.WithLabelValues(o.hub, string(p)).Observe(took.Seconds())
	}
}

func (o deliveryObserver) Retried(p hubcore.Platform, out hubcore.OutcomeName) {
	o.m.retries.WithLabelValues(o.hub, string(p), string(out)).Inc()
}
