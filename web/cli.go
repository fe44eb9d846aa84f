package web

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/httpapi"
)

// CLI sign-in: `jitgate login --server URL` listens on a loopback port and opens
// /cli/login?port=P&state=S&challenge=C in the browser. There the signed-in user (sent through
// the normal sign-in first if need be) confirms; the UI redirects to
// http://127.0.0.1:P/callback with a one-time code, and the CLI trades the code and the PKCE
// verifier behind the challenge at POST /cli/token for an API token. The token never appears
// in a URL, and a code is useless without the verifier only the CLI holds.

// cliCodeTTL is how long a one-time code may wait for its exchange.
const cliCodeTTL = 2 * time.Minute

// CLITokenTTL is how long a token from a browser sign-in lasts.
const CLITokenTTL = 12 * time.Hour

type cliData struct {
	Port, State, Challenge string
}

func cliParams(v url.Values) (cliData, error) {
	d := cliData{Port: v.Get("port"), State: v.Get("state"), Challenge: v.Get("challenge")}
	port, err := strconv.Atoi(d.Port)
	switch {
	case err != nil || port < 1024 || port > 65535:
		return d, jitgate.Errorf(jitgate.EINVALID, "port must be the CLI's loopback port (1024-65535)")
	case d.State == "" || len(d.State) > 100:
		return d, jitgate.Errorf(jitgate.EINVALID, "missing or overlong state")
	case len(d.Challenge) != 43:
		return d, jitgate.Errorf(jitgate.EINVALID, "challenge must be a base64url SHA-256 (43 characters)")
	}
	return d, nil
}

// cliConfirm asks the signed-in user whether to sign the CLI in.
func (u *UI) cliConfirm(w http.ResponseWriter, r *http.Request, s *session) {
	d, err := cliParams(r.URL.Query())
	if err != nil {
		u.fail(w, r, s, err)
		return
	}
	// The form's answer redirects to the CLI's loopback listener: allow that form target.
	w.Header().Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; form-action 'self' http://127.0.0.1:*; base-uri 'none'")
	u.render(w, r, s, http.StatusOK, "cli", "Sign in the command line", d)
}

// cliApprove issues the one-time code and sends the browser back to the CLI.
func (u *UI) cliApprove(w http.ResponseWriter, r *http.Request, s *session) {
	if err := r.ParseForm(); err != nil {
		u.fail(w, r, s, jitgate.Errorf(jitgate.EINVALID, "bad form"))
		return
	}
	d, err := cliParams(r.PostForm)
	if err != nil {
		u.fail(w, r, s, err)
		return
	}
	// The code is kept in the store: the CLI may trade it at another replica.
	code, err := u.o.Engine.IssueCLICode(u.system, s.user.Name, d.Challenge, cliCodeTTL)
	if err != nil {
		u.fail(w, r, s, err)
		return
	}
	cb := url.URL{Scheme: "http", Host: "127.0.0.1:" + d.Port, Path: "/callback",
		RawQuery: url.Values{"code": {code}, "state": {d.State}}.Encode()}
	http.Redirect(w, r, cb.String(), http.StatusSeeOther)
}

// cliToken trades a code and its PKCE verifier for an API token.
func (u *UI) cliToken(w http.ResponseWriter, r *http.Request) {
	code, verifier := r.PostFormValue("code"), r.PostFormValue("verifier")
	user, challenge, err := u.o.Engine.TakeCLICode(u.system, code)
	if err != nil && jitgate.ErrorCode(err) != jitgate.EUNAUTHORIZED {
		u.o.Logger.Error("web: CLI sign-in code", "err", err)
		httpapi.WriteError(w, err) // the store is down: fail closed
		return
	}
	sum := sha256.Sum256([]byte(verifier))
	if err != nil || subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(challenge)) != 1 {
		httpapi.WriteError(w, jitgate.Errorf(jitgate.EUNAUTHORIZED, "unknown, used or expired code, or the wrong verifier; run jitgate login again"))
		return
	}
	token, tk, err := u.o.Engine.SignIn(u.system, user, "browser (CLI)", CLITokenTTL)
	if err != nil {
		u.o.Logger.Error("web: CLI sign-in", "user", user, "err", err)
		httpapi.WriteError(w, jitgate.Errorf(jitgate.EINTERNAL, "cannot sign in"))
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, &httpapi.BrowserToken{Token: token, User: user, ExpiresAt: tk.ExpiresAt})
}
