package web

import (
	"context"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"golang.org/x/oauth2"
)

// OIDCOptions configures single sign-on with an OpenID Connect provider.
type OIDCOptions struct {
	// Name labels the sign-in button ("Sign in with NAME").
	Name   string
	Issuer string
	// ClientID and ClientSecret are jitgate's registration at the provider.
	ClientID, ClientSecret string
	// RedirectURL is this server's /auth/callback as the provider knows it.
	RedirectURL string
	// UsernameClaim names the ID token claim that becomes the jitgate user name (default
	// preferred_username); GroupsClaim the one that lists the user's groups (default groups).
	UsernameClaim, GroupsClaim string
	// Scopes beyond openid (default profile, email, groups).
	Scopes []string
	Engine *access.Engine
	Logger *slog.Logger
	// Client, if set, is the HTTP client used to talk to the provider.
	Client *http.Client
}

// OIDC signs users in with the authorization code flow and PKCE. The ID token's username
// claim becomes the jitgate user (lower-cased; it must be a valid jitgate name) and its groups
// claim the user's groups, recorded in the directory so policies can name IdP groups.
type OIDC struct {
	o        OIDCOptions
	conf     oauth2.Config
	verifier *oidc.IDTokenVerifier
	ctx      context.Context // carries o.Client for the oauth2 exchange
	system   context.Context
}

// NewOIDC discovers the provider (it must be reachable) and returns the sign-in method.
func NewOIDC(ctx context.Context, o OIDCOptions) (*OIDC, error) {
	if o.UsernameClaim == "" {
		o.UsernameClaim = "preferred_username"
	}
	if o.GroupsClaim == "" {
		o.GroupsClaim = "groups"
	}
	if len(o.Scopes) == 0 {
		o.Scopes = []string{"profile", "email", "groups"}
	}
	if o.Name == "" {
		o.Name = "single sign-on"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 15 * time.Second}
	}
	// The provider keeps this context to fetch its signing keys later: it must outlive this
	// call, so the client's timeout bounds each request instead.
	ctx = oidc.ClientContext(context.WithoutCancel(ctx), o.Client)
	p, err := oidc.NewProvider(ctx, o.Issuer)
	if err != nil {
		return nil, fmt.Errorf("oidc: discover %s: %w", o.Issuer, err)
	}
	x := &OIDC{o: o, ctx: ctx,
		conf: oauth2.Config{ClientID: o.ClientID, ClientSecret: o.ClientSecret, RedirectURL: o.RedirectURL,
			Endpoint: p.Endpoint(), Scopes: append([]string{oidc.ScopeOpenID}, o.Scopes...)},
		verifier: p.Verifier(&oidc.Config{ClientID: o.ClientID}),
		system:   jitgate.NewSystemContext(context.Background()),
	}
	x.ctx = context.WithValue(context.Background(), oauth2.HTTPClient, o.Client)
	return x, nil
}

// Name labels the sign-in button.
func (x *OIDC) Name() string { return x.o.Name }

const flowCookie = "jitgate_oidc"

// Handler serves /auth/login (redirect to the provider) and /auth/callback.
func (x *OIDC) Handler(done func(w http.ResponseWriter, r *http.Request, user string)) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /auth/login", func(w http.ResponseWriter, r *http.Request) {
		state, nonce, verifier := randomHex(16), randomHex(16), oauth2.GenerateVerifier()
		next := safeNext(r.URL.Query().Get("next"))
		// The flow's secrets ride in a short-lived HttpOnly cookie; the callback checks the
		// state against it, so nobody can complete a sign-in this browser did not start.
		http.SetCookie(w, &http.Cookie{Name: flowCookie, Value: url.Values{"s": {state}, "n": {nonce}, "v": {verifier}, "next": {next}}.Encode(),
			Path: "/auth/", HttpOnly: true, Secure: secure(r), SameSite: http.SameSiteLaxMode, MaxAge: 600})
		http.Redirect(w, r, x.conf.AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier)), http.StatusFound)
	})
	mux.HandleFunc("GET /auth/callback", func(w http.ResponseWriter, r *http.Request) {
		user, next, err := x.callback(w, r)
		if err != nil {
			x.o.Logger.Warn("oidc: sign-in refused", "err", err)
			http.Error(w, "sign-in failed: "+jitgate.ErrorMessage(err), http.StatusUnauthorized)
			return
		}
		http.SetCookie(w, &http.Cookie{Name: "jitgate_next", Value: next, Path: "/", HttpOnly: true, Secure: secure(r), SameSite: http.SameSiteLaxMode, MaxAge: 60})
		r.AddCookie(&http.Cookie{Name: "jitgate_next", Value: next})
		done(w, r, user)
	})
	return mux
}

func (x *OIDC) callback(w http.ResponseWriter, r *http.Request) (user, next string, err error) {
	c, err := r.Cookie(flowCookie)
	if err != nil {
		return "", "", jitgate.Errorf(jitgate.EUNAUTHORIZED, "no sign-in in progress in this browser; start again")
	}
	http.SetCookie(w, &http.Cookie{Name: flowCookie, Path: "/auth/", MaxAge: -1, HttpOnly: true, Secure: secure(r), SameSite: http.SameSiteLaxMode})
	flow, err := url.ParseQuery(c.Value)
	if err != nil {
		return "", "", jitgate.Errorf(jitgate.EUNAUTHORIZED, "bad sign-in state; start again")
	}
	if e := r.URL.Query().Get("error"); e != "" {
		return "", "", jitgate.Errorf(jitgate.EUNAUTHORIZED, "the identity provider said: %s %s", e, r.URL.Query().Get("error_description"))
	}
	if subtle.ConstantTimeCompare([]byte(r.URL.Query().Get("state")), []byte(flow.Get("s"))) != 1 {
		return "", "", jitgate.Errorf(jitgate.EUNAUTHORIZED, "the sign-in state does not match; start again")
	}
	ctx, cancel := context.WithTimeout(x.ctx, 15*time.Second)
	defer cancel()
	tok, err := x.conf.Exchange(ctx, r.URL.Query().Get("code"), oauth2.VerifierOption(flow.Get("v")))
	if err != nil {
		return "", "", jitgate.Errorf(jitgate.EUNAUTHORIZED, "the code exchange failed: %v", err)
	}
	raw, ok := tok.Extra("id_token").(string)
	if !ok {
		return "", "", jitgate.Errorf(jitgate.EUNAUTHORIZED, "the identity provider returned no ID token")
	}
	idt, err := x.verifier.Verify(ctx, raw)
	if err != nil {
		return "", "", jitgate.Errorf(jitgate.EUNAUTHORIZED, "invalid ID token: %v", err)
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(flow.Get("n"))) != 1 {
		return "", "", jitgate.Errorf(jitgate.EUNAUTHORIZED, "the ID token's nonce does not match")
	}
	u, err := x.user(idt)
	if err != nil {
		return "", "", err
	}
	if err := x.o.Engine.RememberUser(x.system, u, "oidc:"+x.o.Issuer); err != nil {
		return "", "", err
	}
	return u.Name, flow.Get("next"), nil
}

// user maps the ID token's claims to a jitgate user.
func (x *OIDC) user(idt *oidc.IDToken) (*jitgate.User, error) {
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return nil, jitgate.Errorf(jitgate.EUNAUTHORIZED, "unreadable ID token claims: %v", err)
	}
	name, _ := claims[x.o.UsernameClaim].(string)
	name = strings.ToLower(strings.TrimSpace(name))
	if !jitgate.ValidName(name) {
		return nil, jitgate.Errorf(jitgate.EUNAUTHORIZED, "the ID token's %s claim %q is not a usable jitgate user name (1-63 of a-z 0-9 _ . @ -)",
			x.o.UsernameClaim, claims[x.o.UsernameClaim])
	}
	u := &jitgate.User{Name: name, Groups: []string{}}
	switch gs := claims[x.o.GroupsClaim].(type) {
	case []any:
		for _, g := range gs {
			s, _ := g.(string)
			s = strings.ToLower(strings.TrimSpace(s))
			if jitgate.ValidName(s) && !slices.Contains(u.Groups, s) {
				u.Groups = append(u.Groups, s)
			} else if !jitgate.ValidName(s) {
				x.o.Logger.Warn("oidc: ignoring a group whose name jitgate cannot use", "user", name, "group", g)
			}
		}
	case string: // some providers send one group as a string
		if s := strings.ToLower(gs); jitgate.ValidName(s) {
			u.Groups = append(u.Groups, s)
		}
	}
	slices.Sort(u.Groups)
	return u, nil
}
