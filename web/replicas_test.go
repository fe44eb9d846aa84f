package web_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/httpapi"
	"github.com/jitgate/jitgate/internal/testdb"
)

// A web session started on one replica works on another on the same store (behind a load
// balancer a browser's requests land anywhere), CSRF token included, and signing out on one
// ends it on both.
func TestWebSessionOnAnyReplica(t *testing.T) {
	b := testdb.Postgres(t)
	a, _, _ := uiServer(t, b, "alice")
	bURL, _, _ := uiServer(t, b, "alice")
	c := browserless() // cookies are per host, not per port: both replicas see the session cookie
	devSignIn(t, c, a, "alice")
	page := fetch(t, c, bURL+"/request")
	m := csrfField.FindStringSubmatch(page)
	if m == nil || !strings.Contains(page, `value="app-db/read"`) {
		t.Fatalf("replica B does not know the session started on A: %s", page)
	}
	resp, err := c.PostForm(bURL+"/request", url.Values{"csrf": {m[1]}, "access": {"app-db/read"}, "duration": {"1h"}, "reason": {"x"}})
	if body(t, resp, err); resp.StatusCode != http.StatusSeeOther || !strings.Contains(resp.Header.Get("Location"), "Request+1") {
		t.Fatalf("POST on B with A's session: %s %s", resp.Status, resp.Header.Get("Location"))
	}
	resp, err = c.PostForm(a+"/signout", url.Values{"csrf": {m[1]}})
	if body(t, resp, err); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign out on A: %s", resp.Status)
	}
	resp, err = c.Get(bURL + "/inbox")
	if body(t, resp, err); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/signin") {
		t.Fatalf("B after signing out on A: %s %s", resp.Status, resp.Header.Get("Location"))
	}
}

// jitgate login behind a load balancer: the browser confirms on replica A, the CLI trades the
// one-time code at replica B; the code works once.
func TestCLILoginOnAnyReplica(t *testing.T) {
	b := testdb.Postgres(t)
	a, _, _ := uiServer(t, b, "carol")
	bURL, _, _ := uiServer(t, b, "carol")
	browser := browserless()
	devSignIn(t, browser, a, "carol")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	browser.CheckRedirect = nil // a browser follows the redirect to the CLI's loopback port
	codes := make(chan string, 1)
	bt, err := httpapi.BrowserLogin(ctx, bURL, func(u string) error {
		go func() { codes <- confirmCLI(t, browser, a, u, "<strong>carol</strong>") }() // on A
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if who, err := httpapi.NewClient(bURL, bt.Token).Whoami(ctx); err != nil || who.User != "carol" {
		t.Fatalf("whoami on B with the token from A's code: %+v %v", who, err)
	}
	// Traded once: the same code again, on A or B, is refused.
	code := <-codes
	if code == "" {
		t.Fatal("no code reached the CLI")
	}
	for _, srv := range []string{a, bURL} {
		resp, err := http.PostForm(srv+"/cli/token", url.Values{"code": {code}, "verifier": {"whatever"}})
		if body(t, resp, err); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("the code a second time at %s: %s", srv, resp.Status)
		}
	}
}
