package notify_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/jitgate/jitgate/internal/clocktest"
	"github.com/jitgate/jitgate/internal/signing"
	"github.com/jitgate/jitgate/internal/testdb"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/notify"
	"github.com/jitgate/jitgate/policy"
)

// slackStandIn records what a Slack incoming webhook would receive. It can fail the next n
// posts with 500, or be "down" (every post fails).
type slackStandIn struct {
	mu    sync.Mutex
	posts []notify.SlackMessage
	fail  int
	down  bool
	tries int
}

func (s *slackStandIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var m notify.SlackMessage
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tries++
	if s.down || s.fail > 0 {
		s.fail--
		http.Error(w, "rate_limited", http.StatusInternalServerError)
		return
	}
	if err := json.Unmarshal(body, &m); err != nil || m.Text == "" || len(m.Blocks) == 0 {
		http.Error(w, "invalid_payload", http.StatusBadRequest)
		return
	}
	s.posts = append(s.posts, m)
	w.Write([]byte("ok"))
}

func (s *slackStandIn) texts() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, p := range s.posts {
		out = append(out, p.Text)
	}
	return out
}

// hookReceiver is a generic webhook receiver that checks signatures.
type hookReceiver struct {
	mu      sync.Mutex
	secret  []byte
	msgs    []notify.Message
	badSigs int
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	if !signing.Verify(h.secret, r.Header.Get(signing.HeaderTimestamp), r.Header.Get(signing.HeaderSignature), body) {
		h.badSigs++
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var m notify.Message
	if err := json.Unmarshal(body, &m); err != nil || r.Header.Get("Idempotency-Key") != m.ID {
		http.Error(w, "bad payload", http.StatusBadRequest)
		return
	}
	h.msgs = append(h.msgs, m)
}

// byKind returns the recipients of each message of kind, in arrival order.
func (h *hookReceiver) byKind(kind string) [][]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out [][]string
	for _, m := range h.msgs {
		if m.Kind == kind {
			out = append(out, m.Recipients)
		}
	}
	return out
}

type fixture struct {
	eng   *access.Engine
	clk   *clocktest.Clock
	n     *notify.Notifier
	slack *slackStandIn
	hook  *hookReceiver
	as    func(string) context.Context
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{clk: clocktest.New(testenv.T0), slack: &slackStandIn{}, hook: &hookReceiver{secret: []byte("hook-secret")}}
	slackSrv := httptest.NewServer(f.slack)
	hookSrv := httptest.NewServer(f.hook)
	t.Cleanup(slackSrv.Close)
	t.Cleanup(hookSrv.Close)
	eng, _, dir := testenv.Build(t, testenv.Config, testdb.SQLite(t), f.clk, func(*policy.Set) map[string]jitgate.Provisioner { return nil })
	f.eng = eng
	f.as = func(name string) context.Context { return testenv.User(t, dir, name) }
	system := jitgate.NewSystemContext(context.Background())
	f.n = notify.New(notify.Options{
		Sinks: []notify.Sink{
			&notify.Slack{URL: slackSrv.URL, Members: map[string]string{"bob": "U0BOB"}},
			&notify.Webhook{URL: hookSrv.URL, Secret: f.hook.secret},
		},
		BaseURL: "https://jitgate.example.com/", ExpiryWarning: 10 * time.Minute, Clock: f.clk,
		Backoff: func(int) time.Duration { return time.Millisecond }, Outbox: eng, Poll: 10 * time.Millisecond,
		Grants: func(ctx context.Context) ([]*jitgate.Grant, error) {
			return eng.ListGrants(system, access.GrantQuery{Active: true})
		},
	})
	eng.SetEffects(f.n.Effects)
	eng.Subscribe(f.n.Handle)
	ctx, cancel := context.WithCancel(context.Background())
	// The workers only; the expiry watcher is driven by hand with CheckExpiring.
	f.n.StartWorkers(ctx)
	t.Cleanup(func() { cancel(); f.n.Wait() })
	return f
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The right people hear of each step, on both sinks.
func TestWhoIsTold(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	r, err := f.eng.Submit(f.as("alice"), jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: time.Hour, Reason: "INC-7"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the approvers' notice", func() bool { return len(f.hook.byKind(notify.KindRequestPending)) == 1 })
	if got := f.hook.byKind(notify.KindRequestPending)[0]; !slices.Equal(got, []string{"bob", "dave", "erin"}) {
		t.Fatalf("pending went to %v, want the sre approvers", got)
	}
	r, err = f.eng.Review(f.as("bob"), r.ID, jitgate.Approve, "ok")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the decision", func() bool { return len(f.hook.byKind(notify.KindRequestDecided)) == 1 })
	if got := f.hook.byKind(notify.KindRequestDecided)[0]; !slices.Equal(got, []string{"alice"}) {
		t.Fatalf("decision went to %v", got)
	}

	// Ten minutes before the end, the owner is warned, once.
	f.clk.Advance(49 * time.Minute)
	f.n.CheckExpiring(ctx)
	f.clk.Advance(time.Minute)
	f.n.CheckExpiring(ctx)
	f.n.CheckExpiring(ctx)
	waitFor(t, "the expiry warning", func() bool { return len(f.hook.byKind(notify.KindGrantExpiring)) == 1 })
	time.Sleep(20 * time.Millisecond)
	if got := f.hook.byKind(notify.KindGrantExpiring); len(got) != 1 || !slices.Equal(got[0], []string{"alice"}) {
		t.Fatalf("expiry warnings %v", got)
	}
	if _, err := f.eng.Revoke(f.as("bob"), r.GrantID, "done"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the end", func() bool { return len(f.hook.byKind(notify.KindGrantEnded)) == 1 })

	// Break-glass tells every approver of the policy, loudly.
	if _, err := f.eng.Submit(f.as("oscar"), jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: 45 * time.Minute, Reason: "prod down", BreakGlass: true}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "break-glass", func() bool { return len(f.hook.byKind(notify.KindBreakGlass)) == 1 })
	if got := f.hook.byKind(notify.KindBreakGlass)[0]; !slices.Equal(got, []string{"bob", "dave", "erin"}) {
		t.Fatalf("break-glass went to %v", got)
	}

	// Slack saw the same story: mentions by member ID where known, a follow-up on decision.
	waitFor(t, "slack", func() bool {
		f.hook.mu.Lock()
		n := len(f.hook.msgs)
		f.hook.mu.Unlock()
		return len(f.slack.texts()) == n
	})
	texts := strings.Join(f.slack.texts(), "\n")
	for _, want := range []string{
		"<@U0BOB> @dave @erin alice requests app-db/read for 1h",
		"@alice Request 1 for app-db/read was approved",
		"@alice Your access to app-db/read ends in 10m",
		"@alice Your access to app-db/read was revoked by bob",
		":rotating_light: BREAK-GLASS: oscar took app-db/read for 45m",
	} {
		if !strings.Contains(texts, want) {
			t.Errorf("slack lacks %q in:\n%s", want, texts)
		}
	}
	f.slack.mu.Lock()
	defer f.slack.mu.Unlock()
	var review *notify.SlackBlock
	for _, b := range f.slack.posts[0].Blocks {
		if b.Type == "actions" {
			review = &b
		}
	}
	if review == nil || review.Elements[0].URL != "https://jitgate.example.com/requests/1" {
		t.Fatalf("no review link in %+v", f.slack.posts[0].Blocks)
	}
	if f.hook.badSigs != 0 {
		t.Fatalf("%d bad signatures", f.hook.badSigs)
	}
}

// An agent's request goes to its owner named as an agent's; its owner hears of its grant.
func TestAgentRequestsNameTheOwner(t *testing.T) {
	f := newFixture(t)
	r, err := f.eng.Submit(f.as("triage-bot"), jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: 10 * time.Minute, Reason: "INC-9"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the owner's notice", func() bool { return len(f.hook.byKind(notify.KindRequestPending)) == 1 })
	if got := f.hook.byKind(notify.KindRequestPending)[0]; !slices.Equal(got, []string{"alice"}) {
		t.Fatalf("pending went to %v, want the owner", got)
	}
	if _, err := f.eng.Review(f.as("alice"), r.ID, jitgate.Approve, ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the grant's start", func() bool { return len(f.hook.byKind(notify.KindGrantStarted)) == 1 })
	if got := f.hook.byKind(notify.KindGrantStarted)[0]; !slices.Equal(got, []string{"alice", "triage-bot"}) {
		t.Fatalf("grant.started went to %v", got)
	}
	waitFor(t, "slack", func() bool { return len(f.slack.texts()) >= 3 })
	texts := strings.Join(f.slack.texts(), "\n")
	for _, want := range []string{
		"@alice triage-bot (agent of alice) requests app-db/read for 10m",
		"Request 1 by triage-bot (agent of alice) for app-db/read was approved",
		"triage-bot's access (agent of alice) to app-db/read is active until",
	} {
		if !strings.Contains(texts, want) {
			t.Errorf("slack lacks %q in:\n%s", want, texts)
		}
	}
	f.slack.mu.Lock()
	defer f.slack.mu.Unlock()
	fields := fmt.Sprint(f.slack.posts[0].Blocks)
	if !strings.Contains(fields, "*Requester*\ntriage-bot (agent of alice)") && !strings.Contains(fields, "@triage-bot (agent of @alice)") {
		t.Errorf("the requester field does not name the owner: %s", fields)
	}
}

// A change another server instance announced was told to people there: it is not told twice.
func TestRemoteEventsAreNotRetold(t *testing.T) {
	f := newFixture(t)
	r := &jitgate.Request{ID: 7, Requester: "alice", Resource: "app-db", Role: "read", Duration: time.Hour, Steps: 1}
	if items := f.n.Effects(jitgate.Event{Kind: jitgate.EventRequestPending, Request: r, Notify: []string{"bob"}, Remote: true}); len(items) != 0 {
		t.Fatalf("a remote event makes %d outbox items", len(items))
	}
	if items := f.n.Effects(jitgate.Event{Kind: jitgate.EventRequestPending, Request: r, Notify: []string{"bob"}}); len(items) != 2 {
		t.Fatalf("a local event makes %d outbox items, want one per sink", len(items))
	}
}

// A failing receiver is retried; a dead one never holds up or fails the request flow, and the
// loss shows in the stats.
func TestDeliveryFailures(t *testing.T) {
	f := newFixture(t)
	f.slack.fail = 2
	if _, err := f.eng.Submit(f.as("alice"), jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: time.Hour, Reason: "x"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the retried post", func() bool { return len(f.slack.texts()) == 1 })
	f.slack.mu.Lock()
	tries := f.slack.tries
	f.slack.mu.Unlock()
	if tries != 3 {
		t.Fatalf("%d tries, want 3", tries)
	}

	f.slack.mu.Lock()
	f.slack.down = true
	f.slack.mu.Unlock()
	start := time.Now()
	for i, u := range []string{"oscar", "bob"} {
		if _, err := f.eng.Submit(f.as(u), jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: time.Hour, Reason: "x"}); err != nil {
			t.Fatalf("request %d while slack is down: %v", i, err)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("requests took %s while slack was down", d)
	}
	waitFor(t, "the failures to be counted", func() bool { _, failed := f.n.Stats(); return failed >= 2 })
	if sent, _ := f.n.Stats(); sent < 4 { // the webhook got everything meanwhile
		t.Fatalf("sent %v", sent)
	}
}

// A hostile reason and comment reach Slack as text, not markup (no mention, no disguised link),
// and reach both sinks without terminal controls.
func TestHostileTextIsEscaped(t *testing.T) {
	f := newFixture(t)
	reason := "<!channel> see <https://evil.example|the runbook> & \x1b[2K\u202edone"
	r, err := f.eng.Submit(f.as("alice"), jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: time.Hour, Reason: reason})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.eng.Review(f.as("bob"), r.ID, jitgate.Deny, "no <@U0BOB>\x1b]52;c;eA==\x07"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both messages", func() bool {
		f.slack.mu.Lock()
		defer f.slack.mu.Unlock()
		return len(f.slack.posts) == 2 && len(f.hook.byKind(notify.KindRequestDecided)) == 1
	})
	f.slack.mu.Lock()
	defer f.slack.mu.Unlock()
	var all []string
	for _, p := range f.slack.posts {
		all = append(all, p.Text)
		for _, b := range p.Blocks {
			if b.Text != nil {
				all = append(all, b.Text.Text)
			}
		}
	}
	text := strings.Join(all, "\n")
	for _, bad := range []string{"<!channel>", "<https://evil", "<@U0BOB>\\u001b", "\x1b", "\x07", "\u202e"} {
		if strings.Contains(text, bad) {
			t.Errorf("slack text holds %q:\n%s", bad, text)
		}
	}
	for _, want := range []string{"&lt;!channel&gt; see &lt;https://evil.example|the runbook&gt; &amp; \\u001b[2K\\u202edone", "no &lt;@U0BOB&gt;\\u001b]52"} {
		if !strings.Contains(text, want) {
			t.Errorf("slack text lacks %q:\n%s", want, text)
		}
	}
	f.hook.mu.Lock()
	defer f.hook.mu.Unlock()
	for _, m := range f.hook.msgs {
		if m.Kind != notify.KindRequestPending && m.Kind != notify.KindRequestDecided {
			continue
		}
		if strings.ContainsAny(m.Text, "\x1b\x07\u202e") {
			t.Errorf("webhook %s text holds a control: %q", m.Kind, m.Text)
		}
	}
}
