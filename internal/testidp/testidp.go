// Package testidp starts a real OpenID Connect provider for tests: zitadel/oidc's example
// provider (authorization code flow with PKCE, signed ID tokens, discovery, JWKS, and a login
// form to type a username and password into), with users of the test's choosing and a groups
// claim in their ID tokens.
package testidp

import (
	"context"
	"encoding/json"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// Password is every test user's password.
const Password = "correct-horse-battery"

// User is a test user: the username the login form takes (and the ID token's
// preferred_username), and its groups.
type User struct {
	Username string
	Groups   []string
}

// IdP is a running provider.
type IdP struct {
	Issuer       string
	ClientID     string
	ClientSecret string
}

// Start starts a provider on a free loopback port with users, and registers a confidential
// client for redirectURL. It stops at the test's end.
func Start(t testing.TB, redirectURL string, users ...User) *IdP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// The example provider allows plain http only for localhost issuers.
	issuer := "http://localhost:" + itoa(ln.Addr().(*net.TCPAddr).Port) + "/"
	store := map[string]*storage.User{}
	groups := map[string][]string{}
	for i, u := range users {
		id := "user" + itoa(i+1)
		store[id] = &storage.User{ID: id, Username: u.Username, Password: Password, FirstName: u.Username,
			Email: u.Username + "@example.test", EmailVerified: true}
		groups[id] = u.Groups
	}
	path := filepath.Join(t.TempDir(), "users.json")
	data, _ := json.Marshal(store)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	us, err := storage.StoreFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	idp := &IdP{Issuer: issuer, ClientID: "jitgate-" + itoa(ln.Addr().(*net.TCPAddr).Port), ClientSecret: "test-client-secret"}
	storage.RegisterClients(storage.WebClient(idp.ClientID, idp.ClientSecret, redirectURL))
	st := &withGroups{Storage: storage.NewStorage(us), groups: groups}
	srv := httptest.NewUnstartedServer(exampleop.SetupServer(issuer, st, nil, false))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return idp
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// withGroups adds a groups claim to the example storage's user info, and puts the user info
// in the ID token (as most providers do for the groups claim).
type withGroups struct {
	*storage.Storage
	groups map[string][]string
}

func (s *withGroups) SetUserinfoFromScopes(ctx context.Context, ui *oidc.UserInfo, userID, clientID string, scopes []string) error {
	if err := s.Storage.SetUserinfoFromScopes(ctx, ui, userID, clientID, scopes); err != nil {
		return err
	}
	return s.addGroups(ctx, ui, userID, scopes)
}

func (s *withGroups) SetUserinfoFromRequest(ctx context.Context, ui *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	if err := s.Storage.SetUserinfoFromRequest(ctx, ui, req, scopes); err != nil {
		return err
	}
	return s.addGroups(ctx, ui, req.GetSubject(), scopes)
}

func (s *withGroups) addGroups(_ context.Context, ui *oidc.UserInfo, userID string, scopes []string) error {
	for _, sc := range scopes {
		if sc == "groups" {
			ui.AppendClaims("groups", s.groups[userID])
		}
	}
	return nil
}

func (s *withGroups) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	c, err := s.Storage.GetClientByClientID(ctx, id)
	if err != nil {
		return nil, err
	}
	return claimsInIDToken{c}, nil
}

type claimsInIDToken struct{ op.Client }

func (claimsInIDToken) IDTokenUserinfoClaimsAssertion() bool { return true }

// IsScopeAllowed lets clients ask for the groups scope.
func (c claimsInIDToken) IsScopeAllowed(scope string) bool {
	return scope == "groups" || c.Client.IsScopeAllowed(scope)
}
