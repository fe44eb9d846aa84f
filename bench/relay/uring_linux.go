package main

import (
	"errors"
	"fmt"
	"log"
	"net"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/jitgate/jitgate/internal/uring"
)

// The -uring relay: each loop is a thread that owns an io_uring ring (internal/uring) and
// does all its I/O through it, one io_uring_enter per round for everything it submits and
// reaps. A side's receive takes a buffer from the loop's provided-buffer ring; what it brings
// is sent to the peer straight from that buffer, and the side's next receive is linked after
// that send (it starts once the send is complete, and a failed send cancels it), so a side
// whose peer cannot take more is not read meanwhile. The send asks for no completion unless
// it fails; the next receive's completion says the buffer before it is free again.

const (
	opRecv = 1 + iota
	opSend
	opWake
	opCancel
)

type uside struct {
	fd    int
	slot  int
	peer  *uside
	p     *upair
	armed bool  // a receive is in flight
	prev  int32 // the buffer being sent to the peer, -1 when none
}

type upair struct {
	c, u *uside
	done bool
}

type uloop struct {
	inbox inbox[*upair]
	ready chan error

	// Owned by the loop's thread:
	ring  *uring.Ring
	bufs  *uring.BufRing
	slots []*uside
	free  []int
	wake  [8]byte
	cqes  []uring.CQE
}

// startURingLoops starts n io_uring loops and returns what hands a connection pair to them
// in turn.
func startURingLoops(n int) (func(c, u *net.TCPConn), error) {
	loops := make([]*uloop, n)
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + n)
	for i := range loops {
		evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
		if err != nil {
			return nil, err
		}
		l := &uloop{inbox: inbox[*upair]{evfd: evfd}, ready: make(chan error, 1)}
		go l.run()
		if err := <-l.ready; err != nil {
			return nil, err
		}
		loops[i] = l
	}
	return handOff(n, func(i, cfd, ufd int) {
		p := &upair{}
		p.c = &uside{fd: cfd, p: p, prev: -1}
		p.u = &uside{fd: ufd, p: p, prev: -1}
		p.c.peer, p.u.peer = p.u, p.c
		loops[i].inbox.post(p)
	}), nil
}

func (l *uloop) run() {
	runtime.LockOSThread()
	ring, err := uring.New(1024)
	if err != nil {
		l.ready <- noRing(err)
		return
	}
	bufs, err := ring.NewBufRing(0, 1024, 16<<10)
	if err != nil {
		ring.Close()
		l.ready <- noRing(err)
		return
	}
	l.ring, l.bufs = ring, bufs
	l.armWake()
	l.ready <- nil
	for {
		if _, err := l.ring.Enter(1, waitFor); err != nil {
			runtime.Gosched() // interrupted or timed out: let a stop-the-world through
		}
		l.cqes = l.ring.Reap(l.cqes[:0])
		for _, c := range l.cqes {
			op, slot := int(c.UserData&0xff), int(c.UserData>>8)
			switch op {
			case opWake:
				l.adopt()
				l.armWake()
			case opRecv:
				l.received(l.slots[slot], c)
			case opSend, opCancel:
				// A send reports only its failure; its linked receive's cancellation
				// ends the pair.
			}
		}
	}
}

// noRing marks an error that says this system cannot make the ring (errNoRing).
func noRing(err error) error {
	if errors.Is(err, uring.ErrUnsupported) {
		return fmt.Errorf("%w: %v", errNoRing, err)
	}
	return err
}

func (l *uloop) sqe() *uring.SQE {
	sqe, err := l.ring.SQE()
	if err != nil {
		log.Fatalf("io_uring: %v", err) // the ring itself failed: nothing can be relayed
	}
	return sqe
}

func (l *uloop) armWake() {
	sqe := l.sqe()
	sqe.Opcode, sqe.FD = uring.OpRead, int32(l.inbox.evfd)
	sqe.Addr, sqe.Len = uint64(uintptr(unsafe.Pointer(&l.wake[0]))), 8
	sqe.UserData = opWake
}

func (l *uloop) adopt() {
	for _, p := range l.inbox.take() {
		for _, s := range []*uside{p.c, p.u} {
			if n := len(l.free); n > 0 {
				s.slot, l.free = l.free[n-1], l.free[:n-1]
			} else {
				s.slot = len(l.slots)
				l.slots = append(l.slots, nil)
			}
			l.slots[s.slot] = s
			l.recv(s, false)
		}
	}
}

// recv arms s's receive; pollFirst waits for data before the first try (right after a read,
// the socket is empty as a rule).
func (l *uloop) recv(s *uside, pollFirst bool) {
	sqe := l.sqe()
	sqe.Opcode, sqe.FD = uring.OpRecv, int32(s.fd)
	sqe.Flags = uring.FlagBufferSelect
	sqe.BufGroup = l.bufs.Group()
	if pollFirst {
		sqe.IOPrio = uring.RecvPollFirst
	}
	sqe.UserData = uint64(s.slot)<<8 | opRecv
	s.armed = true
}

func (l *uloop) received(s *uside, c uring.CQE) {
	s.armed = false
	if c.Flags&uring.CQEFBuffer != 0 && (s.p.done || c.Res <= 0) {
		l.bufs.Put(uint16(c.Flags >> 16))
	}
	if s.prev >= 0 && (c.Res != -int32(unix.ECANCELED) || s.p.done) {
		// The send before this receive is complete (or was cancelled with the pair).
		l.bufs.Put(uint16(s.prev))
		s.prev = -1
	}
	switch {
	case s.p.done:
	case c.Res == -int32(unix.ENOBUFS):
		l.recv(s, false) // every buffer is being sent: try again next round
		return
	case c.Res <= 0:
		l.end(s.p)
	default:
		id := uint16(c.Flags >> 16)
		b := l.bufs.Buf(id, int(c.Res))
		sqe := l.sqe()
		sqe.Opcode, sqe.FD = uring.OpSend, int32(s.peer.fd)
		sqe.Flags = uring.FlagIOLink | uring.FlagCQESkipSuccess
		sqe.Addr, sqe.Len = uint64(uintptr(unsafe.Pointer(&b[0]))), uint32(len(b))
		sqe.OpFlags = unix.MSG_NOSIGNAL | unix.MSG_WAITALL
		sqe.UserData = uint64(s.slot)<<8 | opSend
		s.prev = int32(id)
		l.recv(s, true)
		return
	}
	l.release(s)
}

// end cancels whatever the pair has in flight; each side is let go when its receive
// completes.
func (l *uloop) end(p *upair) {
	if p.done {
		return
	}
	p.done = true
	for _, s := range []*uside{p.c, p.u} {
		if s.armed {
			sqe := l.sqe()
			sqe.Opcode, sqe.FD = uring.OpAsyncCancel, int32(s.fd)
			sqe.OpFlags = uring.CancelFD | uring.CancelAll
			sqe.UserData = opCancel
		}
		l.release(s)
	}
}

// release closes a side of an ended pair once nothing of it is in flight.
func (l *uloop) release(s *uside) {
	if !s.p.done || s.armed || s.fd < 0 {
		return
	}
	if s.prev >= 0 {
		l.bufs.Put(uint16(s.prev))
		s.prev = -1
	}
	unix.Close(s.fd)
	s.fd = -1
	l.slots[s.slot] = nil
	l.free = append(l.free, s.slot)
}
