package postgres_test

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/jitgate/jitgate"
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
	gw := postgres.New(postgres.Options{Engine: refuseAll{}, InsecurePlaintext: true, StartupTimeout: 50 * time.Millisecond})
	defer gw.Close()
	f.Fuzz(func(t *testing.T, in []byte) {
		client, server := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			gw.ServeConn(server)
		}()
		go func() {
			client.SetWriteDeadline(time.Now().Add(time.Second))
			client.Write(in)
		}()
		client.SetReadDeadline(time.Now().Add(2 * time.Second))
		io.Copy(io.Discard, client)
		client.Close()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			t.Fatalf("gateway still serving a connection 2s after input %q", in)
		}
	})
}

func (refuseAll) GrantByID(context.Context, int64) (*jitgate.Grant, error) {
	return nil, jitgate.Errorf(jitgate.ENOTFOUND, "no grants here")
}
