package web

import (
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/url"
	"strconv"
	"sync"
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

type cliCode struct {
	user, challenge string
	expires         time.Time
}

// cliCodes holds the pending one-time codes. They live in this process: behind several server
// instances, the exchange must reach the instance that issued the code (it follows within
// seconds, from the same machine).
type cliCodes struct {
	mu    sync.Mutex
	codes map[string]cliCode
}

func (c *cliCodes) put(code string, v cliCode) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	for k, old := range c.codes {
		if now.After(old.expires) {
			delete(c.codes, k)
		}
	}
	c.codes[code] = v
}

// take returns and forgets code: a code works once.
func (c *cliCodes) take(code string) (cliCode, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.codes[code]
	delete(c.codes, code)
	return v, ok && time.Now().Before(v.expires)
}

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
	code := randomHex(24)
	u.codes.put(code, cliCode{user: s.user.Name, challenge: d.Challenge, expires: time.Now().Add(cliCodeTTL)})
	cb := url.URL{Scheme: "http", Host: "127.0.0.1:" + d.Port, Path: "/callback",
		RawQuery: url.Values{"code": {code}, "state": {d.State}}.Encode()}
	http.Redirect(w, r, cb.String(), http.StatusSeeOther)
}

// cliToken trades a code and its PKCE verifier for an API token.
func (u *UI) cliToken(w http.ResponseWriter, r *http.Request) {
	code, verifier := r.PostFormValue("code"), r.PostFormValue("verifier")
	v, ok := u.codes.take(code)
	sum := sha256.Sum256([]byte(verifier))
	if !ok || base64.RawURLEncoding.EncodeToString(sum[:]) != v.challenge {
		httpapi.WriteError(w, jitgate.Errorf(jitgate.EUNAUTHORIZED, "unknown, used or expired code, or the wrong verifier; run jitgate login again"))
		return
	}
	token, tk, err := u.o.Engine.SignIn(u.system, v.user, "browser (CLI)", CLITokenTTL)
	if err != nil {
		u.o.Logger.Error("web: CLI sign-in", "user", v.user, "err", err)
		httpapi.WriteError(w, jitgate.Errorf(jitgate.EINTERNAL, "cannot sign in"))
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, &httpapi.BrowserToken{Token: token, User: v.user, ExpiresAt: tk.ExpiresAt})
}
