// Package gwtest holds what the gateways' tests share: a scripted client connection for
// fuzzing the login phase, an engine that refuses every credential, loopback TCP pairs, and a
// buffer for logs written from many goroutines.
package gwtest

import (
	"context"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/audit"
)

// RefuseAll is an engine (gateway.Engine) that knows no credential: a fuzzer exercises
// everything up to and including authentication without a database.
type RefuseAll struct{}

// AuthenticateSession refuses every credential.
func (RefuseAll) AuthenticateSession(context.Context, string, string, string) (*jitgate.Grant, error) {
	return nil, jitgate.Errorf(jitgate.EUNAUTHORIZED, "jitgate: unknown credential")
}

// AuthenticateProof refuses every proof (after offering it one made-up verifier, so that a
// fuzzer runs the gateway's check).
func (RefuseAll) AuthenticateProof(_ context.Context, _, _ string, match func([]byte) bool) (*jitgate.Grant, error) {
	match(make([]byte, 32))
	return nil, jitgate.Errorf(jitgate.EUNAUTHORIZED, "jitgate: unknown credential")
}

// StartSession does nothing.
func (RefuseAll) StartSession(context.Context, *jitgate.Session) error { return nil }

// EndSession does nothing.
func (RefuseAll) EndSession(context.Context, *jitgate.Session) error { return nil }

// RecordAudit drops the events.
func (RefuseAll) RecordAudit(context.Context, []*jitgate.AuditEvent) error { return nil }

// Subscribe delivers no events.
func (RefuseAll) Subscribe(func(jitgate.Event)) func() { return func() {} }

// GrantByID finds no grant.
func (RefuseAll) GrantByID(context.Context, int64) (*jitgate.Grant, error) {
	return nil, jitgate.Errorf(jitgate.ENOTFOUND, "no grants here")
}

// ScriptConn is a client connection that sends a fixed input, then EOF; what the gateway
// writes is thrown away. An incomplete login then ends at once with EOF instead of waiting
// out the login timeout, so a fuzzer runs thousands of inputs a second.
type ScriptConn struct {
	In     []byte
	closed bool
}

// Read returns the script, then io.EOF.
func (c *ScriptConn) Read(p []byte) (int, error) {
	if c.closed {
		return 0, net.ErrClosed
	}
	if len(c.In) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.In)
	c.In = c.In[n:]
	return n, nil
}

// Write discards p.
func (c *ScriptConn) Write(p []byte) (int, error) {
	if c.closed {
		return 0, net.ErrClosed
	}
	return len(p), nil
}

// Close marks the connection closed.
func (c *ScriptConn) Close() error { c.closed = true; return nil }

// LocalAddr is a fixed loopback address.
func (c *ScriptConn) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 15432}
}

// RemoteAddr is a fixed loopback address: every input comes from the same source.
func (c *ScriptConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}

// SetDeadline does nothing.
func (c *ScriptConn) SetDeadline(time.Time) error { return nil }

// SetReadDeadline does nothing.
func (c *ScriptConn) SetReadDeadline(time.Time) error { return nil }

// SetWriteDeadline does nothing.
func (c *ScriptConn) SetWriteDeadline(time.Time) error { return nil }

// TCPPair returns both ends of a loopback TCP connection, closed when the test ends.
func TCPPair(tb testing.TB) (net.Conn, net.Conn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	s, err := ln.Accept()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return c, s
}

// OpenSockets counts the process's open sockets (-1 where /proc is missing): what a gateway's
// sessions hold, some outside Go's poller (the event loop). Files such as a SQLite store's,
// which its connection pool opens and closes as it likes, are left out.
func OpenSockets() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(target, "socket:") {
			n++
		}
	}
	return n
}

// SyncBuffer collects output written from several goroutines (a gateway's logs, a server
// process's output), readable while it is written.
type SyncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// VerifyAudit fails t unless the store's audit chain verifies.
func VerifyAudit(t testing.TB, s jitgate.Store) {
	t.Helper()
	res, err := audit.Verify(context.Background(), s)
	if err != nil || !res.OK {
		t.Fatalf("audit verify: %+v %v", res, err)
	}
}

// Statements returns the statements (or Kubernetes requests) the audit log holds for a
// grant, in order.
func Statements(t testing.TB, s jitgate.Store, grantID int64) []jitgate.Statement {
	t.Helper()
	var out []jitgate.Statement
	err := s.View(context.Background(), func(tx jitgate.Tx) error {
		all, err := tx.ListAudit(jitgate.AuditFilter{GrantID: grantID})
		for _, ev := range all {
			if ev.Action == jitgate.ActionSessionStatements {
				out = append(out, ev.Statements...)
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
