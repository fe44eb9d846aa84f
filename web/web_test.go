package web_test

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/jitgate/jitgate/httpapi"
	"github.com/jitgate/jitgate/internal/testdb"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/policy"
	"github.com/jitgate/jitgate/web"
	"github.com/prometheus/client_golang/prometheus"
)

// server runs the API with the UI, --dev users alice, bob and carol.
func server(t *testing.T) string {
	t.Helper()
	u, _, _ := uiServer(t, testdb.SQLite(t), "alice", "bob", "carol")
	return u
}

// uiServer runs the API with the UI on a store on b, signing in devUsers with a click, and
// returns its URL, its engine and its directory.
func uiServer(t *testing.T, b testdb.Backend, devUsers ...string) (string, *access.Engine, jitgate.Directory) {
	t.Helper()
	eng, _, dir := testenv.Build(t, testenv.Config, b, nil, func(*policy.Set) map[string]jitgate.Provisioner { return nil })
	api := httpapi.New(eng, nil, prometheus.NewRegistry())
	ui, err := web.New(web.Options{Engine: eng, DevUsers: devUsers})
	if err != nil {
		t.Fatal(err)
	}
	api.Mount(ui)
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return srv.URL, eng, dir
}

var csrfField = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

// browserless is an HTTP client with cookies that does not follow redirects.
func browserless() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func body(t *testing.T, resp *http.Response, err error) string {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func fetch(t *testing.T, c *http.Client, u string) string {
	t.Helper()
	resp, err := c.Get(u)
	return body(t, resp, err)
}

func devSignIn(t *testing.T, c *http.Client, base, user string) {
	t.Helper()
	m := csrfField.FindStringSubmatch(fetch(t, c, base+"/signin"))
	if m == nil {
		t.Fatal("no CSRF field on the sign-in page")
	}
	resp, err := c.PostForm(base+"/signin/dev", url.Values{"csrf": {m[1]}, "user": {user}})
	body(t, resp, err)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/access" {
		t.Fatalf("dev sign-in as %s: %s %s", user, resp.Status, resp.Header.Get("Location"))
	}
}

func TestSignInAndCSRF(t *testing.T) {
	base := server(t)
	c := browserless()
	// Not signed in: pages send you to sign in, POSTs are refused.
	resp, err := c.Get(base + "/inbox")
	body(t, resp, err)
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/signin?next=%2Finbox") {
		t.Fatalf("anonymous page: %s %s", resp.Status, resp.Header.Get("Location"))
	}
	// The dev sign-in form needs its own CSRF token, and only --dev users may use it.
	resp, err = c.PostForm(base+"/signin/dev", url.Values{"user": {"alice"}})
	if b := body(t, resp, err); resp.StatusCode != http.StatusForbidden || !strings.Contains(b, "CSRF") {
		t.Fatalf("sign-in without CSRF: %s", resp.Status)
	}
	m := csrfField.FindStringSubmatch(fetch(t, c, base+"/signin"))
	resp, err = c.PostForm(base+"/signin/dev", url.Values{"csrf": {m[1]}, "user": {"mallory"}})
	if body(t, resp, err); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("sign-in as a stranger: %s", resp.Status)
	}
	devSignIn(t, c, base, "alice")
	page := fetch(t, c, base+"/request")
	if !strings.Contains(page, `value="app-db/read"`) || strings.Contains(page, `value="app-db/admin"`) == false {
		t.Fatalf("request page: %s", page)
	}
	csrf := csrfField.FindStringSubmatch(page)[1]
	// A POST without the session's CSRF token is refused; with it, it works.
	resp, err = c.PostForm(base+"/request", url.Values{"access": {"app-db/read"}, "duration": {"1h"}, "reason": {"x"}})
	if body(t, resp, err); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("POST without CSRF: %s", resp.Status)
	}
	resp, err = c.PostForm(base+"/request", url.Values{"csrf": {csrf}, "access": {"app-db/read"}, "duration": {"1h"}, "reason": {"x"}})
	if body(t, resp, err); resp.StatusCode != http.StatusSeeOther || !strings.Contains(resp.Header.Get("Location"), "Request+1") {
		t.Fatalf("POST with CSRF: %s %s", resp.Status, resp.Header.Get("Location"))
	}
	// Bad input gets a page naming the problem, not a crash.
	resp, err = c.PostForm(base+"/request", url.Values{"csrf": {csrf}, "access": {"app-db/read"}, "duration": {"forever"}, "reason": {"x"}})
	if b := body(t, resp, err); resp.StatusCode != http.StatusBadRequest || !strings.Contains(b, "duration") {
		t.Fatalf("bad duration: %s", resp.Status)
	}
	resp, err = c.Get(base + "/grants/999")
	if body(t, resp, err); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("missing grant: %s", resp.Status)
	}
	// Security headers.
	resp, err = c.Get(base + "/access")
	body(t, resp, err)
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Fatalf("headers: %v", resp.Header)
	}
	// Signing out ends the session: the token is revoked.
	resp, err = c.PostForm(base+"/signout", url.Values{"csrf": {csrf}})
	body(t, resp, err)
	resp, err = c.Get(base + "/access")
	if body(t, resp, err); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("after sign-out: %s", resp.Status)
	}
}

// confirmCLI is the browser's part of jitgate login: it opens the confirm page u names, at
// base (which may be another replica than u's), checks that it shows want, and confirms; the
// browser (browser.CheckRedirect nil) then follows the redirect to the CLI's loopback port.
// It returns the one-time code the CLI got. It may run on a goroutine of its own: it reports
// with t.Errorf.
func confirmCLI(t *testing.T, browser *http.Client, base, u, want string) string {
	pu, err := url.Parse(u)
	if err != nil {
		t.Error(err)
		return ""
	}
	resp, err := browser.Get(base + pu.RequestURI())
	if err != nil {
		t.Error(err)
		return ""
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	page := string(b)
	m := csrfField.FindStringSubmatch(page)
	if m == nil || !strings.Contains(page, want) {
		t.Errorf("confirm page: %s", page)
		return ""
	}
	used := pu.Query()
	form := url.Values{"csrf": {m[1]}, "port": {used.Get("port")}, "state": {used.Get("state")}, "challenge": {used.Get("challenge")}}
	if resp, err = browser.PostForm(base+"/cli/login", form); err != nil {
		t.Error(err)
		return ""
	}
	resp.Body.Close()
	return resp.Request.URL.Query().Get("code")
}

// jitgate login without a token: the browser (here an HTTP client with carol's web session)
// confirms, the CLI's loopback listener gets a one-time code, and trades it for a token.
func TestCLIBrowserLogin(t *testing.T) {
	base := server(t)
	browser := browserless()
	devSignIn(t, browser, base, "carol")
	browser.CheckRedirect = nil // a browser follows the redirect to the CLI's loopback port
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bt, err := httpapi.BrowserLogin(ctx, base, func(u string) error {
		go confirmCLI(t, browser, base, u, "<strong>carol</strong> for 12 hours")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	who, err := httpapi.NewClient(base, bt.Token).Whoami(ctx)
	if err != nil || who.User != "carol" || bt.User != "carol" {
		t.Fatalf("whoami with the new token: %+v %v", who, err)
	}
	// A code with a guessed verifier is refused.
	resp, err := http.PostForm(base+"/cli/token", url.Values{"code": {"nope"}, "verifier": {"guess"}})
	if body(t, resp, err); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("bogus code: %s", resp.Status)
	}
}
