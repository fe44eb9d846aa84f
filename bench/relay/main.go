// Command relay is the floor for a Go proxy built on a goroutine per direction, in
// bench/pgbench.sh: it accepts connections and copies bytes both ways to an upstream with
// io.Copy, doing nothing else (no protocol parsing, no authentication, no audit). The gateway
// with relay: goroutines uses that design and does all of that work; the default relay (an
// epoll event loop) is measured against it.
//
//	go run ./bench/relay -listen 127.0.0.1:6433 -upstream 127.0.0.1:5432
package main

import (
	"flag"
	"io"
	"log"
	"net"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:6433", "address to listen on")
	upstream := flag.String("upstream", "127.0.0.1:5432", "address to relay to")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			defer c.Close()
			u, err := net.Dial("tcp", *upstream)
			if err != nil {
				return
			}
			defer u.Close()
			done := make(chan struct{})
			go func() { io.Copy(u, c); u.(*net.TCPConn).CloseWrite(); close(done) }()
			io.Copy(c, u)
			c.(*net.TCPConn).CloseWrite()
			<-done
		}()
	}
}
