package web_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/internal/testdb"
)

// An agent's request reaches its owner's inbox named as an agent's, with its owner, and what
// the agent wrote is shown as text.
func TestAgentRequestShownAsAgents(t *testing.T) {
	base, eng, dir := uiServer(t, testdb.SQLite(t), "alice")

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
	devSignIn(t, c, base, "alice")
	for _, page := range []string{"/inbox", "/requests/1"} {
		html := fetch(t, c, base+page)
		if !strings.Contains(html, "triage-bot (agent of alice)") {
			t.Errorf("%s does not name the agent and its owner:\n%s", page, html)
		}
		if strings.Contains(html, "<script>alert") || !strings.Contains(html, "&lt;script&gt;") {
			t.Errorf("%s shows the agent's reason unescaped", page)
		}
	}
}
