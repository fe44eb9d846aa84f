package web_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/httpapi"
	"github.com/jitgate/jitgate/internal/testdb"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/policy"
	"github.com/jitgate/jitgate/web"
	"github.com/prometheus/client_golang/prometheus"
)

// An agent's request reaches its owner's inbox named as an agent's, with its owner, and what
// the agent wrote is shown as text.
func TestAgentRequestShownAsAgents(t *testing.T) {
	eng, _, dir := testenv.Build(t, testenv.Config, testdb.SQLite(t), nil, func(*policy.Set) map[string]jitgate.Provisioner { return nil })
	api := httpapi.New(eng, nil, prometheus.NewRegistry())
	ui, err := web.New(web.Options{Engine: eng, DevUsers: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	api.Mount(ui)
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)

	bot, err := dir.LookupUser(context.Background(), "triage-bot")
	if err != nil {
		t.Fatal(err)
	}
	_, err = eng.Submit(jitgate.NewContext(context.Background(), bot), jitgate.NewRequest{Resource: "app-db", Role: "read",
		Duration: 10 * time.Minute, Reason: `INC-8 <script>alert("x")</script>`})
	if err != nil {
		t.Fatal(err)
	}
	c := browserless()
	devSignIn(t, c, srv.URL, "alice")
	for _, page := range []string{"/inbox", "/requests/1"} {
		html := fetch(t, c, srv.URL+page)
		if !strings.Contains(html, "triage-bot (agent of alice)") {
			t.Errorf("%s does not name the agent and its owner:\n%s", page, html)
		}
		if strings.Contains(html, "<script>alert") || !strings.Contains(html, "&lt;script&gt;") {
			t.Errorf("%s shows the agent's reason unescaped", page)
		}
	}
}
