package httpapi

import (
	"context"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/prometheus/client_golang/prometheus"
)

// registerMetrics registers jitgate's metrics in reg: counters and histograms fed by the
// engine's events, and gauges read from the store at scrape time (so they are right across
// restarts and server instances).
func registerMetrics(reg *prometheus.Registry, e *access.Engine) {
	created := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "jitgate_requests_created_total", Help: "Requests filed, extensions included.",
	})
	decided := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jitgate_requests_decided_total", Help: "Requests that left pending, by final state.",
	}, []string{"state"})
	grantsEnded := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jitgate_grants_ended_total", Help: "Grants that ended, by final state.",
	}, []string{"state"})
	buckets := []float64{1, 10, 60, 300, 900, 3600, 4 * 3600, 24 * 3600}
	toDecision := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "jitgate_time_to_decision_seconds", Help: "Time from a request's creation to its decision.", Buckets: buckets,
	})
	toRevoke := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "jitgate_time_to_revoke_seconds",
		Help:    "Time from a grant's end (expiry or revoke) to its access being switched off in the target.",
		Buckets: []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60},
	})
	lag := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "jitgate_scheduler_lag_seconds",
		Help:    "How late the scheduler activated or expired a grant, or timed out a request, after it was due.",
		Buckets: []float64{0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60},
	})
	verified := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "jitgate_revocation_verified_seconds",
		Help:    "Time from a grant's end to the provisioner's verification that its access is gone (the revocation receipt).",
		Buckets: []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60},
	})
	unverified := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "jitgate_revocations_unverified_total", Help: "Alerts: revokes after which the access was still there (retried).",
	})
	drift := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "jitgate_drift_repaired_total", Help: "Jitgate-managed accounts the reconciler removed because no live grant explained them.",
	})
	reg.MustRegister(created, decided, grantsEnded, toDecision, toRevoke, lag, verified, unverified, drift, &storeCollector{e: e})

	e.Subscribe(func(ev jitgate.Event) {
		switch ev.Kind {
		case jitgate.EventRequestCreated:
			created.Inc()
		case jitgate.EventRequestDecided:
			r := ev.Request
			decided.WithLabelValues(string(r.State)).Inc()
			toDecision.Observe(r.DecidedAt.Sub(r.CreatedAt).Seconds())
			if r.State == jitgate.RequestTimedOut {
				lag.Observe(max(r.DecidedAt.Sub(r.ExpiresAt), 0).Seconds())
			}
		case jitgate.EventGrantStarted:
			g := ev.Grant
			if g.StartsAt.Before(g.ActivatedAt) && ev.Request == nil {
				lag.Observe(g.ActivatedAt.Sub(g.StartsAt).Seconds())
			}
		case jitgate.EventGrantEnded:
			g := ev.Grant
			grantsEnded.WithLabelValues(string(g.State)).Inc()
			if g.State == jitgate.GrantExpired {
				lag.Observe(max(g.EndedAt.Sub(g.EndsAt), 0).Seconds())
			}
			if g.Provision.State == jitgate.ProvisionStateNone {
				// Gateway-only grants are off once the end is committed and published.
				toRevoke.Observe(max(e.Now().Sub(g.StopAt()), 0).Seconds())
			}
		case jitgate.EventGrantDeprovisioned:
			toRevoke.Observe(max(e.Now().Sub(ev.Grant.StopAt()), 0).Seconds())
			if !ev.Grant.Provision.VerifiedAt.IsZero() {
				verified.Observe(max(ev.Grant.TimeToRevoke(), 0).Seconds())
			}
		case jitgate.EventRevocationUnverified:
			unverified.Inc()
		case jitgate.EventDriftRepaired:
			drift.Inc()
		}
	})
}

// storeCollector reads the live counts from the store at scrape time.
type storeCollector struct{ e *access.Engine }

var (
	pendingDesc = prometheus.NewDesc("jitgate_requests_pending", "Requests waiting for approval.", nil, nil)
	grantsDesc  = prometheus.NewDesc("jitgate_grants", "Live grants, by state.", []string{"state"}, nil)
	upDesc      = prometheus.NewDesc("jitgate_store_up", "Whether the store answered the last scrape.", nil, nil)
)

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- pendingDesc
	ch <- grantsDesc
	ch <- upDesc
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	rs, gs, err := c.e.Counts(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(rs[jitgate.RequestPending]))
	for _, st := range []jitgate.GrantState{jitgate.GrantScheduled, jitgate.GrantActive} {
		ch <- prometheus.MustNewConstMetric(grantsDesc, prometheus.GaugeValue, float64(gs[st]), string(st))
	}
}
