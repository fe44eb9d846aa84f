package kubernetes

// InFlight returns how many requests the gateway has in flight.
func InFlight(g *Gateway) int { return int(g.inflight.Load()) }

// Watching returns how many watch requests the gateway has in flight.
func Watching(g *Gateway) int { return int(g.watching.Load()) }
