package mysql

// ClientIDs returns the connection ids the gateway told the clients of its live sessions.
func ClientIDs(g *Gateway) []uint32 {
	g.mu.Lock()
	defer g.mu.Unlock()
	var ids []uint32
	for id := range g.byID {
		ids = append(ids, id)
	}
	return ids
}

// Reused returns how many sessions took a kept upstream connection.
func Reused(g *Gateway) int64 { return g.core.Reused.Load() }

// Looped returns how many sessions an event loop relayed.
func Looped(g *Gateway) int64 { return g.core.Looped.Load() }

// FastAuths returns how many logins were checked by their caching_sha2_password scramble
// alone, without asking for the credential itself.
func FastAuths(g *Gateway) int64 { return g.fastAuths.Load() }
