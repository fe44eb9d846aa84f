package statements

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jitgate/jitgate"
)

// nastyPieces make up text that needs escaping, or is not UTF-8.
var nastyPieces = []string{"a", "SELECT 1", " ", "'", `"`, `\`, "\n", "\r", "\t", "\b", "\f", "\x00", "\x01", "\x1f", "\x7f", "<", ">", "&",
	"é", "✓", "🐘", "\u2028", "\u2029", "\ufffd", "\xe9", "\xff", "\xc3", "\xe2\x82", "\xed\xa0\x80"}

func nastyText(rng *rand.Rand) string {
	var b strings.Builder
	for range rng.IntN(12) {
		b.WriteString(nastyPieces[rng.IntN(len(nastyPieces))])
	}
	return b.String()
}

// TestAppendJSONString checks the hand-written string encoder against encoding/json without
// HTML escaping (which changes no decoded value), including bytes that are not UTF-8.
func TestAppendJSONString(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		checkJSONString(t, nastyText(rng))
	}
}

func checkJSONString(t *testing.T, s string) {
	t.Helper()
	var want bytes.Buffer
	enc := json.NewEncoder(&want)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		t.Fatal(err)
	}
	got, exact := appendString([]byte("prefix"), s)
	if string(got) != "prefix"+strings.TrimSuffix(want.String(), "\n") {
		t.Fatalf("appendString(%q)\n got %s\nwant %s", s, got[6:], want.String())
	}
	if exact != utf8.ValidString(s) {
		t.Fatalf("appendString(%q) reports exact %v", s, exact)
	}
}

// TestStoredStatementsRoundTrip: what Append writes, Parse reads back as
// it was (in UTC), for random statements in any order, numbering and time zone.
func TestStoredStatementsRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	text := func() string { return strings.ToValidUTF8(nastyText(rng), "\ufffd") }
	for i := range 500 {
		var sts []jitgate.Statement
		for j := range 1 + rng.IntN(5) {
			st := jitgate.Statement{N: int64(i*10 + j), Start: time.Unix(rng.Int64N(4e9), rng.Int64N(1e9)).In(time.FixedZone("x", rng.IntN(20)*1800-36000)),
				DurationUS: rng.Int64N(1e9) - 5, SQL: text()}
			// Each of the optional strings is present or not, in every combination.
			if rng.IntN(2) == 0 {
				st.Tag = text()
			}
			if rng.IntN(2) == 0 {
				st.SQLState = text()
			}
			if rng.IntN(2) == 0 {
				st.Protocol = text()
			}
			sts = append(sts, st)
		}
		checkStoredStatements(t, sts)
	}
	// Texts that share beginnings, cut anywhere (inside a character, too), with bytes that
	// are not UTF-8 here and there: front coding must give back each text as it was (each
	// bad byte as U+FFFD).
	for range 500 {
		var sts []jitgate.Statement
		sql := nastyText(rng)
		for j := range 1 + rng.IntN(6) {
			sts = append(sts, jitgate.Statement{N: int64(j), Start: time.Unix(0, int64(j)).UTC(), SQL: sql})
			switch rng.IntN(4) {
			case 0: // the same again
			case 1:
				sql = nastyText(rng)
			default:
				sql = sql[:rng.IntN(len(sql)+1)] + nastyText(rng)
			}
		}
		checkStoredStatements(t, sts)
	}
	// Extreme numbers and times: the differences wrap around and back.
	checkStoredStatements(t, []jitgate.Statement{
		{N: math.MaxInt64, Start: time.Unix(0, math.MaxInt64), DurationUS: math.MinInt64},
		{N: math.MinInt64, Start: time.Unix(0, math.MinInt64), DurationUS: math.MaxInt64, SQL: "x"},
		{N: 0, Start: time.Unix(0, 0), Tag: "", SQLState: "", Protocol: "extended"},
	})
}

// jsonText is what encoding/json makes of s: each byte that is not UTF-8 becomes U+FFFD.
func jsonText(t testing.TB, s string) string {
	b, _ := json.Marshal(s)
	var out string
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkStoredStatements stores sts and reads them back: the same statements, in UTC, with
// text that is not UTF-8 as encoding/json reads it back.
func checkStoredStatements(t testing.TB, sts []jitgate.Statement) {
	t.Helper()
	b, exact := Append([]byte("prefix"), sts)
	if !bytes.HasPrefix(b, []byte("prefix")) || !json.Valid(b[6:]) {
		t.Fatalf("Append(%+v) wrote invalid JSON: %s", sts, b)
	}
	valid := true
	for _, st := range sts {
		valid = valid && utf8.ValidString(st.SQL) && utf8.ValidString(st.Tag) && utf8.ValidString(st.SQLState) && utf8.ValidString(st.Protocol)
	}
	if exact != valid {
		t.Fatalf("Append(%+v) reports exact %v; the text is UTF-8: %v", sts, exact, valid)
	}
	got, err := Parse(string(b[6:]))
	if err != nil {
		t.Fatalf("Parse(%s): %v", b[6:], err)
	}
	if len(got) != len(sts) {
		t.Fatalf("%d statements back from %s, want %d", len(got), b[6:], len(sts))
	}
	for i, st := range got {
		want := sts[i]
		want.SQL, want.Tag, want.SQLState, want.Protocol = jsonText(t, want.SQL), jsonText(t, want.Tag), jsonText(t, want.SQLState), jsonText(t, want.Protocol)
		if st.Start.Location() != time.UTC || st.Start.UnixNano() != want.Start.UnixNano() {
			t.Fatalf("statement %d: start %v, want %v in UTC (from %s)", i, st.Start, want.Start, b[6:])
		}
		st.Start = want.Start
		if st != want {
			t.Fatalf("statement %d: got %+v, want %+v (from %s)", i, st, want, b[6:])
		}
	}
}

// pgbenchStatements are n statements as pgbench -S runs them, about 0.3 ms apart, each for
// another account.
func pgbenchStatements(n int) []jitgate.Statement {
	start := time.Date(2026, 11, 27, 15, 41, 8, 93274250, time.UTC)
	sts := make([]jitgate.Statement, n)
	for i := range sts {
		sts[i] = jitgate.Statement{N: int64(18513 + i), Start: start.Add(time.Duration(i) * 313877 * time.Nanosecond),
			DurationUS: 133 + int64(i%7), SQL: fmt.Sprintf("SELECT abalance FROM pgbench_accounts WHERE aid = %d;", 1+(i*7919)%1000000), Tag: "SELECT 1"}
	}
	return sts
}

// TestStoredStatementsSize pins the point of the compact form: a pgbench statement takes
// about a quarter of what the API's JSON takes.
func TestStoredStatementsSize(t *testing.T) {
	sts := pgbenchStatements(100)
	api, err := json.Marshal(sts)
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := Append(nil, sts)
	t.Logf("100 pgbench statements: %d bytes stored, %d as the API's JSON", len(stored), len(api))
	if len(stored) > len(api)*3/10 {
		t.Errorf("stored form takes %d bytes, more than 30%% of the API's %d", len(stored), len(api))
	}
}

// TestParseStoredStatementsVersion1 reads the form rows written before version 2 hold.
func TestParseStoredStatementsVersion1(t *testing.T) {
	got, err := Parse(`[{"n":7,"start":"2026-11-27T15:41:08.09327425Z","duration_us":133,"sql":"SELECT 1","tag":"SELECT 1"},` +
		`{"n":8,"start":"2026-11-27T16:41:08+01:00","duration_us":5,"sql":"DELETE FROM t","sqlstate":"42501","protocol":"extended"}]`)
	if err != nil {
		t.Fatal(err)
	}
	want := []jitgate.Statement{
		{N: 7, Start: time.Date(2026, 11, 27, 15, 41, 8, 93274250, time.UTC), DurationUS: 133, SQL: "SELECT 1", Tag: "SELECT 1"},
		{N: 8, Start: time.Date(2026, 11, 27, 15, 41, 8, 0, time.UTC), DurationUS: 5, SQL: "DELETE FROM t", SQLState: "42501", Protocol: "extended"},
	}
	for i := range want {
		if len(got) != len(want) || !got[i].Start.Equal(want[i].Start) {
			t.Fatalf("got %+v, want %+v", got, want)
		}
		got[i].Start = want[i].Start
		if got[i] != want[i] {
			t.Fatalf("statement %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestParseStoredStatementsVersion2 reads the form rows written before version 3 hold: no
// front coding.
func TestParseStoredStatementsVersion2(t *testing.T) {
	got, err := Parse(`{"v":2,"n":7,"t":1795794068093274250,"s":[[0,0,133,"SELECT 1","SELECT 1"],[1,-93274250,5,"SELECT 12","","42501","extended"]]}`)
	if err != nil {
		t.Fatal(err)
	}
	want := []jitgate.Statement{
		{N: 7, Start: time.Date(2026, 11, 27, 15, 41, 8, 93274250, time.UTC), DurationUS: 133, SQL: "SELECT 1", Tag: "SELECT 1"},
		{N: 8, Start: time.Date(2026, 11, 27, 15, 41, 8, 0, time.UTC), DurationUS: 5, SQL: "SELECT 12", SQLState: "42501", Protocol: "extended"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("statement %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestParseStoredStatementsErrors: a damaged row is refused with what is wrong with it (the
// store then lists the event with its raw text, and verify reports its hash).
func TestParseStoredStatementsErrors(t *testing.T) {
	for in, want := range map[string]string{
		`{"v":4,"n":1,"t":0,"s":[]}`:                              "unknown version 4",
		`{"v":3,"n":1,"t":0,"s":[[0,0,0,1,"a"]]}`:                 "shares 1 bytes of the text before it, which has 0",
		`{"v":3,"n":1,"t":0,"s":[[0,0,0,0,"ab"],[0,0,0,3,"c"]]}`:  "shares 3 bytes of the text before it, which has 2",
		`{"v":3,"n":1,"t":0,"s":[[0,0,0,0,"é"],[0,0,0,1,"c"]]}`:   "which splits a character",
		`{"v":3,"n":1,"t":0,"s":[[0,0,0,-1,"a"]]}`:                "shares -1 bytes of the text before it, which has 0",
		`{"v":3,"n":1,"t":0,"s":[[0,0,0,0]]}`:                     "has 4 fields, want 5 to 8",
		`{"v":3,"n":1,"t":0,"s":[[0,0,0,0,"a","b","c","d","e"]]}`: "has more than 8 fields",
		`{"n":1,"t":0,"s":[]}`:                                    `at byte 1: want "v":`,
		`{"v":2,"n":1,"t":0,"s":[[0,0,0]]}`:                       "has 3 fields, want 4 to 7",
		`{"v":2,"n":1,"t":0,"s":[[0,0,0,"a","b","c","d","e"]]}`:   "has more than 7 fields",
		`{"v":2,"n":1,"t":0,"s":[[0,null,0,"a"]]}`:                "at byte 27: want an integer",
		`{"v":2,"n":1,"t":0,"s":[[0,0,0,7]]}`:                     "at byte 31: want a string",
		`{"v":2,"n":1,"t":0,"s":[[0,"1",0,"a"]]}`:                 "at byte 27: want an integer",
		`{"v":2,"n":1,"t":0,"s":[[0,1.5,0,"a"]]}`:                 "at byte 28: want ,",
		`{"v":2,"n":1,"t":0,"s":[{"n":1}]}`:                       "stored statements",
		`{"v":2,"n":1,"t":0,"s":[[0,0,0,"a"]]`:                    "stored statements",
		`[{"n":"x"}]`:                                             "version 1",
		`{"v":2,"n":1,"t":0,"s":[[0,0,0,"a` + "\x01" + `"]]}`:     "control character",
		`{"v":2,"n":1,"t":0,"s":[[0,0,0,"a]]}`:                    "unterminated string",
		`{"v":2,"n":1,"t":0,"s":[[0,0,0,"\q"]]}`:                  "bad string",
		`{"v":2,"n":1,"t":0,"s":[]} x`:                            "unexpected text",
		`{"v":2,"n":99999999999999999999,"t":0,"s":[]}`:           "want an integer",
		`garbage`: "stored statements",
	} {
		if _, err := Parse(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%s) = %v, want an error containing %q", in, err, want)
		}
	}
}

// FuzzStoredStatements: any statements, even with text that is not UTF-8, are stored as valid
// JSON and read back as encoding/json would read the same text back.
func FuzzStoredStatements(f *testing.F) {
	f.Add("SELECT 'x'", "SELECT 1", "", "", int64(7), int64(1), int64(1795794068093274250), int64(313877), int64(133))
	f.Add("\xe9\"\\\n\u2028", "", "42501", "extended", int64(-1), int64(math.MinInt64), int64(0), int64(math.MaxInt64), int64(-5))
	// The second text (tag) shares the first's beginning, up to inside a character.
	f.Add("SELECT 'é✓' \xff", "SELECT '\xc3", "", "", int64(1), int64(1), int64(0), int64(1), int64(1))
	f.Add("SELECT 'é'", "SELECT 'é'", "", "", int64(1), int64(1), int64(0), int64(1), int64(1))
	f.Fuzz(func(t *testing.T, sql, tag, state, protocol string, n, dn, start, dt, us int64) {
		valid := func(s string) string { return jsonText(t, s) }
		in := []jitgate.Statement{
			{N: n, Start: time.Unix(0, start), DurationUS: us, SQL: sql, Tag: tag},
			{N: n + dn, Start: time.Unix(0, start+dt), DurationUS: -us, SQL: tag, SQLState: state, Protocol: protocol},
		}
		want := make([]jitgate.Statement, len(in))
		for i, st := range in {
			st.SQL, st.Tag, st.SQLState, st.Protocol = valid(st.SQL), valid(st.Tag), valid(st.SQLState), valid(st.Protocol)
			want[i] = st
		}
		b, exact := Append(nil, in)
		if !json.Valid(b) {
			t.Fatalf("invalid JSON: %s", b)
		}
		if valid := utf8.ValidString(sql + "\x00" + tag + "\x00" + state + "\x00" + protocol); exact != valid {
			t.Fatalf("Append reports exact %v; the text is UTF-8: %v", exact, valid)
		}
		got, err := Parse(string(b))
		if err != nil {
			t.Fatalf("Parse(%s): %v", b, err)
		}
		for i := range want {
			if len(got) != len(want) || got[i].Start.UnixNano() != want[i].Start.UnixNano() {
				t.Fatalf("got %+v, want %+v", got, want)
			}
			got[i].Start = want[i].Start
			if got[i] != want[i] {
				t.Fatalf("statement %d: got %+v, want %+v", i, got[i], want[i])
			}
		}
	})
}

// BenchmarkParse reads back 100 pgbench statements in the stored form and, for comparison, in
// the earlier one (the API's JSON, read with encoding/json).
func BenchmarkParse(b *testing.B) {
	sts := pgbenchStatements(100)
	v1, err := json.Marshal(sts)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct{ name, stored string }{{"compact", string(must(Append(nil, sts)))}, {"version1", string(v1)}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if got, err := Parse(c.stored); err != nil || len(got) != len(sts) {
					b.Fatal(err, len(got))
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(sts)), "ns/statement")
		})
	}
}

// FuzzParse: any stored text, however damaged, gives statements or an error, never a panic;
// what parses writes back to text that parses to the same statements.
func FuzzParse(f *testing.F) {
	start := time.Date(2026, 11, 27, 15, 41, 8, 93274250, time.UTC)
	f.Add(string(must(Append(nil, []jitgate.Statement{{N: 7, Start: start, DurationUS: 133, SQL: "SELECT 'é\\n'", Tag: "SELECT 1"},
		{N: 8, Start: start.Add(time.Millisecond), SQL: "x", SQLState: "42501", Protocol: "extended"}}))))
	f.Add(`{"v":2,"n":1,"t":0,"s":[ [0, 0, 0, "a\"b", ""] ]}`)
	f.Add(`{"v":3,"n":1,"t":0,"s":[[0,0,0,0,"SELECT é"],[1,5,0,8,"1"],[1,5,0,9,""]]}`)
	f.Add(`[{"n":1,"start":"2026-11-27T15:41:08Z","duration_us":1,"sql":"x"}]`)
	f.Fuzz(func(t *testing.T, stored string) {
		sts, err := Parse(stored)
		if err != nil {
			return
		}
		b, exact := Append(nil, sts)
		if !exact {
			t.Fatalf("%q parsed to text that is not UTF-8: %+v", stored, sts)
		}
		again, err := Parse(string(b))
		if err != nil || len(again) != len(sts) {
			t.Fatalf("%q parsed to %+v, which wrote back to text that gives %+v, %v", stored, sts, again, err)
		}
		for i := range sts {
			if again[i].Start.UnixNano() != sts[i].Start.UnixNano() {
				t.Fatalf("statement %d: start %v, then %v", i, sts[i].Start, again[i].Start)
			}
			again[i].Start = sts[i].Start
			if again[i] != sts[i] {
				t.Fatalf("statement %d: %+v, then %+v", i, sts[i], again[i])
			}
		}
	})
}

// must is the text Append wrote, for tests whose text is UTF-8.
func must(b []byte, exact bool) []byte {
	if !exact {
		panic("statements: test text is not UTF-8")
	}
	return b
}
