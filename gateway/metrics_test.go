package gateway

import (
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Two protocol gateways in one process register their metrics side by side, told apart by
// their protocol label.
func TestMetricsOfTwoGateways(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	for _, p := range []string{"postgres", "mysql"} {
		rec := NewRecorder(nil, slog.New(slog.DiscardHandler), 0, 0, 0)
		defer rec.Close()
		e := NewEntry(EntryOptions{Protocol: p})
		defer e.Close()
		m := NewMetrics(p, func() int { return 1 }, rec, func() int { return 0 }, func() int64 { return 0 }, e)
		if err := reg.Register(m); err != nil {
			t.Fatalf("register %s: %v", p, err)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "jitgate_gateway_sessions" {
			if n := len(mf.GetMetric()); n != 2 {
				t.Fatalf("%d series of jitgate_gateway_sessions, want one per protocol", n)
			}
			return
		}
	}
	t.Fatal("no jitgate_gateway_sessions")
}
