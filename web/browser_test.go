package web_test

import (
	"context"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/httpapi"
	"github.com/jitgate/jitgate/internal/testdb"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/testidp"
	"github.com/jitgate/jitgate/policy"
	"github.com/jitgate/jitgate/web"
	"github.com/prometheus/client_golang/prometheus"
)

// chromium is Debian's package; .ci/run installs it.
const chromium = "/usr/bin/chromium"

// browser starts a headless Chromium of its own (its own profile, so its own cookies).
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromium); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required with CI=true (apt-get install chromium): %v", chromium, err)
		}
		t.Skipf("no %s; install Debian's chromium package, or set CI=true to make this fatal", chromium)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1100, 900))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelB(); cancelA() })
	if err := chromedp.Do(ctx); err != nil { // start the browser now
		t.Fatal(err)
	}
	return ctx
}

// run runs actions with a deadline, failing the test on error.
func run(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(tctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// get runs one action that returns a value, with a deadline, failing the test on error.
func get[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(tctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// shot saves a screenshot of the page as docs/screenshots/NAME.png when
// JITGATE_SCREENSHOTS is set (to the repository's docs/screenshots), else into a temp dir.
func shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("JITGATE_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	png := get(t, ctx, "screenshot "+name, chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// signIn signs a --dev user in with a click.
func signIn(t *testing.T, ctx context.Context, base, user string) {
	t.Helper()
	run(t, ctx, "sign in as "+user,
		chromedp.Navigate(base+"/signin"),
		chromedp.Click("#signin-"+user),
		chromedp.WaitVisible(`form.signout`),
	)
}

// ssoSignIn signs user in through the identity provider's login form.
func ssoSignIn(t *testing.T, ctx context.Context, base, user string, shots bool) {
	t.Helper()
	run(t, ctx, "start single sign-on as "+user,
		chromedp.Navigate(base+"/signin"),
		chromedp.WaitVisible(`#sso`),
	)
	if shots {
		shot(t, ctx, "signin")
	}
	run(t, ctx, "sign in at the identity provider as "+user,
		chromedp.Click(`#sso`),
		chromedp.WaitVisible(`#username`),
		chromedp.SendKeys(`#username`, user),
		chromedp.SendKeys(`#password`, testidp.Password),
		chromedp.Submit(`#password`),
		chromedp.WaitVisible(`form.signout`),
	)
	who := get(t, ctx, "who", chromedp.Text(`.who`))
	if who != user {
		t.Fatalf("signed in as %q, want %q", who, user)
	}
}

// The whole flow in two real browsers, both signed in through a real OIDC provider as users
// jitgate's config does not list (their groups come from the ID token): zoe (engineering)
// requests, yann (sre) approves in his inbox, zoe's page shows the grant active without a
// reload, she revokes it; a POST without the CSRF token is refused.
func TestBrowserFlow(t *testing.T) {
	eng, _, dir := testenv.Build(t, testenv.Config, testdb.SQLite(t), nil, func(*policy.Set) map[string]jitgate.Provisioner { return nil })
	api := httpapi.New(eng, nil, prometheus.NewRegistry())
	srv := httptest.NewUnstartedServer(api)
	srv.Start()
	defer srv.Close()
	base := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)
	idp := testidp.Start(t, base+"/auth/callback",
		testidp.User{Username: "zoe", Groups: []string{"Engineering"}},
		testidp.User{Username: "yann", Groups: []string{"sre", "not a valid group!"}})
	sso, err := web.NewOIDC(context.Background(), web.OIDCOptions{Name: "Test IdP", Issuer: idp.Issuer,
		ClientID: idp.ClientID, ClientSecret: idp.ClientSecret, RedirectURL: base + "/auth/callback", Engine: eng})
	if err != nil {
		t.Fatal(err)
	}
	ui, err := web.New(web.Options{Engine: eng, DevUsers: []string{"carol"}, SignIn: sso})
	if err != nil {
		t.Fatal(err)
	}
	api.Mount(ui)

	alice := browser(t)
	ssoSignIn(t, alice, base, "zoe", true)
	if u, err := dir.LookupUser(context.Background(), "zoe"); err != nil || !slices.Equal(u.Groups, []string{"engineering"}) {
		t.Fatalf("zoe in the directory: %+v, %v", u, err)
	}
	run(t, alice, "request access",
		chromedp.Navigate(base+"/request"),
		chromedp.WaitVisible(`#submit-request`),
		chromedp.SetValue(`input[name=duration]`, "2h"),
		chromedp.SendKeys(`textarea[name=reason]`, "INC-42: look at stuck orders"),
	)
	shot(t, alice, "request")
	run(t, alice, "submit", chromedp.Click(`#submit-request`), chromedp.WaitVisible(`#request-1`))
	shot(t, alice, "my-access-pending")

	bob := browser(t)
	ssoSignIn(t, bob, base, "yann", false)
	run(t, bob, "open the inbox", chromedp.Navigate(base+"/inbox"), chromedp.WaitVisible(`#review-1`))
	inbox := get(t, bob, "read the inbox", chromedp.Text(`#review-1`))
	for _, want := range []string{"zoe wants app-db/read for 2h", "INC-42: look at stuck orders", "step 1 of 1", "1 more approval(s) needed"} {
		if !strings.Contains(inbox, want) {
			t.Errorf("inbox lacks %q: %q", want, inbox)
		}
	}
	shot(t, bob, "inbox")
	run(t, bob, "approve",
		chromedp.SendKeys(`#review-1 input[name=comment]`, "ok, 2h"),
		chromedp.Click(`#approve-1`),
		chromedp.WaitVisible(`.flash`))

	// Alice's page was never reloaded: the live region picks the grant up.
	run(t, alice, "see the grant go active", chromedp.WaitVisible(`#grant-1[data-state=active]`))
	shot(t, alice, "my-access-active")
	// The same page on a phone.
	run(t, alice, "phone", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(1)), chromedp.WaitVisible(`#grant-1`))
	shot(t, alice, "my-access-phone")
	run(t, alice, "desktop", chromedp.ResetViewport())

	// A POST with alice's session but no CSRF token is refused.
	res, err := chromedp.Call(alice, network.GetCookies, network.GetCookiesParams{URLs: []string{base}})
	if err != nil {
		t.Fatal(err)
	}
	cookies := res.Cookies
	jar, _ := cookiejar.New(nil)
	u, _ := url.Parse(base)
	for _, c := range cookies {
		if c.Name == web.SessionCookie {
			if !c.HTTPOnly || c.SameSite != network.CookieSameSiteLax {
				t.Errorf("session cookie is not HttpOnly/SameSite=Lax: %+v", c)
			}
			jar.SetCookies(u, []*http.Cookie{{Name: c.Name, Value: c.Value}})
		}
	}
	client := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.PostForm(base+"/grants/1/revoke", url.Values{"reason": {"forged"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("CSRF-less POST: %s", resp.Status)
	}

	run(t, alice, "revoke",
		chromedp.Click(`#revoke-1`),
		chromedp.WaitVisible(`#grant-state`))
	st := get(t, alice, "grant state", chromedp.Text(`#grant-state`))
	if st != "revoked" {
		t.Fatalf("grant state %q after revoke", st)
	}
	shot(t, alice, "grant")

	// bob sees the audit log with the chain verified (carol, an admin, sees all of it).
	carol := browser(t)
	signIn(t, carol, base, "carol")
	run(t, carol, "audit", chromedp.Navigate(base+"/audit"))
	status := get(t, carol, "audit status", chromedp.Text(`p[role=status]`))
	if !strings.Contains(status, "Chain: verified") {
		t.Fatalf("audit status %q", status)
	}
	shot(t, carol, "audit")
}
