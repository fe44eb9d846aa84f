package postgres

import (
	"net"
	"testing"
	"time"
)

// The pool keeps at most maxIdlePerGrant per grant (closing the oldest), closes what its grant
// or the idle timeout has ended, and parks nothing once closed or once the grant has ended.
func TestPoolLimits(t *testing.T) {
	p := newPool(time.Minute)
	now := time.Unix(1_000_000, 0)
	key := poolKey{grant: 1}
	var peers []net.Conn
	yes := func() bool { return true }
	for i := 0; i < maxIdlePerGrant+1; i++ {
		a, b := net.Pipe()
		peers = append(peers, b)
		if !p.put(&upstream{conn: a}, key, now, now.Add(time.Hour), yes) {
			t.Fatalf("put %d refused", i)
		}
	}
	if n := p.size(); n != maxIdlePerGrant {
		t.Fatalf("%d kept, want %d", n, maxIdlePerGrant)
	}
	closed := func(c net.Conn) bool {
		_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		return err != nil && !isTimeout(err)
	}
	if !closed(peers[0]) || closed(peers[1]) {
		t.Fatal("the oldest should be closed to make room, and only it")
	}
	a, _ := net.Pipe()
	if p.put(&upstream{conn: a}, key, now, now, yes) {
		t.Fatal("parked past its grant's end")
	}
	if p.put(&upstream{conn: a}, key, now, now.Add(time.Hour), func() bool { return false }) {
		t.Fatal("parked although the session was killed")
	}
	if left := p.expire(now.Add(30 * time.Second)); len(left) != 1 || p.size() != maxIdlePerGrant {
		t.Fatalf("expired too early: %v, %d left", left, p.size())
	}
	if left := p.expire(now.Add(time.Minute)); len(left) != 0 || p.size() != 0 || !closed(peers[maxIdlePerGrant]) {
		t.Fatalf("not expired after the idle timeout: %v, %d left", left, p.size())
	}
	p.close()
	if p.put(&upstream{conn: a}, key, now, now.Add(time.Hour), yes) {
		t.Fatal("parked in a closed pool")
	}
	if newPool(0).put(&upstream{conn: a}, key, now, now.Add(time.Hour), yes) {
		t.Fatal("parked with reuse off")
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
