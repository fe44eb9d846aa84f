//go:build linux || darwin || freebsd || netbsd || openbsd

package gateway

import (
	"net"
	"syscall"
)

// Alive reports whether a parked connection is still open with nothing unread: a server that
// closed it (a restart, idle_session_timeout, a terminated backend) has left an EOF or a
// goodbye message behind, which a non-blocking peek sees without consuming anything.
func Alive(c net.Conn) bool {
	tc := TCPOf(c)
	if tc == nil {
		return false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ok = n < 0 && (err == syscall.EAGAIN || err == syscall.EWOULDBLOCK)
		return true // never wait
	})
	return err == nil && ok
}
