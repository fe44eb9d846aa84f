package gateway

import (
	"net"
	"testing"
	"time"
)

// The pool keeps at most MaxIdlePerGrant per grant (closing the oldest), closes what its grant
// or the idle timeout has ended, and parks nothing once closed or once the grant has ended.
func TestPoolLimits(t *testing.T) {
	self := func(c net.Conn) net.Conn { return c }
	p := NewPool(time.Minute, self)
	now := time.Unix(1_000_000, 0)
	key := PoolKey{Grant: 1}
	var peers []net.Conn
	yes := func() bool { return true }
	for i := 0; i < MaxIdlePerGrant+1; i++ {
		a, b := net.Pipe()
		peers = append(peers, b)
		if !p.Put(a, key, now, now.Add(time.Hour), yes) {
			t.Fatalf("put %d refused", i)
		}
	}
	if n := p.Size(); n != MaxIdlePerGrant {
		t.Fatalf("%d kept, want %d", n, MaxIdlePerGrant)
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
	if p.Put(a, key, now, now, yes) {
		t.Fatal("parked past its grant's end")
	}
	if p.Put(a, key, now, now.Add(time.Hour), func() bool { return false }) {
		t.Fatal("parked although the session was killed")
	}
	if left := p.Expire(now.Add(30 * time.Second)); len(left) != 1 || p.Size() != MaxIdlePerGrant {
		t.Fatalf("expired too early: %v, %d left", left, p.Size())
	}
	if left := p.Expire(now.Add(time.Minute)); len(left) != 0 || p.Size() != 0 || !closed(peers[MaxIdlePerGrant]) {
		t.Fatalf("not expired after the idle timeout: %v, %d left", left, p.Size())
	}
	p.Close()
	if p.Put(a, key, now, now.Add(time.Hour), yes) {
		t.Fatal("parked in a closed pool")
	}
	if NewPool(0, self).Put(a, key, now, now.Add(time.Hour), yes) {
		t.Fatal("parked with reuse off")
	}
	// A pipe is no TCP socket: Take finds nothing alive and closes it.
	q := NewPool(time.Minute, self)
	c, d := net.Pipe()
	q.Put(c, key, now, now.Add(time.Hour), yes)
	if _, ok := q.Take(key, now); ok || !closed(d) || q.Size() != 0 {
		t.Fatal("took a connection that is not alive")
	}
}

// Keys differ by grant and by any parameter, whatever the parameters' order.
func TestKeyOf(t *testing.T) {
	a := KeyOf(1, map[string]string{"application_name": "x", "TimeZone": "UTC"})
	if b := KeyOf(1, map[string]string{"TimeZone": "UTC", "application_name": "x"}); a != b {
		t.Fatal("order changed the key")
	}
	if a == KeyOf(2, map[string]string{"application_name": "x", "TimeZone": "UTC"}) || a == KeyOf(1, map[string]string{"TimeZone": "UTC"}) {
		t.Fatal("different sessions share a key")
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
