package mysql

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// MySQL packets: a 3-byte little-endian payload length, a sequence number, the payload. A
// payload of 0xffffff bytes or more is split; a packet of exactly maxPayload bytes says
// another follows.
const maxPayload = 1<<24 - 1

// Capability flags (the protocol's CLIENT_*).
const (
	capLongPassword     uint32 = 1 << 0
	capFoundRows        uint32 = 1 << 1
	capLongFlag         uint32 = 1 << 2
	capConnectWithDB    uint32 = 1 << 3
	capNoSchema         uint32 = 1 << 4
	capCompress         uint32 = 1 << 5
	capODBC             uint32 = 1 << 6
	capLocalFiles       uint32 = 1 << 7
	capIgnoreSpace      uint32 = 1 << 8
	capProtocol41       uint32 = 1 << 9
	capInteractive      uint32 = 1 << 10
	capSSL              uint32 = 1 << 11
	capIgnoreSigpipe    uint32 = 1 << 12
	capTransactions     uint32 = 1 << 13
	capReserved         uint32 = 1 << 14
	capSecureConnection uint32 = 1 << 15
	capMultiStatements  uint32 = 1 << 16
	capMultiResults     uint32 = 1 << 17
	capPSMultiResults   uint32 = 1 << 18
	capPluginAuth       uint32 = 1 << 19
	capConnectAttrs     uint32 = 1 << 20
	capPluginAuthLenenc uint32 = 1 << 21
	capDeprecateEOF     uint32 = 1 << 24
)

// serverCaps are the capabilities the gateway offers clients (capSSL is added when it has
// TLS). Left out: compression, LOAD DATA LOCAL (a server could read the client's files),
// session tracking, query attributes and MariaDB's extensions, none of which the relay
// follows.
const serverCaps = capLongPassword | capFoundRows | capLongFlag | capConnectWithDB | capODBC |
	capIgnoreSpace | capProtocol41 | capInteractive | capIgnoreSigpipe | capTransactions |
	capReserved | capSecureConnection | capMultiStatements | capMultiResults | capPSMultiResults |
	capPluginAuth | capConnectAttrs | capPluginAuthLenenc | capDeprecateEOF

// streamCaps are the capabilities that change the byte stream after login: the upstream
// must grant every one of them the client chose, since the relay passes the stream through.
const streamCaps = capProtocol41 | capMultiStatements | capMultiResults | capPSMultiResults | capDeprecateEOF |
	capFoundRows | capLongFlag | capIgnoreSpace | capTransactions

// Server status flags.
const (
	statusInTrans            uint16 = 0x0001
	statusAutocommit         uint16 = 0x0002
	statusMoreResultsExist   uint16 = 0x0008
	statusCursorExists       uint16 = 0x0040
	statusLastRowSent        uint16 = 0x0080
	statusInTransReadOnly    uint16 = 0x2000
	statusSessionStateChange uint16 = 0x4000
)

// Commands (the first byte of a client's command packet).
const (
	comQuit             = 0x01
	comInitDB           = 0x02
	comQuery            = 0x03
	comFieldList        = 0x04
	comCreateDB         = 0x05
	comDropDB           = 0x06
	comRefresh          = 0x07
	comShutdown         = 0x08
	comStatistics       = 0x09
	comProcessInfo      = 0x0a
	comProcessKill      = 0x0c
	comDebug            = 0x0d
	comPing             = 0x0e
	comChangeUser       = 0x11
	comBinlogDump       = 0x12
	comRegisterSlave    = 0x15
	comStmtPrepare      = 0x16
	comStmtExecute      = 0x17
	comStmtSendLongData = 0x18
	comStmtClose        = 0x19
	comStmtReset        = 0x1a
	comSetOption        = 0x1b
	comStmtFetch        = 0x1c
	comResetConnection  = 0x1f
)

// commandNames names the commands the audit records by name.
var commandNames = map[byte]string{
	comQuit: "COM_QUIT", comInitDB: "COM_INIT_DB", comQuery: "COM_QUERY", comFieldList: "COM_FIELD_LIST",
	comCreateDB: "COM_CREATE_DB", comDropDB: "COM_DROP_DB", comRefresh: "COM_REFRESH", comShutdown: "COM_SHUTDOWN",
	comStatistics: "COM_STATISTICS", comProcessInfo: "COM_PROCESS_INFO", comProcessKill: "COM_PROCESS_KILL",
	comDebug: "COM_DEBUG", comPing: "COM_PING", comChangeUser: "COM_CHANGE_USER", comBinlogDump: "COM_BINLOG_DUMP",
	comRegisterSlave: "COM_REGISTER_SLAVE", comStmtPrepare: "COM_STMT_PREPARE", comStmtExecute: "COM_STMT_EXECUTE",
	comStmtSendLongData: "COM_STMT_SEND_LONG_DATA", comStmtClose: "COM_STMT_CLOSE", comStmtReset: "COM_STMT_RESET",
	comSetOption: "COM_SET_OPTION", comStmtFetch: "COM_STMT_FETCH", comResetConnection: "COM_RESET_CONNECTION",
}

func commandName(c byte) string {
	if n, ok := commandNames[c]; ok {
		return n
	}
	return fmt.Sprintf("command 0x%02x", c)
}

// Error numbers and SQLSTATEs the gateway sends.
const (
	erAccessDenied    = 1045 // 28000
	erConCount        = 1040 // 08004, too many connections
	erHandshake       = 1043 // 08S01, bad handshake
	erUnknownCom      = 1047 // 08S01
	erNotAllowed      = 1227 // 42000, access denied; you need privileges
	erConnectionKill  = 1927 // 70100, connection was killed
	erServerShutdown  = 1053 // 08S01
	erUpstream        = 2003 // HY000, cannot connect
	erNetPacketTooBig = 1153 // 08S01
)

var errPacketTooLarge = errors.New("packet exceeds the size limit")

// packetIO reads and writes whole packets, for the login phases (the relay works on raw
// chunks instead).
type packetIO struct {
	rw   io.ReadWriter
	seq  byte
	max  int // the largest payload read accepts
	hdr  [4]byte
	held []byte // packets framed by hold, sent with the next write
}

// read returns the next payload (split payloads joined) and checks its sequence number.
func (p *packetIO) read() ([]byte, error) {
	var payload []byte
	for {
		if _, err := io.ReadFull(p.rw, p.hdr[:]); err != nil {
			return nil, err
		}
		n := int(uint32(p.hdr[0]) | uint32(p.hdr[1])<<8 | uint32(p.hdr[2])<<16)
		if p.hdr[3] != p.seq {
			return nil, fmt.Errorf("packet out of order: sequence %d, want %d", p.hdr[3], p.seq)
		}
		p.seq++
		if len(payload)+n > p.max {
			return nil, errPacketTooLarge
		}
		start := len(payload)
		payload = append(payload, make([]byte, n)...)
		if _, err := io.ReadFull(p.rw, payload[start:]); err != nil {
			return nil, err
		}
		if n < maxPayload {
			return payload, nil
		}
	}
}

// write sends payload as one or more packets, after any held ones.
func (p *packetIO) write(payload []byte) error {
	b := appendPackets(p.held, &p.seq, payload)
	p.held = nil
	_, err := p.rw.Write(b)
	return err
}

// hold frames payload to go out with the next write: one system call and one wake-up of the
// client instead of two, where the client has nothing to say in between.
func (p *packetIO) hold(payload []byte) { p.held = appendPackets(p.held, &p.seq, payload) }

// appendPackets appends payload framed as packets numbered from *seq on.
func appendPackets(b []byte, seq *byte, payload []byte) []byte {
	for {
		n := min(len(payload), maxPayload)
		b = append(b, byte(n), byte(n>>8), byte(n>>16), *seq)
		*seq++
		b = append(b, payload[:n]...)
		payload = payload[n:]
		if n < maxPayload {
			return b
		}
	}
}

// errPacket builds an ERR payload.
func errPacket(code uint16, sqlstate, msg string) []byte {
	b := []byte{0xff, byte(code), byte(code >> 8), '#'}
	b = append(b, sqlstate...)
	return append(b, msg...)
}

// okPacket builds an OK payload with no rows affected.
func okPacket(status uint16) []byte {
	return []byte{0x00, 0, 0, byte(status), byte(status >> 8), 0, 0}
}

// parseErr reads an ERR payload (PROTOCOL_41 form).
func parseErr(b []byte) (code uint16, sqlstate, msg string) {
	if len(b) < 3 || b[0] != 0xff {
		return 0, "", ""
	}
	code = binary.LittleEndian.Uint16(b[1:3])
	rest := b[3:]
	if len(rest) >= 6 && rest[0] == '#' {
		sqlstate, rest = string(rest[1:6]), rest[6:]
	}
	return code, sqlstate, string(rest)
}

// lenenc reads a length-encoded integer; ok is false if b is too short or holds the NULL
// marker.
func lenenc(b []byte) (v uint64, n int, ok bool) {
	if len(b) == 0 {
		return 0, 0, false
	}
	switch c := b[0]; {
	case c < 0xfb:
		return uint64(c), 1, true
	case c == 0xfc && len(b) >= 3:
		return uint64(binary.LittleEndian.Uint16(b[1:3])), 3, true
	case c == 0xfd && len(b) >= 4:
		return uint64(b[1]) | uint64(b[2])<<8 | uint64(b[3])<<16, 4, true
	case c == 0xfe && len(b) >= 9:
		return binary.LittleEndian.Uint64(b[1:9]), 9, true
	}
	return 0, 0, false
}

// appendLenenc appends v as a length-encoded integer.
func appendLenenc(b []byte, v uint64) []byte {
	switch {
	case v < 0xfb:
		return append(b, byte(v))
	case v < 1<<16:
		return append(b, 0xfc, byte(v), byte(v>>8))
	case v < 1<<24:
		return append(b, 0xfd, byte(v), byte(v>>8), byte(v>>16))
	}
	return binary.LittleEndian.AppendUint64(append(b, 0xfe), v)
}

// okStatus reads the affected rows and status flags of an OK payload (header 0x00, or 0xfe
// where it ends a result set with CLIENT_DEPRECATE_EOF); ok is false if it is malformed.
func okStatus(b []byte) (affected uint64, status uint16, ok bool) {
	if len(b) < 1 {
		return 0, 0, false
	}
	rest := b[1:]
	affected, n, ok := lenenc(rest)
	if !ok {
		return 0, 0, false
	}
	rest = rest[n:]
	_, n, ok = lenenc(rest)
	if !ok || len(rest) < n+2 {
		return 0, 0, false
	}
	return affected, binary.LittleEndian.Uint16(rest[n : n+2]), true
}

// eofStatus reads the status flags of a classic EOF payload (0xfe, warnings, status).
func eofStatus(b []byte) uint16 {
	if len(b) >= 5 {
		return binary.LittleEndian.Uint16(b[3:5])
	}
	return 0
}

// cstr splits b at its first NUL: the string before it and the rest after it; ok is false if
// there is no NUL.
func cstr(b []byte) (s string, rest []byte, ok bool) {
	for i, c := range b {
		if c == 0 {
			return string(b[:i]), b[i+1:], true
		}
	}
	return string(b), nil, false
}

// packet is one packet a scanner saw: its sequence number, its payload's length, the head
// of its payload (up to headLen bytes), and whether it continues a split payload.
type packet struct {
	seq  byte
	plen int
	head []byte
	cont bool
}

// headLen is how much of each upstream packet a scanner keeps: enough for an OK, EOF or ERR
// header, a column count or COM_STMT_PREPARE's answer.
const headLen = 64

// scanner follows the packet boundaries of the upstream's stream across reads of any size,
// keeping the head of each packet, so the bytes are relayed as they come.
type scanner struct {
	hdr   [4]byte
	nhdr  int
	left  int
	plen  int
	split bool // the current packet continues a split payload
	next  bool // the next packet continues this one
	head  []byte
}

// boundary reports whether the stream is between packets.
func (sc *scanner) boundary() bool { return sc.nhdr == 0 }

// feed scans b, calling fn for each complete packet (its head valid only during the call).
func (sc *scanner) feed(b []byte, fn func(packet) error) error {
	for off := 0; off < len(b); {
		if sc.nhdr < 4 {
			k := copy(sc.hdr[sc.nhdr:], b[off:])
			sc.nhdr += k
			off += k
			if sc.nhdr < 4 {
				return nil
			}
			sc.plen = int(uint32(sc.hdr[0]) | uint32(sc.hdr[1])<<8 | uint32(sc.hdr[2])<<16)
			sc.left = sc.plen
			sc.split, sc.next = sc.next, sc.plen == maxPayload
			sc.head = sc.head[:0]
		}
		k := min(sc.left, len(b)-off)
		if want := min(sc.plen, headLen) - len(sc.head); want > 0 {
			sc.head = append(sc.head, b[off:off+min(want, k)]...)
		}
		sc.left -= k
		off += k
		if sc.left > 0 {
			return nil
		}
		sc.nhdr = 0
		if err := fn(packet{seq: sc.hdr[3], plen: sc.plen, head: sc.head, cont: sc.split}); err != nil {
			return err
		}
	}
	return nil
}
