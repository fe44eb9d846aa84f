package main

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"runtime"
	"testing"
	"time"
)

// TestRelay sends 8 MB through each relay to an echo server and back: more than the sockets
// buffer, so the event loops must pause a side and resume it; then the client's close must
// reach the upstream.
func TestRelay(t *testing.T) {
	modes := map[string]func(c, u *net.TCPConn){"goroutines": copyBoth}
	if runtime.GOOS == "linux" {
		serve, err := startLoops(2)
		if err != nil {
			t.Fatal(err)
		}
		modes["epoll"] = serve
		switch serve, err := startURingLoops(2); {
		case errors.Is(err, errNoRing):
			t.Logf("not testing the io_uring relay: %v", err) // a benchmark tool; the gateway does not use io_uring
		case err != nil:
			t.Fatal(err)
		default:
			modes["uring"] = serve
		}
	}
	for name, serve := range modes {
		t.Run(name, func(t *testing.T) {
			echo := listen(t)
			closed := make(chan struct{}, 1)
			go func() {
				c, err := echo.Accept()
				if err != nil {
					return
				}
				_, _ = io.Copy(c, c)
				c.Close()
				closed <- struct{}{}
			}()
			relay := listen(t)
			go func() {
				c, err := relay.Accept()
				if err != nil {
					return
				}
				u, err := net.Dial("tcp", echo.Addr().String())
				if err != nil {
					c.Close()
					return
				}
				serve(c.(*net.TCPConn), u.(*net.TCPConn))
			}()

			c, err := net.Dial("tcp", relay.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			sent := make([]byte, 8<<20)
			_, _ = rand.Read(sent)
			werr := make(chan error, 1)
			go func() { _, err := c.Write(sent); werr <- err }()
			got := make([]byte, len(sent))
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatalf("reading the echo: %v", err)
			}
			if err := <-werr; err != nil {
				t.Fatalf("writing: %v", err)
			}
			if !bytes.Equal(got, sent) {
				t.Fatal("the echo differs from what was sent")
			}
			c.Close()
			select {
			case <-closed:
			case <-time.After(10 * time.Second):
				t.Fatal("the upstream was not closed after the client closed")
			}
		})
	}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}
