package postgres

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"
)

// upstream is one logged-in connection to the real database.
type upstream struct {
	conn   net.Conn
	addr   string // host:port, for CancelRequest
	pid    uint32
	secret []byte
	// params are the server's current ParameterStatus values, sent to each new client.
	params map[string]string
}

var errNotIdle = errors.New("upstream connection is not idle after DISCARD ALL")

// reset makes a connection whose session ended cleanly fit for another session of the same
// grant: DISCARD ALL drops temporary tables, prepared statements, cursors, advisory locks,
// LISTENs and every SET (role and session authorization included). It updates u.params with
// the ParameterStatus messages the reset sends.
func reset(u *upstream, timeout time.Duration) error {
	if err := u.conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	const q = "DISCARD ALL"
	msg := make([]byte, 0, 5+len(q)+1)
	msg = append(msg, 'Q', 0, 0, 0, 0)
	msg = append(msg, q...)
	msg = append(msg, 0)
	binary.BigEndian.PutUint32(msg[1:5], uint32(len(msg)-1))
	if _, err := u.conn.Write(msg); err != nil {
		return err
	}
	sc := scanner{max: 1 << 16, want: func(byte) bool { return true }}
	buf := make([]byte, 4096)
	idle := false
	for !idle {
		n, err := u.conn.Read(buf)
		if err != nil {
			return err
		}
		err = sc.feed(buf[:n], func(typ byte, body []byte, _ int) error {
			switch {
			case idle:
				return errNotIdle // anything after the ReadyForQuery
			case typ == 'C', typ == 'N', typ == 'A': // the tag, notices, notifications on their way
			case typ == 'S':
				name, rest := cut(body)
				u.params[name] = cstring(rest)
			case typ == 'E':
				return fmt.Errorf("DISCARD ALL failed with SQLSTATE %s", errorCode(body))
			case typ == 'Z' && len(body) == 1 && body[0] == 'I':
				idle = true
			default:
				return fmt.Errorf("unexpected message %q after DISCARD ALL", typ)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if !sc.boundary() {
		return errNotIdle
	}
	return u.conn.SetDeadline(time.Time{})
}
