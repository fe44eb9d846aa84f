package gateway

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"time"
)

// MaxIdlePerGrant caps the upstream connections a Pool keeps for one grant. An ephemeral
// user's connection limit (default 10) counts them, so the pool leaves room for sessions with
// other startup parameters; a protocol whose login is refused for too many connections drops
// the grant's pool and tries again.
const MaxIdlePerGrant = 8

// PoolKey says which sessions may take a parked connection: the same grant (so the same
// upstream login) with the same session parameters.
type PoolKey struct {
	Grant  int64
	Params string
}

// KeyOf returns the key of a session of grant with the given parameters (in any order).
func KeyOf(grant int64, params map[string]string) PoolKey {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(params)) {
		fmt.Fprintf(&b, "%s=%q;", k, params[k])
	}
	return PoolKey{Grant: grant, Params: b.String()}
}

// Pool keeps the upstream connections of sessions that ended cleanly, reset by their protocol
// (PostgreSQL's DISCARD ALL), for the next session of the same grant, as PgBouncer's session
// mode does: a session then costs the database no new backend. A parked connection is closed
// when its grant ends (Drop: at once for this instance's events, within the sweep interval
// otherwise), after the idle timeout, and at Close; it is never handed to another grant. U is
// the protocol's upstream connection; conn returns its socket.
type Pool[U any] struct {
	ttl  time.Duration // 0: the pool is off
	conn func(U) net.Conn

	mu     sync.Mutex
	idle   map[int64][]*parked[U] // by grant, oldest first
	closed bool
}

// parked is an upstream connection waiting in the pool.
type parked[U any] struct {
	u      U
	key    PoolKey
	since  time.Time // parked at (clock time)
	endsAt time.Time // its grant's end: it is closed then, like a session
}

// NewPool returns a pool that keeps connections up to ttl (0: keeps none).
func NewPool[U any](ttl time.Duration, conn func(U) net.Conn) *Pool[U] {
	return &Pool[U]{ttl: ttl, conn: conn, idle: map[int64][]*parked[U]{}}
}

// Enabled reports whether the pool keeps connections at all.
func (p *Pool[U]) Enabled() bool { return p.ttl > 0 }

// Take returns a live parked connection for key (false if none).
func (p *Pool[U]) Take(key PoolKey, now time.Time) (U, bool) {
	var zero U
	if p.ttl <= 0 {
		return zero, false
	}
	for {
		p.mu.Lock()
		var got *parked[U]
		list := p.idle[key.Grant]
		for i := len(list) - 1; i >= 0; i-- { // the most recently parked is the likeliest alive
			if list[i].key == key {
				got = list[i]
				p.idle[key.Grant] = slices.Delete(list, i, i+1)
				break
			}
		}
		if len(p.idle[key.Grant]) == 0 {
			delete(p.idle, key.Grant)
		}
		p.mu.Unlock()
		if got == nil {
			return zero, false
		}
		if now.Before(got.endsAt) && now.Sub(got.since) < p.ttl && Alive(p.conn(got.u)) {
			return got.u, true
		}
		p.conn(got.u).Close()
	}
}

// Put parks u for key until endsAt unless the pool is off or closed, or ok (checked under the
// pool's lock, so a grant's end cannot slip between the check and the parking) says no.
func (p *Pool[U]) Put(u U, key PoolKey, now, endsAt time.Time, ok func() bool) bool {
	p.mu.Lock()
	if p.ttl <= 0 || p.closed || !ok() || !now.Before(endsAt) {
		p.mu.Unlock()
		return false
	}
	var evicted *parked[U]
	list := p.idle[key.Grant]
	if len(list) >= MaxIdlePerGrant {
		evicted = list[0]
		list = slices.Delete(list, 0, 1)
	}
	p.idle[key.Grant] = append(list, &parked[U]{u: u, key: key, since: now, endsAt: endsAt})
	p.mu.Unlock()
	if evicted != nil {
		p.conn(evicted.u).Close() // outside the lock: closing TLS writes an alert
	}
	return true
}

// Drop closes the parked connections of a grant.
func (p *Pool[U]) Drop(grant int64) {
	p.mu.Lock()
	list := p.idle[grant]
	delete(p.idle, grant)
	p.mu.Unlock()
	for _, c := range list {
		p.conn(c.u).Close()
	}
}

// Expire closes connections parked longer than the idle timeout or past their grant's end,
// and returns the grants that still have some (for the sweep to re-read).
func (p *Pool[U]) Expire(now time.Time) []int64 {
	p.mu.Lock()
	var gone []*parked[U]
	var grants []int64
	for g, list := range p.idle {
		keep := list[:0]
		for _, c := range list {
			if now.Before(c.endsAt) && now.Sub(c.since) < p.ttl {
				keep = append(keep, c)
			} else {
				gone = append(gone, c)
			}
		}
		if len(keep) == 0 {
			delete(p.idle, g)
		} else {
			p.idle[g] = keep
			grants = append(grants, g)
		}
	}
	p.mu.Unlock()
	for _, c := range gone {
		p.conn(c.u).Close()
	}
	return grants
}

// Size returns the number of parked connections.
func (p *Pool[U]) Size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, list := range p.idle {
		n += len(list)
	}
	return n
}

// Close closes every parked connection and parks no more.
func (p *Pool[U]) Close() {
	p.mu.Lock()
	p.closed = true
	all := p.idle
	p.idle = map[int64][]*parked[U]{}
	p.mu.Unlock()
	for _, list := range all {
		for _, c := range list {
			p.conn(c.u).Close()
		}
	}
}

// TCPOf returns the TCP connection under c, unwrapping TLS and other wrappers that offer
// NetConn; nil if there is none.
func TCPOf(c net.Conn) *net.TCPConn {
	for {
		switch t := c.(type) {
		case *net.TCPConn:
			return t
		case interface{ NetConn() net.Conn }:
			c = t.NetConn()
		default:
			return nil
		}
	}
}
