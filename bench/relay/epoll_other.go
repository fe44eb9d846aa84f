//go:build !linux

package main

import (
	"errors"
	"net"
)

// startLoops fails: the event-loop relay needs Linux's epoll.
func startLoops(int) (func(c, u *net.TCPConn), error) {
	return nil, errors.New("-epoll needs Linux")
}

// startURingLoops fails: the io_uring relay needs Linux.
func startURingLoops(int) (func(c, u *net.TCPConn), error) {
	return nil, errNoRing
}
