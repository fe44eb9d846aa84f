// Package web is jitgate's browser interface, served by `jitgate server` at / on the API's port:
// server-rendered pages (html/template) with a small script of its own for live regions and
// countdowns. Every page works without the script; with it, the review inbox, "my access"
// and grant pages refresh in place every two seconds, so an approval shows up without a reload.
//
// Pages: request access, my access, review inbox, request and grant detail (a timeline), and
// the audit log with the chain's verification. A signed-in browser holds an API token in an
// HttpOnly, SameSite=Lax cookie (Secure over HTTPS); every state-changing form carries a CSRF
// token derived from that session, and a POST without it is refused. All authorization is the
// engine's: a page shows what the engine lets its user see.
package web

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/jitgate/jitgate/httpapi"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Cookie names.
const (
	SessionCookie = "jitgate_session"
	csrfCookie    = "jitgate_csrf"
)

// SessionTTL is how long a browser sign-in lasts.
const SessionTTL = 12 * time.Hour

// Options configures the UI.
type Options struct {
	Engine *access.Engine
	// DevUsers lists the users who may sign in with a click, without an identity provider.
	// Only --dev sets it.
	DevUsers []string
	// SignIn, if set, is an extra sign-in method (OIDC) mounted under /auth/.
	SignIn SignInMethod
	Logger *slog.Logger
	// Gateway, if set, is where the PostgreSQL gateway listens ("host:port"), for the connect
	// hints on active grants.
	Gateway string
}

// SignInMethod is an identity provider's sign-in flow.
type SignInMethod interface {
	// Name is shown on the sign-in button ("Sign in with Example IdP").
	Name() string
	// Handler serves the flow under /auth/ (it starts at /auth/login); it calls done with the
	// signed-in user's name when the provider vouches for them.
	Handler(done func(w http.ResponseWriter, r *http.Request, user string)) http.Handler
}

// UI serves the pages.
type UI struct {
	o      Options
	mux    *http.ServeMux
	pages  map[string]*template.Template
	system context.Context
}

// New returns the UI.
func New(o Options) (*UI, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	u := &UI{o: o, mux: http.NewServeMux(), pages: map[string]*template.Template{},
		system: jitgate.NewSystemContext(context.Background())}
	funcs := template.FuncMap{
		"dur":   jitgate.FormatDuration,
		"stamp": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		"local": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
		"until": func(t time.Time) string { return jitgate.FormatDuration(time.Until(t).Round(time.Second)) },
		"join":  strings.Join,
		"state": state,
		"add":   func(a, b int) int { return a + b },
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return nil, err
		}
		u.pages[base] = t
	}
	static, _ := fs.Sub(staticFS, "static")
	u.mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	u.mux.HandleFunc("GET /{$}", u.home)
	u.mux.HandleFunc("GET /signin", u.signinPage)
	u.mux.HandleFunc("POST /signin/dev", u.devSignIn)
	u.mux.HandleFunc("POST /signout", u.auth(u.signOut))
	if o.SignIn != nil {
		u.mux.Handle("/auth/", o.SignIn.Handler(u.startSession))
	}
	u.mux.HandleFunc("GET /request", u.auth(u.requestPage))
	u.mux.HandleFunc("POST /request", u.auth(u.submit))
	u.mux.HandleFunc("GET /access", u.auth(u.accessPage))
	u.mux.HandleFunc("GET /inbox", u.auth(u.inboxPage))
	u.mux.HandleFunc("GET /requests/{id}", u.auth(u.requestDetail))
	u.mux.HandleFunc("POST /requests/{id}/review", u.auth(u.review))
	u.mux.HandleFunc("POST /requests/{id}/cancel", u.auth(u.cancel))
	u.mux.HandleFunc("GET /grants/{id}", u.auth(u.grantDetail))
	u.mux.HandleFunc("POST /grants/{id}/revoke", u.auth(u.revoke))
	u.mux.HandleFunc("POST /grants/{id}/extend", u.auth(u.extend))
	u.mux.HandleFunc("GET /audit", u.auth(u.auditPage))
	u.mux.HandleFunc("GET /cli/login", u.auth(u.cliConfirm))
	u.mux.HandleFunc("POST /cli/login", u.auth(u.cliApprove))
	u.mux.HandleFunc("POST /cli/token", u.cliToken)
	return u, nil
}

// ServeHTTP serves the UI with security headers on every answer.
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	if r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10) // every form here is small
	}
	u.mux.ServeHTTP(w, r)
}

// session is a signed-in request.
type session struct {
	ctx   context.Context
	user  *jitgate.User
	token string
	admin bool
}

// csrf is the session's CSRF token: a hash of the session token, which only its holder knows.
func (s *session) csrf() string {
	h := sha256.Sum256([]byte("jitgate-csrf\x00" + s.token))
	return hex.EncodeToString(h[:16])
}

type handler func(w http.ResponseWriter, r *http.Request, s *session)

// auth resolves the session cookie; pages redirect to sign-in without one, and every POST must
// carry the session's CSRF token.
func (u *UI) auth(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(SessionCookie)
		if err != nil || c.Value == "" {
			u.toSignIn(w, r)
			return
		}
		user, err := u.o.Engine.Authenticate(r.Context(), c.Value)
		if err != nil {
			if jitgate.ErrorCode(err) == jitgate.EUNAUTHORIZED {
				u.clearCookie(w, r, SessionCookie)
				u.toSignIn(w, r)
				return
			}
			u.fail(w, r, nil, err)
			return
		}
		s := &session{ctx: jitgate.NewContext(r.Context(), user), user: user, token: c.Value}
		if r.Method == http.MethodPost {
			got := r.PostFormValue("csrf")
			if got == "" {
				got = r.Header.Get("X-CSRF-Token")
			}
			if subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf())) != 1 {
				u.fail(w, r, s, jitgate.Errorf(jitgate.EFORBIDDEN, "this form is missing its CSRF token or it is stale; reload the page and try again"))
				return
			}
		}
		if who, err := u.o.Engine.Whoami(s.ctx); err == nil {
			s.admin = who.Admin
		}
		h(w, r, s)
	}
}

func (u *UI) toSignIn(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		u.fail(w, r, nil, jitgate.Errorf(jitgate.EUNAUTHORIZED, "you are not signed in"))
		return
	}
	http.Redirect(w, r, "/signin?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
}

func secure(r *http.Request) bool {
	return r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https"
}

func (u *UI) setCookie(w http.ResponseWriter, r *http.Request, name, value string, ttl time.Duration) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: "/", HttpOnly: true, Secure: secure(r),
		SameSite: http.SameSiteLaxMode, MaxAge: int(ttl.Seconds())})
}

func (u *UI) clearCookie(w http.ResponseWriter, r *http.Request, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", HttpOnly: true, Secure: secure(r), SameSite: http.SameSiteLaxMode, MaxAge: -1})
}

// page data common to every page.
type page struct {
	Title string
	Nav   string
	User  *jitgate.User
	Admin bool
	CSRF  string
	Flash string
	Data  any
}

func (u *UI) render(w http.ResponseWriter, r *http.Request, s *session, status int, name, title string, data any) {
	p := page{Title: title, Nav: name, Data: data, Flash: r.URL.Query().Get("msg")}
	if s != nil {
		p.User, p.CSRF, p.Admin = s.user, s.csrf(), s.admin
	}
	if len(p.Flash) > 200 {
		p.Flash = ""
	}
	t := u.pages[name]
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	// The live script asks for the fragment only (the element with id "live").
	tmpl := "layout.html"
	if r.Header.Get("X-Live") == "1" {
		tmpl = "live"
	}
	if err := t.ExecuteTemplate(w, tmpl, p); err != nil {
		u.o.Logger.Error("web: render", "page", name, "err", err)
	}
}

func (u *UI) fail(w http.ResponseWriter, r *http.Request, s *session, err error) {
	code := jitgate.ErrorCode(err)
	status, msg := httpapi.StatusOf(code), jitgate.ErrorMessage(err)
	if status >= 500 {
		u.o.Logger.Error("web: request failed", "path", r.URL.Path, "err", err)
		if code != jitgate.EUNAVAILABLE {
			msg = "something went wrong; see the server log"
		}
	}
	u.render(w, r, s, status, "error", "Error", msg)
}

func back(w http.ResponseWriter, r *http.Request, to, msg string) {
	http.Redirect(w, r, to+"?msg="+url.QueryEscape(msg), http.StatusSeeOther)
}

func pathID(r *http.Request) (int64, error) {
	id, err := strconv.ParseInt(strings.TrimPrefix(r.PathValue("id"), "g"), 10, 64)
	if err != nil || id <= 0 {
		return 0, jitgate.Errorf(jitgate.EINVALID, "invalid id %q", r.PathValue("id"))
	}
	return id, nil
}

// ---- sign-in ----

func (u *UI) home(w http.ResponseWriter, r *http.Request) {
	if _, err := r.Cookie(SessionCookie); err != nil {
		http.Redirect(w, r, "/signin", http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, "/access", http.StatusSeeOther)
}

type signinData struct {
	CSRF     string
	DevUsers []string
	Method   string
	Next     string
}

func (u *UI) signinPage(w http.ResponseWriter, r *http.Request) {
	// A double-submit cookie protects the sign-in form itself (there is no session yet).
	token := randomHex(16)
	u.setCookie(w, r, csrfCookie, token, time.Hour)
	d := signinData{CSRF: token, DevUsers: u.o.DevUsers, Next: safeNext(r.URL.Query().Get("next"))}
	if u.o.SignIn != nil {
		d.Method = u.o.SignIn.Name()
	}
	u.render(w, r, nil, http.StatusOK, "signin", "Sign in", d)
}

// safeNext keeps a post-sign-in redirect on this site.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.Contains(next, "\\") {
		return "/access"
	}
	return next
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // the system's randomness failing is not recoverable
	}
	return hex.EncodeToString(b)
}

func (u *UI) devSignIn(w http.ResponseWriter, r *http.Request) {
	c, err := r.Cookie(csrfCookie)
	if err != nil || c.Value == "" || subtle.ConstantTimeCompare([]byte(c.Value), []byte(r.PostFormValue("csrf"))) != 1 {
		u.fail(w, r, nil, jitgate.Errorf(jitgate.EFORBIDDEN, "the sign-in form is missing its CSRF token or it is stale; reload the page"))
		return
	}
	name := r.PostFormValue("user")
	if !slices.Contains(u.o.DevUsers, name) {
		u.fail(w, r, nil, jitgate.Errorf(jitgate.EFORBIDDEN, "sign-in without an identity provider is only for the --dev users"))
		return
	}
	u.clearCookie(w, r, csrfCookie)
	u.startSession(w, r, name)
}

// startSession signs user in: it mints a session token and sets the cookie.
func (u *UI) startSession(w http.ResponseWriter, r *http.Request, user string) {
	via := "dev sign-in"
	if u.o.SignIn != nil && strings.HasPrefix(r.URL.Path, "/auth/") {
		via = u.o.SignIn.Name()
	}
	token, _, err := u.o.Engine.SignIn(u.system, user, via, SessionTTL)
	if err != nil {
		u.fail(w, r, nil, err)
		return
	}
	u.setCookie(w, r, SessionCookie, token, SessionTTL)
	next := "/access"
	if c, err := r.Cookie("jitgate_next"); err == nil {
		next = safeNext(c.Value)
	} else if n := r.PostFormValue("next"); n != "" {
		next = safeNext(n)
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (u *UI) signOut(w http.ResponseWriter, r *http.Request, s *session) {
	if err := u.o.Engine.SignOut(r.Context(), s.token); err != nil {
		u.fail(w, r, s, err)
		return
	}
	u.clearCookie(w, r, SessionCookie)
	http.Redirect(w, r, "/signin", http.StatusSeeOther)
}

// ---- request access ----

type requestable struct {
	Resource, Role, Description, Policy string
	MaxDuration                         time.Duration
	Approvers                           string
	AutoApprove, BreakGlass             bool
	BreakGlassMax                       time.Duration
}

func (u *UI) requestPage(w http.ResponseWriter, r *http.Request, s *session) {
	rs, err := u.o.Engine.Requestable(s.ctx)
	if err != nil {
		u.fail(w, r, s, err)
		return
	}
	var out []requestable
	for _, q := range rs {
		it := requestable{Resource: q.Resource.Name, Role: q.Role.Name, Description: q.Role.Description, Policy: q.Policy.Name,
			MaxDuration: q.Policy.MaxDuration, AutoApprove: q.AutoApprove}
		if ex, err := u.o.Engine.Explain(s.ctx, "", q.Resource.Name, q.Role.Name, 0); err == nil {
			var steps []string
			for i, st := range ex.Steps {
				steps = append(steps, fmt.Sprintf("step %d: %d of %s", i+1, st.Min, strings.Join(st.Eligible, ", ")))
			}
			it.Approvers = strings.Join(steps, "; then ")
		}
		if q.Policy.BreakGlass > 0 {
			it.BreakGlass, it.BreakGlassMax = true, q.Policy.BreakGlass
		}
		out = append(out, it)
	}
	d := struct {
		Items      []requestable
		BreakGlass bool
	}{Items: out}
	for _, it := range out {
		d.BreakGlass = d.BreakGlass || it.BreakGlass
	}
	u.render(w, r, s, http.StatusOK, "request", "Request access", d)
}

func (u *UI) submit(w http.ResponseWriter, r *http.Request, s *session) {
	resource, role, ok := strings.Cut(r.PostFormValue("access"), "/")
	if !ok {
		u.fail(w, r, s, jitgate.Errorf(jitgate.EINVALID, "choose a resource and role"))
		return
	}
	d, err := jitgate.ParseDuration(r.PostFormValue("duration"))
	if err != nil {
		u.fail(w, r, s, jitgate.Errorf(jitgate.EINVALID, "duration: %v", err))
		return
	}
	nr := jitgate.NewRequest{Resource: resource, Role: role, Duration: d, Reason: r.PostFormValue("reason"),
		BreakGlass: r.PostFormValue("break_glass") == "on"}
	if st := r.PostFormValue("start"); st != "" {
		t, err := time.ParseInLocation("2006-01-02T15:04", st, time.UTC)
		if err != nil {
			u.fail(w, r, s, jitgate.Errorf(jitgate.EINVALID, "start: want a date and time, got %q", st))
			return
		}
		nr.StartAt = t
	}
	req, err := u.o.Engine.Submit(s.ctx, nr)
	if err != nil {
		u.fail(w, r, s, err)
		return
	}
	back(w, r, "/access", fmt.Sprintf("Request %d for %s/%s is %s.", req.ID, req.Resource, req.Role, state(req.State)))
}

func state(s any) string { return strings.ReplaceAll(fmt.Sprint(s), "_", " ") }

// ---- my access ----

type grantView struct {
	*jitgate.Grant
	Connect string
}

type accessData struct {
	Pending []*jitgate.Request
	Grants  []grantView
	Ended   []*jitgate.Grant
}

func (u *UI) accessPage(w http.ResponseWriter, r *http.Request, s *session) {
	reqs, err := u.o.Engine.ListRequests(s.ctx, access.RequestQuery{Mine: true, State: jitgate.RequestPending, Limit: 50})
	if err != nil {
		u.fail(w, r, s, err)
		return
	}
	gs, err := u.o.Engine.ListGrants(s.ctx, access.GrantQuery{Mine: true, Limit: 50})
	if err != nil {
		u.fail(w, r, s, err)
		return
	}
	d := accessData{Pending: reqs}
	for _, g := range gs {
		if g.State.Live() {
			v := grantView{Grant: g}
			if g.State == jitgate.GrantActive {
				v.Connect = fmt.Sprintf("jitgate connect %s --role %s", g.Resource, g.Role)
			}
			d.Grants = append(d.Grants, v)
		} else if len(d.Ended) < 10 {
			d.Ended = append(d.Ended, g)
		}
	}
	u.render(w, r, s, http.StatusOK, "access", "My access", d)
}

func (u *UI) cancel(w http.ResponseWriter, r *http.Request, s *session) {
	id, err := pathID(r)
	if err == nil {
		_, err = u.o.Engine.Cancel(s.ctx, id)
	}
	if err != nil {
		u.fail(w, r, s, err)
		return
	}
	back(w, r, "/access", fmt.Sprintf("Request %d cancelled.", id))
}

func (u *UI) revoke(w http.ResponseWriter, r *http.Request, s *session) {
	id, err := pathID(r)
	if err == nil {
		_, err = u.o.Engine.Revoke(s.ctx, id, r.PostFormValue("reason"))
	}
	if err != nil {
		u.fail(w, r, s, err)
		return
	}
	back(w, r, "/grants/"+strconv.FormatInt(id, 10), fmt.Sprintf("Grant %d revoked.", id))
}

func (u *UI) extend(w http.ResponseWriter, r *http.Request, s *session) {
	id, err := pathID(r)
	if err != nil {
		u.fail(w, r, s, err)
		return
	}
	d, err := jitgate.ParseDuration(r.PostFormValue("by"))
	if err != nil {
		u.fail(w, r, s, jitgate.Errorf(jitgate.EINVALID, "extend by: %v", err))
		return
	}
	req, err := u.o.Engine.Extend(s.ctx, id, d, r.PostFormValue("reason"))
	if err != nil {
		u.fail(w, r, s, err)
		return
	}
	back(w, r, "/access", fmt.Sprintf("Extension request %d is %s.", req.ID, state(req.State)))
}

// ---- review inbox ----

type inboxItem struct {
	*jitgate.Request
	StepLabel string
	Needed    int
}

func (u *UI) inboxPage(w http.ResponseWriter, r *http.Request, s *session) {
	reqs, err := u.o.Engine.ListRequests(s.ctx, access.RequestQuery{ToReview: true, Limit: 100})
	if err != nil {
		u.fail(w, r, s, err)
		return
	}
	var items []inboxItem
	for _, q := range reqs {
		it := inboxItem{Request: q, StepLabel: fmt.Sprintf("step %d of %d", q.Step+1, q.Steps)}
		if q.State != jitgate.RequestPending {
			it.StepLabel = "after-the-fact review (break-glass)"
		} else if pol := u.o.Engine.Policies().Policy(q.Policy); pol != nil && q.Step < len(pol.Steps) {
			it.Needed = pol.Steps[q.Step].Min
			if full, err := u.o.Engine.GetRequest(s.ctx, q.ID); err == nil {
				for _, rv := range full.Reviews {
					if rv.Step == q.Step && rv.Decision == jitgate.Approve {
						it.Needed--
					}
				}
			}
		}
		items = append(items, it)
	}
	u.render(w, r, s, http.StatusOK, "inbox", "Review inbox", items)
}

func (u *UI) review(w http.ResponseWriter, r *http.Request, s *session) {
	id, err := pathID(r)
	if err != nil {
		u.fail(w, r, s, err)
		return
	}
	d := jitgate.Decision(r.PostFormValue("decision"))
	if d != jitgate.Approve && d != jitgate.Deny {
		u.fail(w, r, s, jitgate.Errorf(jitgate.EINVALID, "decision must be approve or deny"))
		return
	}
	req, err := u.o.Engine.Review(s.ctx, id, d, r.PostFormValue("comment"))
	if err != nil {
		u.fail(w, r, s, err)
		return
	}
	back(w, r, "/inbox", fmt.Sprintf("Request %d: you chose %s; it is now %s.", id, d, state(req.State)))
}

// ---- detail pages ----

type requestData struct {
	R         *jitgate.Request
	CanReview bool
}

// byID loads the object the path's {id} names with get, or answers the error page.
func byID[T any](u *UI, w http.ResponseWriter, r *http.Request, s *session, get func(context.Context, int64) (T, error)) (T, bool) {
	var v T
	id, err := pathID(r)
	if err == nil {
		v, err = get(s.ctx, id)
	}
	if err != nil {
		u.fail(w, r, s, err)
		return v, false
	}
	return v, true
}

func (u *UI) requestDetail(w http.ResponseWriter, r *http.Request, s *session) {
	req, ok := byID(u, w, r, s, u.o.Engine.GetRequest)
	if !ok {
		return
	}
	d := requestData{R: req}
	if todo, err := u.o.Engine.ListRequests(s.ctx, access.RequestQuery{ToReview: true, Limit: 200}); err == nil {
		for _, q := range todo {
			d.CanReview = d.CanReview || q.ID == req.ID
		}
	}
	u.render(w, r, s, http.StatusOK, "requestdetail", fmt.Sprintf("Request %d", req.ID), d)
}

type grantData struct {
	G        *jitgate.Grant
	Mine     bool
	Events   []*jitgate.AuditEvent
	Sessions []*jitgate.Session
	Connect  string
}

func (u *UI) grantDetail(w http.ResponseWriter, r *http.Request, s *session) {
	g, ok := byID(u, w, r, s, u.o.Engine.GetGrant)
	if !ok {
		return
	}
	d := grantData{G: g, Mine: g.User == s.user.Name}
	// The timeline: the request's events and the grant's, in chain order.
	if evs, err := u.o.Engine.AuditEvents(s.ctx, jitgate.AuditFilter{RequestID: g.RequestID}); err == nil {
		d.Events = evs
	}
	if evs, err := u.o.Engine.AuditEvents(s.ctx, jitgate.AuditFilter{GrantID: g.ID}); err == nil {
		seen := map[int64]bool{}
		for _, e := range d.Events {
			seen[e.Seq] = true
		}
		for _, e := range evs {
			if !seen[e.Seq] {
				d.Events = append(d.Events, e)
			}
		}
		slices.SortFunc(d.Events, func(a, b *jitgate.AuditEvent) int { return int(a.Seq - b.Seq) })
	}
	if ss, err := u.o.Engine.ListSessions(s.ctx, jitgate.SessionFilter{GrantID: g.ID, Limit: 50}); err == nil {
		d.Sessions = ss
	}
	if d.Mine && g.State == jitgate.GrantActive {
		d.Connect = fmt.Sprintf("jitgate connect %s --role %s", g.Resource, g.Role)
	}
	u.render(w, r, s, http.StatusOK, "grant", fmt.Sprintf("Grant %d", g.ID), d)
}

// ---- audit ----

type auditData struct {
	Hint     string
	Filter   url.Values
	Events   []*jitgate.AuditEvent
	Verified string
	OK       bool
	// Pending: the server is still verifying the whole chain since it started.
	Pending bool
}

func (u *UI) auditPage(w http.ResponseWriter, r *http.Request, s *session) {
	q := r.URL.Query()
	f := jitgate.AuditFilter{Actor: q.Get("actor"), Limit: 200}
	var err error
	for _, p := range []struct {
		key string
		dst *int64
	}{{"request", &f.RequestID}, {"grant", &f.GrantID}, {"session", &f.SessionID}} {
		if v := q.Get(p.key); v != "" {
			if *p.dst, err = strconv.ParseInt(v, 10, 64); err != nil {
				u.fail(w, r, s, jitgate.Errorf(jitgate.EINVALID, "%s: not a number: %q", p.key, v))
				return
			}
		}
	}
	d := auditData{Filter: q}
	if !s.admin && f.RequestID == 0 && f.GrantID == 0 {
		// Only admins read the whole log; others choose a request or grant they can see.
		d.Hint = "Enter a request or grant number to see its events (the whole log is for admins)."
	} else {
		evs, err := u.o.Engine.AuditEvents(s.ctx, f)
		if err != nil {
			u.fail(w, r, s, err)
			return
		}
		slices.Reverse(evs) // newest first
		d.Events = evs
	}
	// Only what is new since this server last verified the chain: a page view stays fast at
	// millions of events.
	if res, pending, err := u.o.Engine.AuditCheck(s.ctx); err == nil && pending {
		d.Pending = true
	} else if err == nil {
		d.OK = res.OK
		d.Verified = res.Message
	}
	u.render(w, r, s, http.StatusOK, "audit", "Audit", d)
}
