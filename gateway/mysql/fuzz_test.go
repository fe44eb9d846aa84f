package mysql_test

import (
	"testing"
	"time"

	"github.com/jitgate/jitgate/gateway"
	"github.com/jitgate/jitgate/gateway/mysql"
	"github.com/jitgate/jitgate/internal/gwtest"
)

// FuzzHandshake feeds arbitrary bytes to the handshake and authentication phase (the
// client's packets, in order): the gateway must answer or close, never panic or hang past its
// login timeout.
func FuzzHandshake(f *testing.F) {
	resp := handshakeResponse("alice", "shop-db")
	f.Add(resp)
	f.Add(append(append([]byte(nil), resp...), 21, 0, 0, 3, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 0))
	f.Add(append(append([]byte(nil), resp...), 1, 0, 0, 3, 2, 2, 0, 0, 5, 1, 2))                                                         // asks for the RSA key
	f.Add([]byte{32, 0, 0, 1, 0x00, 0x0a, 0x0a, 0, 0, 0, 0, 1, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}) // SSLRequest
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{0xff, 0xff, 0xff, 1})
	f.Add([]byte{0, 0, 0, 1})
	// Every input comes from the same source: the slow-down of repeated failed logins would
	// make the fuzzer wait instead of run.
	gw := mysql.New(mysql.Options{Engine: gwtest.RefuseAll{}, InsecurePlaintext: true, StartupTimeout: time.Second,
		Limits: gateway.Limits{FailureThreshold: 1 << 30}})
	defer gw.Close()
	f.Fuzz(func(t *testing.T, in []byte) {
		c := &gwtest.ScriptConn{In: in}
		done := make(chan struct{})
		go func() {
			defer close(done)
			gw.ServeConn(c)
		}()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			t.Fatalf("gateway still serving a connection 3s after input %q ended", in)
		}
	})
}
