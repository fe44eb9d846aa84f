package postgres

import "github.com/prometheus/client_golang/prometheus"

var (
	sessionsDesc = prometheus.NewDesc("jitgate_gateway_sessions", "Live PostgreSQL gateway sessions.", nil, nil)
	recordedDesc = prometheus.NewDesc("jitgate_gateway_statements_recorded_total", "Statements written to the audit log.", nil, nil)
	lostDesc     = prometheus.NewDesc("jitgate_gateway_statements_lost_total", "Statements that could not be recorded (the store was down at shutdown).", nil, nil)
	waitsDesc    = prometheus.NewDesc("jitgate_gateway_recorder_waits_total", "Times a session waited for room in the statement queue (back pressure).", nil, nil)
	batchesDesc  = prometheus.NewDesc("jitgate_gateway_recorder_batches_total", "Audit batches written by the statement recorder.", nil, nil)
	queueDesc    = prometheus.NewDesc("jitgate_gateway_recorder_queue", "Statements waiting to be recorded.", nil, nil)
	parkedDesc   = prometheus.NewDesc("jitgate_gateway_upstream_idle", "Upstream connections kept for the next session of their grant.", nil, nil)
	reusedDesc   = prometheus.NewDesc("jitgate_gateway_upstream_reused_total", "Sessions that took a kept upstream connection instead of logging in anew.", nil, nil)
)

// Describe implements prometheus.Collector.
func (g *Gateway) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{sessionsDesc, recordedDesc, lostDesc, waitsDesc, batchesDesc, queueDesc, parkedDesc, reusedDesc} {
		ch <- d
	}
	g.entry.Describe(ch)
}

// Collect implements prometheus.Collector.
func (g *Gateway) Collect(ch chan<- prometheus.Metric) {
	recorded, lost, waits, batches, queued := g.rec.Stats()
	ch <- prometheus.MustNewConstMetric(sessionsDesc, prometheus.GaugeValue, float64(g.Sessions()))
	ch <- prometheus.MustNewConstMetric(recordedDesc, prometheus.CounterValue, float64(recorded))
	ch <- prometheus.MustNewConstMetric(lostDesc, prometheus.CounterValue, float64(lost))
	ch <- prometheus.MustNewConstMetric(waitsDesc, prometheus.CounterValue, float64(waits))
	ch <- prometheus.MustNewConstMetric(batchesDesc, prometheus.CounterValue, float64(batches))
	ch <- prometheus.MustNewConstMetric(queueDesc, prometheus.GaugeValue, float64(queued))
	ch <- prometheus.MustNewConstMetric(parkedDesc, prometheus.GaugeValue, float64(g.pool.Size()))
	ch <- prometheus.MustNewConstMetric(reusedDesc, prometheus.CounterValue, float64(g.reused.Load()))
	g.entry.Collect(ch)
}
