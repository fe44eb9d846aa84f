package postgres

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"time"
)

// bufConn is a connection the event loop can take over. Until then, and after the loop hands
// it back, it is the net.Conn it wraps. While the loop owns the socket (fd >= 0), reads are
// served from the bytes the loop received and writes collect in a buffer the loop sends, so a
// tls.Conn layered on a bufConn keeps working inside the loop: it never blocks there, and
// "would block" is a timeout, which crypto/tls does not treat as fatal.
type bufConn struct {
	net.Conn      // the socket while outside the loop; nil inside
	local, remote net.Addr
	fd            int    // the socket while the loop owns it, else -1
	in            []byte // received by the loop, not yet read
	out           []byte // written, not yet sent by the loop
}

func newBufConn(c net.Conn) *bufConn {
	return &bufConn{Conn: c, local: c.LocalAddr(), remote: c.RemoteAddr(), fd: -1}
}

// errWouldBlock is what a read inside the loop returns when all received bytes are consumed.
var errWouldBlock = os.ErrDeadlineExceeded

func (c *bufConn) Read(p []byte) (int, error) {
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

func (c *bufConn) Write(p []byte) (int, error) {
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
func (c *bufConn) Close() error {
	if c.fd >= 0 {
		return closeLooped(c)
	}
	if c.Conn == nil {
		return net.ErrClosed
	}
	return c.Conn.Close()
}

func (c *bufConn) LocalAddr() net.Addr  { return c.local }
func (c *bufConn) RemoteAddr() net.Addr { return c.remote }

func (c *bufConn) SetDeadline(t time.Time) error {
	if c.fd >= 0 || c.Conn == nil {
		return nil
	}
	return c.Conn.SetDeadline(t)
}

func (c *bufConn) SetReadDeadline(t time.Time) error {
	if c.fd >= 0 || c.Conn == nil {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *bufConn) SetWriteDeadline(t time.Time) error {
	if c.fd >= 0 || c.Conn == nil {
		return nil
	}
	return c.Conn.SetWriteDeadline(t)
}

// NetConn returns the wrapped connection (nil while the loop owns the socket).
func (c *bufConn) NetConn() net.Conn { return c.Conn }

var errNotSocket = errors.New("not a TCP connection")

// bufOf returns the bufConn under c (plain or TLS), or nil.
func bufOf(c net.Conn) (*bufConn, *tls.Conn) {
	switch t := c.(type) {
	case *bufConn:
		return t, nil
	case *tls.Conn:
		if b, ok := t.NetConn().(*bufConn); ok {
			return b, t
		}
	}
	return nil, nil
}
