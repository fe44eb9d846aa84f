package jitgate_test

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate"
)

// TestComputeHashIsStable pins the hash of a fixed event with details and statements: stored
// chains must keep verifying whatever is done to ComputeHash's implementation.
func TestComputeHashIsStable(t *testing.T) {
	at := time.Date(2026, 11, 27, 9, 0, 0, 123456789, time.UTC)
	ev := &jitgate.AuditEvent{Seq: 42, Time: at, Actor: "alice", Action: jitgate.ActionSessionStatements, RequestID: 3, GrantID: 4,
		SessionID: 5, Details: map[string]string{"count": "2", "b": "", "a": "ünï"}, PrevHash: strings.Repeat("ab", 32),
		Statements: []jitgate.Statement{
			{N: 1, Start: at, DurationUS: 17, SQL: "SELECT 1", Tag: "SELECT 1"},
			{N: 2, Start: at.Add(time.Millisecond), DurationUS: 0, SQL: "INSERT INTO t VALUES ($1)", SQLState: "42501", Protocol: "extended"},
		}}
	plain := &jitgate.AuditEvent{Seq: 1, Time: at, Actor: "jitgate", Action: "grant.ended"}
	for _, c := range []struct {
		ev   *jitgate.AuditEvent
		want string
	}{
		{ev, "796cc16303350af6df8627ad453b01356c9f16f417463d56b6148f2954ae84f9"},
		{plain, "bb81aaf9c2d28b17b96db1d76f4fa360bfde7c705b7951086c0d34c738343e31"},
	} {
		if got := c.ev.ComputeHash(); got != c.want {
			t.Errorf("ComputeHash(%s #%d) = %s, want %s", c.ev.Action, c.ev.Seq, got, c.want)
		}
	}
}

// TestAppendStatementsJSON checks the hand-written encoder against encoding/json (without
// HTML escaping, which changes no decoded value) on random statements full of text that needs
// escaping, including bytes that are not UTF-8.
func TestAppendStatementsJSON(t *testing.T) {
	pieces := []string{"a", "SELECT 1", " ", "'", `"`, `\`, "\n", "\r", "\t", "\b", "\f", "\x00", "\x01", "\x1f", "\x7f", "<", ">", "&",
		"é", "✓", "🐘", "\u2028", "\u2029", "\ufffd", "\xe9", "\xff", "\xc3", "\xe2\x82", "\xed\xa0\x80"}
	rng := rand.New(rand.NewPCG(1, 2))
	text := func() string {
		var b strings.Builder
		for range rng.IntN(12) {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		return b.String()
	}
	for i := range 500 {
		var sts []jitgate.Statement
		for j := range 1 + rng.IntN(4) {
			sts = append(sts, jitgate.Statement{N: int64(i*10 + j), Start: time.Unix(rng.Int64N(4e9), rng.Int64N(1e9)).In(time.FixedZone("x", rng.IntN(20)*1800-36000)),
				DurationUS: rng.Int64N(1e9) - 5, SQL: text(), SQLState: text(), Tag: text(), Protocol: text()})
		}
		checkStatementsJSON(t, sts)
	}
	checkStatementsJSON(t, []jitgate.Statement{})
}

func checkStatementsJSON(t *testing.T, sts []jitgate.Statement) {
	t.Helper()
	var want bytes.Buffer
	enc := json.NewEncoder(&want)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(sts); err != nil {
		t.Fatal(err)
	}
	got := jitgate.AppendStatementsJSON([]byte("prefix"), sts)
	if string(got) != "prefix"+strings.TrimSuffix(want.String(), "\n") {
		t.Fatalf("AppendStatementsJSON(%+v)\n got %s\nwant %s", sts, got[6:], want.String())
	}
}

// FuzzAppendStatementsJSON: any text encodes as encoding/json encodes it.
func FuzzAppendStatementsJSON(f *testing.F) {
	f.Add("SELECT 'x'", "42501", "SELECT 1", int64(7))
	f.Add("\xe9\"\\\n\u2028", "", "\x00", int64(-1))
	f.Fuzz(func(t *testing.T, sql, state, tag string, n int64) {
		checkStatementsJSON(t, []jitgate.Statement{{N: n, Start: time.Unix(n%4e9, n%1e9), DurationUS: n, SQL: sql, SQLState: state, Tag: tag}})
	})
}
