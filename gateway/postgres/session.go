package postgres

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/gateway"
)

// maxSQL caps the SQL text kept per statement in the audit log.
const maxSQL = 16 << 10

// session is one client connection relayed to one upstream connection.
type session struct {
	g      *Gateway
	client net.Conn
	u      *upstream
	key    gateway.PoolKey // which later sessions may reuse u
	grant  *jitgate.Grant
	info   *jitgate.Session

	keyPID, keySecret uint32

	// cs and us follow the client's and the upstream's messages; prepared and portals map
	// extended-protocol names to their SQL (client side only).
	cs, us            scanner
	prepared, portals map[string]string

	// relayed receives why an event loop's relay of the session ended.
	relayed chan error

	// tr is the session in the gateway's registry, which kills it at its grant's end.
	tr *gateway.Tracked

	// end is why the gateway ended the session, if it did.
	end gateway.Ending

	bytesIn, bytesOut, statements atomic.Int64
	dead                          atomic.Bool // set by kill: relay nothing more to the client
	terminated                    atomic.Bool // the client said goodbye (Terminate)
	// parking is set when the client said goodbye while the upstream was idle and the
	// Terminate was kept from it, so the connection may serve the grant's next session.
	parking atomic.Bool
	// upClean is set when the relay stopped with the upstream stream between messages and
	// nothing it read left unrelayed.
	upClean bool
	// lastTag is the last command tag read from the upstream (by its reader only).
	lastTag string

	qmu sync.Mutex
	// pending[phead:] are the statements sent upstream, awaiting their outcome, in order (a
	// queue that reuses its array, so a statement costs no allocation of its own).
	pending []stmt
	phead   int
	failed  string // SQLSTATE of an error that aborts the rest of an extended-protocol batch
	// txStatus is the status of the last ReadyForQuery: 'I' idle, 'T' in a transaction, 'E'
	// in a failed one.
	txStatus byte
	// awaiting counts Query and Sync messages sent upstream whose ReadyForQuery has not come.
	awaiting int
	// backlog holds finished statements the recorder had no room for.
	backlog gateway.Backlog
}

// stmt is one statement on its way through.
type stmt struct {
	sql      string
	extended bool
	start    time.Time
	tag      string
	sqlstate string
}

func newSession(g *Gateway, client net.Conn, u *upstream, key gateway.PoolKey, grant *jitgate.Grant) *session {
	pid, secret := randomKey()
	return &session{
		g: g, client: client, u: u, key: key, grant: grant, keyPID: pid, keySecret: secret,
		txStatus: 'I',
		cs:       scanner{max: g.opts.MaxMessage, want: clientWants},
		us:       scanner{max: 1 << 30, want: upstreamWants},
		prepared: map[string]string{}, portals: map[string]string{}, relayed: make(chan error, 1),
	}
}

// upstreamOf takes over a connection pgconn logged in.
func upstreamOf(hj *pgconn.HijackedConn) *upstream {
	u := &upstream{conn: hj.Conn, pid: hj.PID, secret: hj.SecretKey, params: maps.Clone(hj.ParameterStatuses)}
	if u.params == nil {
		u.params = map[string]string{}
	}
	if hj.Config != nil {
		u.addr = net.JoinHostPort(hj.Config.Host, strconv.Itoa(int(hj.Config.Port)))
	}
	return u
}

// Kill is kill, for the gateway's registry (gateway.Killer).
func (s *session) Kill(reason string) { s.kill(reason) }

// kill ends the session for reason: it cancels the running query upstream and breaks the
// relay; run then tells the client why and closes both sides. Only the first reason counts.
func (s *session) kill(reason string) {
	looped, first := s.end.Begin(reason)
	if !first {
		return
	}
	// Stop relaying first, so the client hears why the session ended and not the upstream's
	// "canceling statement due to user request"; then stop the running query.
	s.dead.Store(true)
	if looped != nil {
		looped.Kill()
	} else {
		_ = s.u.conn.SetReadDeadline(time.Now())
	}
	// The cancel dials the database: not inside the engine's event delivery.
	s.g.core.Go(s.cancelUpstream)
}

func (s *session) killReason() string { return s.end.Reason() }

// cancelUpstream sends a CancelRequest for the upstream backend, so a running query stops
// now rather than when it next writes.
func (s *session) cancelUpstream() {
	if s.u.addr == "" {
		return
	}
	conn, err := net.DialTimeout("tcp", s.u.addr, 2*time.Second)
	if err != nil {
		s.g.log.Warn("gateway: cancel upstream query", "session", s.sessionID(), "err", err)
		return
	}
	defer conn.Close()
	msg := make([]byte, 12+len(s.u.secret))
	binary.BigEndian.PutUint32(msg[0:4], uint32(len(msg)))
	binary.BigEndian.PutUint32(msg[4:8], 80877102)
	binary.BigEndian.PutUint32(msg[8:12], s.u.pid)
	copy(msg[12:], s.u.secret)
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write(msg); err == nil {
		// PostgreSQL closes the cancel connection when it has handled it.
		_, _ = conn.Read(make([]byte, 1))
	}
}

func (s *session) sessionID() int64 {
	if s.info == nil {
		return 0
	}
	return s.info.ID
}

// adopt hands the session's relay to an event loop, unless it was killed already.
func (s *session) adopt() bool { return s.end.Adopt(s.g.core.Loops, s, s.client, s.u.conn) }

// The session as an event loop relays it (gateway.Relayed).

// FromClient is fromClient; the gateway answers nothing itself mid-session.
func (s *session) FromClient(b []byte) (fwd, back []byte, err error) {
	fwd, err = s.fromClient(b)
	return fwd, nil, err
}

// FromUpstream is fromUpstream.
func (s *session) FromUpstream(b []byte) ([]byte, error) { return s.fromUpstream(b) }

// Held reports whether the session waits for the recorder.
func (s *session) Held() bool { return s.backlog.Held() }

// DrainBacklog offers the backlog to the recorder again.
func (s *session) DrainBacklog() bool { return s.backlog.Drain() }

// Between reports whether the upstream's stream is between messages.
func (s *session) Between() bool { return s.us.boundary() }

// Goodbye is goodbye.
func (s *session) Goodbye() []byte { return s.goodbye() }

// Ended hands the end of the loop's relay to run.
func (s *session) Ended(err error, upClean bool) {
	s.upClean = upClean
	s.relayed <- err
}

// run relays until either side ends or the session is killed, then closes both sides and
// records the end.
func (s *session) run() {
	var err error
	if s.g.core.Loops != nil && s.adopt() {
		s.g.core.Looped.Add(1)
		err = <-s.relayed
		s.client.Close()
	} else {
		err = s.relay()
	}
	reason := s.killReason()
	switch {
	case reason != "":
	case s.terminated.Load():
		reason = "client ended the session"
	case errors.Is(err, io.EOF):
		reason = "upstream closed the connection"
	default:
		reason = "client disconnected"
	}
	if s.killReason() == "" && s.hasPending() {
		// The client vanished mid-query: cancel the query rather than let it run on (kill has
		// already cancelled in the other case; a clean goodbye leaves nothing running).
		s.cancelUpstream()
	}
	s.tr.Remove() // the relay is over: nothing more to end at the grant's end
	if !s.park() {
		s.u.conn.Close()
	}
	if s.dead.Load() {
		s.failPending("57P01") // ended by jitgate
	} else {
		s.failPending("08006") // connection lost
	}
	s.backlog.Flush()
	s.finish(reason)
}

// park resets the upstream connection of a session the client ended cleanly and hands it to
// the pool; false means it must be closed.
func (s *session) park() bool {
	if !s.parking.Load() || !s.upClean || s.killReason() != "" {
		return false
	}
	if bc, _ := gateway.BufOf(s.u.conn); bc != nil {
		if err := bc.Attach(); err != nil { // back from the event loop, if it was there
			return false
		}
	}
	if err := reset(s.u, 5*time.Second); err != nil {
		s.g.log.Debug("gateway: upstream not reusable", "session", s.sessionID(), "err", err)
		return false
	}
	return s.g.core.Pool.Put(s.u, s.key, s.g.clock.Now(), s.tr.Deadline(), func() bool { return s.killReason() == "" })
}

// finish records the session's end.
func (s *session) finish(reason string) {
	s.info.EndReason = reason
	s.info.BytesIn, s.info.BytesOut, s.info.Statements = s.bytesIn.Load(), s.bytesOut.Load(), s.statements.Load()
	gateway.RecordEnd(s.g.opts.Engine, s.g.core.Recorder, s.g.log, s.info)
}

// cstring returns the NUL-terminated string at the start of b.
func cstring(b []byte) string { return string(untilNUL(b)) }

// untilNUL returns b up to its first NUL.
func untilNUL(b []byte) []byte {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i]
	}
	return b
}

func cut(b []byte) (string, []byte) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return string(b), nil
	}
	return string(b[:i]), b[i+1:]
}

// errorCode returns the SQLSTATE field of an ErrorResponse body.
func errorCode(b []byte) string {
	for len(b) > 0 && b[0] != 0 {
		t := b[0]
		v, rest := cut(b[1:])
		if t == 'C' {
			return v
		}
		b = rest
	}
	return ""
}

// push queues a statement sent upstream.
func (s *session) push(sql string, extended bool) {
	s.qmu.Lock()
	if s.phead > 0 && s.phead*2 >= len(s.pending) {
		// Half the array is spent: move the rest to its front, so that a client that keeps
		// statements in flight all the time (pipelining) does not grow it without end.
		n := copy(s.pending, s.pending[s.phead:])
		clear(s.pending[n:])
		s.pending, s.phead = s.pending[:n], 0
	}
	s.pending = append(s.pending, stmt{sql: sql, extended: extended, start: time.Now()})
	if !extended {
		s.awaiting++
	}
	s.qmu.Unlock()
}

// complete records the outcome of the oldest pending statement. A simple Query stays queued
// until ReadyForQuery (it may hold several statements); an extended Execute completes here.
// After an error, PostgreSQL skips the rest of an extended batch until Sync.
func (s *session) complete(tag, sqlstate string) {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if s.phead == len(s.pending) {
		return // e.g. an error outside any statement
	}
	st := &s.pending[s.phead]
	if sqlstate != "" {
		st.sqlstate = sqlstate
	} else if st.sqlstate == "" {
		st.tag = tag
	}
	if st.extended {
		s.emit(s.pop())
		if sqlstate != "" {
			s.failed = sqlstate
		}
	}
}

// ready ends a round: a pending simple Query is done, and extended statements still queued were
// skipped because of an earlier error. body is the ReadyForQuery's (its transaction status).
func (s *session) ready(body []byte) {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if len(body) == 1 {
		s.txStatus = body[0]
	}
	if s.awaiting > 0 {
		s.awaiting--
	}
	for s.phead < len(s.pending) {
		if s.pending[s.phead].extended && s.failed == "" {
			break // a pipelined statement whose turn has not come
		}
		st := s.pop()
		if st.extended {
			st.sqlstate = s.failed
			st.tag = "NOT EXECUTED"
		}
		s.emit(st)
		if !st.extended {
			break
		}
	}
	s.failed = ""
}

// idle reports whether the upstream is between transactions with nothing outstanding.
func (s *session) idle() bool {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	return s.phead == len(s.pending) && s.awaiting == 0 && s.txStatus == 'I'
}

func (s *session) hasPending() bool {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	return s.phead < len(s.pending)
}

// failPending records statements that never got an answer (the session ended).
func (s *session) failPending(sqlstate string) {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	for s.phead < len(s.pending) {
		st := s.pop()
		if st.sqlstate == "" {
			st.sqlstate = sqlstate
		}
		s.emit(st)
	}
}

// pop takes the oldest pending statement off the queue (caller holds qmu).
func (s *session) pop() stmt {
	st := s.pending[s.phead]
	s.pending[s.phead] = stmt{}
	s.phead++
	if s.phead == len(s.pending) {
		s.pending, s.phead = s.pending[:0], 0
	}
	return st
}

// emit hands a finished statement to the recorder (caller holds qmu).
func (s *session) emit(st stmt) {
	n := s.statements.Add(1)
	sql := st.sql
	if len(sql) > maxSQL {
		sql = sql[:maxSQL] + fmt.Sprintf("... [%d bytes in all]", len(st.sql))
	}
	rec := jitgate.Statement{N: n, Start: st.start, DurationUS: time.Since(st.start).Microseconds(),
		SQL: sql, SQLState: st.sqlstate, Tag: st.tag}
	if st.extended {
		rec.Protocol = "extended"
	}
	// The recorder merges a session's statements into one session.statements event per batch;
	// when it is full, the statement waits in the backlog and the relay holds the session.
	s.backlog.Record(rec)
}

// waitBacklog holds the goroutine relay's upstream reader while the backlog drains; it gives
// up once the session is killed.
func (s *session) waitBacklog() { s.backlog.Wait(s.dead.Load) }
