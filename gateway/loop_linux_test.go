package gateway

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/jitgate/jitgate/internal/gwtest"
	"golang.org/x/sys/unix"
)

// An idle loop waits in a raw epoll_pwait that keeps its P; a stop-the-world must still get
// through at once (the preemption signal interrupts the wait) rather than wait out maxWait.
func TestLoopLetsTheWorldStop(t *testing.T) {
	if _, err := StartLoops(1); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // the loop is waiting
	const name = "/sched/pauses/stopping/gc:seconds"
	read := func() *metrics.Float64Histogram {
		s := []metrics.Sample{{Name: name}}
		metrics.Read(s)
		return s[0].Value.Float64Histogram()
	}
	before := read()
	const n = 20
	for i := 0; i < n; i++ {
		runtime.GC()
	}
	after := read()
	// The median time to stop the world over these collections (two stops each).
	var total uint64
	delta := make([]uint64, len(after.Counts))
	for i := range after.Counts {
		delta[i] = after.Counts[i] - before.Counts[i]
		total += delta[i]
	}
	if total < n {
		t.Fatalf("only %d stops recorded for %d collections", total, n)
	}
	var seen uint64
	for i, c := range delta {
		seen += c
		if seen*2 >= total {
			if median := time.Duration(after.Buckets[i+1] * float64(time.Second)); median > maxWait/5 {
				t.Fatalf("stopping the world took %v (median) with an idle loop; maxWait is %v", median, maxWait)
			}
			return
		}
	}
}

// An idle loop waits through the runtime, which gives up its P, so that the runtime's sysmon
// thread does not preempt it every 10 ms: it sleeps undisturbed, and work posted to it still
// runs at once.
func TestIdleLoopSleeps(t *testing.T) {
	set, err := StartLoops(1)
	if err != nil {
		t.Fatal(err)
	}
	switches := func(tid int32) int {
		b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/status", tid))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
				n, err := strconv.Atoi(strings.TrimSpace(v))
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
		}
		t.Fatal("no voluntary_ctxt_switches in /proc")
		return 0
	}
	for i, l := range set.loops {
		deadline := time.Now().Add(5 * time.Second)
		for !l.idle.Load() || l.tid.Load() == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("loop %d: not idle after 5 s with no sessions", i)
			}
			time.Sleep(10 * time.Millisecond)
		}
		// Over half a second a raw wait would be preempted about 50 times, each costing the
		// thread a few switches; an idle wait lasts up to maxIdleWait.
		before := switches(l.tid.Load())
		time.Sleep(500 * time.Millisecond)
		n := switches(l.tid.Load()) - before
		if n > 10 {
			t.Errorf("loop %d: its thread switched %d times in 0.5 s while idle", i, n)
		}
		ran := make(chan struct{})
		start := time.Now()
		l.post(func() { close(ran) })
		select {
		case <-ran:
		case <-time.After(maxIdleWait / 2):
			t.Fatalf("loop %d: work posted to it waited for its idle wait to end", i)
		}
		t.Logf("loop %d: %d switches in 0.5 s idle; posted work ran after %v", i, n, time.Since(start))
	}
}

// socketPair returns the descriptors of both ends of a loopback TCP connection, non-blocking
// as the loop's are; they are closed when the test ends.
func socketPair(tb testing.TB) (a, b int) {
	tb.Helper()
	c, s := gwtest.TCPPair(tb)
	fds := make([]int, 2)
	for i, conn := range []net.Conn{c, s} {
		bc := &BufConn{Conn: conn, fd: -1}
		if err := bc.detach(); err != nil {
			tb.Fatal(err)
		}
		if err := unix.SetNonblock(bc.fd, true); err != nil {
			tb.Fatal(err)
		}
		fds[i] = bc.fd
		tb.Cleanup(func() { unix.Close(bc.fd) })
	}
	return fds[0], fds[1]
}

// The loop's reads and writes carry bytes, report an empty socket as EAGAIN, and report a
// closed peer as an error rather than raising SIGPIPE.
func TestRawSocketCalls(t *testing.T) {
	a, b := socketPair(t)
	buf := make([]byte, 64)
	if _, err := rawRead(b, buf); err != unix.EAGAIN {
		t.Fatalf("read of an empty socket: %v, want EAGAIN", err)
	}
	if n, err := rawWrite(a, []byte("hello")); n != 5 || err != nil {
		t.Fatalf("write: %d, %v", n, err)
	}
	var n int
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if n, err = rawRead(b, buf); err != unix.EAGAIN || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read: %q, %v", buf[:max(n, 0)], err)
	}
	// The peer goes away: once it has answered with a reset, writes fail, and no SIGPIPE is
	// raised (the runtime would ignore it, but each costs a signal delivery).
	pipes := make(chan os.Signal, 1)
	signal.Notify(pipes, unix.SIGPIPE)
	defer signal.Stop(pipes)
	unix.Close(b)
	var werr error
	for deadline := time.Now().Add(5 * time.Second); werr == nil && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		_, werr = rawWrite(a, []byte("x"))
	}
	if !errors.Is(werr, unix.EPIPE) && !errors.Is(werr, unix.ECONNRESET) {
		t.Fatalf("write to a closed peer: %v, want EPIPE or ECONNRESET", werr)
	}
	if _, werr = rawWrite(a, []byte("x")); !errors.Is(werr, unix.EPIPE) {
		t.Fatalf("write after the reset: %v, want EPIPE", werr)
	}
	select {
	case <-pipes:
		t.Fatal("a write to a closed peer raised SIGPIPE")
	case <-time.After(50 * time.Millisecond):
	}
}

// BenchmarkSocketCalls measures the loop's read and write against read(2) and write(2) made
// the same raw way, the direct path: one 120-byte message written on one end of a loopback
// TCP connection and read on the other, per operation.
func BenchmarkSocketCalls(b *testing.B) {
	msg := make([]byte, 120)
	buf := make([]byte, 64<<10)
	fileCall := func(trap uintptr) func(int, []byte) (int, error) {
		return func(fd int, p []byte) (int, error) {
			r, _, e := unix.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			if e != 0 {
				return -1, e
			}
			return int(r), nil
		}
	}
	calls := map[string][2]func(int, []byte) (int, error){
		"readwrite": {fileCall(unix.SYS_WRITE), fileCall(unix.SYS_READ)},
		"loop":      {rawWrite, rawRead},
	}
	for _, name := range []string{"readwrite", "loop"} {
		write, read := calls[name][0], calls[name][1]
		b.Run(name, func(b *testing.B) {
			x, y := socketPair(b)
			for b.Loop() {
				if n, err := write(x, msg); n != len(msg) {
					b.Fatalf("write: %d, %v", n, err)
				}
				n, err := read(y, buf)
				for err == unix.EAGAIN { // not there yet (loopback delivers it within the write, as a rule)
					n, err = read(y, buf)
				}
				if n != len(msg) {
					b.Fatalf("read: %d, %v", n, err)
				}
			}
		})
	}
}

// passThrough is a Relayed that forwards every byte as it is. Ended sends why on ended and
// closes over.
type passThrough struct {
	ended chan error
	over  chan struct{}
}

func (p *passThrough) FromClient(b []byte) (fwd, back []byte, err error) { return b, nil, nil }
func (p *passThrough) FromUpstream(b []byte) ([]byte, error)             { return b, nil }
func (p *passThrough) Held() bool                                        { return false }
func (p *passThrough) DrainBacklog() bool                                { return true }
func (p *passThrough) Between() bool                                     { return true }
func (p *passThrough) Goodbye() []byte                                   { return nil }
func (p *passThrough) Ended(err error, _ bool) {
	p.ended <- err
	close(p.over)
}

// loopedEcho starts a session in the loop whose upstream echoes what it gets, and returns the
// client's end.
func loopedEcho(t *testing.T, loops *Loops) (net.Conn, *passThrough) {
	t.Helper()
	client, gwClient := gwtest.TCPPair(t)
	gwUp, up := gwtest.TCPPair(t)
	go func() { _, _ = io.Copy(up, up); up.Close() }()
	p := &passThrough{ended: make(chan error, 1), over: make(chan struct{})}
	bc, bu := NewBufConn(gwClient), NewBufConn(gwUp)
	if _, ok := loops.Adopt(p, bc, bu); !ok {
		t.Fatal("the loop did not adopt the session")
	}
	t.Cleanup(func() {
		<-p.over // the relay is over: the sockets are the test's again
		bc.Close()
		bu.Close()
	})
	return client, p
}

// A stream far larger than the sockets buffer crosses the loop intact both ways (the loop
// reads in bursts, pauses a side whose peer is full and resumes it), and a session doing
// small round trips on the same loop meanwhile is still served.
func TestLoopStreamsAndStaysFair(t *testing.T) {
	loops, err := StartLoops(1)
	if err != nil {
		t.Fatal(err)
	}
	big, bigEnd := loopedEcho(t, loops)
	small, smallEnd := loopedEcho(t, loops)
	sent := make([]byte, 32<<20)
	_, _ = rand.Read(sent)
	_ = big.SetDeadline(time.Now().Add(60 * time.Second))
	werr := make(chan error, 1)
	go func() { _, err := big.Write(sent); werr <- err }()
	got := make(chan error, 1)
	go func() {
		back := make([]byte, len(sent))
		if _, err := io.ReadFull(big, back); err != nil {
			got <- err
			return
		}
		if !bytes.Equal(back, sent) {
			got <- errors.New("the echo differs from what was sent")
			return
		}
		got <- nil
	}()
	_ = small.SetDeadline(time.Now().Add(60 * time.Second))
	rounds := 0
	for done := false; !done; {
		select {
		case err := <-got:
			if err != nil {
				t.Fatalf("the big stream: %v", err)
			}
			done = true
		default:
		}
		msg := []byte("ping " + strconv.Itoa(rounds))
		if _, err := small.Write(msg); err != nil {
			t.Fatalf("round trip %d: %v", rounds, err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(small, buf); err != nil || !bytes.Equal(buf, msg) {
			t.Fatalf("round trip %d: %q, %v", rounds, buf, err)
		}
		rounds++
	}
	if err := <-werr; err != nil {
		t.Fatalf("writing the big stream: %v", err)
	}
	big.Close()
	small.Close()
	for _, p := range []*passThrough{bigEnd, smallEnd} {
		select {
		case err := <-p.ended:
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("a session ended with %v, want the client's close (io.ErrUnexpectedEOF)", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a session did not end after its client closed")
		}
	}
	t.Logf("%d round trips while 32 MiB went each way", rounds)
}

// A client that sends its last bytes and closes at once (one event for both, edge-triggered)
// still ends its session: the bytes reach the upstream, then the close is seen.
func TestLoopSeesCloseAfterLastBytes(t *testing.T) {
	loops, err := StartLoops(1)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		client, gwClient := gwtest.TCPPair(t)
		gwUp, up := gwtest.TCPPair(t)
		got := make(chan []byte, 1)
		go func() { b, _ := io.ReadAll(up); got <- b }()
		p := &passThrough{ended: make(chan error, 1), over: make(chan struct{})}
		bc, bu := NewBufConn(gwClient), NewBufConn(gwUp)
		if _, ok := loops.Adopt(p, bc, bu); !ok {
			t.Fatal("the loop did not adopt the session")
		}
		if _, err := client.Write([]byte("last words")); err != nil {
			t.Fatal(err)
		}
		client.Close()
		select {
		case err := <-p.ended:
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("the session ended with %v, want the client's close", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("session %d: not ended 10 s after its client sent its last bytes and closed", i)
		}
		bc.Close() // what the protocol does once the relay has ended
		bu.Close()
		if b := <-got; string(b) != "last words" {
			t.Fatalf("the upstream got %q", b)
		}
	}
}
