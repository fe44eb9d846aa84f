package postgres

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// The scanner finds the same messages, with the same bodies, however the stream is split.
func TestScannerSplits(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	type m struct {
		typ  byte
		body string
	}
	var want []m
	var stream []byte
	for i := 0; i < 200; i++ {
		typ := "QDCZX"[rng.IntN(5)]
		body := strings.Repeat(string(rune('a'+i%26)), rng.IntN(300))
		var hdr [5]byte
		hdr[0] = typ
		binary.BigEndian.PutUint32(hdr[1:], uint32(len(body)+4))
		stream = append(append(stream, hdr[:]...), body...)
		if typ != 'D' {
			want = append(want, m{typ, body})
		}
	}
	for trial := 0; trial < 50; trial++ {
		sc := scanner{max: 1 << 10, want: func(typ byte) bool { return typ != 'D' }}
		var got []m
		for rest := stream; len(rest) > 0; {
			k := 1 + rng.IntN(min(len(rest), 700))
			chunk := rest[:k]
			rest = rest[k:]
			err := sc.feed(chunk, func(typ byte, body []byte, at int) error {
				if at >= 0 && chunk[at] != typ {
					return fmt.Errorf("message %q said to begin at %d, where %q is", typ, at, chunk[at])
				}
				got = append(got, m{typ, string(body)})
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		if !sc.boundary() || len(got) != len(want) {
			t.Fatalf("trial %d: %d messages (boundary %v), want %d", trial, len(got), sc.boundary(), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("trial %d: message %d = %q %d bytes, want %q %d bytes", trial, i, got[i].typ, len(got[i].body), want[i].typ, len(want[i].body))
			}
		}
	}
}

// A message over the limit, or with a negative length, is an error, not a huge allocation.
func TestScannerLimits(t *testing.T) {
	for _, hdr := range [][]byte{{'Q', 0, 0, 8, 0}, {'Q', 0, 0, 0, 3}, {'Q', 0xff, 0xff, 0xff, 0xff}} {
		sc := scanner{max: 1 << 10, want: func(byte) bool { return true }}
		err := sc.feed(hdr, func(byte, []byte, int) error { return nil })
		if err == nil || !strings.Contains(err.Error(), "exceeds the limit") {
			t.Errorf("header % x: %v", hdr, err)
		}
	}
	// The ErrorResponse a killed session's client gets is well formed.
	msg := errorMessage("FATAL", "57P01", "jitgate: bye")
	sc := scanner{max: 1 << 10, want: func(byte) bool { return true }}
	var code string
	if err := sc.feed(msg, func(typ byte, body []byte, _ int) error { code = errorCode(body); return nil }); err != nil || code != "57P01" || !sc.boundary() || !bytes.Contains(msg, []byte("jitgate: bye")) {
		t.Fatalf("error message % x: %v %q", msg, err, code)
	}
}

// FuzzScanner: arbitrary bytes, split anywhere, give the same messages (or the same error) as
// when fed whole, and never a panic or a body over the limit.
func FuzzScanner(f *testing.F) {
	f.Add([]byte("Q\x00\x00\x00\x0dSELECT 1\x00X\x00\x00\x00\x04"), uint8(3))
	f.Add([]byte("P\x00\x00\x00\x08s\x00q\x00B\x00\x00\x00\x06\x00s\x00E\x00\x00\x00\x05\x00S\x00\x00\x00\x04"), uint8(1))
	f.Add([]byte{'Q', 0xff, 0xff, 0xff, 0xff}, uint8(2))
	f.Fuzz(func(t *testing.T, in []byte, split uint8) {
		type m struct {
			typ  byte
			body string
		}
		run := func(chunks [][]byte) ([]m, error) {
			sc := scanner{max: 1 << 10, want: clientWants}
			var got []m
			for _, c := range chunks {
				if err := sc.feed(c, func(typ byte, body []byte, at int) error {
					if len(body) > sc.max {
						t.Fatalf("body of %d bytes over the limit", len(body))
					}
					if at >= 0 && c[at] != typ {
						t.Fatalf("message %q said to begin at %d", typ, at)
					}
					got = append(got, m{typ, string(body)})
					return nil
				}); err != nil {
					return got, err
				}
			}
			return got, nil
		}
		whole, werr := run([][]byte{in})
		var chunks [][]byte
		for rest, k := in, int(split)%7+1; len(rest) > 0; {
			n := min(k, len(rest))
			chunks = append(chunks, rest[:n])
			rest = rest[n:]
		}
		parts, perr := run(chunks)
		if (werr == nil) != (perr == nil) || len(whole) != len(parts) {
			t.Fatalf("whole: %d messages, %v; in %d-byte pieces: %d messages, %v", len(whole), werr, int(split)%7+1, len(parts), perr)
		}
		for i := range whole {
			if whole[i] != parts[i] {
				t.Fatalf("message %d differs: %q vs %q", i, whole[i].typ, parts[i].typ)
			}
		}
	})
}
