package textsafe

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// hostile are reasons an attacker might type: rewrite the line above, write to the clipboard,
// set the window title, reverse what follows, hide characters, break the UTF-8.
var hostile = []string{
	"read for 5m\x1b[1A\x1b[2K",
	"\x1b]52;c;cm0gLXJmIH4=\x07",
	"\x1b]0;title\x1b\\",
	"\u202eetirw h4",
	"zero\u200bwidth\ufeff",
	"c1 \u009b31m",
	"bad \xff\xfe utf-8",
	"line\r\noverwrite",
	"del\x7f",
}

func TestLineEscapesEveryControl(t *testing.T) {
	for _, s := range hostile {
		got := Line(s)
		for _, r := range got {
			if unsafeRune(r) {
				t.Errorf("Line(%q) = %q still holds %U", s, got, r)
			}
		}
		if strings.ContainsAny(got, "\x1b\n\r\x07") || !Safe(got) {
			t.Errorf("Line(%q) = %q is not safe", s, got)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"plain reason, ünïcödé ✓", "plain reason, ünïcödé ✓"},
		{"a\x1b[2Kb", `a\u001b[2Kb`},
		{"a\nb\tc", `a\nb\tc`},
		{"x\u202ey", `x\u202ey`},
		{"\xff", `\xff`},
	} {
		if got := Line(tc.in); got != tc.want {
			t.Errorf("Line(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestTextKeepsLineBreaks(t *testing.T) {
	if got, want := Text("SELECT 1\n\tFROM t\x1b[1A"), "SELECT 1\n\tFROM t\\u001b[1A"; got != want {
		t.Errorf("Text = %q, want %q", got, want)
	}
	if got := Text("ok\nok"); got != "ok\nok" {
		t.Errorf("Text changed harmless text: %q", got)
	}
}

func TestWriterEscapesAcrossSplitWrites(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	in := "héllo \u202e\x1b[2K\n✓ done\n"
	// Write one byte at a time: multi-byte sequences arrive split.
	for i := 0; i < len(in); i++ {
		if _, err := w.Write([]byte{in[i]}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if got, want := buf.String(), "héllo \\u202e\\u001b[2K\n✓ done\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestWriterKeepsJSONMeaning: the escapes are JSON escapes, so JSON output read back through
// the Writer decodes to the same value.
func TestWriterKeepsJSONMeaning(t *testing.T) {
	v := map[string]string{"reason": "a\u202eb\x7fc\u200b"}
	raw, _ := json.Marshal(v)
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.Write(raw)
	w.Flush()
	if bytes.ContainsAny(buf.Bytes(), "\u202e\x7f") {
		t.Fatalf("raw control left: %q", buf.String())
	}
	var back map[string]string
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back["reason"] != v["reason"] {
		t.Errorf("round trip: %q, want %q", back["reason"], v["reason"])
	}
}
