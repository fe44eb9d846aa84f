package jitgate_test

import (
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
