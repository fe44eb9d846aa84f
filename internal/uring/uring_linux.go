// Package uring is a small io_uring ring (Linux 6.1 and later) for the gateway's event loop:
// one submission and completion queue pair owned by one thread, and rings of provided
// buffers that the kernel fills on receive. It holds only what the loop uses; a caller that
// gets an error from New falls back to epoll.
//
// A ring is made with IORING_SETUP_SINGLE_ISSUER and IORING_SETUP_DEFER_TASKRUN: only the
// thread that made it may submit, and the kernel finishes requests (a receive whose data has
// come) only when that thread waits in Enter. So a loop pays one system call per round, for
// everything it submits and everything it reaps.
package uring

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Opcodes (include/uapi/linux/io_uring.h, enum io_uring_op).
const (
	OpNop         = 0
	OpPollAdd     = 6
	OpAsyncCancel = 14
	OpRead        = 22
	OpSend        = 26
	OpRecv        = 27
)

// SQE flags.
const (
	FlagIOLink         = 1 << 2
	FlagBufferSelect   = 1 << 5
	FlagCQESkipSuccess = 1 << 6
)

// RecvPollFirst (in an SQE's ioprio) makes a receive wait for data before trying to read:
// for a socket that was just drained, the first try would only fail.
const RecvPollFirst = 1 << 0

// CancelFD and CancelAll (an OpAsyncCancel SQE's op flags) cancel every request on a
// descriptor.
const (
	CancelAll = 1 << 0
	CancelFD  = 1 << 1
)

// CQE flags.
const (
	CQEFBuffer = 1 << 0 // the upper 16 bits are the buffer's id
	CQEFMore   = 1 << 1
)

const (
	setupSubmitAll     = 1 << 7
	setupSingleIssuer  = 1 << 12
	setupDeferTaskrun  = 1 << 13
	setupNoSQArray     = 1 << 16
	featSingleMmap     = 1 << 0
	featNoDrop         = 1 << 1
	featExtArg         = 1 << 8
	enterGetEvents     = 1 << 0
	enterExtArg        = 1 << 3
	offSQRing          = 0
	offSQEs            = 0x10000000
	registerPbufRing   = 22
	unregisterPbufRing = 23
)

// SQE is a submission queue entry (struct io_uring_sqe, 64 bytes).
type SQE struct {
	Opcode      uint8
	Flags       uint8
	IOPrio      uint16
	FD          int32
	Off         uint64
	Addr        uint64
	Len         uint32
	OpFlags     uint32 // msg_flags for sends and receives, cancel_flags, poll32_events
	UserData    uint64
	BufGroup    uint16
	Personality uint16
	SpliceFDIn  int32
	Addr3       uint64
	_           uint64
}

// CQE is a completion queue entry (struct io_uring_cqe).
type CQE struct {
	UserData uint64
	Res      int32
	Flags    uint32
}

type sqRingOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type cqRingOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

type params struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFD uint32
	resv                                                                   [3]uint32
	sqOff                                                                  sqRingOffsets
	cqOff                                                                  cqRingOffsets
}

type getEventsArg struct {
	sigmask   uint64
	sigmaskSz uint32
	minWait   uint32
	ts        uint64
}

// Ring is one io_uring instance. Every method but Close must be called on the thread that
// called New.
type Ring struct {
	fd   int
	mem  []byte // the rings' shared mapping
	sqeM []byte // the SQEs' mapping

	sqHead, sqTail *uint32
	sqMask         uint32
	sqEntries      uint32
	sqes           []SQE
	tail           uint32 // our tail, published by Enter

	cqHead, cqTail *uint32
	cqMask         uint32
	cqes           []CQE

	arg getEventsArg
	ts  unix.Timespec
}

// ErrUnsupported is what New returns when the kernel lacks what the ring needs (or forbids
// io_uring): the caller uses epoll instead.
var ErrUnsupported = errors.New("io_uring: not supported here")

// New makes a ring of entries submission slots (a power of two) and twice as many completion
// slots, owned by the calling thread (lock it first: runtime.LockOSThread).
func New(entries uint32) (*Ring, error) {
	var p params
	var fd uintptr
	var errno unix.Errno
	for _, flags := range []uint32{
		setupSingleIssuer | setupDeferTaskrun | setupSubmitAll | setupNoSQArray,
		setupSingleIssuer | setupDeferTaskrun | setupSubmitAll,
	} {
		p = params{flags: flags}
		fd, _, errno = unix.RawSyscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
		if errno != unix.EINVAL {
			break
		}
	}
	switch errno {
	case 0:
	case unix.EINVAL, unix.ENOSYS, unix.EPERM, unix.EACCES:
		return nil, fmt.Errorf("%w (io_uring_setup: %v)", ErrUnsupported, errno)
	default:
		return nil, os.NewSyscallError("io_uring_setup", errno)
	}
	r := &Ring{fd: int(fd)}
	need := uint32(featSingleMmap | featNoDrop | featExtArg)
	if p.features&need != need {
		unix.Close(r.fd)
		return nil, fmt.Errorf("%w (features %#x)", ErrUnsupported, p.features)
	}
	size := int(p.cqOff.cqes) + int(p.cqEntries)*int(unsafe.Sizeof(CQE{}))
	if p.flags&setupNoSQArray == 0 {
		size = max(size, int(p.sqOff.array)+int(p.sqEntries)*4)
	}
	mem, err := unix.Mmap(r.fd, offSQRing, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		unix.Close(r.fd)
		return nil, os.NewSyscallError("mmap", err)
	}
	r.mem = mem
	sqeM, err := unix.Mmap(r.fd, offSQEs, int(p.sqEntries)*int(unsafe.Sizeof(SQE{})), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		unix.Munmap(mem)
		unix.Close(r.fd)
		return nil, os.NewSyscallError("mmap", err)
	}
	r.sqeM = sqeM
	at := func(off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&mem[off])) }
	r.sqHead, r.sqTail = at(p.sqOff.head), at(p.sqOff.tail)
	r.sqMask, r.sqEntries = *at(p.sqOff.ringMask), *at(p.sqOff.ringEntries)
	r.sqes = unsafe.Slice((*SQE)(unsafe.Pointer(&sqeM[0])), p.sqEntries)
	if p.flags&setupNoSQArray == 0 {
		array := unsafe.Slice(at(p.sqOff.array), p.sqEntries)
		for i := range array {
			array[i] = uint32(i)
		}
	}
	r.tail = atomic.LoadUint32(r.sqTail)
	r.cqHead, r.cqTail = at(p.cqOff.head), at(p.cqOff.tail)
	r.cqMask = *at(p.cqOff.ringMask)
	r.cqes = unsafe.Slice((*CQE)(unsafe.Pointer(&mem[p.cqOff.cqes])), p.cqEntries)
	return r, nil
}

// Close releases the ring; requests still in flight are cancelled by the kernel.
func (r *Ring) Close() error {
	unix.Munmap(r.sqeM)
	unix.Munmap(r.mem)
	return unix.Close(r.fd)
}

// SQE returns the next submission slot, zeroed, to be filled before the next Enter. When the
// queue is full it first submits what is queued.
func (r *Ring) SQE() (*SQE, error) {
	for r.tail-atomic.LoadUint32(r.sqHead) >= r.sqEntries {
		if _, err := r.Enter(0, 0); err != nil && err != unix.EINTR && err != unix.ETIME {
			return nil, err
		}
	}
	sqe := &r.sqes[r.tail&r.sqMask]
	*sqe = SQE{}
	r.tail++
	return sqe, nil
}

// Enter submits what is queued and, if wait > 0, waits until at least wait completions are
// ready or timeout passes (0: no limit). It returns how many it submitted; an interrupted or
// timed-out wait gives unix.EINTR or unix.ETIME. It does not go through the runtime: the
// thread keeps its P while it waits, as the gateway's raw epoll wait does.
func (r *Ring) Enter(wait uint32, timeout time.Duration) (int, error) {
	atomic.StoreUint32(r.sqTail, r.tail)
	submit := r.tail - atomic.LoadUint32(r.sqHead)
	flags := uintptr(enterGetEvents | enterExtArg)
	r.arg = getEventsArg{}
	if wait > 0 && timeout > 0 {
		r.ts = unix.NsecToTimespec(int64(timeout))
		r.arg.ts = uint64(uintptr(unsafe.Pointer(&r.ts)))
	}
	n, _, errno := unix.RawSyscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(submit), uintptr(wait), flags,
		uintptr(unsafe.Pointer(&r.arg)), unsafe.Sizeof(r.arg))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// EnterBlocking is Enter through the runtime: the thread gives up its P while it waits (for
// an idle loop, which no signal need interrupt).
func (r *Ring) EnterBlocking(wait uint32, timeout time.Duration) (int, error) {
	atomic.StoreUint32(r.sqTail, r.tail)
	submit := r.tail - atomic.LoadUint32(r.sqHead)
	r.arg = getEventsArg{}
	if wait > 0 && timeout > 0 {
		r.ts = unix.NsecToTimespec(int64(timeout))
		r.arg.ts = uint64(uintptr(unsafe.Pointer(&r.ts)))
	}
	n, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(submit), uintptr(wait), enterGetEvents|enterExtArg,
		uintptr(unsafe.Pointer(&r.arg)), unsafe.Sizeof(r.arg))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// Reap appends the ready completions to dst and frees their slots.
func (r *Ring) Reap(dst []CQE) []CQE {
	head := atomic.LoadUint32(r.cqHead)
	tail := atomic.LoadUint32(r.cqTail)
	for ; head != tail; head++ {
		dst = append(dst, r.cqes[head&r.cqMask])
	}
	atomic.StoreUint32(r.cqHead, head)
	return dst
}

// BufRing is a ring of buffers the kernel picks from for receives with FlagBufferSelect in
// its group: a buffer is the receiver's from the completion that names it until Put gives it
// back.
type BufRing struct {
	r     *Ring
	group uint16
	mem   []byte // the ring of struct io_uring_buf
	bufs  []byte // count buffers of size bytes
	size  int
	mask  uint16
	tail  uint16
	bid0  uint16 // the id in slot 0, which shares its word with the tail
}

// bufReg is struct io_uring_buf_reg, which registers and unregisters a buffer ring.
type bufReg struct {
	ringAddr    uint64
	ringEntries uint32
	bgid        uint16
	flags       uint16
	resv        [3]uint64
}

// NewBufRing registers count buffers (a power of two, at most 32768) of size bytes as group.
func (r *Ring) NewBufRing(group uint16, count, size int) (*BufRing, error) {
	if count <= 0 || count > 1<<15 || count&(count-1) != 0 {
		return nil, fmt.Errorf("io_uring: buffer count %d is not a power of two up to 32768", count)
	}
	mem, err := unix.Mmap(-1, 0, count*16, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANONYMOUS|unix.MAP_PRIVATE|unix.MAP_POPULATE)
	if err != nil {
		return nil, os.NewSyscallError("mmap", err)
	}
	bufs, err := unix.Mmap(-1, 0, count*size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANONYMOUS|unix.MAP_PRIVATE)
	if err != nil {
		unix.Munmap(mem)
		return nil, os.NewSyscallError("mmap", err)
	}
	reg := bufReg{ringAddr: uint64(uintptr(unsafe.Pointer(&mem[0]))), ringEntries: uint32(count), bgid: group}
	if _, _, errno := unix.RawSyscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), registerPbufRing, uintptr(unsafe.Pointer(&reg)), 1, 0, 0); errno != 0 {
		unix.Munmap(mem)
		unix.Munmap(bufs)
		if errno == unix.EINVAL {
			return nil, fmt.Errorf("%w (buffer rings: %v)", ErrUnsupported, errno)
		}
		return nil, os.NewSyscallError("io_uring_register", errno)
	}
	b := &BufRing{r: r, group: group, mem: mem, bufs: bufs, size: size, mask: uint16(count - 1)}
	for i := 0; i < count; i++ {
		b.add(uint16(i))
	}
	b.publish()
	return b, nil
}

// Group is the buffer group to name in a receive's SQE.
func (b *BufRing) Group() uint16 { return b.group }

// Size is the length of each buffer.
func (b *BufRing) Size() int { return b.size }

// Buf is buffer id's first n bytes.
func (b *BufRing) Buf(id uint16, n int) []byte {
	off := int(id) * b.size
	return b.bufs[off : off+n : off+b.size]
}

// Put gives buffer id back to the kernel.
func (b *BufRing) Put(id uint16) {
	b.add(id)
	b.publish()
}

func (b *BufRing) add(id uint16) {
	slot := b.tail & b.mask
	e := unsafe.Pointer(&b.mem[int(slot)*16])
	*(*uint64)(e) = uint64(uintptr(unsafe.Pointer(&b.bufs[int(id)*b.size])))
	*(*uint32)(unsafe.Add(e, 8)) = uint32(b.size)
	if slot == 0 {
		b.bid0 = id // written with the tail, below
	} else {
		*(*uint16)(unsafe.Add(e, 12)) = id
	}
	b.tail++
}

// publish stores the tail (the last 16 bits of slot 0) with slot 0's id in one release store.
func (b *BufRing) publish() {
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&b.mem[12])), uint32(b.bid0)|uint32(b.tail)<<16)
}

// Close unregisters the buffers and unmaps them; the ring must have no receive in flight
// that could pick one.
func (b *BufRing) Close() error {
	reg := bufReg{bgid: b.group}
	_, _, errno := unix.RawSyscall6(unix.SYS_IO_URING_REGISTER, uintptr(b.r.fd), unregisterPbufRing, uintptr(unsafe.Pointer(&reg)), 1, 0, 0)
	unix.Munmap(b.mem)
	unix.Munmap(b.bufs)
	if errno != 0 {
		return os.NewSyscallError("io_uring_register", errno)
	}
	return nil
}
