package gateway

import (
	"errors"
	"net"
	"sync"
	"time"
)

// Relayed is a protocol's session as an event loop (Loops) relays it: the loop moves bytes
// between the two sockets and leaves what they mean to the protocol. Every method runs on the
// loop's thread and must not block.
type Relayed interface {
	// FromClient notes what a chunk of the client's bytes does and returns what to forward
	// upstream (fwd) and what the gateway answers the client itself (back, after fwd).
	// ErrGoodbye means the client said goodbye: the relay ends cleanly once fwd is sent. Any
	// other error means the session is being killed (its Looped.Kill ends the relay).
	FromClient(b []byte) (fwd, back []byte, err error)
	// FromUpstream notes what a chunk of the upstream's bytes does and returns what to forward
	// to the client; an error means the session is being killed.
	FromUpstream(b []byte) (fwd []byte, err error)
	// Held reports whether the session's finished statements wait for room in the recorder:
	// the loop then reads neither side until DrainBacklog reports them taken.
	Held() bool
	// DrainBacklog offers the waiting statements to the recorder again; true once all are in.
	DrainBacklog() bool
	// Between reports whether the upstream's stream is between messages, so that a message
	// of the gateway's own can go to the client.
	Between() bool
	// Goodbye is what tells the client why the session was killed (sent only if Between).
	Goodbye() []byte
	// Ended is called once, when the relay stops: why (io.EOF: the upstream closed;
	// ErrGoodbye; ErrKilled; another error: the client side failed), and whether the upstream
	// stopped between messages with nothing received left unrelayed (so its connection may be
	// reset and reused). The sockets are the protocol's again: BufConn.Attach hands one back
	// to Go's poller.
	Ended(err error, upClean bool)
}

var (
	// ErrGoodbye is what FromClient returns when the client said goodbye.
	ErrGoodbye = errors.New("client said goodbye")
	// ErrKilled is why a relay ended that jitgate ended.
	ErrKilled = errors.New("session ended by jitgate")
)

// HeldRetry is how often a held session's statement backlog is offered to the recorder again.
const HeldRetry = 5 * time.Millisecond

// Looped is a session an event loop relays.
type Looped struct {
	l  *eventLoop
	ls *loopSession
}

// Kill stops relaying the session: the client gets its Goodbye if its stream is between
// messages (with up to 2 seconds to take it), then the relay ends with ErrKilled. It does not
// block.
func (h *Looped) Kill() { h.l.post(func() { h.l.kill(h.ls) }) }

// Ending is why a session ends, as its protocol and the event loop share it: the first reason
// wins, and a session that is ending is not handed to a loop. The zero Ending is ready.
type Ending struct {
	mu     sync.Mutex
	reason string
	looped *Looped
}

// Begin records reason as why the session ends; false if it was ending already. The *Looped
// it returns, if a loop relays the session, is the relay to Kill; otherwise the protocol
// breaks its goroutine relay itself.
func (e *Ending) Begin(reason string) (*Looped, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.reason != "" {
		return nil, false
	}
	e.reason = reason
	return e.looped, true
}

// Reason is why the session ends ("" while it does not).
func (e *Ending) Reason() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.reason
}

// Adopt hands the session's relay to one of loops, unless it is ending already (see
// Loops.Adopt).
func (e *Ending) Adopt(loops *Loops, s Relayed, client, upstream net.Conn) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.reason != "" {
		return false
	}
	looped, ok := loops.Adopt(s, client, upstream)
	if ok {
		e.looped = looped
	}
	return ok
}
