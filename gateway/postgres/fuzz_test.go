package postgres_test

import (
	"testing"
	"time"

	"github.com/jitgate/jitgate/gateway"
	"github.com/jitgate/jitgate/gateway/postgres"
	"github.com/jitgate/jitgate/internal/gwtest"
)

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
	gw := postgres.New(postgres.Options{Engine: gwtest.RefuseAll{}, InsecurePlaintext: true, StartupTimeout: time.Second,
		Limits: gateway.Limits{FailureThreshold: 1 << 30}})
	defer gw.Close()
	f.Fuzz(func(t *testing.T, in []byte) {
		// The client sends its bytes and then hangs up (see gwtest.ScriptConn).
		c := &gwtest.ScriptConn{In: in}
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
