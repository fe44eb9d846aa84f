package postgres

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/jitgate/jitgate/gateway"
)

var (
	// errGoodbye ends the client side after its Terminate has been forwarded (or kept, when
	// the session parks its upstream).
	errGoodbye = gateway.ErrGoodbye
	errKilled  = gateway.ErrKilled
)

// scanner follows the message boundaries of one direction of a PostgreSQL stream after
// startup, across reads of any size: it collects the bodies of the message types its caller
// needs and lets the rest stream past, so bytes are relayed as they come.
type scanner struct {
	max  int             // the largest body allowed
	want func(byte) bool // types whose bodies the caller needs
	hdr  [5]byte
	nhdr int  // header bytes seen of the current message
	left int  // body bytes still to come
	keep bool // collecting the current body
	at   int  // where the current message began in the chunk being fed (-1: an earlier one)
	body []byte
}

// boundary reports whether the stream is between messages.
func (sc *scanner) boundary() bool { return sc.nhdr == 0 }

// feed scans b, calling msg for each complete wanted message with its type, its body (valid
// only during the call) and the offset in b where it began (-1 if in an earlier chunk). It
// stops at msg's first error, or with an error for a message over the size limit.
func (sc *scanner) feed(b []byte, msg func(typ byte, body []byte, at int) error) error {
	sc.at = -1 // a message under way began in an earlier chunk
	for off := 0; off < len(b); {
		if sc.nhdr < 5 {
			if sc.nhdr == 0 {
				sc.at = off
			}
			k := copy(sc.hdr[sc.nhdr:], b[off:])
			sc.nhdr += k
			off += k
			if sc.nhdr < 5 {
				return nil
			}
			n := int(binary.BigEndian.Uint32(sc.hdr[1:5])) - 4
			if n < 0 || n > sc.max {
				return fmt.Errorf("message of %d bytes exceeds the limit of %d", n, sc.max)
			}
			sc.left, sc.keep = n, sc.want(sc.hdr[0])
			sc.body = sc.body[:0]
		}
		k := min(sc.left, len(b)-off)
		body := b[off : off+k]
		if sc.keep && (len(sc.body) > 0 || k < sc.left) {
			sc.body = append(sc.body, body...) // split across reads: gather it
			body = sc.body
		}
		sc.left -= k
		off += k
		if sc.left > 0 {
			return nil
		}
		sc.nhdr = 0
		if sc.keep {
			if err := msg(sc.hdr[0], body, sc.at); err != nil {
				return err
			}
			if cap(sc.body) > 64<<10 {
				sc.body = nil // do not hold on to a huge statement's buffer
			}
		}
	}
	return nil
}

// fromClient notes what a chunk of client bytes does (statements, Syncs, a Terminate) and
// returns what to forward upstream. errGoodbye means the client said goodbye: fwd then holds
// the Terminate unless the session keeps its upstream for reuse (s.parking).
func (s *session) fromClient(b []byte) (fwd []byte, err error) {
	if s.dead.Load() {
		return nil, errKilled // nothing more reaches the upstream once jitgate ended the session
	}
	s.bytesIn.Add(int64(len(b)))
	fwd = b
	err = s.cs.feed(b, func(typ byte, body []byte, at int) error {
		switch typ {
		case 'Q':
			s.push(cstring(body), false)
		case 'P':
			name, rest := cut(body)
			s.prepared[name] = cstring(rest)
		case 'B':
			portal, rest := cut(body)
			name, _ := cut(rest)
			s.portals[portal] = s.prepared[name]
		case 'E':
			portal, _ := cut(body)
			s.push(s.portals[portal], true)
		case 'S':
			s.qmu.Lock()
			s.awaiting++
			s.qmu.Unlock()
		case 'X':
			s.terminated.Store(true)
			if s.g.core.Pool.Enabled() && at >= 0 && at+5 == len(b) && s.idle() {
				// Keep the goodbye from the upstream: its connection may serve the
				// grant's next session.
				s.parking.Store(true)
				fwd = b[:at]
			}
			return errGoodbye
		}
		return nil
	})
	if err != nil && err != errGoodbye {
		s.kill("protocol error from the client: " + err.Error())
	}
	return fwd, err
}

// clientWants are the client messages fromClient reads.
var clientWants = oneOf("QPBESX")

// fromUpstream pairs command completions and errors in a chunk of server bytes with the
// statements that caused them, and returns what to forward to the client; nothing once the
// session is killed.
func (s *session) fromUpstream(b []byte) ([]byte, error) {
	if s.dead.Load() {
		return nil, errKilled
	}
	s.bytesOut.Add(int64(len(b)))
	err := s.us.feed(b, func(typ byte, body []byte, _ int) error {
		switch typ {
		case 'C':
			s.complete(s.tagOf(body), "")
		case 'E':
			s.complete("", errorCode(body))
		case 'I':
			s.complete("EMPTY", "")
		case 's':
			s.complete("SUSPENDED", "")
		case 'Z':
			s.ready(body)
		case 'S':
			name, rest := cut(body)
			s.u.params[name] = cstring(rest)
		}
		return nil
	})
	return b, err
}

// tagOf returns a CommandComplete's tag, the previous one's string when the tag repeats
// (SELECT 1, INSERT 0 1, ...), so that a repeated tag costs no allocation.
func (s *session) tagOf(body []byte) string {
	if tag := untilNUL(body); string(tag) != s.lastTag {
		s.lastTag = string(tag)
	}
	return s.lastTag
}

// upstreamWants are the server messages fromUpstream reads.
var upstreamWants = oneOf("CEIsZS")

// oneOf returns a scanner's want for the message types in types.
func oneOf(types string) func(byte) bool {
	var set [256]bool
	for i := 0; i < len(types); i++ {
		set[types[i]] = true
	}
	return func(typ byte) bool { return set[typ] }
}

// heldRetry is how often a held session's statement backlog is offered to the recorder again
// (see session.emit).
const heldRetry = gateway.HeldRetry

// goodbye is the FATAL message a killed session's client gets.
func (s *session) goodbye() []byte {
	return errorMessage("FATAL", "57P01", "jitgate: "+s.killReason()+"; session closed")
}

// relay runs the session on two goroutines, one per direction. It returns the upstream
// side's error.
func (s *session) relay() error {
	c2s := make(chan struct{})
	go func() {
		defer close(c2s)
		fromClient := func(b []byte) ([]byte, error) {
			for s.backlog.Held() && !s.dead.Load() {
				time.Sleep(heldRetry) // the upstream side is waiting for the recorder
			}
			return s.fromClient(b)
		}
		if _, err := pump(s.client, s.u.conn, fromClient); err != nil && !errors.Is(err, errGoodbye) && !errors.Is(err, errKilled) && s.killReason() == "" {
			s.g.log.Debug("gateway: client side ended", "session", s.sessionID(), "err", err)
		}
		// The client is gone, said goodbye or sent garbage: stop reading upstream too.
		_ = s.u.conn.SetReadDeadline(time.Now())
	}()
	fromUpstream := func(b []byte) ([]byte, error) {
		fwd, err := s.fromUpstream(b)
		if err == nil && s.backlog.Held() {
			s.waitBacklog() // read nothing more until the recorder has the statements
			if s.dead.Load() {
				return nil, errKilled
			}
		}
		return fwd, err
	}
	clientOK, err := pump(s.u.conn, s.client, fromUpstream)
	s.upClean = s.us.boundary()
	if s.killReason() != "" && clientOK && s.us.boundary() {
		_ = s.client.SetWriteDeadline(time.Now().Add(2 * time.Second))
		_, _ = s.client.Write(s.goodbye())
	}
	s.client.Close()
	<-c2s
	return err
}

// pump copies src to dst through process until either fails; dstOK reports whether every
// write to dst succeeded.
func pump(src, dst net.Conn, process func([]byte) ([]byte, error)) (dstOK bool, err error) {
	buf := make([]byte, 32<<10)
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			fwd, perr := process(buf[:n])
			if len(fwd) > 0 {
				if _, err := dst.Write(fwd); err != nil {
					return false, err
				}
			}
			if perr != nil {
				return true, perr
			}
		}
		if rerr != nil {
			return true, rerr
		}
	}
}

// errorMessage encodes an ErrorResponse.
func errorMessage(severity, code, msg string) []byte {
	b := []byte{'E', 0, 0, 0, 0}
	for _, f := range []struct {
		t byte
		v string
	}{{'S', severity}, {'V', severity}, {'C', code}, {'M', msg}} {
		b = append(b, f.t)
		b = append(b, f.v...)
		b = append(b, 0)
	}
	b = append(b, 0)
	binary.BigEndian.PutUint32(b[1:5], uint32(len(b)-1))
	return b
}
