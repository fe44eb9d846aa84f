package mysql

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/gateway"
)

const (
	// maxSQL caps the SQL text kept per statement in the audit log.
	maxSQL = 16 << 10
	// maxPrepared caps the prepared statements whose text a session keeps for COM_STMT_EXECUTE.
	maxPrepared = 10000
	// clientBuffer is how much of a command the gateway reads before forwarding it: all of a
	// smaller one; a larger one streams through once its head is read.
	clientBuffer = maxSQL + 64
)

// errQuit is the client's goodbye (COM_QUIT), as the event loop knows it.
var errQuit = gateway.ErrGoodbye

// respState is where a command's response stands.
type respState uint8

const (
	stFirst         respState = iota // the response's first packet
	stColumns                        // a result set's column definitions
	stColumnsEOF                     // the EOF after them (without CLIENT_DEPRECATE_EOF)
	stRows                           // rows, up to an EOF, OK or ERR
	stPrepParams                     // COM_STMT_PREPARE's parameter definitions
	stPrepParamsEOF                  //
	stPrepCols                       // COM_STMT_PREPARE's column definitions
	stPrepColsEOF                    //
	stFieldList                      // COM_FIELD_LIST's column definitions, up to an EOF
)

// command is one client command sent upstream and awaiting (or done with) its response.
type command struct {
	typ      byte
	sql      string
	protocol string
	record   bool
	start    time.Time

	st       respState
	n        uint64 // definitions left
	cols     uint64 // COM_STMT_PREPARE's column count
	stmtID   uint32
	rows     uint64
	affected uint64
	results  bool // a result set came
	errCode  uint16
	sqlstate string
}

// session is one client connection relayed to one upstream connection.
type session struct {
	g      *Gateway
	client net.Conn
	u      *upstream
	key    gateway.PoolKey
	grant  *jitgate.Grant
	info   *jitgate.Session
	caps   uint32 // the stream capabilities both sides use
	id     uint32 // the connection id the client was told
	tr     *gateway.Tracked

	// end is why jitgate ended the session, if it did.
	end gateway.Ending

	dead     atomic.Bool // set by Kill: relay nothing more
	quit     atomic.Bool // the client said goodbye
	parking  atomic.Bool // its goodbye was kept from the upstream, to reuse the connection
	inflight atomic.Int32
	wmu      sync.Mutex // writes to the client (goroutine relay)

	// relayed receives why an event loop's relay of the session ended, and upClean whether
	// the upstream stopped between packets.
	relayed chan error
	upClean bool

	bytesIn, bytesOut, statements atomic.Int64

	// The client side (FromClient, one caller at a time).
	cin       []byte // the start of a command not yet whole
	out, back []byte // what FromClient returns, reused
	forward   int    // bytes of a large command still to forward as they come
	drop      int    // bytes of a refused command still to drop
	cont      bool   // the client's last packet was split: the next continues it
	cmdBytes  int    // the client's current command's size so far

	qmu      sync.Mutex
	queue    []*command // sent upstream, awaiting their response, oldest first
	prepared map[uint32]string
	status   uint16 // the upstream's last status flags
	respSeq  byte   // the sequence number the client expects next, as relayed
	midway   bool   // the client got part of a packet (no ERR can follow)
	us       scanner
	done     []*command // finished by the chunk being read (FromUpstream)

	// backlog holds finished statements the recorder had no room for.
	backlog gateway.Backlog
}

func newSession(g *Gateway, client net.Conn, u *upstream, key gateway.PoolKey, grant *jitgate.Grant, caps, id uint32) *session {
	return &session{g: g, client: client, u: u, key: key, grant: grant, caps: caps, id: id,
		prepared: map[uint32]string{}, status: statusAutocommit, relayed: make(chan error, 1)}
}

// Kill ends the session for reason (gateway.Killer): it stops the relay at once and kills the
// running query upstream; run then tells the client why and closes both sides.
func (s *session) Kill(reason string) {
	looped, first := s.end.Begin(reason)
	if !first {
		return
	}
	s.dead.Store(true)
	if looped != nil {
		looped.Kill()
	} else {
		now := time.Now()
		_ = s.u.conn.SetReadDeadline(now)
		_ = s.client.SetReadDeadline(now)
	}
	if s.inflight.Load() > 0 {
		// The KILL QUERY logs in to the database: not inside the engine's event delivery.
		s.g.core.Go(s.killQuery)
	}
}

func (s *session) killReason() string { return s.end.Reason() }

// killQuery stops the upstream's running query.
func (s *session) killQuery() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.u.killQuery(ctx); err != nil {
		s.g.log.Warn("mysql gateway: kill upstream query", "session", s.sessionID(), "err", err)
	}
}

func (s *session) sessionID() int64 {
	if s.info == nil {
		return 0
	}
	return s.info.ID
}

// run relays until either side ends or the session is killed, then closes both sides and
// records the end.
func (s *session) run() {
	s.g.track(s)
	defer s.g.untrack(s)
	var cerr, uerr error
	if s.g.core.Loops != nil && s.adopt() {
		s.g.core.Looped.Add(1)
		switch err := <-s.relayed; {
		case errors.Is(err, gateway.ErrGoodbye):
			cerr = errQuit
		case errors.Is(err, io.EOF):
			uerr = err
		default:
			cerr = err
		}
	} else {
		cerr, uerr = s.relay()
		s.upClean = s.Between()
		if s.killReason() != "" {
			s.goodbye()
		}
	}
	reason := s.killReason()
	switch {
	case reason != "":
	case errors.Is(cerr, errQuit):
		reason = "client ended the session"
	case errors.Is(uerr, io.EOF):
		reason = "upstream closed the connection"
	case cerr != nil && !errors.Is(cerr, io.EOF) && !errors.Is(cerr, io.ErrUnexpectedEOF) &&
		!errors.Is(cerr, os.ErrDeadlineExceeded) && !errors.Is(cerr, net.ErrClosed) && !errors.Is(cerr, gateway.ErrKilled):
		reason = "protocol error: " + cerr.Error()
	default:
		reason = "client disconnected"
	}
	if s.killReason() == "" && s.inflight.Load() > 0 {
		// The client vanished mid-query: stop the query rather than let it run on.
		s.killQuery()
	}
	s.tr.Remove()
	if !s.park() {
		s.u.conn.Close()
	}
	s.client.Close()
	if s.dead.Load() {
		s.failPending(erConnectionKill, "70100")
	} else {
		s.failPending(2013, "HY000") // lost connection
	}
	s.backlog.Flush()
	s.finish(reason)
}

// adopt hands the session's relay to an event loop, unless it was killed already.
func (s *session) adopt() bool { return s.end.Adopt(s.g.core.Loops, s, s.client, s.u.conn) }

// relay runs the session on two goroutines, one per direction, and returns each side's error.
func (s *session) relay() (cerr, uerr error) {
	cdone := make(chan error, 1)
	go func() {
		err := s.clientLoop()
		cdone <- err
		_ = s.u.conn.SetReadDeadline(time.Now())
	}()
	uerr = s.upstreamLoop()
	_ = s.client.SetReadDeadline(time.Now())
	return <-cdone, uerr
}

// Goodbye is the ERR that tells the client why jitgate ended the session: as the answer to
// the running command, or unprompted when it is idle (gateway.Relayed).
func (s *session) Goodbye() []byte {
	s.qmu.Lock()
	seq := byte(0)
	if len(s.queue) > 0 {
		seq = s.respSeq
	}
	s.qmu.Unlock()
	return appendPackets(nil, &seq, errPacket(erConnectionKill, "70100", fmt.Sprintf("jitgate: %s; session closed", s.killReason())))
}

// goodbye sends Goodbye on the goroutine relay, where the stream allows one.
func (s *session) goodbye() {
	s.qmu.Lock()
	midway := s.midway
	s.qmu.Unlock()
	if midway {
		return
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	_ = s.client.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = s.client.Write(s.Goodbye())
}

// Between reports whether the upstream's stream is between packets (gateway.Relayed).
func (s *session) Between() bool {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	return s.us.boundary()
}

// Ended hands the end of the loop's relay to run (gateway.Relayed).
func (s *session) Ended(err error, upClean bool) {
	s.upClean = upClean
	s.relayed <- err
}

// Held reports whether statements wait for room in the recorder (gateway.Relayed).
func (s *session) Held() bool { return s.backlog.Held() }

// park resets the upstream connection of a session the client ended cleanly and hands it to
// the pool; false means it must be closed.
func (s *session) park() bool {
	if !s.parking.Load() || s.killReason() != "" || s.inflight.Load() != 0 || !s.upClean {
		return false
	}
	if bc, _ := gateway.BufOf(s.u.conn); bc != nil {
		if err := bc.Attach(); err != nil { // back from the event loop, if it was there
			return false
		}
	}
	if err := s.u.reset(5 * time.Second); err != nil {
		s.g.log.Debug("mysql gateway: upstream not reusable", "session", s.sessionID(), "err", err)
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

// clientLoop is the goroutine relay's client side: it reads the client's bytes and passes
// them through FromClient.
func (s *session) clientLoop() error {
	buf := make([]byte, 32<<10)
	for {
		n, err := s.client.Read(buf)
		if n > 0 {
			s.waitBacklog()
			fwd, back, ferr := s.FromClient(buf[:n])
			if len(fwd) > 0 {
				if _, err := s.u.conn.Write(fwd); err != nil {
					return fmt.Errorf("upstream: %w", err)
				}
			}
			if len(back) > 0 {
				s.wmu.Lock()
				_, werr := s.client.Write(back)
				s.wmu.Unlock()
				if werr != nil {
					return werr
				}
			}
			if ferr != nil {
				return ferr
			}
		}
		if err != nil {
			return err
		}
	}
}

// FromClient reads a chunk of the client's bytes (gateway.Relayed): it notes each command,
// returns the bytes to forward upstream and the gateway's own answers to commands it refuses
// or serves itself. A command is forwarded once its first clientBuffer bytes are in (all of a
// small one; a larger one then streams through), so that a refused command never reaches the
// upstream. errQuit (gateway.ErrGoodbye) means the client said goodbye.
func (s *session) FromClient(b []byte) (fwd, back []byte, err error) {
	if s.dead.Load() {
		return nil, nil, gateway.ErrKilled // nothing more reaches the upstream once jitgate ended the session
	}
	s.bytesIn.Add(int64(len(b)))
	s.out, s.back = s.out[:0], s.back[:0]
	data := b
	if len(s.cin) > 0 {
		s.cin = append(s.cin, b...)
		data = s.cin
	}
	i := 0
	for i < len(data) && err == nil {
		switch {
		case s.forward > 0:
			k := min(s.forward, len(data)-i)
			s.out = append(s.out, data[i:i+k]...)
			s.forward -= k
			i += k
			continue
		case s.drop > 0:
			k := min(s.drop, len(data)-i)
			s.drop -= k
			i += k
			continue
		case len(data)-i < 4:
			goto keep
		}
		plen := int(data[i]) | int(data[i+1])<<8 | int(data[i+2])<<16
		seq := data[i+3]
		total := 4 + plen
		head := min(total, clientBuffer)
		if len(data)-i < head {
			goto keep // wait for the command's head
		}
		cont := s.cont
		s.cont = plen == maxPayload
		if !cont {
			if seq != 0 {
				err = fmt.Errorf("packet out of order (sequence %d where a command starts)", seq)
				break
			}
			s.cmdBytes = 0
		}
		s.cmdBytes += plen
		if s.cmdBytes > s.g.opts.MaxPacket {
			s.back = appendPackets(s.back, new(byte), errPacket(erNetPacketTooBig, "08S01",
				fmt.Sprintf("jitgate: command larger than the gateway's limit of %d bytes", s.g.opts.MaxPacket)))
			s.back[3] = 1
			err = fmt.Errorf("command over %d bytes", s.g.opts.MaxPacket)
			break
		}
		pass := true
		if !cont {
			c, local := s.onCommand(data[i+4:i+head], plen)
			switch {
			case local != nil:
				s.qmu.Lock()
				busy := len(s.queue) > 0
				s.qmu.Unlock()
				if busy {
					err = errors.New("a command the gateway answers itself was pipelined behind another")
					break
				}
				seq := byte(1)
				s.back = appendPackets(s.back, &seq, local)
				pass = false
			case c == nil: // COM_QUIT
				s.quit.Store(true)
				err = errQuit
				if s.g.core.Pool.Enabled() && s.idle() {
					s.parking.Store(true) // keep the goodbye from the upstream
					pass = false
				}
			case c.typ != comStmtClose && c.typ != comStmtSendLongData:
				s.qmu.Lock()
				s.queue = append(s.queue, c)
				s.respSeq = 1
				s.qmu.Unlock()
				s.inflight.Add(1)
			}
		}
		k := min(total, len(data)-i)
		if pass {
			s.out = append(s.out, data[i:i+k]...)
			s.forward = total - k
		} else {
			s.drop = total - k
		}
		i += k
	}
	if err != nil {
		if !errors.Is(err, errQuit) {
			s.Kill("protocol error from the client: " + err.Error())
		}
		return s.out, s.back, err
	}
keep:
	// What is left is the start of a command whose head has not come yet.
	rest := data[i:]
	if len(s.cin) > 0 {
		s.cin = s.cin[:copy(s.cin, rest)]
	} else {
		s.cin = append(s.cin[:0], rest...)
	}
	if cap(s.cin) > 4*clientBuffer && len(s.cin) == 0 {
		s.cin = nil
	}
	return s.out, s.back, nil
}

// idle reports whether the upstream is between transactions with nothing outstanding.
func (s *session) idle() bool {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	return len(s.queue) == 0 && s.us.boundary() && s.status&statusInTrans == 0
}

var killQueryRE = regexp.MustCompile(`(?i)^\s*KILL\s+QUERY\s+([0-9]{1,10})\s*;?\s*$`)

// killQuery matches "KILL QUERY <id>" (the regular expression only runs on text that starts
// with KILL: every statement passes here).
func killQuery(sql []byte) [][]byte {
	t := bytes.TrimLeft(sql, " \t\r\n")
	if len(t) < 4 || !bytes.EqualFold(t[:4], []byte("KILL")) {
		return nil
	}
	return killQueryRE.FindSubmatch(sql)
}

// onCommand notes a client command (payload p of plen bytes, of which p may hold only the
// head). It returns the command to queue for its response; nil and nil for COM_QUIT; or the
// payload of the answer to a command the gateway answers itself (an ERR for one it refuses),
// which is not forwarded.
func (s *session) onCommand(p []byte, plen int) (*command, []byte) {
	if len(p) == 0 {
		return nil, s.refuse(&command{start: time.Now(), sql: "(empty packet)"}, erUnknownCom, "08S01", "jitgate: empty command packet")
	}
	c := &command{typ: p[0], start: time.Now(), protocol: "command", record: true}
	arg := p[1:]
	switch c.typ {
	case comQuit:
		return nil, nil
	case comQuery:
		c.sql, c.protocol = sqlText(arg, plen-1), ""
		if m := killQuery(arg); m != nil {
			if id, err := strconv.ParseUint(string(m[1]), 10, 32); err == nil && s.g.killByClient(s.grant.ID, uint32(id)) {
				// The mariadb client's Ctrl-C: KILL QUERY of the connection id it was told,
				// which is the gateway's; the gateway kills that session's upstream query.
				c.st = stFirst
				s.emit(c)
				return nil, okPacket(statusAutocommit)
			}
		}
	case comStmtPrepare:
		c.sql, c.protocol = sqlText(arg, plen-1), "prepare"
	case comStmtExecute:
		c.protocol = "execute"
		if len(arg) >= 4 {
			id := binary.LittleEndian.Uint32(arg)
			s.qmu.Lock()
			sql, ok := s.prepared[id]
			s.qmu.Unlock()
			if !ok {
				sql = fmt.Sprintf("(prepared statement %d)", id)
			}
			c.sql = sql
		}
	case comStmtClose:
		c.record = false
		if len(arg) >= 4 {
			s.qmu.Lock()
			delete(s.prepared, binary.LittleEndian.Uint32(arg))
			s.qmu.Unlock()
		}
	case comStmtSendLongData, comStmtFetch, comStmtReset, comPing, comStatistics, comFieldList:
		c.record = false
	case comInitDB, comCreateDB, comDropDB:
		c.sql = commandName(c.typ) + " " + sqlText(arg, plen-1)
	case comResetConnection:
		c.sql = commandName(c.typ)
		s.qmu.Lock()
		clear(s.prepared)
		s.qmu.Unlock()
	case comProcessKill:
		c.sql = commandName(c.typ)
		if len(arg) >= 4 {
			c.sql += " " + strconv.FormatUint(uint64(binary.LittleEndian.Uint32(arg)), 10)
		}
	case comSetOption, comRefresh, comShutdown, comDebug, comProcessInfo:
		c.sql = commandName(c.typ)
	case comChangeUser:
		c.sql = commandName(c.typ)
		return nil, s.refuse(c, erNotAllowed, "42000", "jitgate: COM_CHANGE_USER is not allowed through the gateway: a session keeps its grant's login")
	default:
		c.sql = commandName(c.typ)
		return nil, s.refuse(c, erUnknownCom, "08S01", fmt.Sprintf("jitgate: %s is not allowed through the gateway", commandName(c.typ)))
	}
	return c, nil
}

// refuse records a command the gateway refuses and returns the ERR payload for it.
func (s *session) refuse(c *command, code uint16, sqlstate, msg string) []byte {
	c.record, c.errCode, c.sqlstate = true, code, sqlstate
	if c.protocol == "" {
		c.protocol = "command"
	}
	s.emit(c)
	return errPacket(code, sqlstate, msg)
}

// sqlText is the statement text of a command's argument (b may hold only its head, of total
// bytes), cut for the audit.
func sqlText(b []byte, total int) string {
	if total <= maxSQL && len(b) >= total {
		return string(b[:total])
	}
	return string(b[:min(len(b), maxSQL)]) + fmt.Sprintf("... [%d bytes in all]", total)
}

// upstreamLoop is the goroutine relay's upstream side: it relays the upstream's answers to the
// client through FromUpstream.
func (s *session) upstreamLoop() error {
	buf := make([]byte, 32<<10)
	for {
		n, err := s.u.conn.Read(buf)
		if n > 0 {
			fwd, ferr := s.FromUpstream(buf[:n])
			if ferr != nil {
				return ferr
			}
			s.wmu.Lock()
			_, werr := s.client.Write(fwd)
			s.wmu.Unlock()
			if werr != nil {
				return fmt.Errorf("client: %w", werr)
			}
			s.waitBacklog()
		}
		if err != nil {
			return err
		}
	}
}

// FromUpstream reads a chunk of the upstream's bytes (gateway.Relayed): it follows each
// command's answer to its end and records the command, and returns the chunk to relay.
func (s *session) FromUpstream(b []byte) ([]byte, error) {
	if s.dead.Load() {
		return nil, gateway.ErrKilled
	}
	s.qmu.Lock()
	seq := s.respSeq
	err := s.us.feed(b, func(pk packet) error {
		seq = pk.seq + 1
		return s.onResponse(pk, &s.done)
	})
	s.respSeq, s.midway = seq, !s.us.boundary()
	done := s.done
	s.qmu.Unlock()
	s.bytesOut.Add(int64(len(b)))
	for i, c := range done {
		s.emit(c)
		done[i] = nil
	}
	s.done = done[:0]
	if err != nil {
		s.Kill("protocol error from the upstream: " + err.Error())
		return nil, err
	}
	return b, nil
}

// onResponse follows one upstream packet through the oldest command's response (caller
// holds qmu); finished commands are appended to done.
func (s *session) onResponse(pk packet, done *[]*command) error {
	if pk.cont {
		return nil // the rest of a split row
	}
	if len(s.queue) == 0 {
		return nil // e.g. an ERR the server sends before closing an idle connection
	}
	c := s.queue[0]
	h := pk.head
	var first byte
	if len(h) > 0 {
		first = h[0]
	}
	deprecateEOF := s.caps&capDeprecateEOF != 0
	isErr := first == 0xff
	isEOF := first == 0xfe && pk.plen < 9
	isEnd := first == 0xfe && (pk.plen < 9 || deprecateEOF && pk.plen < maxPayload)
	finish := func() {
		s.queue[0] = nil
		s.queue = s.queue[1:]
		if len(s.queue) == 0 {
			s.queue = s.queue[:0:0]
		}
		s.inflight.Add(-1)
		*done = append(*done, c)
	}
	fail := func() {
		c.errCode, c.sqlstate, _ = parseErr(h)
		finish()
	}
	// endResult handles what ends a result set or a statement (OK, or EOF carrying status).
	endResult := func(status uint16) {
		s.status = status
		if status&statusMoreResultsExist != 0 {
			c.st = stFirst
			return
		}
		finish()
	}
	switch c.st {
	case stFirst:
		switch {
		case isErr:
			fail()
		case c.typ == comStmtPrepare:
			if first != 0x00 || len(h) < 9 {
				finish()
				return nil
			}
			c.stmtID = binary.LittleEndian.Uint32(h[1:5])
			c.cols = uint64(binary.LittleEndian.Uint16(h[5:7]))
			c.n = uint64(binary.LittleEndian.Uint16(h[7:9]))
			if c.record && len(s.prepared) < maxPrepared {
				s.prepared[c.stmtID] = c.sql
			}
			s.prepareNext(c, stPrepParams, finish)
		case c.typ == comStatistics:
			finish()
		case c.typ == comFieldList:
			c.st = stFieldList
			if isEOF {
				finish()
			}
		case c.typ != comQuery && c.typ != comStmtExecute && c.typ != comStmtFetch && c.typ != comProcessInfo:
			if first == 0x00 {
				if _, st, ok := okStatus(h); ok {
					s.status = st
				}
			}
			finish()
		case first == 0x00:
			aff, st, _ := okStatus(h)
			c.affected += aff
			endResult(st)
		case isEnd: // COM_STMT_FETCH's end, or an EOF where no rows were left
			st := eofStatus(h)
			if deprecateEOF {
				_, st, _ = okStatus(h)
			}
			endResult(st)
		case first == 0xfb:
			// LOAD DATA LOCAL: never offered to the client; the upstream should not ask.
			return errors.New("upstream asked for a local file (LOAD DATA LOCAL), which the gateway does not relay")
		default:
			n, _, ok := lenenc(h)
			if !ok || n == 0 {
				return fmt.Errorf("malformed response to %s", commandName(c.typ))
			}
			c.results, c.n, c.st = true, n, stColumns
		}
	case stColumns:
		if c.n--; c.n == 0 {
			if deprecateEOF {
				c.st = stRows
			} else {
				c.st = stColumnsEOF
			}
		}
	case stColumnsEOF:
		if isErr {
			fail()
		} else if st := eofStatus(h); st&statusCursorExists != 0 {
			s.status = st
			finish() // rows come by COM_STMT_FETCH
		} else {
			c.st = stRows
		}
	case stRows:
		switch {
		case isErr:
			fail()
		case isEnd:
			st := eofStatus(h)
			if deprecateEOF {
				_, st, _ = okStatus(h)
			}
			endResult(st)
		default:
			c.rows++
		}
	case stPrepParams:
		if c.n--; c.n == 0 {
			s.prepareNext(c, stPrepParamsEOF, finish)
		}
	case stPrepParamsEOF:
		c.n = c.cols
		c.cols = 0
		s.prepareNext(c, stPrepCols, finish)
	case stPrepCols:
		if c.n--; c.n == 0 {
			s.prepareNext(c, stPrepColsEOF, finish)
		}
	case stPrepColsEOF:
		finish()
	case stFieldList:
		if isErr {
			fail()
		} else if isEnd {
			finish()
		}
	}
	return nil
}

// prepareNext moves a COM_STMT_PREPARE response on from state at, skipping the parts that
// are empty (no parameters, no columns) or absent (EOFs under CLIENT_DEPRECATE_EOF).
func (s *session) prepareNext(c *command, at respState, finish func()) {
	deprecateEOF := s.caps&capDeprecateEOF != 0
	for {
		switch at {
		case stPrepParams:
			if c.n > 0 {
				c.st = stPrepParams
				return
			}
			at = stPrepCols
			c.n, c.cols = c.cols, 0
			continue
		case stPrepParamsEOF:
			if !deprecateEOF {
				c.st = stPrepParamsEOF
				return
			}
			at = stPrepCols
			c.n, c.cols = c.cols, 0
			continue
		case stPrepCols:
			if c.n > 0 {
				c.st = stPrepCols
				return
			}
			finish()
			return
		case stPrepColsEOF:
			if !deprecateEOF {
				c.st = stPrepColsEOF
				return
			}
			finish()
			return
		}
	}
}

// emit hands a finished command to the recorder. The relay waits for room when the recorder
// is full: no further statement runs unrecorded.
func (s *session) emit(c *command) {
	if !c.record {
		return
	}
	n := s.statements.Add(1)
	st := jitgate.Statement{N: n, Start: c.start, DurationUS: time.Since(c.start).Microseconds(), SQL: c.sql, Protocol: c.protocol}
	switch {
	case c.errCode != 0 || c.sqlstate != "":
		st.SQLState = c.sqlstate
		st.Tag = "ERROR " + strconv.Itoa(int(c.errCode))
	case c.typ == comStmtPrepare:
		st.Tag = "PREPARED"
	case c.results:
		st.Tag = "ROWS " + strconv.FormatUint(c.rows, 10)
	default:
		st.Tag = "OK " + strconv.FormatUint(c.affected, 10)
	}
	// When the recorder is full, the statement waits in the backlog and the relay holds the
	// session.
	s.backlog.Record(st)
}

// DrainBacklog offers the backlog to the recorder again (gateway.Relayed).
func (s *session) DrainBacklog() bool { return s.backlog.Drain() }

// waitBacklog holds the goroutine relay while the backlog drains; it gives up once the
// session is killed.
func (s *session) waitBacklog() { s.backlog.Wait(s.dead.Load) }

// failPending records the commands that never got their answer (the session ended).
func (s *session) failPending(code uint16, sqlstate string) {
	s.qmu.Lock()
	q := s.queue
	s.queue = nil
	s.qmu.Unlock()
	for _, c := range q {
		if c.errCode == 0 {
			c.errCode, c.sqlstate = code, sqlstate
		}
		s.emit(c)
	}
}
