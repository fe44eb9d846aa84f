package postgres_test

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/gateway"
	"github.com/jitgate/jitgate/gateway/postgres"
)

// refuseAll is an engine that knows no credential: the fuzzer exercises everything up to and
// including authentication without a database.
type refuseAll struct{}

func (refuseAll) AuthenticateSession(context.Context, string, string, string) (*jitgate.Grant, error) {
	return nil, jitgate.Errorf(jitgate.EUNAUTHORIZED, "jitgate: unknown credential")
}
func (refuseAll) StartSession(context.Context, *jitgate.Session) error     { return nil }
func (refuseAll) EndSession(context.Context, *jitgate.Session) error       { return nil }
func (refuseAll) RecordAudit(context.Context, []*jitgate.AuditEvent) error { return nil }
func (refuseAll) Subscribe(func(jitgate.Event)) func()                     { return func() {} }

// FuzzStartup feeds arbitrary bytes to the startup and authentication phase: the gateway must
// answer or close, never panic or hang past its startup timeout.
func FuzzStartup(f *testing.F) {
	f.Add(startup(0x00030000, map[string]string{"user": "alice", "database": "app-db"}))
	f.Add(append(startup(0x00030000, map[string]string{"user": "alice", "database": "app-db"}), 'p', 0, 0, 0, 9, 'x', 'y', 'z', 0))
	f.Add([]byte{0, 0, 0, 8, 4, 210, 22, 47})                          // SSLRequest
	f.Add([]byte{0, 0, 0, 8, 4, 210, 22, 48})                          // GSSENCRequest
	f.Add([]byte{0, 0, 0, 16, 4, 210, 22, 46, 0, 0, 0, 1, 0, 0, 0, 2}) // CancelRequest
	f.Add(startup(0x00030002, map[string]string{"user": "a", "database": "b"}))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	// Every input comes from the same "source": the slow-down of repeated failed logins (which
	// never outlasts the startup timeout) would make the fuzzer wait instead of run.
	gw := postgres.New(postgres.Options{Engine: refuseAll{}, InsecurePlaintext: true, StartupTimeout: time.Second,
		Limits: gateway.Limits{FailureThreshold: 1 << 30}})
	defer gw.Close()
	f.Fuzz(func(t *testing.T, in []byte) {
		// The client sends its bytes and then hangs up, so an incomplete startup ends at once
		// with EOF instead of waiting out the startup timeout: each input takes microseconds,
		// and the fuzzer (and its minimizer) can run thousands a second.
		c := &scriptConn{in: in}
		done := make(chan struct{})
		go func() {
			defer close(done)
			gw.ServeConn(c)
		}()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			t.Fatalf("gateway still serving a connection 2s after input %q ended", in)
		}
	})
}

// scriptConn is a client connection that sends a fixed input, then EOF; what the gateway
// writes is thrown away.
type scriptConn struct {
	in     []byte
	closed bool
}

func (c *scriptConn) Read(p []byte) (int, error) {
	if c.closed {
		return 0, net.ErrClosed
	}
	if len(c.in) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.in)
	c.in = c.in[n:]
	return n, nil
}

func (c *scriptConn) Write(p []byte) (int, error) {
	if c.closed {
		return 0, net.ErrClosed
	}
	return len(p), nil
}

func (c *scriptConn) Close() error { c.closed = true; return nil }
func (c *scriptConn) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 15432}
}
func (c *scriptConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

func (refuseAll) GrantByID(context.Context, int64) (*jitgate.Grant, error) {
	return nil, jitgate.Errorf(jitgate.ENOTFOUND, "no grants here")
}
