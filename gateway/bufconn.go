package gateway

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"time"
)

// BufConn is a connection the event loop (Loops) can take over: a protocol gateway wraps its
// client and upstream sockets in one before anything else, TLS included. Until then, and after the loop hands
// it back, it is the net.Conn it wraps. While the loop owns the socket (fd >= 0), reads are
// served from the bytes the loop received and writes collect in a buffer the loop sends, so a
// tls.Conn layered on a BufConn keeps working inside the loop: it never blocks there, and
// "would block" is a timeout, which crypto/tls does not treat as fatal.
type BufConn struct {
	net.Conn      // the socket while outside the loop; nil inside
	local, remote net.Addr
	fd            int    // the socket while the loop owns it, else -1
	in            []byte // received by the loop, not yet read
	out           []byte // written, not yet sent by the loop
}

// NewBufConn wraps c (a *net.TCPConn, for the loop to take it over).
func NewBufConn(c net.Conn) *BufConn {
	return &BufConn{Conn: c, local: c.LocalAddr(), remote: c.RemoteAddr(), fd: -1}
}

// errWouldBlock is what a read inside the loop returns when all received bytes are consumed.
var errWouldBlock = os.ErrDeadlineExceeded

// Read reads what the loop received, or from the socket outside the loop.
func (c *BufConn) Read(p []byte) (int, error) {
	if len(c.in) > 0 {
		n := copy(p, c.in)
		c.in = c.in[n:]
		if len(c.in) == 0 {
			c.in = c.in[:0:0] // let a large burst's buffer go
		}
		return n, nil
	}
	if c.fd >= 0 {
		return 0, errWouldBlock
	}
	if c.Conn == nil {
		return 0, net.ErrClosed
	}
	return c.Conn.Read(p)
}

// Write buffers p for the loop to send, or writes to the socket outside the loop.
func (c *BufConn) Write(p []byte) (int, error) {
	if c.fd >= 0 {
		c.out = append(c.out, p...)
		return len(p), nil
	}
	if c.Conn == nil {
		return 0, net.ErrClosed
	}
	return c.Conn.Write(p)
}

// Close closes the socket; inside the loop, after one last try at sending what is buffered
// (a TLS close_notify, say).
func (c *BufConn) Close() error {
	if c.fd >= 0 {
		return closeLooped(c)
	}
	if c.Conn == nil {
		return net.ErrClosed
	}
	return c.Conn.Close()
}

// LocalAddr is the socket's local address.
func (c *BufConn) LocalAddr() net.Addr { return c.local }

// RemoteAddr is the socket's peer address.
func (c *BufConn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets the socket's deadline outside the loop (inside, nothing blocks).
func (c *BufConn) SetDeadline(t time.Time) error {
	if c.fd >= 0 || c.Conn == nil {
		return nil
	}
	return c.Conn.SetDeadline(t)
}

// SetReadDeadline sets the socket's read deadline outside the loop.
func (c *BufConn) SetReadDeadline(t time.Time) error {
	if c.fd >= 0 || c.Conn == nil {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

// SetWriteDeadline sets the socket's write deadline outside the loop.
func (c *BufConn) SetWriteDeadline(t time.Time) error {
	if c.fd >= 0 || c.Conn == nil {
		return nil
	}
	return c.Conn.SetWriteDeadline(t)
}

// NetConn returns the wrapped connection (nil while the loop owns the socket).
func (c *BufConn) NetConn() net.Conn { return c.Conn }

var errNotSocket = errors.New("not a TCP connection")

// BufOf returns the BufConn under c (plain or TLS), or nil.
func BufOf(c net.Conn) (*BufConn, *tls.Conn) {
	switch t := c.(type) {
	case *BufConn:
		return t, nil
	case *tls.Conn:
		if b, ok := t.NetConn().(*BufConn); ok {
			return b, t
		}
	}
	return nil, nil
}
