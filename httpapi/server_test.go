package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/jitgate/jitgate/httpapi"
	"github.com/jitgate/jitgate/internal/testdb"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/prometheus/client_golang/prometheus"
)

type fixture struct {
	env         *testenv.Env
	srv         *httptest.Server
	tokens      map[string]string
	gatewayDown atomic.Bool // what the fixture's ready check reports
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	env := testenv.New(t, testdb.SQLite(t))
	api := httpapi.New(env.Engine, nil, prometheus.NewRegistry())
	f := &fixture{env: env, tokens: map[string]string{}}
	api.AddReadyCheck("test gateway", func() error {
		if f.gatewayDown.Load() {
			return errors.New("accept: too many open files")
		}
		return nil
	})
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	f.srv = srv
	local := jitgate.NewOperatorContext(context.Background(), "test")
	for _, u := range []string{"alice", "bob", "carol", "frank", "oscar"} {
		tok, _, err := env.Engine.CreateToken(local, u, time.Hour, "")
		if err != nil {
			t.Fatal(err)
		}
		f.tokens[u] = tok
	}
	return f
}

func (f *fixture) client(user string) *httpapi.Client {
	return httpapi.NewClient(f.srv.URL, f.tokens[user])
}

// raw sends a request with a literal body and returns the status and body.
func (f *fixture) raw(t *testing.T, user, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.Header.Set("Authorization", "Bearer "+f.tokens[user])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func wantErr(t *testing.T, err error, code string) {
	t.Helper()
	if jitgate.ErrorCode(err) != code {
		t.Fatalf("error %v (%s), want %s", err, jitgate.ErrorCode(err), code)
	}
}

func TestFlowThroughClient(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	alice, bob := f.client("alice"), f.client("bob")
	who, err := alice.Whoami(ctx)
	if err != nil || who.User != "alice" || who.Admin {
		t.Fatalf("whoami: %+v %v", who, err)
	}
	res, err := alice.Resources(ctx)
	if err != nil || len(res) != 3 || res[0].MaxDuration != "4h" {
		t.Fatalf("resources: %+v %v", res, err)
	}
	r, err := alice.Submit(ctx, jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: 90 * time.Minute, Reason: "INC-1"})
	if err != nil || r.State != jitgate.RequestPending || r.Duration != 90*time.Minute {
		t.Fatalf("submit: %+v %v", r, err)
	}
	inbox, err := bob.ListRequests(ctx, access.RequestQuery{ToReview: true})
	if err != nil || len(inbox) != 1 {
		t.Fatalf("inbox: %v %v", inbox, err)
	}
	r, err = bob.Review(ctx, r.ID, jitgate.Approve, "ok")
	if err != nil || r.State != jitgate.RequestApproved {
		t.Fatalf("approve: %+v %v", r, err)
	}
	grants, err := alice.ListGrants(ctx, access.GrantQuery{Active: true, Mine: true})
	if err != nil || len(grants) != 1 || grants[0].State != jitgate.GrantActive {
		t.Fatalf("grants: %+v %v", grants, err)
	}
	ext, err := alice.Extend(ctx, grants[0].ID, 30*time.Minute, "more")
	if err != nil || ext.ExtendsGrant != grants[0].ID {
		t.Fatalf("extend: %+v %v", ext, err)
	}
	if _, err := alice.Revoke(ctx, grants[0].ID, "done"); err != nil {
		t.Fatal(err)
	}
	ex, err := alice.Explain(ctx, "", "app-db", "read", 0)
	if err != nil || ex.Policy != "engineers-read" || ex.MaxDuration != 4*time.Hour {
		t.Fatalf("explain: %+v %v", ex, err)
	}
	page, err := f.client("carol").Audit(ctx, jitgate.AuditFilter{})
	if err != nil || len(page.Events) < 5 || page.NextAfter != page.Events[len(page.Events)-1].Seq {
		t.Fatalf("audit: %+v %v", page, err)
	}
	// Paging by sequence.
	next, err := f.client("carol").Audit(ctx, jitgate.AuditFilter{AfterSeq: page.Events[1].Seq, Limit: 2})
	if err != nil || len(next.Events) != 2 || next.Events[0].Seq != page.Events[2].Seq {
		t.Fatalf("audit page: %+v %v", next, err)
	}
	v, err := alice.VerifyAudit(ctx)
	if err != nil || !v.OK {
		t.Fatalf("verify: %+v %v", v, err)
	}
	// Alice sees the audit of her own request, not the whole log.
	if _, err := alice.Audit(ctx, jitgate.AuditFilter{}); jitgate.ErrorCode(err) != jitgate.EFORBIDDEN {
		t.Fatalf("alice lists the whole log: %v", err)
	}
	if p, err := alice.Audit(ctx, jitgate.AuditFilter{RequestID: r.ID}); err != nil || len(p.Events) == 0 {
		t.Fatalf("alice's own audit: %v", err)
	}
}

func TestAuthorization(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	r, err := f.client("bob").Submit(ctx, jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: time.Hour, Reason: "x"})
	if err != nil {
		t.Fatal(err)
	}
	// The requester approving their own request.
	_, err = f.client("bob").Review(ctx, r.ID, jitgate.Approve, "")
	wantErr(t, err, jitgate.EFORBIDDEN)
	// A user outside the approver set.
	_, err = f.client("frank").Review(ctx, r.ID, jitgate.Approve, "")
	wantErr(t, err, jitgate.EFORBIDDEN)
	// A non-admin creating tokens.
	_, err = f.client("alice").CreateToken(ctx, "alice", time.Hour, "")
	wantErr(t, err, jitgate.EFORBIDDEN)
	// An admin may.
	tok, err := f.client("carol").CreateToken(ctx, "alice", 2*time.Hour, "laptop")
	if err != nil || !strings.HasPrefix(tok.Token, jitgate.TokenPrefix) || tok.Record.User != "alice" {
		t.Fatalf("create token: %+v %v", tok, err)
	}
	// Explaining someone else's access needs admin.
	_, err = f.client("alice").Explain(ctx, "bob", "app-db", "read", 0)
	wantErr(t, err, jitgate.EFORBIDDEN)
	// The standing-access report is for admins; an unknown resource is named.
	_, err = f.client("alice").StandingAccess(ctx, "")
	wantErr(t, err, jitgate.EFORBIDDEN)
	_, err = f.client("carol").StandingAccess(ctx, "nope")
	wantErr(t, err, jitgate.ENOTFOUND)
	// Credentials are the owner's alone, and only for an active grant with a way in.
	_, err = f.client("alice").Credentials(ctx, 999)
	wantErr(t, err, jitgate.ENOTFOUND)

	// No token, a bad token, a revoked token, an expired token: 401.
	_, err = httpapi.NewClient(f.srv.URL, "").Whoami(ctx)
	wantErr(t, err, jitgate.EUNAUTHORIZED)
	_, err = httpapi.NewClient(f.srv.URL, "jg_nope").Whoami(ctx)
	wantErr(t, err, jitgate.EUNAUTHORIZED)
	fresh := httpapi.NewClient(f.srv.URL, tok.Token)
	if _, err := fresh.Whoami(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client("alice").RevokeToken(ctx, tok.Record.ID); err != nil { // owners revoke their own
		t.Fatal(err)
	}
	_, err = fresh.Whoami(ctx)
	wantErr(t, err, jitgate.EUNAUTHORIZED)
	if !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("message: %v", err)
	}
	f.env.Clock.Advance(time.Hour)
	_, err = f.client("alice").Whoami(ctx)
	wantErr(t, err, jitgate.EUNAUTHORIZED)
	if !strings.Contains(err.Error(), "expired") {
		t.Fatalf("message: %v", err)
	}
}

func TestBadInput(t *testing.T) {
	f := newFixture(t)
	cases := []struct {
		name, method, path, body string
		status                   int
		msg                      string
	}{
		{"malformed JSON", "POST", "/v1/requests", `{"resource": "app-db",`, 400, "invalid JSON body"},
		{"unknown field", "POST", "/v1/requests", `{"resource":"app-db","role":"read","duration":"1h","reason":"x","admin":true}`, 400, `unknown field "admin"`},
		{"oversized body", "POST", "/v1/requests", `{"reason":"` + strings.Repeat("x", httpapi.MaxBodyBytes) + `"}`, 413, "larger than"},
		{"invalid duration", "POST", "/v1/requests", `{"resource":"app-db","role":"read","duration":"an hour","reason":"x"}`, 400, `field "duration"`},
		{"missing duration", "POST", "/v1/requests", `{"resource":"app-db","role":"read","reason":"x"}`, 400, `field "duration" is required`},
		{"wrong type", "POST", "/v1/requests", `{"resource":"app-db","role":"read","duration":60,"reason":"x"}`, 400, `field "duration" must be string`},
		{"two values", "POST", "/v1/requests", `{} {}`, 400, "more than one value"},
		{"empty body", "POST", "/v1/requests", ``, 400, "empty"},
		{"bad extend duration", "POST", "/v1/grants/1/extend", `{"by":"soon","reason":"x"}`, 400, `field "by"`},
		{"bad id", "GET", "/v1/requests/abc", ``, 400, "invalid id"},
		{"bad filter", "GET", "/v1/requests?mine=maybe", ``, 400, `"mine"`},
		{"bad state", "GET", "/v1/requests?state=open", ``, 400, "unknown state"},
		{"bad since", "GET", "/v1/audit?since=yesterday", ``, 400, `"since"`},
		{"unknown endpoint", "GET", "/v1/nope", ``, 404, "no API endpoint"},
		{"missing request", "GET", "/v1/requests/999", ``, 404, "not found"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body := f.raw(t, "carol", c.method, c.path, c.body)
			var eb httpapi.ErrorBody
			if err := json.Unmarshal([]byte(body), &eb); err != nil {
				t.Fatalf("error body is not JSON: %s", body)
			}
			if status != c.status || !strings.Contains(eb.Error.Message, c.msg) || eb.Error.Code == "" {
				t.Fatalf("%d %s\nwant %d containing %q", status, body, c.status, c.msg)
			}
		})
	}
	if status, body := f.raw(t, "", "GET", "/v1/whoami", ""); status != 401 || !strings.Contains(body, "EUNAUTHORIZED") {
		t.Fatalf("no token: %d %s", status, body)
	}
}

// A body over the limit gets 413 and an error body, whether its size is declared (with
// "Expect: 100-continue", as curl sends above 1 MB: answered before the body is sent) or not
// (chunked: cut at the limit).
func TestOversizedBody(t *testing.T) {
	f := newFixture(t)
	big := strings.Repeat("x", 4<<20)
	for _, chunked := range []bool{false, true} {
		var body io.Reader = strings.NewReader(`{"reason":"` + big + `"}`)
		if chunked {
			body = io.MultiReader(body) // hides the length: sent chunked
		}
		req, err := http.NewRequest("POST", f.srv.URL+"/v1/requests", body)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+f.tokens["alice"])
		req.Header.Set("Content-Type", "application/json")
		if !chunked {
			req.Header.Set("Expect", "100-continue")
		}
		client := &http.Client{Transport: &http.Transport{ExpectContinueTimeout: 5 * time.Second}}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("chunked=%v: %v (want an answer, not a broken connection)", chunked, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var eb httpapi.ErrorBody
		if resp.StatusCode != 413 || json.Unmarshal(b, &eb) != nil || !strings.Contains(eb.Error.Message, "larger than 65536 bytes") {
			t.Errorf("chunked=%v: %d %s", chunked, resp.StatusCode, b)
		}
	}
}

func TestHealthAndMetrics(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.client("oscar").Submit(ctx, jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: 10 * time.Minute, Reason: "x"}); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"/healthz": "ok",
		"/readyz":  "ok",
		"/metrics": `jitgate_grants{state="active"} 1`,
	} {
		status, body := f.raw(t, "", "GET", path, "")
		if status != 200 || !strings.Contains(body, want) {
			t.Errorf("%s: %d %s", path, status, body)
		}
	}
	_, body := f.raw(t, "", "GET", "/metrics", "")
	for _, m := range []string{"jitgate_requests_created_total 1", `jitgate_requests_decided_total{state="approved"} 1`,
		"jitgate_time_to_decision_seconds_count 1", "jitgate_requests_pending 0", "jitgate_store_up 1"} {
		if !strings.Contains(body, m) {
			t.Errorf("metrics lack %q", m)
		}
	}
	// A gateway that cannot accept connections turns readiness red, and back.
	f.gatewayDown.Store(true)
	if status, body := f.raw(t, "", "GET", "/readyz", ""); status != 503 || !strings.Contains(body, "test gateway not ready") {
		t.Fatalf("readyz with the gateway down: %d %s", status, body)
	}
	f.gatewayDown.Store(false)
	if status, _ := f.raw(t, "", "GET", "/readyz", ""); status != 200 {
		t.Fatalf("readyz with the gateway back: %d", status)
	}
	// Fail closed: with the store gone, readiness fails and API calls are refused.
	f.env.Store.Close()
	if status, _ := f.raw(t, "", "GET", "/readyz", ""); status != 503 {
		t.Fatalf("readyz with the store closed: %d", status)
	}
	if status, body := f.raw(t, "oscar", "GET", "/v1/whoami", ""); status < 500 {
		t.Fatalf("whoami with the store closed: %d %s", status, body)
	}
}
