package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/internal/testdb"
	"github.com/jitgate/jitgate/store"
)

// The conformance suite: every test here runs against SQLite and PostgreSQL.

var t0 = time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)

func open(t *testing.T, b testdb.Backend) *store.DB {
	t.Helper()
	s, err := store.Open(context.Background(), b.DSN)
	if err != nil {
		t.Fatalf("open %s: %v", b.Name, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func tx(t *testing.T, s jitgate.Store, fn func(jitgate.Tx) error) {
	t.Helper()
	if err := s.Tx(context.Background(), fn); err != nil {
		t.Fatal(err)
	}
}

func newRequest(requester string) *jitgate.Request {
	return &jitgate.Request{
		Requester: requester, Resource: "app-db", Role: "read", Duration: time.Hour, Reason: "debug",
		State: jitgate.RequestPending, Policy: "p", Steps: 1, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour),
	}
}

func TestRequestsRoundTrip(t *testing.T) {
	testdb.All(t, func(t *testing.T, b testdb.Backend) {
		s := open(t, b)
		r := newRequest("alice")
		r.StartAt = t0.Add(30 * time.Minute)
		tx(t, s, func(tx jitgate.Tx) error { return tx.InsertRequest(r) })
		if r.ID == 0 || r.Version != 1 {
			t.Fatalf("insert: id %d version %d", r.ID, r.Version)
		}
		tx(t, s, func(tx jitgate.Tx) error {
			return tx.InsertReview(&jitgate.Review{RequestID: r.ID, Reviewer: "bob", Decision: jitgate.Approve, Comment: "ok", CreatedAt: t0})
		})
		var got *jitgate.Request
		tx(t, s, func(tx jitgate.Tx) error {
			var err error
			got, err = tx.GetRequest(r.ID, true)
			return err
		})
		if got.Requester != "alice" || got.Duration != time.Hour || !got.StartAt.Equal(r.StartAt) ||
			!got.ExpiresAt.Equal(r.ExpiresAt) || got.State != jitgate.RequestPending || !got.DecidedAt.IsZero() {
			t.Fatalf("round trip: %+v", got)
		}
		if len(got.Reviews) != 1 || got.Reviews[0].Reviewer != "bob" || got.Reviews[0].Decision != jitgate.Approve {
			t.Fatalf("reviews: %+v", got.Reviews)
		}

		got.State, got.DecidedAt, got.DecidedBy = jitgate.RequestApproved, t0.Add(time.Minute), "bob"
		tx(t, s, func(tx jitgate.Tx) error { return tx.UpdateRequest(got) })
		if got.Version != 2 {
			t.Fatalf("version after update = %d", got.Version)
		}
		// A writer holding the old version loses: no lost update.
		err := s.Tx(context.Background(), func(tx jitgate.Tx) error { return tx.UpdateRequest(r) })
		if !errors.Is(err, jitgate.ErrStale) {
			t.Fatalf("stale update: got %v, want ErrStale", err)
		}

		var list []*jitgate.Request
		tx(t, s, func(tx jitgate.Tx) error {
			if err := tx.InsertRequest(newRequest("dave")); err != nil {
				return err
			}
			var err error
			list, err = tx.ListRequests(jitgate.RequestFilter{Requester: "alice"})
			return err
		})
		if len(list) != 1 || list[0].ID != r.ID || len(list[0].Reviews) != 1 {
			t.Fatalf("list by requester: %+v", list)
		}
		err = s.View(context.Background(), func(tx jitgate.Tx) error {
			_, err := tx.GetRequest(9999, false)
			return err
		})
		if jitgate.ErrorCode(err) != jitgate.ENOTFOUND {
			t.Fatalf("missing request: %v", err)
		}
	})
}

func TestDuplicateReviewIsStale(t *testing.T) {
	testdb.All(t, func(t *testing.T, b testdb.Backend) {
		s := open(t, b)
		r := newRequest("alice")
		tx(t, s, func(tx jitgate.Tx) error { return tx.InsertRequest(r) })
		rv := func() error {
			return s.Tx(context.Background(), func(tx jitgate.Tx) error {
				return tx.InsertReview(&jitgate.Review{RequestID: r.ID, Reviewer: "bob", Decision: jitgate.Approve, CreatedAt: t0})
			})
		}
		if err := rv(); err != nil {
			t.Fatal(err)
		}
		if err := rv(); !errors.Is(err, jitgate.ErrStale) {
			t.Fatalf("second review by the same person at the same step: %v, want ErrStale", err)
		}
	})
}

func TestGrantsAndDue(t *testing.T) {
	testdb.All(t, func(t *testing.T, b testdb.Backend) {
		s := open(t, b)
		r := newRequest("alice")
		active := &jitgate.Grant{User: "alice", Resource: "app-db", Role: "read", Policy: "p", State: jitgate.GrantActive,
			StartsAt: t0, EndsAt: t0.Add(time.Hour), ActivatedAt: t0,
			Provision: jitgate.ProvisionStatus{State: jitgate.ProvisionStateGranting, NextAt: t0}}
		sched := &jitgate.Grant{User: "bob", Resource: "app-db", Role: "read", Policy: "p", State: jitgate.GrantScheduled,
			StartsAt: t0.Add(2 * time.Hour), EndsAt: t0.Add(3 * time.Hour), Provision: jitgate.ProvisionStatus{State: jitgate.ProvisionStateNone}}
		tx(t, s, func(tx jitgate.Tx) error {
			if err := tx.InsertRequest(r); err != nil {
				return err
			}
			active.RequestID, sched.RequestID = r.ID, r.ID
			if err := tx.InsertGrant(active); err != nil {
				return err
			}
			return tx.InsertGrant(sched)
		})
		due := func(now time.Time) *jitgate.DueWork {
			var d *jitgate.DueWork
			if err := s.View(context.Background(), func(tx jitgate.Tx) error {
				var err error
				d, err = tx.Due(now, 10)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			return d
		}
		d := due(t0)
		if len(d.Provision) != 1 || d.Provision[0] != active.ID || len(d.Expire)+len(d.Activate)+len(d.TimedOut) != 0 {
			t.Fatalf("due at t0: %+v", d)
		}
		if !d.Next.Equal(t0.Add(time.Hour)) { // the pending request's TTL and the grant's end
			t.Fatalf("next due = %v, want %v", d.Next, t0.Add(time.Hour))
		}
		d = due(t0.Add(2 * time.Hour))
		// The scheduled grant's end only counts once it is active, and nothing else is left.
		if len(d.TimedOut) != 1 || len(d.Expire) != 1 || len(d.Activate) != 1 || !d.Next.IsZero() {
			t.Fatalf("due at t0+2h: %+v", d)
		}

		var live []*jitgate.Grant
		tx(t, s, func(tx jitgate.Tx) error {
			g, err := tx.GetGrant(active.ID, true)
			if err != nil {
				return err
			}
			if !g.Provision.NextAt.Equal(t0) || g.Provision.State != jitgate.ProvisionStateGranting {
				t.Errorf("provision status: %+v", g.Provision)
			}
			g.State, g.EndedAt, g.EndReason = jitgate.GrantRevoked, t0.Add(time.Minute), "done"
			g.Provision = jitgate.ProvisionStatus{State: jitgate.ProvisionStateRevoked}
			if err := tx.UpdateGrant(g); err != nil {
				return err
			}
			live, err = tx.ListGrants(jitgate.GrantFilter{Live: true})
			return err
		})
		if len(live) != 1 || live[0].ID != sched.ID {
			t.Fatalf("live grants: %+v", live)
		}
		if d := due(t0); len(d.Provision) != 0 {
			t.Fatalf("provisioning still due after it was cleared: %+v", d)
		}
	})
}

// LockGrants reads several grants in one statement, in id order; on PostgreSQL, with
// skipLocked, it leaves out the rows another transaction holds instead of waiting for them.
// The extension requests of several grants come back in one query.
func TestLockGrants(t *testing.T) {
	testdb.All(t, func(t *testing.T, b testdb.Backend) {
		s := open(t, b)
		var ids []int64
		var ext *jitgate.Request
		tx(t, s, func(tx jitgate.Tx) error {
			r := newRequest("alice")
			if err := tx.InsertRequest(r); err != nil {
				return err
			}
			for _, u := range []string{"alice", "bob", "carol"} {
				g := &jitgate.Grant{RequestID: r.ID, User: u, Resource: "app-db", Role: "read", Policy: "p", State: jitgate.GrantActive,
					StartsAt: t0, EndsAt: t0.Add(time.Hour), ActivatedAt: t0}
				if err := tx.InsertGrant(g); err != nil {
					return err
				}
				ids = append(ids, g.ID)
			}
			ext = newRequest("bob")
			ext.ExtendsGrant = ids[1]
			return tx.InsertRequest(ext)
		})
		tx(t, s, func(tx jitgate.Tx) error {
			gs, err := tx.LockGrants([]int64{ids[2], ids[0], 999999, ids[1]}, false)
			if err != nil {
				return err
			}
			if len(gs) != 3 || gs[0].ID != ids[0] || gs[1].ID != ids[1] || gs[2].ID != ids[2] || gs[1].User != "bob" {
				t.Fatalf("LockGrants = %+v", gs)
			}
			for _, g := range gs {
				g.State, g.EndedAt, g.EndedBy, g.EndReason = jitgate.GrantExpired, t0.Add(time.Hour), "jitgate", "expired"
				g.Provision = jitgate.ProvisionStatus{State: jitgate.ProvisionStateRevoking, NextAt: t0.Add(time.Hour), Attempts: 2}
			}
			if err := tx.UpdateGrants(gs); err != nil {
				return err
			}
			again, err := tx.LockGrants(ids, false)
			if err != nil {
				return err
			}
			for i, g := range again {
				if g.State != jitgate.GrantExpired || !g.EndedAt.Equal(t0.Add(time.Hour)) || g.EndReason != "expired" || g.Version != 2 ||
					g.Provision.State != jitgate.ProvisionStateRevoking || g.Provision.Attempts != 2 || !g.Provision.NextAt.Equal(t0.Add(time.Hour)) ||
					!g.StartsAt.Equal(t0) || g.User != gs[i].User || gs[i].Version != 2 {
					t.Fatalf("after UpdateGrants: %+v", g)
				}
			}
			gs[0].Version = 1 // stale
			if err := tx.UpdateGrants(gs[:1]); !errors.Is(err, jitgate.ErrStale) {
				t.Fatalf("UpdateGrants of a stale grant: %v", err)
			}
			rs, err := tx.ListRequests(jitgate.RequestFilter{ExtendsGrants: ids})
			if err != nil {
				return err
			}
			if len(rs) != 1 || rs[0].ID != ext.ID {
				t.Fatalf("extension requests of %v: %+v", ids, rs)
			}
			if rs, err := tx.ListRequests(jitgate.RequestFilter{ExtendsGrants: []int64{}}); err != nil || len(rs) != 0 {
				t.Fatalf("extension requests of no grants: %+v, %v", rs, err)
			}
			return nil
		})
		if b.Name != "postgres" {
			return
		}
		held := make(chan struct{})
		release := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			done <- s.Tx(context.Background(), func(tx jitgate.Tx) error {
				if _, err := tx.GetGrant(ids[1], true); err != nil {
					return err
				}
				close(held)
				<-release
				return nil
			})
		}()
		<-held
		tx(t, s, func(tx jitgate.Tx) error {
			gs, err := tx.LockGrants(ids, true)
			if err != nil {
				return err
			}
			if len(gs) != 2 || gs[0].ID != ids[0] || gs[1].ID != ids[2] {
				t.Errorf("LockGrants skipping locked rows = %+v, want grants %d and %d", gs, ids[0], ids[2])
			}
			return nil
		})
		close(release)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

func TestAuditChain(t *testing.T) {
	testdb.All(t, func(t *testing.T, b testdb.Backend) {
		s := open(t, b)
		for i := range 3 {
			tx(t, s, func(tx jitgate.Tx) error {
				return tx.AppendAudit(&jitgate.AuditEvent{Time: t0.Add(time.Duration(i) * time.Second), Actor: "alice",
					Action: "request.created", RequestID: int64(i + 1), Details: map[string]string{"k": "v"}})
			})
		}
		var evs []*jitgate.AuditEvent
		var head int64
		var headHash string
		if err := s.View(context.Background(), func(tx jitgate.Tx) error {
			var err error
			if evs, err = tx.ListAudit(jitgate.AuditFilter{}); err != nil {
				return err
			}
			head, headHash, err = tx.AuditHead()
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if len(evs) != 3 || head != 3 || headHash != evs[2].Hash {
			t.Fatalf("chain: %d events, head %d", len(evs), head)
		}
		for i, e := range evs {
			if e.Seq != int64(i+1) || e.ComputeHash() != e.Hash || (i > 0 && e.PrevHash != evs[i-1].Hash) || e.Details["k"] != "v" {
				t.Fatalf("event %d broken: %+v", i, e)
			}
		}
		if err := s.View(context.Background(), func(tx jitgate.Tx) error {
			var err error
			evs, err = tx.ListAudit(jitgate.AuditFilter{AfterSeq: 1, RequestID: 3})
			return err
		}); err != nil || len(evs) != 1 || evs[0].Seq != 3 {
			t.Fatalf("filtered: %v %+v", err, evs)
		}
	})
}

// TestAuditStatementsRoundTrip stores statements whose text needs escaping, or is not even
// UTF-8 (a client on client_encoding LATIN1 sends such bytes): what is read back must be what
// the hash covers, so the chain verifies, and valid text must come back unchanged.
func TestAuditStatementsRoundTrip(t *testing.T) {
	odd := []string{
		"SELECT 'it''s' AS \"q\", E'back\\slash'",
		"SELECT 1;\n\t-- line\r\nSELECT 2",
		"SELECT '<b>&amp;</b>', '\u2028\u2029', 'ünïcödé ✓ 🐘', '\x01\x1f\x7f'",
		"SELECT 'caf\xe9'",             // LATIN1 é: not UTF-8
		"SELECT '\xff\xfe' || 'x\xc3'", // invalid bytes and a cut-off sequence
		"",
	}
	testdb.All(t, func(t *testing.T, b testdb.Backend) {
		s := open(t, b)
		ev := &jitgate.AuditEvent{Time: t0, Actor: "alice", Action: jitgate.ActionSessionStatements, GrantID: 1, SessionID: 2,
			Details: map[string]string{"count": fmt.Sprint(len(odd)), "note": "r\xe9sum\xe9"}}
		for i, sql := range odd {
			ev.Statements = append(ev.Statements, jitgate.Statement{N: int64(i + 1), Start: t0.Add(time.Duration(i) * 1234567 * time.Nanosecond),
				DurationUS: int64(i * 1000), SQL: sql, SQLState: []string{"", "42501"}[i%2], Tag: []string{"SELECT 1", ""}[i%2], Protocol: []string{"", "extended"}[i%3/2]})
		}
		tx(t, s, func(tx jitgate.Tx) error { return tx.AppendAudit(ev) })
		var evs []*jitgate.AuditEvent
		if err := s.View(context.Background(), func(tx jitgate.Tx) error {
			var err error
			evs, err = tx.ListAudit(jitgate.AuditFilter{SessionID: 2})
			return err
		}); err != nil || len(evs) != 1 {
			t.Fatalf("list: %v, %d events", err, len(evs))
		}
		got := evs[0]
		if got.ComputeHash() != got.Hash || got.Hash != ev.Hash {
			t.Fatalf("the stored event does not hash to its hash:\nstored %+v\nappended %+v", got, ev)
		}
		if len(got.Statements) != len(odd) {
			t.Fatalf("%d statements back, want %d", len(got.Statements), len(odd))
		}
		for i, st := range got.Statements {
			want := strings.ToValidUTF8(odd[i], "\uFFFD")
			if st.SQL != want || !st.Start.Equal(ev.Statements[i].Start) || st != ev.Statements[i] {
				t.Errorf("statement %d: got %+v, want SQL %q and %+v", i, st, want, ev.Statements[i])
			}
		}
		if got.Details["note"] != "r\uFFFDsum\uFFFD" {
			t.Errorf("details: %q", got.Details["note"])
		}
	})
}

// TestAuditStatementsManyEvents appends events in every chunk size (128, 16, 1), some
// carrying statements and some not, one with text that is not UTF-8 amid the others, twice
// over: each event must read back with its own statements (the encoding buffer is shared by a
// chunk's events and reused from append to append) and hash to its hash.
func TestAuditStatementsManyEvents(t *testing.T) {
	testdb.All(t, func(t *testing.T, b testdb.Backend) {
		s := open(t, b)
		var all []*jitgate.AuditEvent
		for round := range 2 {
			events := make([]*jitgate.AuditEvent, 150-round*7)
			for i := range events {
				ev := &jitgate.AuditEvent{Time: t0, Actor: "alice", Action: jitgate.ActionSessionStatements, GrantID: 1, SessionID: int64(1000*round + i)}
				if i%3 != 1 {
					for k := range i%5 + 1 {
						sql := fmt.Sprintf("SELECT %d FROM t%d WHERE k = %d", round, i, k)
						if i == 77 && k == 1 {
							sql += " -- caf\xe9"
						}
						ev.Statements = append(ev.Statements, jitgate.Statement{N: int64(k + 1), Start: t0.Add(time.Duration(i*10+k) * time.Millisecond), SQL: sql, Tag: "SELECT 1"})
					}
				} else {
					ev.Action = "plain"
				}
				if i == 90 {
					ev.Details = map[string]string{"note": "r\xe9sum\xe9"} // not UTF-8 in the head only
				}
				events[i] = ev
			}
			tx(t, s, func(tx jitgate.Tx) error { return tx.AppendAudit(events...) })
			all = append(all, events...)
		}
		var got []*jitgate.AuditEvent
		if err := s.View(context.Background(), func(tx jitgate.Tx) error {
			var err error
			got, err = tx.ListAudit(jitgate.AuditFilter{Actor: "alice", Limit: 1000})
			return err
		}); err != nil || len(got) != len(all) {
			t.Fatalf("list: %v, %d events, want %d", err, len(got), len(all))
		}
		// The head moved with the last chunk (on PostgreSQL, in the same statement).
		if err := s.View(context.Background(), func(tx jitgate.Tx) error {
			seq, hash, err := tx.AuditHead()
			if last := all[len(all)-1]; err == nil && (seq != last.Seq || hash != last.Hash) {
				t.Errorf("head at %d %s, the last event is %d %s", seq, hash, last.Seq, last.Hash)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		for i, ev := range got {
			want := all[i]
			if ev.SessionID != want.SessionID || ev.ComputeHash() != ev.Hash || ev.Hash != want.Hash || len(ev.Statements) != len(want.Statements) {
				t.Fatalf("event %d (session %d): read back %+v, appended %+v", i, want.SessionID, ev, want)
			}
			for k, st := range ev.Statements {
				if st.SQL != want.Statements[k].SQL || !st.Start.Equal(want.Statements[k].Start) {
					t.Fatalf("event %d statement %d: %+v, appended %+v", i, k, st, want.Statements[k])
				}
			}
		}
		if sql := got[77].Statements[1].SQL; sql != "SELECT 0 FROM t77 WHERE k = 1 -- caf\uFFFD" {
			t.Errorf("text that is not UTF-8 read back as %q", sql)
		}
		if note := got[90].Details["note"]; note != "r\uFFFDsum\uFFFD" {
			t.Errorf("a detail that is not UTF-8 read back as %q", note)
		}
	})
}

// TestConcurrentWritersSerialize runs many transactions that read-modify-write one row: row
// locks (PostgreSQL) or the write lock (SQLite) must serialize them with no lost update and
// no stale error, and the audit chain must stay gapless.
func TestConcurrentWritersSerialize(t *testing.T) {
	testdb.All(t, func(t *testing.T, b testdb.Backend) {
		s := open(t, b)
		r := newRequest("alice")
		tx(t, s, func(tx jitgate.Tx) error { return tx.InsertRequest(r) })
		const n = 20
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- s.Tx(context.Background(), func(tx jitgate.Tx) error {
					got, err := tx.GetRequest(r.ID, true)
					if err != nil {
						return err
					}
					got.Step++
					if err := tx.UpdateRequest(got); err != nil {
						return err
					}
					return tx.AppendAudit(&jitgate.AuditEvent{Time: t0, Actor: "x", Action: "step"})
				})
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		var got *jitgate.Request
		var head int64
		if err := s.View(context.Background(), func(tx jitgate.Tx) error {
			var err error
			if got, err = tx.GetRequest(r.ID, false); err != nil {
				return err
			}
			head, _, err = tx.AuditHead()
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if got.Step != n || head != n {
			t.Fatalf("step = %d, audit head = %d; want %d each", got.Step, head, n)
		}
	})
}

func TestReopenKeepsData(t *testing.T) {
	testdb.All(t, func(t *testing.T, b testdb.Backend) {
		s := open(t, b)
		tx(t, s, func(tx jitgate.Tx) error { return tx.InsertRequest(newRequest("alice")) })
		s.Close()
		s2 := open(t, b) // migrations are idempotent
		if err := s2.View(context.Background(), func(tx jitgate.Tx) error {
			_, err := tx.GetRequest(1, false)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := store.Open(ctx, "mysql://x"); jitgate.ErrorCode(err) != jitgate.EINVALID {
		t.Fatalf("unknown scheme: %v", err)
	}
	// Nothing listens on port 1: the store is unavailable, and the password is not echoed.
	_, err := store.Open(ctx, "postgres://u:s3cret@127.0.0.1:1/db?connect_timeout=2")
	if jitgate.ErrorCode(err) != jitgate.EUNAVAILABLE {
		t.Fatalf("unreachable postgres: %v", err)
	}
	if msg := err.Error(); strings.Contains(msg, "s3cret") {
		t.Fatalf("error leaks the password: %s", msg)
	}
}

func TestInstallationID(t *testing.T) {
	ids := map[string]bool{}
	testdb.All(t, func(t *testing.T, b testdb.Backend) {
		s := open(t, b)
		var first, again string
		tx(t, s, func(tx jitgate.Tx) (err error) { first, err = tx.InstallationID(); return err })
		tx(t, s, func(tx jitgate.Tx) (err error) { again, err = tx.InstallationID(); return err })
		if len(first) != 32 || first != again || ids[first] {
			t.Fatalf("installation id %q then %q (seen: %v)", first, again, ids)
		}
		ids[first] = true
	})
}

func TestDirectoryUsers(t *testing.T) {
	testdb.All(t, func(t *testing.T, b testdb.Backend) {
		s := open(t, b)
		tx(t, s, func(tx jitgate.Tx) error {
			if _, err := tx.GetUser("zoe"); jitgate.ErrorCode(err) != jitgate.ENOTFOUND {
				return fmt.Errorf("unknown user: %v", err)
			}
			if err := tx.PutUser(&jitgate.User{Name: "zoe", Groups: []string{"sre"}}, "oidc", t0); err != nil {
				return err
			}
			// A later sign-in replaces the groups.
			if err := tx.PutUser(&jitgate.User{Name: "zoe", Groups: []string{"dba", "oncall"}}, "oidc", t0.Add(time.Hour)); err != nil {
				return err
			}
			if err := tx.PutUser(&jitgate.User{Name: "adam"}, "oidc", t0); err != nil {
				return err
			}
			u, err := tx.GetUser("zoe")
			if err != nil || !slices.Equal(u.Groups, []string{"dba", "oncall"}) {
				return fmt.Errorf("zoe: %+v %v", u, err)
			}
			all, err := tx.ListUsers()
			if err != nil || len(all) != 2 || all[0].Name != "adam" || len(all[0].Groups) != 0 {
				return fmt.Errorf("list: %+v %v", all, err)
			}
			return nil
		})
	})
}

// An instance's liveness lock: held, another look sees it alive; released (or its process
// dead), another look sees it dead at once. Instance records, claims and a live session by
// instance round-trip.
func TestInstances(t *testing.T) {
	testdb.All(t, func(t *testing.T, b testdb.Backend) {
		s := open(t, b)
		other := open(t, b) // another process's view of the same store
		ctx := context.Background()
		release, err := s.HoldInstance(ctx, "inst-a")
		if err != nil {
			t.Fatal(err)
		}
		if alive, err := other.InstanceAlive(ctx, "inst-a"); err != nil || !alive {
			t.Fatalf("held instance: alive %v, %v", alive, err)
		}
		if alive, err := other.InstanceAlive(ctx, "inst-a"); err != nil || !alive {
			t.Fatalf("a second look took the lock: alive %v, %v", alive, err)
		}
		release()
		if alive, err := other.InstanceAlive(ctx, "inst-a"); err != nil || alive {
			t.Fatalf("released instance: alive %v, %v", alive, err)
		}
		if alive, err := other.InstanceAlive(ctx, "never-seen"); err != nil || alive {
			t.Fatalf("unknown instance: alive %v, %v", alive, err)
		}

		now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
		in := &jitgate.Instance{ID: "inst-a", Host: "h", PID: 7, StartedAt: now, HeartbeatAt: now}
		if err := s.Tx(ctx, func(tx jitgate.Tx) error { return tx.PutInstance(in) }); err != nil {
			t.Fatal(err)
		}
		in.HeartbeatAt = now.Add(time.Second)
		var got []*jitgate.Instance
		if err := s.Tx(ctx, func(tx jitgate.Tx) error {
			if err := tx.PutInstance(in); err != nil {
				return err
			}
			var err error
			got, err = tx.ListInstances()
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].PID != 7 || !got[0].HeartbeatAt.Equal(now.Add(time.Second)) {
			t.Fatalf("instances: %+v", got)
		}
		var gone, again bool
		if err := s.Tx(ctx, func(tx jitgate.Tx) (err error) {
			if gone, err = tx.DeleteInstance("inst-a"); err != nil {
				return err
			}
			again, err = tx.DeleteInstance("inst-a")
			return err
		}); err != nil || !gone || again {
			t.Fatalf("delete: %v %v %v", gone, again, err)
		}
	})
}

// The outbox: items are queued in one statement (keys queued already, in the store or earlier
// in the same call, are left out and get no id), claimed due-first in one statement, not
// claimed again while the claim lasts, and claimed again once it has lapsed.
func TestOutboxEnqueueAndClaim(t *testing.T) {
	testdb.All(t, func(t *testing.T, b testdb.Backend) {
		s := open(t, b)
		item := func(key, sink string, next time.Time) *jitgate.OutboxItem {
			return &jitgate.OutboxItem{Key: key, Sink: sink, Payload: `{"k":"` + key + `"}`, CreatedAt: t0, NextAt: next}
		}
		first := item("a", "hook", t0.Add(3*time.Second))
		tx(t, s, func(tx jitgate.Tx) error { return tx.EnqueueOutbox([]*jitgate.OutboxItem{first}) })
		var batch []*jitgate.OutboxItem
		for i := range 20 { // more than one statement's worth
			batch = append(batch, item(fmt.Sprintf("k%02d", i), "hook", t0.Add(time.Duration(20-i)*time.Second)))
		}
		again, twice, twiceInChunk := item("a", "hook", t0), item("k03", "hook", t0), item("k02", "hook", t0)
		batch = slices.Insert(batch, 5, twiceInChunk) // in the same statement as the first k02
		batch = append(batch, again, twice, item("other", "slack", t0))
		tx(t, s, func(tx jitgate.Tx) error { return tx.EnqueueOutbox(batch) })
		if first.ID == 0 || again.ID != 0 || twice.ID != 0 || twiceInChunk.ID != 0 {
			t.Fatalf("ids: first %d, its key again %d, a key twice in one call %d, in one statement %d", first.ID, again.ID, twice.ID, twiceInChunk.ID)
		}
		batch = slices.Delete(batch, 5, 6)
		ids := map[int64]bool{first.ID: true}
		for _, it := range batch[:20] {
			if it.ID == 0 || ids[it.ID] {
				t.Fatalf("item %s: id %d", it.Key, it.ID)
			}
			ids[it.ID] = true
		}
		claim := func(now time.Time, limit int) []string {
			t.Helper()
			var keys []string
			tx(t, s, func(tx jitgate.Tx) error {
				items, err := tx.ClaimOutbox("hook", "inst", now, now.Add(time.Minute), limit)
				for _, it := range items {
					keys = append(keys, it.Key)
				}
				return err
			})
			return keys
		}
		// Due by t0+5s: k19 (t0+1s) ... k15 (t0+5s) and a (t0+3s); the earliest four.
		if got := strings.Join(claim(t0.Add(5*time.Second), 4), " "); got != "k19 k18 a k17" {
			t.Fatalf("first claim: %s", got)
		}
		if got := strings.Join(claim(t0.Add(5*time.Second), 10), " "); got != "k16 k15" {
			t.Fatalf("second claim (the first's still claimed): %s", got)
		}
		if got := claim(t0.Add(5*time.Second+time.Minute), 3); strings.Join(got, " ") != "k19 k18 a" {
			t.Fatalf("after the claims lapsed: %s", got)
		}
	})
}
