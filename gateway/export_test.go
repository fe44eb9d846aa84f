package gateway

// RecorderWakes returns how often a recorder's goroutine woke (for tests).
func RecorderWakes(r *Recorder) int64 { return r.wakes.Load() }
