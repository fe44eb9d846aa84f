package gateway

import "github.com/prometheus/client_golang/prometheus"

// Metrics exports one protocol gateway's metrics, each labelled with its protocol, so that the
// gateways of one process (PostgreSQL, MySQL, ...) register side by side: live sessions, the
// statement recorder, the kept upstream connections, and the front door (Entry). It is a
// prometheus.Collector.
type Metrics struct {
	sessions func() int
	rec      *Recorder
	parked   func() int
	reused   func() int64
	entry    *Entry

	sessionsD, recordedD, lostD, waitsD, batchesD, queueD, parkedD, reusedD *prometheus.Desc
}

// NewMetrics returns the metrics of the gateway for protocol: sessions counts its live
// sessions, parked its kept upstream connections, reused the sessions that took one.
func NewMetrics(protocol string, sessions func() int, rec *Recorder, parked func() int, reused func() int64, entry *Entry) *Metrics {
	l := prometheus.Labels{"protocol": protocol}
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, l) }
	return &Metrics{sessions: sessions, rec: rec, parked: parked, reused: reused, entry: entry,
		sessionsD: d("jitgate_gateway_sessions", "Live gateway sessions."),
		recordedD: d("jitgate_gateway_statements_recorded_total", "Statements written to the audit log."),
		lostD:     d("jitgate_gateway_statements_lost_total", "Statements that could not be recorded (the store was down at shutdown)."),
		waitsD:    d("jitgate_gateway_recorder_waits_total", "Times a session waited for room in the statement queue (back pressure)."),
		batchesD:  d("jitgate_gateway_recorder_batches_total", "Audit batches written by the statement recorder."),
		queueD:    d("jitgate_gateway_recorder_queue", "Statements waiting to be recorded."),
		parkedD:   d("jitgate_gateway_upstream_idle", "Upstream connections kept for the next session of their grant."),
		reusedD:   d("jitgate_gateway_upstream_reused_total", "Sessions that took a kept upstream connection instead of logging in anew."),
	}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.sessionsD, m.recordedD, m.lostD, m.waitsD, m.batchesD, m.queueD, m.parkedD, m.reusedD} {
		ch <- d
	}
	m.entry.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	recorded, lost, waits, batches, queued := m.rec.Stats()
	ch <- prometheus.MustNewConstMetric(m.sessionsD, prometheus.GaugeValue, float64(m.sessions()))
	ch <- prometheus.MustNewConstMetric(m.recordedD, prometheus.CounterValue, float64(recorded))
	ch <- prometheus.MustNewConstMetric(m.lostD, prometheus.CounterValue, float64(lost))
	ch <- prometheus.MustNewConstMetric(m.waitsD, prometheus.CounterValue, float64(waits))
	ch <- prometheus.MustNewConstMetric(m.batchesD, prometheus.CounterValue, float64(batches))
	ch <- prometheus.MustNewConstMetric(m.queueD, prometheus.GaugeValue, float64(queued))
	ch <- prometheus.MustNewConstMetric(m.parkedD, prometheus.GaugeValue, float64(m.parked()))
	ch <- prometheus.MustNewConstMetric(m.reusedD, prometheus.CounterValue, float64(m.reused()))
	m.entry.Collect(ch)
}
