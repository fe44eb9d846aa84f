//go:build unix

package postgres

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/gateway"
	"github.com/jitgate/jitgate/internal/gwtest"
	"golang.org/x/sys/unix"
)

// discardEngine takes audit events and keeps nothing, so that BenchmarkRelayTransaction
// measures the relay's own work and not the store's (access's BenchmarkRecordStatements
// measures that). The recorder calls no other method.
type discardEngine struct{ Engine }

func (discardEngine) RecordAudit(context.Context, []*jitgate.AuditEvent) error { return nil }

// BenchmarkRelayTransaction measures, per pgbench -S transaction, what the relay does besides
// its system calls (scan): scan the client's Query, queue the statement, scan the server's
// answer (RowDescription, DataRow, CommandComplete, ReadyForQuery) and hand the statement to
// the recorder, whose store discards it. Its baseline (syscalls) is the four system calls any
// proxy makes per transaction on loopback TCP, measured in the same run: write the Query and
// read it on the other side, write the answer and read it back.
func BenchmarkRelayTransaction(b *testing.B) {
	msg := func(typ byte, body []byte) []byte {
		m := []byte{typ, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(m[1:], uint32(len(body)+4))
		return append(m, body...)
	}
	queries := make([][]byte, 1000)
	for i := range queries {
		queries[i] = msg('Q', fmt.Appendf(nil, "SELECT abalance FROM pgbench_accounts WHERE aid = %d;\x00", 1+i*7919%1000000))
	}
	var answer []byte
	answer = append(answer, msg('T', append([]byte("\x00\x01abalance\x00"), make([]byte, 18)...))...)
	answer = append(answer, msg('D', []byte("\x00\x01\x00\x00\x00\x010"))...)
	answer = append(answer, msg('C', []byte("SELECT 1\x00"))...)
	answer = append(answer, msg('Z', []byte("I"))...)

	b.Run("scan", func(b *testing.B) {
		rec := gateway.NewRecorder(discardEngine{}, slog.New(slog.NewTextHandler(io.Discard, nil)), 0, 0, 0)
		defer rec.Close()
		g := &Gateway{opts: Options{MaxMessage: 1 << 20}, core: &gateway.Core[*upstream]{Recorder: rec, Pool: gateway.NewPool[*upstream](0, nil)}}
		s := newSession(g, nil, &upstream{params: map[string]string{}}, gateway.PoolKey{}, &jitgate.Grant{})
		s.backlog.Rec, s.backlog.Head = rec, &jitgate.AuditEvent{SessionID: 1}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if _, err := s.fromClient(queries[i%len(queries)]); err != nil {
				b.Fatal(err)
			}
			if _, err := s.fromUpstream(answer); err != nil {
				b.Fatal(err)
			}
			if s.backlog.Held() {
				s.waitBacklog() // as the relay does when the recorder is full
			}
		}
		b.StopTimer()
		rec.Sync()
		if got, _, _, _, _ := rec.Stats(); got != s.statements.Load() {
			b.Fatalf("%d statements recorded of %d", got, s.statements.Load())
		}
	})

	b.Run("syscalls", func(b *testing.B) {
		c1, c2 := gwtest.TCPPair(b)
		fd := func(c net.Conn) int {
			f, err := c.(*net.TCPConn).File()
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { f.Close() })
			return int(f.Fd())
		}
		a, z := fd(c1), fd(c2)
		buf := make([]byte, 64<<10)
		// A loopback write has put its bytes in the peer's queue by the time it returns, so
		// each read finds them there (and would wait for them otherwise: Fd leaves the
		// descriptors blocking).
		pass := func(from, to int, p []byte) {
			if n, err := unix.Write(from, p); n != len(p) {
				b.Fatalf("wrote %d of %d bytes: %v", n, len(p), err)
			}
			for got := 0; got < len(p); {
				n, err := unix.Read(to, buf)
				if n <= 0 {
					b.Fatalf("read: %d, %v", n, err)
				}
				got += n
			}
		}
		for i := 0; b.Loop(); i++ {
			pass(a, z, queries[i%len(queries)])
			pass(z, a, answer)
		}
	})
}
