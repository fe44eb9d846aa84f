package postgres

import "github.com/prometheus/client_golang/prometheus"

// Describe implements prometheus.Collector (see gateway.Metrics).
func (g *Gateway) Describe(ch chan<- *prometheus.Desc) { g.core.Describe(ch) }

// Collect implements prometheus.Collector.
func (g *Gateway) Collect(ch chan<- prometheus.Metric) { g.core.Collect(ch) }
