package mcp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/jitgate/jitgate/gateway"
	"github.com/jitgate/jitgate/gateway/mysql"
	"github.com/jitgate/jitgate/gateway/postgres"
	"github.com/jitgate/jitgate/httpapi"
	"github.com/jitgate/jitgate/internal/clocktest"
	"github.com/jitgate/jitgate/internal/testdb"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/mcp"
	"github.com/jitgate/jitgate/policy"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/prometheus/client_golang/prometheus"
)

// The agent triage-bot (owner alice, in the sre group like the approvers) may request read on
// app-db (PostgreSQL through the gateway, as jg_gw_read) with bob's approval, and read on
// shop-db (MariaDB through the gateway) at once for 5 minutes.
const stackConfig = `
server:
  admins: [carol]
users:
  - {name: alice, groups: [engineering]}
  - {name: bob, groups: [sre]}
  - {name: carol, groups: [admins]}
agents:
  - {name: triage-bot, owner: alice, groups: [sre]}
resources:
  - name: app-db
    kind: postgres
    address: %s
    database: %s
    sslmode: disable
    roles:
      - {name: read, description: read every table, grants: [pg_read_all_data], upstream: {user: jg_gw_read}}
%s
policies:
  - name: agents-read
    requesters: {agents: [triage-bot]}
    resources: [app-db]
    roles: [read]
    max_duration: 15m
    require_reason: true
    approval:
      steps: [{approvers: {groups: [sre]}}]
%s
`

const mysqlResource = `  - name: shop-db
    kind: mysql
    address: %s
    database: jg_gwmy
    sslmode: disable
    roles:
      - {name: read, grants: ["SELECT ON jg_gwmy.*"], upstream: {user: jg_gwmy_read, password_env: JG_GWMY_PASSWORD}}`

const mysqlPolicy = `  - name: agents-shop
    requesters: {agents: ["*"]}
    resources: [shop-db]
    roles: [read]
    max_duration: 15m
    approval:
      steps: [{approvers: {owner: true}}]
    auto_approve: 'requester.kind == "agent" && request.duration <= duration("5m")'`

type stack struct {
	eng   *access.Engine
	clock *clocktest.Clock
	url   string
	mcp   *mcp.Server // the stdio side's server, over the REST API
	agent string      // triage-bot's API token
	bob   *httpapi.Client
}

func newStack(t *testing.T, withMySQL bool) *stack {
	t.Helper()
	pgAddr, pgDB := testdb.GatewayUpstream(t)
	myRes, myPol := "", ""
	if withMySQL {
		myAddr, _ := testdb.MySQLGatewayUpstream(t)
		t.Setenv("JG_GWMY_PASSWORD", testdb.MySQLUpstreamPassword)
		myRes, myPol = fmt.Sprintf(mysqlResource, myAddr), mysqlPolicy
	}
	clk := clocktest.New(time.Now())
	eng, set, dir := testenv.Build(t, fmt.Sprintf(stackConfig, pgAddr, pgDB, myRes, myPol), testdb.SQLite(t), clk,
		func(*policy.Set) map[string]jitgate.Provisioner { return nil })
	api := httpapi.New(eng, nil, prometheus.NewRegistry())

	// Both gateways with TLS, as deployed (the MCP server does not verify their certificate,
	// like sslmode=require).
	tlsCfg, err := gateway.SelfSigned("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	pg := postgres.New(postgres.Options{Engine: eng.GatewayService(), Upstream: postgres.ConfigUpstream(set, nil), TLS: tlsCfg})
	t.Cleanup(func() { pg.Close() })
	api.SetGatewayFor(jitgate.KindPostgres, serve(t, pg.Serve, "require"))
	if withMySQL {
		my := mysql.New(mysql.Options{Engine: eng.GatewayService(), Upstream: mysql.ConfigUpstream(set, nil), TLS: tlsCfg})
		t.Cleanup(func() { my.Close() })
		api.SetGatewayFor(jitgate.KindMySQL, serve(t, my.Serve, "require"))
	}
	api.Handle("/mcp", mcp.NewHTTPHandler(mcp.New(mcp.Options{Backend: api.Local(), PollInterval: 20 * time.Millisecond}), eng.Authenticate))
	// The server's own timeouts, short: a long tool call must outlive them (see TestLongWait).
	srv := httptest.NewUnstartedServer(api)
	srv.Config.ReadTimeout, srv.Config.WriteTimeout = time.Second, 2*time.Second
	srv.Start()
	t.Cleanup(srv.Close)

	token := func(who, user string) string {
		u, err := dir.LookupUser(context.Background(), who)
		if err != nil {
			t.Fatal(err)
		}
		secret, _, err := eng.CreateToken(jitgate.NewContext(context.Background(), u), user, time.Hour, "test")
		if err != nil {
			t.Fatal(err)
		}
		return secret
	}
	s := &stack{eng: eng, clock: clk, url: srv.URL, agent: token("alice", "triage-bot"), bob: httpapi.NewClient(srv.URL, token("carol", "bob"))}
	s.mcp = mcp.New(mcp.Options{Backend: httpapi.NewClient(srv.URL, s.agent), PollInterval: 20 * time.Millisecond})
	return s
}

// serve runs a gateway on a loopback port and says where it is.
func serve(t *testing.T, serve func(net.Listener) error, sslmode string) httpapi.GatewayInfo {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go serve(ln)
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	return httpapi.GatewayInfo{Host: host, Port: port, SSLMode: sslmode}
}

// transports runs f once over stdio (jitgate mcp's transport, over the REST API) and once
// over streamable HTTP at the server's /mcp.
func transports(t *testing.T, withMySQL bool, f func(t *testing.T, s *stack, cs *sdk.ClientSession, progress *atomic.Int32)) {
	for _, name := range []string{"stdio", "http"} {
		t.Run(name, func(t *testing.T) {
			s := newStack(t, withMySQL)
			progress := new(atomic.Int32)
			cs := s.connect(t, name, s.agent, progress)
			f(t, s, cs, progress)
		})
	}
}

func (s *stack) connect(t *testing.T, transport, token string, progress *atomic.Int32) *sdk.ClientSession {
	t.Helper()
	client := sdk.NewClient(&sdk.Implementation{Name: "test-agent", Version: "1"}, &sdk.ClientOptions{
		ProgressNotificationHandler: func(context.Context, *sdk.ProgressNotificationClientRequest) {
			if progress != nil {
				progress.Add(1)
			}
		}})
	ctx := context.Background()
	var tr sdk.Transport
	switch transport {
	case "stdio":
		c2sR, c2sW := io.Pipe()
		s2cR, s2cW := io.Pipe()
		done := make(chan error, 1)
		srvCtx, cancel := context.WithCancel(ctx)
		go func() { done <- s.mcp.ServeIO(srvCtx, c2sR, s2cW); s2cW.Close() }()
		t.Cleanup(func() {
			c2sW.Close()
			cancel()
			if err := <-done; err != nil {
				t.Errorf("ServeIO: %v", err)
			}
		})
		tr = &sdk.IOTransport{Reader: s2cR, Writer: c2sW}
	case "http":
		tr = &sdk.StreamableClientTransport{Endpoint: s.url + "/mcp", MaxRetries: -1,
			HTTPClient: &http.Client{Transport: bearer{token}, Timeout: 30 * time.Second}}
	}
	cs, err := client.Connect(ctx, tr, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

// call calls a tool and decodes its structured result; a tool error fails the test.
func call[T any](t *testing.T, cs *sdk.ClientSession, name string, args any) T {
	t.Helper()
	res, err := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if res.IsError {
		t.Fatalf("%s: tool error: %s", name, text(res))
	}
	var out T
	b, _ := json.Marshal(res.StructuredContent)
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%s: %v in %s", name, err, b)
	}
	return out
}

// toolError calls a tool that must fail with a tool error containing want.
func toolError(t *testing.T, cs *sdk.ClientSession, name string, args any, want string) {
	t.Helper()
	res, err := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		if strings.Contains(err.Error(), want) {
			return // the SDK's argument validation answers with a protocol error
		}
		t.Fatalf("%s: %v (want a tool error with %q)", name, err, want)
	}
	if !res.IsError || !strings.Contains(text(res), want) {
		t.Fatalf("%s: error=%v %q; want a tool error with %q", name, res.IsError, text(res), want)
	}
}

func text(res *sdk.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*sdk.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

// The whole loop over both transports: list, request, wait while a person approves through
// the API, query, a write outside the role refused by PostgreSQL, release, and the audit.
func TestFullLoop(t *testing.T) {
	transports(t, false, func(t *testing.T, s *stack, cs *sdk.ClientSession, progress *atomic.Int32) {
		ls := call[mcp.ListResourcesOutput](t, cs, mcp.ToolListResources, map[string]any{})
		if ls.You.Name != "triage-bot" || ls.You.Kind != "agent" || ls.You.Owner != "alice" || len(ls.Resources) != 1 {
			t.Fatalf("list_resources %+v", ls)
		}
		if r := ls.Resources[0]; r.Resource != "app-db" || r.Role != "read" || r.MaxDuration != "15m" || !r.RequireReason ||
			len(r.Approval) != 1 || r.Approval[0] != "1 of groups sre" {
			t.Fatalf("resource %+v", r)
		}
		toolError(t, cs, mcp.ToolQuery, map[string]any{"resource": "app-db", "sql": "SELECT 1"},
			"no active grant on app-db: call request_access first")

		req := call[mcp.RequestView](t, cs, mcp.ToolRequestAccess,
			map[string]any{"resource": "app-db", "role": "read", "duration": "10m", "reason": "INC-9: <b>checkout</b> errors"})
		if req.State != "pending" || req.Policy != "agents-read" || !strings.Contains(req.Next, "wait_for_decision") {
			t.Fatalf("request_access %+v", req)
		}
		// bob approves through the REST API once the agent is waiting.
		approved := make(chan error, 1)
		go func() {
			for progress.Load() == 0 {
				time.Sleep(10 * time.Millisecond)
			}
			_, err := s.bob.Review(context.Background(), req.RequestID, jitgate.Approve, "ok")
			approved <- err
		}()
		params := &sdk.CallToolParams{Name: mcp.ToolWaitForDecision, Arguments: map[string]any{"request_id": req.RequestID, "timeout": "30s"}}
		params.SetProgressToken("wait-1")
		res, err := cs.CallTool(context.Background(), params)
		if err != nil || res.IsError {
			t.Fatalf("wait_for_decision: %v %s", err, text(res))
		}
		if err := <-approved; err != nil {
			t.Fatal(err)
		}
		var decided mcp.RequestView
		b, _ := json.Marshal(res.StructuredContent)
		json.Unmarshal(b, &decided)
		if decided.State != "approved" || decided.Grant == nil || decided.Grant.State != "active" || decided.DecidedBy != "bob" {
			t.Fatalf("decision %s", b)
		}
		grantID := decided.Grant.GrantID

		q := call[mcp.QueryOutput](t, cs, mcp.ToolQuery, map[string]any{"resource": "app-db", "sql": "SELECT id, name, NULL AS nothing FROM jg_gw.items WHERE id = 1"})
		if strings.Join(q.Columns, ",") != "id,name,nothing" || q.RowCount != 1 || *q.Rows[0][0] != "1" || *q.Rows[0][1] != "widget" ||
			q.Rows[0][2] != nil || q.Truncated || q.Tag != "SELECT 1" || q.GrantID != grantID {
			t.Fatalf("query %+v", q)
		}
		toolError(t, cs, mcp.ToolQuery, map[string]any{"resource": "app-db", "sql": "INSERT INTO jg_gw.items VALUES (99, 'x')"},
			"permission denied for table items (SQLSTATE 42501)")
		toolError(t, cs, mcp.ToolQuery, map[string]any{"resource": "app-db", "sql": "SELECT 1; SELECT 2"}, "SQLSTATE 42601")

		gs := call[mcp.ListGrantsOutput](t, cs, mcp.ToolListGrants, map[string]any{})
		if len(gs.Grants) != 1 || gs.Grants[0].GrantID != grantID {
			t.Fatalf("list_grants %+v", gs)
		}
		rel := call[mcp.GrantView](t, cs, mcp.ToolReleaseAccess, map[string]any{"grant_id": grantID, "reason": "done"})
		if rel.State != "revoked" {
			t.Fatalf("release %+v", rel)
		}
		toolError(t, cs, mcp.ToolQuery, map[string]any{"resource": "app-db", "sql": "SELECT 1"}, "no active grant on app-db")

		// Every tool call is in the audit log under the agent and its owner, and the statements
		// ran in a gateway session of the agent's grant.
		evs := audit(t, s)
		calls := map[string]int{}
		for _, ev := range evs {
			if ev.Action == access.ActionToolCalled {
				if ev.Actor != "triage-bot" || ev.Details["owner"] != "alice" {
					t.Fatalf("tool call event %+v", ev)
				}
				calls[ev.Details["tool"]+"/"+ev.Details["outcome"]]++
			}
		}
		want := map[string]int{"list_resources/ok": 1, "query/error": 4, "request_access/ok": 1, "wait_for_decision/ok": 1,
			"query/ok": 1, "list_grants/ok": 1, "release_access/ok": 1}
		if fmt.Sprint(calls) != fmt.Sprint(want) {
			t.Fatalf("tool calls %v, want %v", calls, want)
		}
		waitStatements(t, s, grantID, `"owner":"alice"`, "SELECT id, name, NULL AS nothing", "INSERT INTO jg_gw.items")
	})
}

// waitStatements waits for the gateway's statement records of grant to hold every text.
func waitStatements(t *testing.T, s *stack, grant int64, texts ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var all strings.Builder
		for _, ev := range audit(t, s) {
			if ev.GrantID == grant && (ev.Action == jitgate.ActionSessionStatements || ev.Action == jitgate.ActionSessionStarted) {
				if ev.Actor != "triage-bot" {
					t.Fatalf("session event by %q: %+v", ev.Actor, ev)
				}
				b, _ := json.Marshal(ev.Details)
				all.Write(b)
				for _, st := range ev.Statements {
					fmt.Fprintf(&all, "\n%s -> %s%s", st.SQL, st.Tag, st.SQLState)
				}
			}
		}
		missing := ""
		for _, x := range texts {
			if !strings.Contains(all.String(), x) {
				missing = x
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("statement %q not recorded for grant %d: %s", missing, grant, all.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func audit(t *testing.T, s *stack) []*jitgate.AuditEvent {
	t.Helper()
	evs, err := s.eng.AuditEvents(jitgate.NewOperatorContext(context.Background(), "test"), jitgate.AuditFilter{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// grantRead has bob approve the agent's read request on app-db.
func grantRead(t *testing.T, s *stack, cs *sdk.ClientSession) int64 {
	t.Helper()
	req := call[mcp.RequestView](t, cs, mcp.ToolRequestAccess, map[string]any{"resource": "app-db", "role": "read", "duration": "10m", "reason": "INC-1"})
	r, err := s.bob.Review(context.Background(), req.RequestID, jitgate.Approve, "")
	if err != nil {
		t.Fatal(err)
	}
	return r.GrantID
}

// A query after the grant expired is a tool error; so are bad arguments, each naming its field.
func TestExpiryAndBadArguments(t *testing.T) {
	transports(t, false, func(t *testing.T, s *stack, cs *sdk.ClientSession, _ *atomic.Int32) {
		grantRead(t, s, cs)
		call[mcp.QueryOutput](t, cs, mcp.ToolQuery, map[string]any{"resource": "app-db", "sql": "SELECT 1"})
		for _, c := range []struct {
			tool string
			args map[string]any
			want string
		}{
			{mcp.ToolQuery, map[string]any{"resource": "app-db", "sql": "  "}, "sql is required"},
			{mcp.ToolQuery, map[string]any{"resource": "app-db", "sql": strings.Repeat("x", mcp.MaxSQL+1)}, "sql is 32769 bytes long"},
			{mcp.ToolQuery, map[string]any{"resource": "App DB!", "sql": "SELECT 1"}, "resource \"App DB!\" is not a valid name"},
			{mcp.ToolQuery, map[string]any{"resource": "app-db", "sql": "SELECT 1", "max_rows": 5000}, "max_rows must be from 1 to 1000"},
			{mcp.ToolQuery, map[string]any{"resource": "app-db", "sql": "SELECT 1", "max_bytes": -1}, "max_bytes must be from 1"},
			{mcp.ToolQuery, map[string]any{"resource": "app-db"}, "sql"},
			{mcp.ToolQuery, map[string]any{"resource": "app-db", "sql": 7}, "sql"},
			{mcp.ToolRequestAccess, map[string]any{"resource": "app-db", "role": "read", "duration": "forever", "reason": "x"}, "duration \"forever\" is not a duration"},
			{mcp.ToolRequestAccess, map[string]any{"resource": "app-db", "role": "read", "duration": "1h", "reason": "x"}, "exceeds policy agents-read's maximum of 15m"},
			{mcp.ToolRequestAccess, map[string]any{"resource": "app-db", "role": "admin", "duration": "5m", "reason": "x"}, "resource \"app-db\" has no role \"admin\""},
			{mcp.ToolRequestAccess, map[string]any{"resource": "app-db", "role": "read", "duration": "5m", "reason": strings.Repeat("é", 2001)}, "reason is 2001 characters long"},
			{mcp.ToolWaitForDecision, map[string]any{"request_id": 0}, "request_id must be a positive"},
			{mcp.ToolWaitForDecision, map[string]any{"request_id": 1, "timeout": "2h"}, "timeout \"2h\""},
			{mcp.ToolReleaseAccess, map[string]any{"grant_id": -3}, "grant_id must be a positive"},
			{mcp.ToolReleaseAccess, map[string]any{"grant_id": 999}, "grant 999 not found"},
		} {
			toolError(t, cs, c.tool, c.args, c.want)
		}
		// Calls the SDK refuses before a tool runs (schema, unknown tool) are audited too.
		cs.CallTool(context.Background(), &sdk.CallToolParams{Name: "drop_everything", Arguments: map[string]any{}})
		refused := map[string]bool{}
		for _, ev := range audit(t, s) {
			if ev.Action == access.ActionToolCalled && ev.Details["outcome"] == "error" {
				refused[ev.Details["tool"]+": "+ev.Details["error"]] = true
			}
		}
		for _, want := range []string{`query: validating "arguments": validating root: required: missing properties: ["sql"]`, "drop_everything: "} {
			found := false
			for k := range refused {
				found = found || strings.HasPrefix(k, want)
			}
			if !found {
				t.Errorf("no audit event for the refused call %q in %v", want, refused)
			}
		}
		// The grant ends: the engine's clock passes its end.
		s.clock.Advance(11 * time.Minute)
		if _, err := s.eng.Tick(context.Background()); err != nil {
			t.Fatal(err)
		}
		toolError(t, cs, mcp.ToolQuery, map[string]any{"resource": "app-db", "sql": "SELECT 1"}, "no active grant on app-db: call request_access first")
	})
}

// A query that would return millions of rows is cut at the cap while it streams: the agent
// reads only what it returns, the gateway's session ends, and PostgreSQL stops the query.
func TestQueryCapsStreamInBoundedMemory(t *testing.T) {
	transports(t, false, func(t *testing.T, s *stack, cs *sdk.ClientSession, _ *atomic.Int32) {
		grantRead(t, s, cs)
		const huge = "SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 5000000) g /* mcp-cap-test */"
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		q := call[mcp.QueryOutput](t, cs, mcp.ToolQuery, map[string]any{"resource": "app-db", "sql": huge, "max_rows": 100})
		runtime.ReadMemStats(&after)
		if !q.Truncated || q.RowCount != 100 || len(q.Rows) != 100 || !strings.Contains(q.Note, "cut after 100 rows") {
			t.Fatalf("row cap: truncated=%v rows=%d note=%q", q.Truncated, q.RowCount, q.Note)
		}
		// All 5M rows would be over a gigabyte; what this process allocated while the query ran
		// (agent, API and gateway alike) stays far below that.
		alloc := after.TotalAlloc - before.TotalAlloc
		t.Logf("allocated %d KiB for a query cut at 100 of 5,000,000 rows", alloc>>10)
		if alloc > 64<<20 {
			t.Fatalf("allocated %d MiB", alloc>>20)
		}
		q = call[mcp.QueryOutput](t, cs, mcp.ToolQuery, map[string]any{"resource": "app-db", "sql": huge, "max_bytes": 1000})
		// Each row is about 201 bytes of values: 4 fit in 1000.
		if !q.Truncated || q.RowCount != 4 {
			t.Fatalf("byte cap: truncated=%v rows=%d", q.Truncated, q.RowCount)
		}
		testdb.WaitUpstreamQuery(t, "mcp-cap-test", false, 10*time.Second)
	})
}

// An agent's token on the REST API gets exactly the agent's rights: it may not approve (not
// even as a member of the approvers' group), see others' requests, or mint tokens; a revoked
// token stops working on /mcp at once.
func TestAgentTokenRights(t *testing.T) {
	s := newStack(t, false)
	agent := httpapi.NewClient(s.url, s.agent)
	ctx := context.Background()
	cs := s.connect(t, "http", s.agent, nil)
	req := call[mcp.RequestView](t, cs, mcp.ToolRequestAccess, map[string]any{"resource": "app-db", "role": "read", "duration": "5m", "reason": "INC-2"})
	if _, err := agent.Review(ctx, req.RequestID, jitgate.Approve, ""); jitgate.ErrorCode(err) != jitgate.EFORBIDDEN ||
		!strings.Contains(err.Error(), "agents never approve") {
		t.Fatalf("agent approving its own request: %v", err)
	}
	if _, err := agent.CreateToken(ctx, "triage-bot", time.Hour, ""); jitgate.ErrorCode(err) != jitgate.EFORBIDDEN {
		t.Fatalf("agent minting a token: %v", err)
	}
	if _, err := agent.Submit(ctx, jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: time.Minute, Reason: "x", BreakGlass: true}); jitgate.ErrorCode(err) != jitgate.EFORBIDDEN {
		t.Fatalf("agent breaking glass: %v", err)
	}
	if _, err := agent.StandingAccess(ctx, ""); jitgate.ErrorCode(err) != jitgate.EFORBIDDEN {
		t.Fatalf("agent reading the standing-access report: %v", err)
	}
	// Revoke the agent's token (its owner may): the next MCP call over HTTP is refused.
	alc, err := s.eng.ListTokens(jitgate.NewContext(ctx, mustUser(t, "alice")))
	if err != nil || len(alc) != 1 {
		t.Fatalf("alice lists %v, %v", alc, err)
	}
	if _, err := s.eng.RevokeToken(jitgate.NewContext(ctx, mustUser(t, "alice")), alc[0].ID); err != nil {
		t.Fatal(err)
	}
	_, err = cs.CallTool(ctx, &sdk.CallToolParams{Name: mcp.ToolListGrants, Arguments: map[string]any{}})
	if err == nil || !strings.Contains(err.Error(), "Unauthorized") && !strings.Contains(err.Error(), "401") {
		t.Fatalf("call with a revoked token: %v", err)
	}
	// No token, or a forged one, never reaches the tools.
	for _, tok := range []string{"", "jg_forged"} {
		resp, err := (&http.Client{Transport: bearer{tok}}).Post(s.url+"/mcp", "application/json",
			strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("token %q: HTTP %d %s", tok, resp.StatusCode, body)
		}
	}
}

func mustUser(t *testing.T, name string) *jitgate.User {
	t.Helper()
	switch name {
	case "alice":
		return &jitgate.User{Name: "alice", Groups: []string{"engineering"}}
	}
	t.Fatalf("no user %s", name)
	return nil
}

// MySQL through its gateway: rows, and a write refused with MariaDB's own error.
func TestMySQLQuery(t *testing.T) {
	if _, err := testdb.PrepareMySQLUpstream(); err != nil && os.Getenv("CI") != "true" {
		t.Skipf("MariaDB/MySQL: %v", err)
	}
	transports(t, true, func(t *testing.T, s *stack, cs *sdk.ClientSession, _ *atomic.Int32) {
		req := call[mcp.RequestView](t, cs, mcp.ToolRequestAccess, map[string]any{"resource": "shop-db", "role": "read", "duration": "5m", "reason": "INC-3"})
		if req.State != "approved" || req.Grant == nil {
			t.Fatalf("auto-approval: %+v", req)
		}
		q := call[mcp.QueryOutput](t, cs, mcp.ToolQuery, map[string]any{"resource": "shop-db", "sql": "SELECT id, name FROM items ORDER BY id LIMIT 1"})
		if strings.Join(q.Columns, ",") != "id,name" || q.RowCount != 1 || *q.Rows[0][1] != "widget" {
			t.Fatalf("query %+v", q)
		}
		toolError(t, cs, mcp.ToolQuery, map[string]any{"resource": "shop-db", "sql": "INSERT INTO items VALUES (99, 'x')"}, "ERROR 1142 (42000)")
		q = call[mcp.QueryOutput](t, cs, mcp.ToolQuery, map[string]any{"resource": "shop-db",
			"sql": "SELECT seq FROM seq_1_to_5000000 /* mcp-cap-test */", "max_rows": 10})
		if !q.Truncated || q.RowCount != 10 {
			t.Fatalf("cap: %+v", q)
		}
		waitStatements(t, s, req.Grant.GrantID, "SELECT id, name FROM items", "INSERT INTO items")
	})
}

// A wait longer than the HTTP server's write timeout still gets its answer over HTTP.
func TestLongWait(t *testing.T) {
	s := newStack(t, false)
	cs := s.connect(t, "http", s.agent, nil)
	req := call[mcp.RequestView](t, cs, mcp.ToolRequestAccess, map[string]any{"resource": "app-db", "role": "read", "duration": "5m", "reason": "INC-4"})
	go func() {
		time.Sleep(3 * time.Second) // past the server's 2 s write timeout
		s.bob.Review(context.Background(), req.RequestID, jitgate.Approve, "")
	}()
	v := call[mcp.RequestView](t, cs, mcp.ToolWaitForDecision, map[string]any{"request_id": req.RequestID, "timeout": "1m"})
	if v.State != "approved" {
		t.Fatalf("after the wait: %+v", v)
	}
}
