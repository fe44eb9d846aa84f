package main

import (
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The -epoll relay: each loop is a goroutine locked to its thread that waits in a raw
// epoll_pwait (keeping its P, so GOMAXPROCS is raised by the number of loops) and relays
// whatever is ready with raw recv(2) and send(2), edge-triggered: a side is read until a read
// comes back short. A side whose peer cannot take more stops being read until the peer's
// socket drains. That is the gateway's loop (gateway/loop_linux.go) without its session work:
// no TLS, no protocol scanning, no statement audit, no kills, no idle sleeping, and no limit
// on how long one side is read (the gateway's reads four buffers, then serves the others).

// waitFor bounds one raw wait: a stop-the-world's preemption signal interrupts it, and the
// loop yields after every interrupted or empty wait.
const waitFor = 100 * time.Millisecond

type side struct {
	fd   int
	peer *side
	p    *pair
	out  []byte // what the socket has not taken yet
	mask uint32 // the epoll events asked for
}

type pair struct {
	c, u *side
	done bool
}

type loop struct {
	epfd  int
	inbox inbox[*pair]
	// Owned by the loop's thread:
	sides  []*side // by descriptor
	buf    []byte
	events []unix.EpollEvent
}

// startLoops starts n loops and returns what hands a connection pair to them in turn.
func startLoops(n int) (func(c, u *net.TCPConn), error) {
	loops := make([]*loop, n)
	for i := range loops {
		epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			return nil, os.NewSyscallError("epoll_create1", err)
		}
		evfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		if err != nil {
			return nil, os.NewSyscallError("eventfd", err)
		}
		if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(evfd)}); err != nil {
			return nil, os.NewSyscallError("epoll_ctl", err)
		}
		loops[i] = &loop{epfd: epfd, inbox: inbox[*pair]{evfd: evfd}, buf: make([]byte, 64<<10), events: make([]unix.EpollEvent, 256)}
	}
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + n)
	for _, l := range loops {
		go l.run()
	}
	return handOff(n, func(i, cfd, ufd int) {
		p := &pair{}
		p.c = &side{fd: cfd, p: p}
		p.u = &side{fd: ufd, p: p}
		p.c.peer, p.u.peer = p.u, p.c
		loops[i].inbox.post(p)
	}), nil
}

// handOff returns what takes a connection pair's sockets out of Go's poller and hands them
// to one of n loops in turn (post), closing both if either cannot be taken.
func handOff(n int, post func(loop, cfd, ufd int)) func(c, u *net.TCPConn) {
	var next atomic.Uint32
	return func(c, u *net.TCPConn) {
		cfd, cerr := detach(c)
		ufd, uerr := detach(u)
		if cerr != nil || uerr != nil {
			for _, fd := range []int{cfd, ufd} {
				if fd >= 0 {
					unix.Close(fd)
				}
			}
			return
		}
		post(int(next.Add(1)%uint32(n)), cfd, ufd)
	}
}

// inbox is how pairs reach a loop's thread: post adds one and, if the loop may be waiting,
// wakes it through evfd (an eventfd the loop watches); take returns what was posted.
type inbox[T any] struct {
	evfd  int
	mu    sync.Mutex
	items []T
}

func (b *inbox[T]) post(x T) {
	b.mu.Lock()
	b.items = append(b.items, x)
	first := len(b.items) == 1
	b.mu.Unlock()
	if first {
		one := [8]byte{1}
		_, _ = unix.Write(b.evfd, one[:])
	}
}

func (b *inbox[T]) take() []T {
	b.mu.Lock()
	defer b.mu.Unlock()
	items := b.items
	b.items = nil
	return items
}

// detach takes a connection's socket out of Go's poller: a duplicate of its descriptor, the
// connection closed (fd is -1 on error, the connection closed either way).
func detach(c *net.TCPConn) (fd int, err error) {
	defer c.Close()
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd = -1
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	return fd, derr
}

func (l *loop) run() {
	runtime.LockOSThread()
	msec := uintptr(waitFor / time.Millisecond)
	for {
		r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(l.epfd), uintptr(unsafe.Pointer(&l.events[0])),
			uintptr(len(l.events)), msec, 0, 0)
		if e != 0 || r == 0 {
			runtime.Gosched() // let a stop-the-world through
			continue
		}
		for _, ev := range l.events[:r] {
			fd := int(ev.Fd)
			if fd == l.inbox.evfd {
				l.adopt()
				continue
			}
			var s *side
			if fd < len(l.sides) {
				s = l.sides[fd]
			}
			if s == nil {
				continue // ended earlier in this round
			}
			if ev.Events&unix.EPOLLOUT != 0 {
				l.flush(s)
			}
			switch {
			case s.p.done:
			case s.mask&unix.EPOLLIN != 0 && ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0:
				// Edge-triggered, a peer's close is reported once, maybe with its last
				// bytes: then read to the end rather than stop at a short read.
				l.readable(s, ev.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0)
			case ev.Events&(unix.EPOLLHUP|unix.EPOLLERR) != 0:
				l.end(s.p)
			}
		}
	}
}

// adopt starts relaying the pairs posted to the loop.
func (l *loop) adopt() {
	var b [8]byte
	_, _ = unix.Read(l.inbox.evfd, b[:])
	for _, p := range l.inbox.take() {
		for _, s := range []*side{p.c, p.u} {
			s.mask = unix.EPOLLIN | unix.EPOLLRDHUP
			if s.fd >= len(l.sides) {
				l.sides = append(l.sides, make([]*side, s.fd+1-len(l.sides))...)
			}
			l.sides[s.fd] = s
			if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, s.fd, &unix.EpollEvent{Events: s.mask | unix.EPOLLET, Fd: int32(s.fd)}); err != nil {
				l.end(p)
				break
			}
		}
	}
}

// readable relays what s's socket has to its peer, until a read comes back short (with
// toEnd, until the read that reports the end).
func (l *loop) readable(s *side, toEnd bool) {
	for !s.p.done {
		if len(s.peer.out) > 0 {
			l.setMask(s, s.mask&^unix.EPOLLIN) // the peer is not keeping up: pause until it drains
			return
		}
		n, e := rawIO(unix.SYS_RECVFROM, s.fd, l.buf, 0)
		if e == unix.EINTR {
			continue
		}
		if e == unix.EAGAIN {
			return
		}
		if n <= 0 {
			l.end(s.p)
			return
		}
		w, e := rawIO(unix.SYS_SENDTO, s.peer.fd, l.buf[:n], unix.MSG_NOSIGNAL)
		if e != 0 && e != unix.EAGAIN && e != unix.EINTR {
			l.end(s.p)
			return
		}
		if w < n {
			s.peer.out = append(s.peer.out, l.buf[max(w, 0):n]...)
			l.setMask(s.peer, s.peer.mask|unix.EPOLLOUT)
		}
		if n < len(l.buf) && !toEnd {
			return
		}
	}
}

// flush writes what s holds; once it is out, s's peer is read again.
func (l *loop) flush(s *side) {
	for len(s.out) > 0 {
		n, e := rawIO(unix.SYS_SENDTO, s.fd, s.out, unix.MSG_NOSIGNAL)
		if e == unix.EAGAIN || e == unix.EINTR {
			return
		}
		if e != 0 {
			l.end(s.p)
			return
		}
		s.out = s.out[n:]
	}
	s.out = nil
	l.setMask(s, s.mask&^unix.EPOLLOUT)
	l.setMask(s.peer, s.peer.mask|unix.EPOLLIN)
}

func (l *loop) setMask(s *side, mask uint32) {
	if mask == s.mask || s.p.done {
		return
	}
	s.mask = mask
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, s.fd, &unix.EpollEvent{Events: mask | unix.EPOLLET, Fd: int32(s.fd)})
}

// end closes both sides (closing a descriptor takes it out of the epoll set).
func (l *loop) end(p *pair) {
	if p.done {
		return
	}
	p.done = true
	for _, s := range []*side{p.c, p.u} {
		if s.fd < len(l.sides) && l.sides[s.fd] == s {
			l.sides[s.fd] = nil
		}
		unix.Close(s.fd)
	}
}

// rawIO is recv(2) or send(2) with flags on a non-blocking socket without the runtime's
// system-call bookkeeping (the gateway's loop makes the same calls).
func rawIO(trap uintptr, fd int, b []byte, flags int) (int, unix.Errno) {
	r, _, e := unix.RawSyscall6(trap, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(flags), 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(r), 0
}
