package kubernetes

// InFlight returns how many requests the gateway has in flight.
func InFlight(g *Gateway) int { return int(g.inflight.Load()) }
