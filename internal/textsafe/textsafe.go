// Package textsafe makes text that users typed safe to show on a terminal: reasons, comments,
// names and SQL must never move the cursor, rewrite the line above, set a window title, write
// to the clipboard (OSC 52) or reorder what an approver reads (bidi overrides).
//
// Every character that a terminal would act on rather than print is replaced by a visible
// escape: C0 controls and DEL (\u001b, \u007f; \n, \r and \t in Line), C1 controls (\u009b),
// Unicode format characters (bidi overrides and isolates, zero-width characters) and bytes that
// are not UTF-8 (\xff). Escapes use the \uXXXX form so that, inside a JSON string, they read
// back as the same text.
package textsafe

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// Line returns s for one line of output: line breaks and tabs are escaped too ("\n", "\r",
// "\t"), so a value cannot start a line of its own.
func Line(s string) string { return escape(s, false) }

// Text returns s for multi-line output: line feeds and tabs are kept, everything else
// Line escapes is escaped.
func Text(s string) string { return escape(s, true) }

// Safe reports whether s needs no escaping for one line of output.
func Safe(s string) bool {
	for _, r := range s {
		if r == utf8.RuneError || unsafeRune(r) {
			return false
		}
	}
	return true
}

// unsafeRune reports whether a terminal acts on r rather than printing it: C0 and C1 controls,
// DEL, and Unicode's format characters (bidi controls, zero-width joiners and spaces, BOM).
func unsafeRune(r rune) bool {
	return r < 0x20 || (r >= 0x7f && r <= 0x9f) || unicode.Is(unicode.Cf, r) ||
		r == '\u2028' || r == '\u2029' // line and paragraph separators
}

func escape(s string, multiline bool) string {
	if fast(s, multiline) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n <= 1 {
			fmt.Fprintf(&b, `\x%02x`, s[i])
			i++
			continue
		}
		i += n
		writeRune(&b, r, multiline)
	}
	return b.String()
}

// fast reports whether s can be returned as it is.
func fast(s string, multiline bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 && !(multiline && (c == '\n' || c == '\t')) || c == 0x7f {
			return false
		}
		if c >= 0x80 {
			for _, r := range s[i:] {
				if r == utf8.RuneError || (unsafeRune(r) && !(multiline && (r == '\n' || r == '\t'))) {
					return false
				}
			}
			return true
		}
	}
	return true
}

func writeRune(b *strings.Builder, r rune, multiline bool) {
	switch {
	case multiline && (r == '\n' || r == '\t'):
		b.WriteRune(r)
	case r == '\n':
		b.WriteString(`\n`)
	case r == '\r':
		b.WriteString(`\r`)
	case r == '\t':
		b.WriteString(`\t`)
	case unsafeRune(r):
		fmt.Fprintf(b, `\u%04x`, r)
	default:
		b.WriteRune(r)
	}
}

// Writer escapes, in everything written through it, what Text escapes: it is the last line of
// defence for a command's whole output, so that a value printed without Line still cannot
// reach the terminal raw. A UTF-8 sequence split between two writes is joined before it is
// judged.
// It is safe for concurrent use (a server's log and its messages share stderr).
type Writer struct {
	mu      sync.Mutex
	w       io.Writer
	partial []byte // the start of a UTF-8 sequence the last write ended in
}

// NewWriter returns a Writer that writes the escaped text to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Unwrap returns the writer underneath.
func (sw *Writer) Unwrap() io.Writer { return sw.w }

// Write escapes p and writes it; it reports len(p) on success.
func (sw *Writer) Write(p []byte) (int, error) {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	n := len(p)
	if len(sw.partial) > 0 {
		p = append(sw.partial, p...)
		sw.partial = nil
	}
	// Keep an incomplete sequence at the end for the next write.
	if k := incompleteTail(p); k > 0 {
		sw.partial = append([]byte(nil), p[len(p)-k:]...)
		p = p[:len(p)-k]
	}
	s := string(p)
	if fast(s, true) {
		_, err := sw.w.Write(p)
		return n, err
	}
	_, err := io.WriteString(sw.w, Text(s))
	return n, err
}

// Flush writes a sequence left incomplete by the last write (escaped as bytes).
func (sw *Writer) Flush() error {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if len(sw.partial) == 0 {
		return nil
	}
	s := string(sw.partial)
	sw.partial = nil
	_, err := io.WriteString(sw.w, Text(s))
	return err
}

// incompleteTail returns how many bytes at the end of p start a UTF-8 sequence that p does not
// finish (0 if none).
func incompleteTail(p []byte) int {
	for k := 1; k <= 3 && k <= len(p); k++ {
		c := p[len(p)-k]
		if c < 0x80 {
			return 0
		}
		if c >= 0xc0 { // a leading byte: how long should its sequence be?
			want := 2
			switch {
			case c >= 0xf0:
				want = 4
			case c >= 0xe0:
				want = 3
			}
			if want > k {
				return k
			}
			return 0
		}
	}
	return 0
}
