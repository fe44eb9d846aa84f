package notify_test

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/jitgate/jitgate/internal/clocktest"
	"github.com/jitgate/jitgate/internal/testdb"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/notify"
	"github.com/jitgate/jitgate/policy"
)

// instance is one server instance's engine and notifier on a shared store, delivering to hook.
type instance struct {
	eng  *access.Engine
	clk  *clocktest.Clock
	n    *notify.Notifier
	sink notify.Sink
	as   func(string) context.Context
}

func newInstance(t *testing.T, b testdb.Backend, hookURL string, lease time.Duration) *instance {
	t.Helper()
	clk := clocktest.New(testenv.T0)
	eng, _, dir := testenv.Build(t, testenv.Config, b, clk, func(*policy.Set) map[string]jitgate.Provisioner { return nil })
	sink := &notify.Webhook{URL: hookURL, Secret: []byte("hook-secret")}
	system := jitgate.NewSystemContext(context.Background())
	n := notify.New(notify.Options{Sinks: []notify.Sink{sink}, Outbox: eng, Poll: 10 * time.Millisecond, Lease: lease,
		Backoff: func(int) time.Duration { return time.Millisecond }, Clock: clk, ExpiryWarning: 10 * time.Minute,
		Grants: func(ctx context.Context) ([]*jitgate.Grant, error) {
			return eng.ListGrants(system, access.GrantQuery{Active: true})
		}})
	eng.SetEffects(n.Effects)
	eng.Subscribe(n.Handle)
	return &instance{eng: eng, clk: clk, n: n, sink: sink, as: func(name string) context.Context { return testenv.User(t, dir, name) }}
}

func (in *instance) start(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	in.n.StartWorkers(ctx)
	t.Cleanup(func() { cancel(); in.n.Wait() })
}

// ids counts the deliveries of each message id.
func (h *hookReceiver) ids() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]int{}
	for _, m := range h.msgs {
		out[m.ID]++
	}
	return out
}

// twoInstances starts two delivering instances on one PostgreSQL store and their webhook.
func twoInstances(t *testing.T) (*hookReceiver, *instance, *instance) {
	b := testdb.Postgres(t)
	hook := &hookReceiver{secret: []byte("hook-secret")}
	srv := httptest.NewServer(hook)
	t.Cleanup(srv.Close)
	a, c := newInstance(t, b, srv.URL, time.Minute), newInstance(t, b, srv.URL, time.Minute)
	a.start(t)
	c.start(t)
	return hook, a, c
}

// Two instances deliver from one outbox: every message once, whichever instance stored it.
func TestOutboxDeliversOnceAcrossInstances(t *testing.T) {
	hook, a, c := twoInstances(t)
	users := []string{"alice", "oscar", "bob"}
	for i := range 30 {
		in := []*instance{a, c}[i%2]
		r, err := in.eng.Submit(in.as(users[i%3]), jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: time.Hour, Reason: "x"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := in.eng.Cancel(in.as(users[i%3]), r.ID); err != nil {
			t.Fatal(err)
		}
	}
	// 30 requests pending (approvers told) and 30 cancelled (requesters told).
	waitFor(t, "60 messages", func() bool { return len(hook.ids()) == 60 })
	time.Sleep(100 * time.Millisecond)
	for id, n := range hook.ids() {
		if n != 1 {
			t.Errorf("message %s delivered %d times", id, n)
		}
	}
	sa, _ := a.n.Stats()
	sc, _ := c.n.Stats()
	t.Logf("instance A delivered %d, instance B %d", sa, sc)
	if sa+sc != 60 {
		t.Fatalf("delivered %d + %d", sa, sc)
	}
}

// A message stored with its change is delivered even though the instance that stored it died
// before sending it, or after claiming it: another instance takes it once the claim's lease
// runs out.
func TestOutboxOutlivesItsInstance(t *testing.T) {
	testdb.All(t, func(t *testing.T, b testdb.Backend) {
		hook := &hookReceiver{secret: []byte("hook-secret")}
		srv := httptest.NewServer(hook)
		t.Cleanup(srv.Close)
		dead := newInstance(t, b, srv.URL, 300*time.Millisecond) // never delivers
		if _, err := dead.eng.Submit(dead.as("alice"), jitgate.NewRequest{Resource: "app-db", Role: "write", Duration: time.Hour, Reason: "x"}); err != nil {
			t.Fatal(err)
		}
		// It claimed the message, then died.
		claimed, err := dead.eng.ClaimOutbox(context.Background(), notify.SinkID(dead.sink, 0), 300*time.Millisecond, 10)
		if err != nil || len(claimed) != 1 {
			t.Fatalf("claim: %v, %v", claimed, err)
		}
		start := time.Now()
		other := newInstance(t, b, srv.URL, time.Minute)
		other.start(t)
		waitFor(t, "the message", func() bool { return len(hook.byKind(notify.KindRequestPending)) == 1 })
		if d := time.Since(start); d < 250*time.Millisecond {
			t.Fatalf("delivered after %s, inside the dead instance's lease", d)
		}
		time.Sleep(50 * time.Millisecond)
		if n := len(hook.byKind(notify.KindRequestPending)); n != 1 {
			t.Fatalf("delivered %d times", n)
		}
		// Delivered messages are purged once older than what is kept; nothing else is.
		if n, err := other.eng.PurgeOutbox(context.Background(), time.Hour); err != nil || n != 0 {
			t.Fatalf("purge of the last hour's: %d, %v", n, err)
		}
		if n, err := other.eng.PurgeOutbox(context.Background(), -time.Hour); err != nil || n != 1 {
			t.Fatalf("purge: %d, %v", n, err)
		}
	})
}

// Every instance watches for grants about to end; the owner is warned once, not once per
// instance.
func TestExpiryWarningOncePerGrant(t *testing.T) {
	hook, a, c := twoInstances(t)
	r, err := a.eng.Submit(a.as("alice"), jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: time.Hour, Reason: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.eng.Review(c.as("bob"), r.ID, jitgate.Approve, ""); err != nil {
		t.Fatal(err)
	}
	for _, in := range []*instance{a, c} {
		in.clk.Advance(51 * time.Minute)
		in.n.CheckExpiring(context.Background())
	}
	waitFor(t, "the warning", func() bool { return len(hook.byKind(notify.KindGrantExpiring)) == 1 })
	time.Sleep(100 * time.Millisecond)
	if n := len(hook.byKind(notify.KindGrantExpiring)); n != 1 {
		t.Fatalf("%d warnings", n)
	}
}
