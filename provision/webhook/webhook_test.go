package webhook_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/internal/clocktest"
	"github.com/jitgate/jitgate/internal/testdb"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/policy"
	"github.com/jitgate/jitgate/provision/webhook"
)

var secret = []byte("webhook-test-secret")

const cfg = `
users: [{name: alice}, {name: bob}]
resources:
  - name: k8s
    kind: webhook
    address: URL
    secret_env: UNUSED_IN_TEST
    roles: [{name: edit, grants: [edit-binding]}]
policies:
  - name: auto
    requesters: {users: [alice]}
    resources: [k8s]
    roles: [edit]
    max_duration: 1h
    approval: {steps: [{approvers: {users: [bob]}}]}
    auto_approve: 'true'
`

// receiver stands in for the remote system: it checks every signature, fails the first
// `fail` calls with 500, and applies each idempotency key once.
type receiver struct {
	mu      sync.Mutex
	fail    int
	calls   []webhook.Payload
	applied map[string]bool
	badSigs int
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if !webhook.Verify(secret, r.Header.Get(webhook.HeaderTimestamp), r.Header.Get(webhook.HeaderSignature), body) {
		rc.badSigs++
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var p webhook.Payload
	if err := json.Unmarshal(body, &p); err != nil || p.IdempotencyKey != r.Header.Get(webhook.HeaderIdempotencyKey) {
		http.Error(w, "bad payload", http.StatusBadRequest)
		return
	}
	rc.calls = append(rc.calls, p)
	if rc.fail > 0 {
		rc.fail--
		http.Error(w, "upstream exploded", http.StatusInternalServerError)
		return
	}
	if rc.applied[p.IdempotencyKey] {
		w.WriteHeader(http.StatusOK) // already applied: say yes, do nothing
		return
	}
	rc.applied[p.IdempotencyKey] = true
	w.WriteHeader(http.StatusNoContent)
}

func TestWebhookProvisioner(t *testing.T) {
	rc := &receiver{fail: 1, applied: map[string]bool{}}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	clk := clocktest.New(time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC))
	var prov *webhook.Provisioner
	eng, _, dir := testenv.Build(t, strings.Replace(cfg, "URL", srv.URL+"/jit", 1), testdb.SQLite(t), clk,
		func(set *policy.Set) map[string]jitgate.Provisioner {
			var err error
			if prov, err = webhook.New(set.Resource("k8s"), secret, srv.Client()); err != nil {
				t.Fatal(err)
			}
			return map[string]jitgate.Provisioner{"k8s": prov}
		})
	alice, bob := testenv.User(t, dir, "alice"), testenv.User(t, dir, "bob")
	ctx := alice
	r, err := eng.Submit(alice, jitgate.NewRequest{Resource: "k8s", Role: "edit", Duration: 30 * time.Minute, Reason: "deploy"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eng.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	g, err := eng.GetGrant(alice, r.GrantID)
	if err != nil {
		t.Fatal(err)
	}
	if g.Provision.State != jitgate.ProvisionStateGranting || !strings.Contains(g.Provision.LastError, "500 Internal Server Error: upstream exploded") {
		t.Fatalf("after a 500: %+v", g.Provision)
	}
	clk.Advance(time.Second) // the backoff
	if _, err := eng.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if g, _ = eng.GetGrant(alice, r.GrantID); g.Provision.State != jitgate.ProvisionStateGranted || g.Provision.LastError != "" {
		t.Fatalf("after the retry: %+v", g.Provision)
	}
	if _, err := eng.Revoke(bob, r.GrantID, "done"); err != nil {
		t.Fatal(err)
	}
	if _, err := eng.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if g, _ = eng.GetGrant(alice, r.GrantID); g.Provision.State != jitgate.ProvisionStateRevoked {
		t.Fatalf("after revoke: %+v", g.Provision)
	}

	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.badSigs != 0 || len(rc.calls) != 3 {
		t.Fatalf("%d bad signatures, calls %+v", rc.badSigs, rc.calls)
	}
	first, retry, revoke := rc.calls[0], rc.calls[1], rc.calls[2]
	if first.Action != "grant" || retry.IdempotencyKey != first.IdempotencyKey || revoke.Action != "revoke" || revoke.IdempotencyKey == first.IdempotencyKey {
		t.Fatalf("keys: %+v", rc.calls)
	}
	if first.Grant.User != "alice" || first.Grant.Role != "edit" || first.Grant.Grants[0] != "edit-binding" || revoke.Grant.EndReason != "done" {
		t.Fatalf("payloads: %+v", rc.calls)
	}
	if len(rc.applied) != 2 {
		t.Fatalf("applied %v", rc.applied)
	}
}

// A delivery replayed with the same key changes nothing; a forged or altered one is refused.
func TestSignatureAndIdempotency(t *testing.T) {
	rc := &receiver{applied: map[string]bool{}}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	res := &jitgate.Resource{Name: "k8s", Kind: jitgate.KindWebhook, Address: srv.URL, Roles: []jitgate.Role{{Name: "edit"}}}
	p, err := webhook.New(res, secret, nil)
	if err != nil {
		t.Fatal(err)
	}
	g := &jitgate.Grant{ID: 3, User: "alice", Role: "edit", EndsAt: time.Unix(1e9, 0)}
	for range 2 {
		if err := p.Grant(t.Context(), g); err != nil {
			t.Fatal(err)
		}
	}
	if len(rc.calls) != 2 || len(rc.applied) != 1 {
		t.Fatalf("calls %d applied %d", len(rc.calls), len(rc.applied))
	}
	forged, _ := webhook.New(res, []byte("not the secret"), nil)
	if err := forged.Grant(t.Context(), g); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("forged delivery: %v", err)
	}
	if webhook.Verify(secret, "1", webhook.Sign(secret, "1", []byte(`{"a":1}`)), []byte(`{"a":2}`)) {
		t.Fatal("an altered body verified")
	}
	if _, err := webhook.New(res, nil, nil); err == nil {
		t.Fatal("empty secret accepted")
	}
}
