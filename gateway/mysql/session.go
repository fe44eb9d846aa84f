package mysql

import (
	"bufio"
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
	// clientBuffer is the client reader's buffer: a command up to this size is read whole
	// before it is forwarded; a larger one streams through once its head is read.
	clientBuffer = maxSQL + 64
)

var (
	errKilled = errors.New("session ended by jitgate")
	errQuit   = errors.New("client sent COM_QUIT")
)

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
	g        *Gateway
	client   net.Conn
	u        *upstream
	key      gateway.PoolKey
	grant    *jitgate.Grant
	info     *jitgate.Session
	stmtHead *jitgate.AuditEvent
	caps     uint32 // the stream capabilities both sides use
	id       uint32 // the connection id the client was told
	tr       *gateway.Tracked

	mu     sync.Mutex
	reason string // why jitgate ended the session ("" if it did not)

	dead     atomic.Bool // set by Kill: relay nothing more
	quit     atomic.Bool // the client said goodbye
	parking  atomic.Bool // its goodbye was kept from the upstream, to reuse the connection
	inflight atomic.Int32
	wmu      sync.Mutex // writes to the client

	bytesIn, bytesOut, statements atomic.Int64

	qmu      sync.Mutex
	queue    []*command // sent upstream, awaiting their response, oldest first
	prepared map[uint32]string
	status   uint16 // the upstream's last status flags
	respSeq  byte   // the sequence number the client expects next, as relayed
	midway   bool   // the client got part of a packet (no ERR can follow)
	us       scanner
	cont     bool // the client's last packet was split: the next continues it
	cmdBytes int  // the client's current command's size so far
}

func newSession(g *Gateway, client net.Conn, u *upstream, key gateway.PoolKey, grant *jitgate.Grant, caps, id uint32) *session {
	return &session{g: g, client: client, u: u, key: key, grant: grant, caps: caps, id: id,
		prepared: map[uint32]string{}, status: statusAutocommit}
}

// Kill ends the session for reason (gateway.Killer): it stops the relay at once and kills the
// running query upstream; run then tells the client why and closes both sides.
func (s *session) Kill(reason string) {
	s.mu.Lock()
	if s.reason != "" {
		s.mu.Unlock()
		return
	}
	s.reason = reason
	s.mu.Unlock()
	s.dead.Store(true)
	now := time.Now()
	_ = s.u.conn.SetReadDeadline(now)
	_ = s.client.SetReadDeadline(now)
	if s.inflight.Load() > 0 {
		// Kill runs inside the engine's event delivery: the KILL QUERY, which logs in to the
		// database, runs on its own; Close still waits for it.
		s.g.conns.Add(1)
		go func() {
			defer s.g.conns.Done()
			s.killQuery()
		}()
	}
}

func (s *session) killReason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reason
}

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
	cdone := make(chan error, 1)
	go func() {
		err := s.clientLoop()
		cdone <- err
		_ = s.u.conn.SetReadDeadline(time.Now())
	}()
	uerr := s.upstreamLoop()
	_ = s.client.SetReadDeadline(time.Now())
	cerr := <-cdone
	reason := s.killReason()
	switch {
	case reason != "":
	case errors.Is(cerr, errQuit):
		reason = "client ended the session"
	case errors.Is(uerr, io.EOF):
		reason = "upstream closed the connection"
	case cerr != nil && !errors.Is(cerr, io.EOF) && !errors.Is(cerr, os.ErrDeadlineExceeded) && !errors.Is(cerr, net.ErrClosed):
		reason = "protocol error: " + cerr.Error()
	default:
		reason = "client disconnected"
	}
	if s.killReason() != "" {
		s.goodbye(fmt.Sprintf("jitgate: %s; session closed", s.killReason()))
	} else if s.inflight.Load() > 0 {
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
	s.finish(reason)
}

// goodbye sends the client an ERR naming why the session ends, where the stream allows one:
// as the answer to the running command, or unprompted when it is idle.
func (s *session) goodbye(msg string) {
	s.qmu.Lock()
	seq, midway := byte(0), s.midway
	if len(s.queue) > 0 {
		seq = s.respSeq
	}
	s.qmu.Unlock()
	if midway {
		return
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	_ = s.client.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = s.client.Write(appendPackets(nil, &seq, errPacket(erConnectionKill, "70100", msg)))
}

// park resets the upstream connection of a session the client ended cleanly and hands it to
// the pool; false means it must be closed.
func (s *session) park() bool {
	if !s.parking.Load() || s.killReason() != "" || s.inflight.Load() != 0 {
		return false
	}
	s.qmu.Lock()
	clean := s.us.boundary()
	s.qmu.Unlock()
	if !clean {
		return false
	}
	if err := s.u.reset(5 * time.Second); err != nil {
		s.g.log.Debug("mysql gateway: upstream not reusable", "session", s.sessionID(), "err", err)
		return false
	}
	return s.g.pool.Put(s.u, s.key, s.g.clock.Now(), s.tr.Deadline(), func() bool { return s.killReason() == "" })
}

// finish records the session's end.
func (s *session) finish(reason string) {
	s.info.EndReason = reason
	s.info.BytesIn, s.info.BytesOut, s.info.Statements = s.bytesIn.Load(), s.bytesOut.Load(), s.statements.Load()
	s.g.rec.Sync() // the session's statements enter the chain before its end
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.g.opts.Engine.EndSession(ctx, s.info); err != nil {
		s.g.log.Error("mysql gateway: record session end", "session", s.info.ID, "err", err)
	}
	s.g.log.Info("mysql gateway: session ended", "session", s.info.ID, "grant", s.grant.ID, "reason", reason,
		"statements", s.info.Statements, "bytes_in", s.info.BytesIn, "bytes_out", s.info.BytesOut)
}

// clientLoop reads the client's commands, notes each, and forwards them upstream.
func (s *session) clientLoop() error {
	br := bufio.NewReaderSize(s.client, clientBuffer)
	for {
		hdr, err := br.Peek(4)
		if err != nil {
			return err
		}
		plen := int(hdr[0]) | int(hdr[1])<<8 | int(hdr[2])<<16
		seq := hdr[3]
		if s.dead.Load() {
			return errKilled
		}
		total := 4 + plen
		cont := s.cont
		s.cont = plen == maxPayload
		if !cont {
			if seq != 0 {
				return fmt.Errorf("packet out of order (sequence %d where a command starts)", seq)
			}
			s.cmdBytes = 0
		}
		s.cmdBytes += plen
		if s.cmdBytes > s.g.opts.MaxPacket {
			s.reply(1, errPacket(erNetPacketTooBig, "08S01", fmt.Sprintf("jitgate: command larger than the gateway's limit of %d bytes", s.g.opts.MaxPacket)))
			return fmt.Errorf("command over %d bytes", s.g.opts.MaxPacket)
		}
		if cont {
			if err := s.forward(br, total); err != nil {
				return err
			}
			continue
		}
		head, err := br.Peek(min(total, clientBuffer))
		if err != nil {
			return err
		}
		c, local := s.onCommand(head[4:], plen)
		switch {
		case local != nil:
			if _, err := br.Discard(total); err != nil {
				return err
			}
			s.qmu.Lock()
			busy := len(s.queue) > 0
			s.qmu.Unlock()
			if busy {
				return errors.New("a command the gateway answers itself was pipelined behind another")
			}
			s.reply(1, local)
			continue
		case c == nil: // COM_QUIT
			if s.g.pool.Enabled() && s.idle() {
				s.parking.Store(true) // keep the goodbye from the upstream
				_, _ = br.Discard(total)
				return errQuit
			}
			if err := s.forward(br, total); err != nil {
				return err
			}
			return errQuit
		}
		if c.typ != comStmtClose && c.typ != comStmtSendLongData {
			s.qmu.Lock()
			s.queue = append(s.queue, c)
			s.respSeq = 1
			s.qmu.Unlock()
			s.inflight.Add(1)
		}
		if err := s.forward(br, total); err != nil {
			return err
		}
	}
}

// forward copies the next n bytes of the client's stream upstream.
func (s *session) forward(br *bufio.Reader, n int) error {
	s.bytesIn.Add(int64(n))
	if n <= br.Buffered() {
		b, _ := br.Peek(n)
		if _, err := s.u.conn.Write(b); err != nil {
			return fmt.Errorf("upstream: %w", err)
		}
		_, _ = br.Discard(n)
		return nil
	}
	_, err := io.CopyN(s.u.conn, br, int64(n))
	return err
}

// reply answers the client's command locally (the gateway refused it).
func (s *session) reply(seq byte, payload []byte) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	_, _ = s.client.Write(appendPackets(nil, &seq, payload))
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

// upstreamLoop relays the upstream's responses to the client, following them to learn each
// command's outcome.
func (s *session) upstreamLoop() error {
	buf := make([]byte, 32<<10)
	var done []*command
	for {
		n, err := s.u.conn.Read(buf)
		if n > 0 {
			if s.dead.Load() {
				return errKilled
			}
			s.qmu.Lock()
			seq := s.respSeq
			ferr := s.us.feed(buf[:n], func(pk packet) error {
				seq = pk.seq + 1
				return s.onResponse(pk, &done)
			})
			s.qmu.Unlock()
			s.wmu.Lock()
			_, werr := s.client.Write(buf[:n])
			s.wmu.Unlock()
			s.qmu.Lock()
			s.respSeq, s.midway = seq, !s.us.boundary()
			s.qmu.Unlock()
			s.bytesOut.Add(int64(n))
			for i, c := range done {
				s.emit(c)
				done[i] = nil
			}
			done = done[:0]
			if werr != nil {
				return fmt.Errorf("client: %w", werr)
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
	if !s.g.rec.TryRecord(s.stmtHead, st) {
		s.g.rec.Record(s.stmtHead, st) // counts the wait
	}
}

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
