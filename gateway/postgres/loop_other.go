//go:build !linux

package postgres

import "errors"

// The event loop is Linux-only; elsewhere every session relays on its own pair of goroutines.

type (
	loopSet     struct{}
	eventLoop   struct{}
	loopSession struct{}
)

func startLoops(int) (*loopSet, error) {
	return nil, errors.New("the event-loop relay needs Linux")
}

func (*loopSet) adopt(*session) bool { return false }

func (*eventLoop) post(func())       {}
func (*eventLoop) kill(*loopSession) {}
func closeLooped(*bufConn) error     { return nil }

// attach has nothing to do: without the loop a bufConn never leaves Go's poller.
func (*bufConn) attach() error { return nil }
