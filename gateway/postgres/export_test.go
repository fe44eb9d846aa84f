package postgres

// Looped returns how many sessions an event loop relayed (for tests).
func Looped(g *Gateway) int64 { return g.core.Looped.Load() }

// RecorderStats returns the gateway's recorder's Stats (for tests).
func RecorderStats(g *Gateway) (recorded, lost, waits int64) {
	recorded, lost, waits, _, _ = g.core.Recorder.Stats()
	return recorded, lost, waits
}
