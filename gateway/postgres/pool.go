package postgres

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"time"
)

// maxIdlePerGrant caps the upstream connections kept for one grant. An ephemeral user's
// connection limit (default 10) counts them, so the pool leaves room for sessions with other
// startup parameters; a connect refused for too many connections empties the grant's pool and
// tries again.
const maxIdlePerGrant = 8

// upstream is one logged-in connection to the real database.
type upstream struct {
	conn   net.Conn
	addr   string // host:port, for CancelRequest
	pid    uint32
	secret []byte
	// params are the server's current ParameterStatus values, sent to each new client.
	params map[string]string
}

// idle is an upstream connection waiting in the pool.
type idle struct {
	*upstream
	key    poolKey
	since  time.Time // parked at (clock time)
	endsAt time.Time // its grant's end: it is closed then, like a session
}

// poolKey says which sessions may take a parked connection: the same grant (so the same
// upstream login) with the same startup parameters.
type poolKey struct {
	grant  int64
	params string
}

func keyOf(grant int64, runtime map[string]string) poolKey {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(runtime)) {
		fmt.Fprintf(&b, "%s=%q;", k, runtime[k])
	}
	return poolKey{grant: grant, params: b.String()}
}

// pool keeps the upstream connections of sessions that ended cleanly (the client said goodbye
// while the connection was idle), reset with DISCARD ALL, for the next session of the same
// grant, as PgBouncer's session mode does. Connecting through the gateway then costs no new
// database backend. A parked connection is closed when its grant ends (at once for this
// instance's events, within the sweep interval otherwise), after the idle timeout, and at
// Close; it is never handed to another grant.
type pool struct {
	ttl time.Duration // 0: the pool is off

	mu     sync.Mutex
	idle   map[int64][]*idle // by grant, oldest first
	closed bool
}

func newPool(ttl time.Duration) *pool {
	return &pool{ttl: ttl, idle: map[int64][]*idle{}}
}

// take returns a live parked connection for key, or nil.
func (p *pool) take(key poolKey, now time.Time) *upstream {
	if p.ttl <= 0 {
		return nil
	}
	for {
		p.mu.Lock()
		var got *idle
		list := p.idle[key.grant]
		for i := len(list) - 1; i >= 0; i-- { // the most recently parked is the likeliest alive
			if list[i].key == key {
				got = list[i]
				p.idle[key.grant] = slices.Delete(list, i, i+1)
				break
			}
		}
		if len(p.idle[key.grant]) == 0 {
			delete(p.idle, key.grant)
		}
		p.mu.Unlock()
		if got == nil {
			return nil
		}
		if now.Before(got.endsAt) && now.Sub(got.since) < p.ttl && alive(got.conn) {
			return got.upstream
		}
		got.conn.Close()
	}
}

// put parks u for key until endsAt unless the pool is closed or ok (checked under the pool's
// lock, so a grant's end cannot slip between the check and the parking) says no.
func (p *pool) put(u *upstream, key poolKey, now, endsAt time.Time, ok func() bool) bool {
	p.mu.Lock()
	if p.ttl <= 0 || p.closed || !ok() || !now.Before(endsAt) {
		p.mu.Unlock()
		return false
	}
	var evicted *idle
	list := p.idle[key.grant]
	if len(list) >= maxIdlePerGrant {
		evicted = list[0]
		list = slices.Delete(list, 0, 1)
	}
	p.idle[key.grant] = append(list, &idle{upstream: u, key: key, since: now, endsAt: endsAt})
	p.mu.Unlock()
	if evicted != nil {
		evicted.conn.Close() // outside the lock: closing TLS writes an alert
	}
	return true
}

// drop closes the parked connections of a grant.
func (p *pool) drop(grant int64) {
	p.mu.Lock()
	list := p.idle[grant]
	delete(p.idle, grant)
	p.mu.Unlock()
	for _, c := range list {
		c.conn.Close()
	}
}

// expire closes connections parked longer than the idle timeout or past their grant's end,
// and returns the grants that still have some (for the sweep to re-read).
func (p *pool) expire(now time.Time) []int64 {
	p.mu.Lock()
	var gone []*idle
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
		c.conn.Close()
	}
	return grants
}

// size returns the number of parked connections.
func (p *pool) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, list := range p.idle {
		n += len(list)
	}
	return n
}

// close closes every parked connection and parks no more.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	all := p.idle
	p.idle = map[int64][]*idle{}
	p.mu.Unlock()
	for _, list := range all {
		for _, c := range list {
			c.conn.Close()
		}
	}
}

var errNotIdle = errors.New("upstream connection is not idle after DISCARD ALL")

// reset makes a connection whose session ended cleanly fit for another session of the same
// grant: DISCARD ALL drops temporary tables, prepared statements, cursors, advisory locks,
// LISTENs and every SET (role and session authorization included). It updates u.params with
// the ParameterStatus messages the reset sends.
func reset(u *upstream, timeout time.Duration) error {
	if err := u.conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	const q = "DISCARD ALL"
	msg := make([]byte, 0, 5+len(q)+1)
	msg = append(msg, 'Q', 0, 0, 0, 0)
	msg = append(msg, q...)
	msg = append(msg, 0)
	binary.BigEndian.PutUint32(msg[1:5], uint32(len(msg)-1))
	if _, err := u.conn.Write(msg); err != nil {
		return err
	}
	sc := scanner{max: 1 << 16, want: func(byte) bool { return true }}
	buf := make([]byte, 4096)
	idle := false
	for !idle {
		n, err := u.conn.Read(buf)
		if err != nil {
			return err
		}
		err = sc.feed(buf[:n], func(typ byte, body []byte, _ int) error {
			switch {
			case idle:
				return errNotIdle // anything after the ReadyForQuery
			case typ == 'C', typ == 'N', typ == 'A': // the tag, notices, notifications on their way
			case typ == 'S':
				name, rest := cut(body)
				u.params[name] = cstring(rest)
			case typ == 'E':
				return fmt.Errorf("DISCARD ALL failed with SQLSTATE %s", errorCode(body))
			case typ == 'Z' && len(body) == 1 && body[0] == 'I':
				idle = true
			default:
				return fmt.Errorf("unexpected message %q after DISCARD ALL", typ)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if !sc.boundary() {
		return errNotIdle
	}
	return u.conn.SetDeadline(time.Time{})
}

// tcpOf returns the TCP connection under c (which may be TLS).
func tcpOf(c net.Conn) *net.TCPConn {
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
