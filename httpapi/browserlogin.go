package httpapi

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/jitgate/jitgate"
)

// BrowserToken is what a browser sign-in gives the CLI.
type BrowserToken struct {
	Token     string    `json:"token"`
	User      string    `json:"user"`
	ExpiresAt time.Time `json:"expires_at"`
}

// BrowserLogin signs the CLI in through the server's web sign-in (and so its identity
// provider): it listens on a loopback port, calls open with the URL the user must visit, waits
// for the browser to come back with a one-time code, and trades the code with its PKCE
// verifier for an API token. ctx bounds the wait.
func BrowserLogin(ctx context.Context, server string, open func(url string) error) (*BrowserToken, error) {
	server = strings.TrimRight(server, "/")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	verifier := randomString(32)
	sum := sha256.Sum256([]byte(verifier))
	challenge := base64.RawURLEncoding.EncodeToString(sum[:])
	state := randomString(16)
	port := fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)

	codes := make(chan string, 1)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if r.URL.Path != "/callback" || q.Get("state") != state || q.Get("code") == "" {
			http.Error(w, "this is jitgate login's callback; it expected another request", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, "<!doctype html><title>jitgate</title><p>Signed in. You can close this tab and go back to the terminal.</p>")
		select {
		case codes <- q.Get("code"):
		default:
		}
	})}
	go srv.Serve(ln)
	defer srv.Close()

	u := server + "/cli/login?" + url.Values{"port": {port}, "state": {state}, "challenge": {challenge}}.Encode()
	if err := open(u); err != nil {
		return nil, err
	}
	var code string
	select {
	case <-ctx.Done():
		return nil, fmt.Errorf("no sign-in came back: %w", ctx.Err())
	case code = <-codes:
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, server+"/cli/token",
		strings.NewReader(url.Values{"code": {code}, "verifier": {verifier}}.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		var e ErrorBody
		if json.Unmarshal(body, &e) == nil && e.Error.Message != "" {
			return nil, jitgate.Errorf(e.Error.Code, "%s", e.Error.Message)
		}
		return nil, fmt.Errorf("sign-in: %s", resp.Status)
	}
	var t BrowserToken
	if err := json.Unmarshal(body, &t); err != nil || t.Token == "" {
		return nil, errors.New("sign-in: the server sent no token")
	}
	return &t, nil
}

// randomString returns n random bytes, base64url-encoded.
func randomString(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // the system's randomness failing is not recoverable
	}
	return base64.RawURLEncoding.EncodeToString(b)
}
