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
// compact form (version 2):
//
//	{"v":2,"n":N,"t":T,"s":[[dn,dt,us,"sql","tag","sqlstate","protocol"], ...]}
//
// N is the first statement's number and T its start in Unix nanoseconds. Each row holds its
// statement's number and start as differences from the row before (the first row's from N
// and T, so 0 and 0), its duration in microseconds, its text, and then its command tag,
// SQLSTATE and protocol with trailing empty strings left out. A pgbench -S statement takes
// about 86 bytes this way against about 153 as a JSON array of Statement objects (version 1,
// as the API shows them), which is what rows written before this form hold and is still
// read. Only the store sees this form: ComputeHash covers the statements' values, not their
// encoding, so the form can change without breaking the chain.

// storedStatementsVersion is the "v" of the form Append writes.
const storedStatementsVersion = 2

// Append appends sts in the stored form. Text that is not UTF-8 comes out as
// U+FFFD byte by byte; the store makes events' text valid before hashing, so none arrives.
func Append(b []byte, sts []jitgate.Statement) []byte {
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
		b = appendJSONString(b, st.SQL)
		rest := [...]string{st.Tag, st.SQLState, st.Protocol}
		k := len(rest)
		for k > 0 && rest[k-1] == "" {
			k--
		}
		for _, s := range rest[:k] {
			b = append(b, ',')
			b = appendJSONString(b, s)
		}
		b = append(b, ']')
		n, t = st.N, start
	}
	return append(b, "]}"...)
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
	var v struct {
		V    int         `json:"v"`
		N    int64       `json:"n"`
		T    int64       `json:"t"`
		Rows []storedRow `json:"s"`
	}
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return nil, fmt.Errorf("stored statements: %w", err)
	}
	if v.V != storedStatementsVersion {
		return nil, fmt.Errorf("stored statements: unknown version %d (this jitgate reads 1 and %d)", v.V, storedStatementsVersion)
	}
	sts := make([]jitgate.Statement, len(v.Rows))
	n, t := v.N, v.T
	for i, r := range v.Rows {
		n, t = n+r.dn, t+r.dt
		sts[i] = jitgate.Statement{N: n, Start: time.Unix(0, t).UTC(), DurationUS: r.us,
			SQL: r.sql, Tag: r.tag, SQLState: r.state, Protocol: r.protocol}
	}
	return sts, nil
}

// storedRow is one row of the stored form.
type storedRow struct {
	dn, dt, us                int64
	sql, tag, state, protocol string
}

// UnmarshalJSON reads [dn,dt,us,"sql"] with up to three strings more.
func (r *storedRow) UnmarshalJSON(b []byte) error {
	var f []json.RawMessage
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	if len(f) < 4 || len(f) > 7 {
		return fmt.Errorf("a statement row has %d fields, want 4 to 7", len(f))
	}
	fields := [...]any{&r.dn, &r.dt, &r.us, &r.sql, &r.tag, &r.state, &r.protocol}
	for i, raw := range f {
		// null would decode as zero without complaint.
		if string(raw) == "null" {
			return fmt.Errorf("a statement row's field %d is null", i+1)
		}
		if err := json.Unmarshal(raw, fields[i]); err != nil {
			return fmt.Errorf("a statement row's field %d: %w", i+1, err)
		}
	}
	return nil
}

// appendJSONString appends s as a JSON string, escaped as encoding/json escapes it without
// HTML escaping.
func appendJSONString(b []byte, s string) []byte {
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
	return append(b, '"')
}
