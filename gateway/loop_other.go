//go:build !linux

package gateway

import (
	"errors"
	"net"
)

// The event loop is Linux-only; elsewhere every session relays on its own pair of goroutines.

type (
	// Loops are not available here (see StartLoops).
	Loops       struct{}
	eventLoop   struct{}
	loopSession struct{}
)

// StartLoops fails: the event loop needs Linux.
func StartLoops(int) (*Loops, error) {
	return nil, errors.New("the event-loop relay needs Linux")
}

// Adopt never adopts.
func (*Loops) Adopt(Relayed, net.Conn, net.Conn) (*Looped, bool) { return nil, false }

func (*eventLoop) post(func())       {}
func (*eventLoop) kill(*loopSession) {}
func closeLooped(*BufConn) error     { return nil }

// Attach has nothing to do: without the loop a BufConn never leaves Go's poller.
func (*BufConn) Attach() error { return nil }
