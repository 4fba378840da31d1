package caddymodule

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMetricsSurviveReload: a reload registers the gate's collectors again
// in the same registry; the counters must continue, not fail or restart.
func TestMetricsSurviveReload(t *testing.T) {
	reg := prometheus.NewRegistry()
	m1, err := registerMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m1.decisions.WithLabelValues("deny").Inc()
	m2, err := registerMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m2.decisions.WithLabelValues("deny").Inc()
	if got := testutil.ToFloat64(m2.decisions.WithLabelValues("deny")); got != 2 {
		t.Fatalf("deny decisions = %v after a re-registration; want 2", got)
	}
	if n, err := testutil.GatherAndCount(reg, "pushgate_gate_decisions_total"); err != nil || n != 1 {
		t.Fatalf("series %d, %v", n, err)
	}
}
