// Package statements encodes the statements of session.statements audit events for the
// store, in a compact form, and reads them back (in that form or the earlier one).
package statements

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jitgate/jitgate"
)

// The statements of a session.statements event are stored in one text column, as JSON in a
// compact form (version 3):
//
//	{"v":3,"n":N,"t":T,"s":[[dn,dt,us,p,"sql","tag","sqlstate","protocol"], ...]}
//
// N is the first statement's number and T its start in Unix nanoseconds. Each row holds its
// statement's number and start as differences from the row before (the first row's from N
// and T, so 0 and 0), its duration in microseconds, its text, and then its command tag,
// SQLSTATE and protocol with trailing empty strings left out. The text is front-coded: p is
// how many leading bytes it shares with the row before's text (at a character boundary), and
// "sql" holds the rest. Sessions repeat their statements' text (an application's prepared
// statements, pgbench's one query with another number), so a pgbench -S statement takes
// about 39 bytes against 86 in version 2 (the same without p and front coding, still read)
// and 153 as a JSON array of Statement objects (version 1, as the API shows them, also still
// read). Only the store sees this form: ComputeHash covers the statements' values, not their
// encoding, so the form can change without breaking the chain.

// storedStatementsVersion is the "v" of the form Append writes.
const storedStatementsVersion = 3

// Append appends sts in the stored form and reports whether all their text was UTF-8. Text
// that is not comes out as U+FFFD byte by byte: the store makes such an event's text valid
// (jitgate.AuditEvent.MakeValidUTF8) and encodes it again before hashing, so that what is
// read back is what was hashed. Append scans every byte of text it does not front-code, and
// front-codes only text that follows UTF-8, so the report costs the store a second pass over
// the statements only when it finds some.
func Append(b []byte, sts []jitgate.Statement) ([]byte, bool) {
	exact := true
	var n, t int64
	if len(sts) > 0 {
		n, t = sts[0].N, sts[0].Start.UnixNano()
	}
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, storedStatementsVersion, 10)
	b = append(b, `,"n":`...)
	b = strconv.AppendInt(b, n, 10)
	b = append(b, `,"t":`...)
	b = strconv.AppendInt(b, t, 10)
	b = append(b, `,"s":[`...)
	// prev is the row before's text, usable for front coding when it reads back byte for byte
	// (it was UTF-8: Append writes other text as U+FFFD).
	prev, prevExact := "", false
	for i, st := range sts {
		if i > 0 {
			b = append(b, ',')
		}
		// Differences wrap around on overflow, and adding them back wraps the same way.
		start := st.Start.UnixNano()
		b = append(b, '[')
		b = strconv.AppendInt(b, st.N-n, 10)
		b = append(b, ',')
		b = strconv.AppendInt(b, start-t, 10)
		b = append(b, ',')
		b = strconv.AppendInt(b, st.DurationUS, 10)
		b = append(b, ',')
		p := 0
		if prevExact {
			p = sharedPrefix(prev, st.SQL)
		}
		b = strconv.AppendInt(b, int64(p), 10)
		b = append(b, ',')
		b, prevExact = appendString(b, st.SQL[p:])
		exact = exact && prevExact
		prev = st.SQL
		rest := [...]string{st.Tag, st.SQLState, st.Protocol}
		k := len(rest)
		for k > 0 && rest[k-1] == "" {
			k--
		}
		for _, s := range rest[:k] {
			b = append(b, ',')
			var ok bool
			b, ok = appendString(b, s)
			exact = exact && ok
		}
		b = append(b, ']')
		n, t = st.N, start
	}
	return append(b, "]}"...), exact
}

// sharedPrefix returns how many leading bytes b shares with a, cut back to a character
// boundary of a (UTF-8), so that a's part is text of its own.
func sharedPrefix(a, b string) int {
	n := min(len(a), len(b))
	i := 0
	for i < n && a[i] == b[i] {
		i++
	}
	for i > 0 && i < len(a) && !utf8.RuneStart(a[i]) {
		i--
	}
	return i
}

// Parse reads statements stored by Append, or by an earlier version.
func Parse(s string) ([]jitgate.Statement, error) {
	s = strings.TrimLeft(s, " \t\r\n")
	if strings.HasPrefix(s, "[") { // version 1: the API's own JSON
		var sts []jitgate.Statement
		if err := json.Unmarshal([]byte(s), &sts); err != nil {
			return nil, fmt.Errorf("stored statements (version 1): %w", err)
		}
		return sts, nil
	}
	return parseCompact(s)
}

// parseCompact reads the stored form exactly as Append writes it (whitespace between tokens
// allowed), without encoding/json's reflection: listing or verifying a long audit log reads
// every statement.
func parseCompact(s string) ([]jitgate.Statement, error) {
	p := parser{s: s}
	v, err := p.field(`{"v":`)
	if err != nil {
		return nil, err
	}
	if v != 2 && v != storedStatementsVersion {
		return nil, fmt.Errorf("stored statements: unknown version %d (this jitgate reads 1 to %d)", v, storedStatementsVersion)
	}
	n, err := p.field(`,"n":`)
	if err != nil {
		return nil, err
	}
	t, err := p.field(`,"t":`)
	if err != nil {
		return nil, err
	}
	if err := p.lit(`,"s":[`); err != nil {
		return nil, err
	}
	ints := 3 // number and start differences, duration; version 3 adds the shared prefix
	if v == 3 {
		ints = 4
	}
	var sts []jitgate.Statement
	prev := ""
	for p.ws(); !p.eat(']'); p.ws() {
		if len(sts) > 0 {
			if err := p.lit(","); err != nil {
				return nil, err
			}
		}
		if err := p.lit("["); err != nil {
			return nil, err
		}
		var d [4]int64
		for i := range ints {
			if i > 0 {
				if err := p.lit(","); err != nil {
					return nil, err
				}
			}
			if d[i], err = p.int(); err != nil {
				return nil, err
			}
		}
		shared := int(d[3])
		switch {
		case d[3] < 0 || d[3] > int64(len(prev)):
			return nil, p.errorf("a statement shares %d bytes of the text before it, which has %d", d[3], len(prev))
		case shared < len(prev) && !utf8.RuneStart(prev[shared]):
			return nil, p.errorf("a statement shares %d bytes of the text before it, which splits a character", d[3])
		}
		var text [4]string // SQL, tag, SQLSTATE, protocol
		k := 0
		for ; k < len(text); k++ {
			if p.ws(); p.eat(']') {
				break
			}
			if err := p.lit(","); err != nil {
				return nil, err
			}
			if text[k], err = p.str(); err != nil {
				return nil, err
			}
		}
		if k == 0 {
			return nil, p.errorf("a statement row has %d fields, want %d to %d", ints, ints+1, ints+4)
		}
		if k == len(text) {
			if err := p.lit("]"); err != nil {
				return nil, p.errorf("a statement row has more than %d fields", ints+4)
			}
		}
		switch {
		case shared == 0:
		case text[0] == "":
			text[0] = prev[:shared] // a repeated statement costs no copy
		default:
			text[0] = prev[:shared] + text[0]
		}
		prev = text[0]
		n, t = n+d[0], t+d[1]
		sts = append(sts, jitgate.Statement{N: n, Start: time.Unix(0, t).UTC(), DurationUS: d[2],
			SQL: text[0], Tag: text[1], SQLState: text[2], Protocol: text[3]})
	}
	if err := p.lit("}"); err != nil {
		return nil, err
	}
	if p.ws(); p.i != len(p.s) {
		return nil, p.errorf("unexpected text after the statements")
	}
	return sts, nil
}

// parser reads the stored form.
type parser struct {
	s string
	i int
}

func (p *parser) errorf(format string, args ...any) error {
	return fmt.Errorf("stored statements: at byte %d: %s", p.i, fmt.Sprintf(format, args...))
}

// ws skips whitespace.
func (p *parser) ws() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == '\n' || p.s[p.i] == '\r') {
		p.i++
	}
}

// eat takes c if it comes next.
func (p *parser) eat(c byte) bool {
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

// lit takes the tokens of lit (JSON punctuation and quoted keys), with whitespace allowed
// before each.
func (p *parser) lit(lit string) error {
	for j := 0; j < len(lit); {
		k := j + 1
		if lit[j] == '"' {
			k += strings.IndexByte(lit[k:], '"') + 1
		}
		p.ws()
		if !strings.HasPrefix(p.s[p.i:], lit[j:k]) {
			return p.errorf("want %s", lit[j:])
		}
		p.i += k - j
		j = k
	}
	return nil
}

// field takes key (with the punctuation before it) and reads the integer after it.
func (p *parser) field(key string) (int64, error) {
	if err := p.lit(key); err != nil {
		return 0, err
	}
	return p.int()
}

// int reads an integer.
func (p *parser) int() (int64, error) {
	p.ws()
	start := p.i
	p.eat('-')
	for p.i < len(p.s) && '0' <= p.s[p.i] && p.s[p.i] <= '9' {
		p.i++
	}
	v, err := strconv.ParseInt(p.s[start:p.i], 10, 64)
	if err != nil {
		p.i = start
		return 0, p.errorf("want an integer")
	}
	return v, nil
}

// str reads a JSON string. One without escapes, in valid UTF-8, is the stored text itself.
func (p *parser) str() (string, error) {
	p.ws()
	start := p.i
	if !p.eat('"') {
		return "", p.errorf("want a string")
	}
	escaped := false
	for ; p.i < len(p.s); p.i++ {
		switch c := p.s[p.i]; {
		case c == '\\':
			escaped = true
			p.i++ // the escaped character cannot end the string
		case c == '"':
			p.i++
			tok := p.s[start:p.i]
			if !escaped && utf8.ValidString(tok) {
				return tok[1 : len(tok)-1], nil
			}
			var v string // escapes, or bytes encoding/json would replace
			if err := json.Unmarshal([]byte(tok), &v); err != nil {
				p.i = start
				return "", p.errorf("bad string: %v", err)
			}
			return v, nil
		case c < 0x20:
			return "", p.errorf("control character in a string")
		}
	}
	p.i = start
	return "", p.errorf("unterminated string")
}

// appendString appends s as a JSON string, escaped as encoding/json escapes it without HTML
// escaping, and reports whether s reads back as it is (false: it is not UTF-8, and a byte
// became U+FFFD).
func appendString(b []byte, s string) ([]byte, bool) {
	exact := true
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			exact = false
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			// Valid JSON, but not valid JavaScript: escaped as encoding/json does.
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"'), exact
}
