package postgres

// Looped returns how many sessions an event loop relayed (for tests).
func Looped(g *Gateway) int64 { return g.looped.Load() }
