// Command relay is a bare proxy for bench/pgbench.sh: it accepts connections and copies bytes
// both ways to an upstream, doing nothing else (no protocol parsing, no authentication, no
// audit). It is the floor for each of the gateway's two relay designs:
//
//   - by default, a goroutine per direction with io.Copy, the design of the gateway's
//     relay: goroutines;
//   - with -epoll (Linux), event-loop threads that wait in epoll and read and write with raw
//     system calls, the design of the gateway's default relay: loop. Whatever the gateway
//     costs beyond this is its own work (authentication, parsing, the statement audit).
//   - with -uring (Linux 6.1+), event-loop threads that do all their I/O through an io_uring
//     ring (internal/uring): one io_uring_enter per round for every send and receive, where
//     the epoll loop makes a system call for each. It tells whether fewer system calls would
//     make a cheaper relay (bench/README.md: they do not, on the machine measured).
//
// Usage:
//
//	go run ./bench/relay -listen 127.0.0.1:6433 -upstream 127.0.0.1:5432
//	go run ./bench/relay -listen 127.0.0.1:6434 -upstream 127.0.0.1:5432 -epoll -loops 2
//	go run ./bench/relay -listen 127.0.0.1:6435 -upstream 127.0.0.1:5432 -uring
package main

import (
	"errors"
	"flag"
	"io"
	"log"
	"net"
	"runtime"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:6433", "address to listen on")
	upstream := flag.String("upstream", "127.0.0.1:5432", "address to relay to")
	epoll := flag.Bool("epoll", false, "relay on epoll event-loop threads (Linux) instead of a goroutine per direction")
	useRing := flag.Bool("uring", false, "relay on io_uring event-loop threads (Linux 6.1+) instead of a goroutine per direction")
	loops := flag.Int("loops", max(1, min(runtime.NumCPU()/2, 8)), "event-loop threads with -epoll (the gateway's default: one per two CPUs, 1-8)")
	flag.Parse()
	if *loops < 1 {
		log.Fatalf("-loops must be at least 1, not %d", *loops)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	serve := copyBoth
	if *epoll {
		if serve, err = startLoops(*loops); err != nil {
			log.Fatal(err)
		}
	}
	if *useRing {
		if serve, err = startURingLoops(*loops); err != nil {
			log.Fatal(err)
		}
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			u, err := net.Dial("tcp", *upstream)
			if err != nil {
				c.Close()
				return
			}
			serve(c.(*net.TCPConn), u.(*net.TCPConn))
		}()
	}
}

// errNoRing is why -uring cannot run here: not Linux 6.1 or later, or io_uring is disabled
// (kernel.io_uring_disabled, a container's seccomp profile).
var errNoRing = errors.New("-uring needs io_uring as Linux 6.1 and later have it")

// copyBoth relays a connection on a goroutine per direction until both directions end.
func copyBoth(c, u *net.TCPConn) {
	defer c.Close()
	defer u.Close()
	done := make(chan struct{})
	go func() { io.Copy(u, c); u.CloseWrite(); close(done) }()
	io.Copy(c, u)
	c.CloseWrite()
	<-done
}
