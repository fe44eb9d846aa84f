package gateway

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/internal/clocktest"
)

// killed records why a fake session was ended.
type killed struct {
	mu     sync.Mutex
	reason string
	n      int
}

func (k *killed) Kill(reason string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.n++
	if k.reason == "" {
		k.reason = reason
	}
}

func (k *killed) get() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.reason
}

func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 5s: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// A session ends at its grant's end on the registry's clock, later if an extension moved it,
// at once on a revoke event, and through the sweep when another instance ended its grant.
func TestRegistry(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	clk := clocktest.New(t0)
	var (
		mu     sync.Mutex
		stored = map[int64]*jitgate.Grant{}
	)
	grants := func(_ context.Context, id int64) (*jitgate.Grant, error) {
		mu.Lock()
		defer mu.Unlock()
		if g := stored[id]; g != nil {
			c := *g
			return &c, nil
		}
		return nil, errors.New("store down")
	}
	r := NewRegistry(RegistryOptions{Grants: grants, Clock: clk, SweepEvery: 5 * time.Millisecond})
	defer r.Close()
	grant := func(id int64, ends time.Duration) *jitgate.Grant {
		g := &jitgate.Grant{ID: id, State: jitgate.GrantActive, EndsAt: t0.Add(ends)}
		mu.Lock()
		stored[id] = g
		mu.Unlock()
		c := *g
		return &c
	}

	// 1: expires on the clock; an extension first moves its end.
	g1 := grant(1, time.Minute)
	s1 := &killed{}
	tr1, ok := r.Add(s1, g1)
	if !ok {
		t.Fatal("Add refused")
	}
	ext := *g1
	ext.EndsAt = t0.Add(2 * time.Minute)
	mu.Lock()
	stored[1].EndsAt = ext.EndsAt // the store is the truth the sweep reads
	mu.Unlock()
	r.OnEvent(jitgate.Event{Kind: jitgate.EventGrantExtended, Grant: &ext})
	eventually(t, "the extension", func() bool { return tr1.Deadline().Equal(ext.EndsAt) })
	clk.Advance(90 * time.Second)
	time.Sleep(20 * time.Millisecond)
	if s1.get() != "" {
		t.Fatalf("killed before its extended end: %s", s1.get())
	}
	clk.Advance(30 * time.Second)
	eventually(t, "the kill at the end", func() bool { return strings.HasPrefix(s1.get(), "grant 1 expired at 2026-12-02T10:02:00Z") })

	// 2: revoked by an event of this instance.
	g2 := grant(2, time.Hour)
	s2 := &killed{}
	r.Add(s2, g2)
	rev := *g2
	rev.State, rev.EndedBy, rev.EndReason = jitgate.GrantRevoked, "bob", "done"
	r.OnEvent(jitgate.Event{Kind: jitgate.EventGrantEnded, Grant: &rev})
	if s2.get() != "grant 2 was revoked by bob: done" {
		t.Fatalf("revoke: %q", s2.get())
	}

	// 3: revoked on another instance: the sweep finds it; while the store is down it keeps
	// its known end.
	g3 := grant(3, time.Hour)
	s3 := &killed{}
	tr3, _ := r.Add(s3, g3)
	mu.Lock()
	stored[3].State, stored[3].EndedBy, stored[3].EndReason = jitgate.GrantRevoked, "carol", "elsewhere"
	mu.Unlock()
	eventually(t, "the sweep's kill", func() bool { return s3.get() == "grant 3 was revoked by carol: elsewhere" })
	tr3.Remove()
	tr3.Remove() // twice is harmless

	// Shutdown kills the rest and refuses new sessions.
	g4 := grant(4, time.Hour)
	s4 := &killed{}
	r.Add(s4, g4)
	r.Shutdown("jitgate is shutting down")
	if s4.get() != "jitgate is shutting down" {
		t.Fatalf("shutdown: %q", s4.get())
	}
	if _, ok := r.Add(&killed{}, g4); ok {
		t.Fatal("a session added after Shutdown")
	}
}

// failingEnds is an Engine whose EndSession fails its first fail calls.
type failingEnds struct {
	Engine
	mu          sync.Mutex
	fail, calls int
}

func (f *failingEnds) EndSession(ctx context.Context, s *jitgate.Session) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if _, ok := ctx.Deadline(); !ok {
		return errors.New("no deadline")
	}
	if f.calls <= f.fail {
		return errors.New("store unavailable")
	}
	return nil
}

func (f *failingEnds) RecordAudit(context.Context, []*jitgate.AuditEvent) error { return nil }

// A session's end that the store could not take is tried again, a bounded number of times.
func TestRecordEndTriesAgain(t *testing.T) {
	defer func(p time.Duration) { endRecordPause = p }(endRecordPause)
	endRecordPause = time.Millisecond
	for _, c := range []struct{ fail, calls int }{{0, 1}, {2, 3}, {10, 3}} {
		eng := &failingEnds{fail: c.fail}
		rec := NewRecorder(eng, slog.New(slog.DiscardHandler), 0, 0, 0)
		var logged strings.Builder
		RecordEnd(eng, rec, slog.New(slog.NewTextHandler(&logged, nil)), &jitgate.Session{ID: 7})
		rec.Close()
		if eng.calls != c.calls {
			t.Errorf("failing %d times: %d attempts, want %d", c.fail, eng.calls, c.calls)
		}
		if gaveUp := strings.Contains(logged.String(), "until this instance is recovered"); gaveUp != (c.fail >= c.calls) {
			t.Errorf("failing %d times: logged %q", c.fail, logged.String())
		}
	}
}
