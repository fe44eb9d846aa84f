package access

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"slices"

	"github.com/jitgate/jitgate"
)

// Credential routes.
const (
	// ViaGateway: the login is a session credential for the PostgreSQL gateway.
	ViaGateway = "gateway"
	// ViaDirect: the login is the grant's own ephemeral database user, used directly.
	ViaDirect = "direct"
)

// IssuedLogin is what IssueLogin hands the grant's owner.
type IssuedLogin struct {
	jitgate.Login
	// Via is ViaGateway or ViaDirect. For the gateway, Host, Port and SSLMode are left for the
	// caller, who knows where the gateway listens.
	Via   string         `json:"via"`
	Grant *jitgate.Grant `json:"-"`
}

// IssueLogin hands the owner of grantID a way in, while the grant is active. Where a gateway
// runs for the kind of the grant's resource (gateways lists those kinds: postgres, mysql), it
// mints a session credential: the gateway is then the only way in, so every statement is
// audited. Otherwise, for a role with ephemeral provisioning, it returns the login of the
// grant's own database user once that user exists. Only the grant's owner may call it; others
// get EFORBIDDEN (or ENOTFOUND if they may not see the grant).
func (e *Engine) IssueLogin(ctx context.Context, grantID int64, gateways ...string) (*IssuedLogin, error) {
	u, err := e.caller(ctx)
	if err != nil {
		return nil, err
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	secret := jitgate.CredentialPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	var out *IssuedLogin
	err = e.write(ctx, func(o *op) error {
		g, err := o.tx.GetGrant(grantID, false)
		if err != nil {
			return err
		}
		if g.User != u.Name {
			if !e.canSee(u, g.User, g.Owner, e.pol.Policy(g.Policy)) {
				return jitgate.Errorf(jitgate.ENOTFOUND, "grant %d not found", grantID)
			}
			return jitgate.Errorf(jitgate.EFORBIDDEN, "only %s may get credentials for grant %d", g.User, grantID)
		}
		switch {
		case g.State == jitgate.GrantActive && !o.now.Before(g.EndsAt):
			// Ended a moment ago; the scheduler has not marked it yet.
			return jitgate.Errorf(jitgate.ECONFLICT, "grant %d expired at %s; credentials are only issued while a grant is active", grantID, jitgate.FormatTime(g.EndsAt))
		case g.State != jitgate.GrantActive:
			return jitgate.Errorf(jitgate.ECONFLICT, "grant %d is %s; credentials are only issued while a grant is active", grantID, g.State)
		}
		res := e.pol.Resource(g.Resource)
		if res == nil {
			return jitgate.Errorf(jitgate.ENOTFOUND, "resource %s is no longer configured", g.Resource)
		}
		if slices.Contains(gateways, res.Kind) {
			c := &jitgate.SessionCredential{GrantID: g.ID, User: u.Name, Hash: jitgate.HashCredential(secret), CreatedAt: o.now, ExpiresAt: g.EndsAt}
			if err := o.tx.InsertCredential(c); err != nil {
				return err
			}
			out = &IssuedLogin{Via: ViaGateway, Grant: g, Login: jitgate.Login{Kind: res.Kind, User: g.User,
				Password: secret, Database: g.Resource, ExpiresAt: c.ExpiresAt}}
			return o.audit(u.Name, jitgate.ActionCredentialMinted, g.RequestID, g.ID, map[string]string{
				"via": ViaGateway, "credential_id": fmt.Sprint(c.ID)})
		}
		login, err := e.provisionedLogin(g)
		if err != nil {
			return err
		}
		out = &IssuedLogin{Via: ViaDirect, Grant: g, Login: *login}
		return o.audit(u.Name, jitgate.ActionCredentialMinted, g.RequestID, g.ID, map[string]string{
			"via": ViaDirect, "login": login.User})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// provisionedLogin returns the login of the ephemeral account provisioned for g, which must be
// active and provisioned. It does no authorization: the gateway calls it (through
// GatewayService.ProvisionedLogin) for a grant whose owner it has authenticated, and IssueLogin
// after its own checks. The login expires with g.
func (e *Engine) provisionedLogin(g *jitgate.Grant) (*jitgate.Login, error) {
	p, ok := e.provs[g.Resource]
	issuer, canIssue := p.(jitgate.CredentialIssuer)
	if !ok || !canIssue || !p.Manages(g.Role) {
		return nil, jitgate.Errorf(jitgate.ECONFLICT,
			"role %s/%s has no ephemeral provisioning and this server runs no gateway for it: there is no login to hand out", g.Resource, g.Role)
	}
	if g.Provision.State != jitgate.ProvisionStateGranted {
		msg := fmt.Sprintf("grant %d's database account is not ready yet (provisioning is %s", g.ID, g.Provision.State)
		if g.Provision.LastError != "" {
			msg += fmt.Sprintf("; attempt %d failed: %s", g.Provision.Attempts, g.Provision.LastError)
		}
		return nil, jitgate.Errorf(jitgate.EUNAVAILABLE, "%s); try again in a moment", msg)
	}
	login, err := issuer.Login(g)
	if err != nil {
		return nil, err
	}
	login.ExpiresAt = g.EndsAt
	return login, nil
}

// GatewayService is what a protocol gateway may do with the engine: check session
// credentials, record sessions and the statements run in them, read grants and hear of their
// changes. None of its methods authorizes a caller: the gateway authenticates its clients
// itself, with session credentials, and acts as jitgate. It is a type of its own so that the
// API and the web UI, which hold the Engine, cannot reach these methods, and the gateway,
// which holds only this, cannot reach anything else.
type GatewayService struct{ e *Engine }

// GatewayService returns the engine's narrow interface for the protocol gateways.
func (e *Engine) GatewayService() *GatewayService { return &GatewayService{e: e} }

// ProvisionedLogin returns the login of the grant's ephemeral database account (see
// Engine.IssueLogin); the gateway logs in with it for grants of ephemeral roles.
func (gs *GatewayService) ProvisionedLogin(g *jitgate.Grant) (*jitgate.Login, error) {
	return gs.e.provisionedLogin(g)
}

// Subscribe calls fn with every event the engine publishes after its change commits; see
// Engine.Subscribe.
func (gs *GatewayService) Subscribe(fn func(jitgate.Event)) (unsubscribe func()) {
	return gs.e.Subscribe(fn)
}

// AuthenticateSession checks a gateway login: the credential must exist, belong to user,
// be for a grant on resource, and that grant must be active now. It fails with an
// *jitgate.AuthFailure (code EUNAUTHORIZED) whose message says which check failed (e.g. "grant 7
// expired at 2026-12-02T14:02:11Z"), except that someone else's credential is answered like an
// unknown one; any other error means the store could not be read (fail closed).
func (gs *GatewayService) AuthenticateSession(ctx context.Context, user, resource, secret string) (*jitgate.Grant, error) {
	return gs.authenticate(ctx, user, resource, secret, false)
}

// AuthenticateBearer checks a credential presented alone, as an HTTP bearer token (the
// Kubernetes gateway's clients send no user name): it must exist and its grant must be active
// now. The grant says whose it is and for which resource; the caller checks that the resource
// is one it serves. Failures are as for AuthenticateSession.
func (gs *GatewayService) AuthenticateBearer(ctx context.Context, secret string) (*jitgate.Grant, error) {
	return gs.authenticate(ctx, "", "", secret, true)
}

// authenticate checks a credential; bearer skips the user and resource checks.
func (gs *GatewayService) authenticate(ctx context.Context, user, resource, secret string, bearer bool) (*jitgate.Grant, error) {
	e := gs.e
	hash := jitgate.HashCredential(secret)
	var (
		c *jitgate.SessionCredential
		g *jitgate.Grant
	)
	err := e.store.View(ctx, func(tx jitgate.Tx) error {
		var err error
		c, err = tx.CredentialByHash(hash)
		if jitgate.ErrorCode(err) == jitgate.ENOTFOUND {
			// Minted before credentials were stored double-hashed (store migration 11).
			hash = jitgate.HashToken(secret)
			c, err = tx.CredentialByHash(hash)
		}
		if err != nil {
			return err
		}
		g, err = tx.GetGrant(c.GrantID, false)
		return err
	})
	unknown := func(reason string) error {
		if bearer {
			return authDenied(reason, "unknown credential; get one with: jitgate kubeconfig RESOURCE")
		}
		return authDenied(reason, "unknown credential; get one with: jitgate credentials %s", resource)
	}
	switch {
	case jitgate.ErrorCode(err) == jitgate.ENOTFOUND:
		return nil, unknown(jitgate.AuthUnknownCredential)
	case err != nil:
		return nil, err // store down: fail closed
	case subtle.ConstantTimeCompare([]byte(c.Hash), []byte(hash)) != 1:
		return nil, unknown(jitgate.AuthUnknownCredential)
	case bearer:
	case c.User != user:
		// Someone else's credential: answered like an unknown one, so that a stolen or guessed
		// credential is not confirmed valid to whoever tries it under the wrong name.
		return nil, unknown(jitgate.AuthForeignCredential)
	case g.Resource != resource:
		return nil, authDenied(jitgate.AuthWrongResource, "this credential is for grant %d on %s, not %s", g.ID, g.Resource, resource)
	}
	return gs.e.grantUsable(g)
}

// authDenied is a refused gateway login.
func authDenied(reason, format string, args ...any) error {
	return &jitgate.AuthFailure{Reason: reason, Err: jitgate.Errorf(jitgate.EUNAUTHORIZED, "jitgate: "+format, args...)}
}

// AuthenticateProof checks a gateway login that proves knowledge of a session credential
// without sending it: MySQL's caching_sha2_password sends SHA256(credential) XOR
// SHA256(SHA256(SHA256(credential)) + scramble), which the gateway can check against what the
// store keeps (jitgate.HashCredential), so its clients log in in one round trip, without the
// RSA exchange or TLS-only cleartext step a check against the credential itself would need.
// match is called with the stored double hash (32 bytes) of each of user's credentials for
// active grants on resource and says whether the client's proof fits it. The grant of the
// credential that fits is returned as AuthenticateSession would. No fit is an AuthFailure with
// reason AuthUnknownCredential: the caller may then ask for the credential itself (a
// credential stored before double hashing, or one whose grant has ended, whose precise
// reason AuthenticateSession gives). Store errors fail closed.
func (gs *GatewayService) AuthenticateProof(ctx context.Context, user, resource string, match func(verifier []byte) bool) (*jitgate.Grant, error) {
	var (
		found *jitgate.SessionCredential
		g     *jitgate.Grant
	)
	err := gs.e.store.View(ctx, func(tx jitgate.Tx) error {
		cs, err := tx.ActiveCredentials(user, resource)
		if err != nil {
			return err
		}
		var v [32]byte
		for _, c := range cs {
			if n, err := hex.Decode(v[:], []byte(c.Hash)); err == nil && n == len(v) && match(v[:]) {
				found = c
				break
			}
		}
		if found == nil {
			return nil
		}
		g, err = tx.GetGrant(found.GrantID, false)
		return err
	})
	switch {
	case err != nil:
		return nil, err
	case found == nil:
		return nil, authDenied(jitgate.AuthUnknownCredential, "unknown credential; get one with: jitgate credentials %s", resource)
	}
	return gs.e.grantUsable(g)
}

// grantUsable returns g if a session may start under it now, or the AuthFailure saying why
// not.
func (e *Engine) grantUsable(g *jitgate.Grant) (*jitgate.Grant, error) {
	now := e.now()
	switch {
	case g.State == jitgate.GrantRevoked:
		return nil, authDenied(jitgate.AuthGrantEnded, "grant %d was revoked at %s", g.ID, jitgate.FormatTime(g.EndedAt))
	case g.State == jitgate.GrantExpired || (g.State == jitgate.GrantActive && !now.Before(g.EndsAt)):
		return nil, authDenied(jitgate.AuthGrantEnded, "grant %d expired at %s", g.ID, jitgate.FormatTime(g.EndsAt))
	case g.State != jitgate.GrantActive:
		return nil, authDenied(jitgate.AuthGrantNotStarted, "grant %d has not started (it starts at %s)", g.ID, jitgate.FormatTime(g.StartsAt))
	}
	return g, nil
}

// StartSession records a new gateway session and its audit event.
func (gs *GatewayService) StartSession(ctx context.Context, s *jitgate.Session) error {
	e := gs.e
	return e.write(ctx, func(o *op) error {
		s.StartedAt, s.Instance = o.now, e.instance.ID
		if err := o.tx.InsertSession(s); err != nil {
			return err
		}
		details := map[string]string{"resource": s.Resource, "role": s.Role, "client": s.ClientAddr}
		if s.Owner != "" {
			details["owner"] = s.Owner
		}
		o.audits = append(o.audits, &jitgate.AuditEvent{Time: o.now, Actor: s.User, Action: jitgate.ActionSessionStarted,
			GrantID: s.GrantID, SessionID: s.ID, Details: details})
		return nil
	})
}

// EndSession records a session's end, its byte and statement counts, and its audit event.
// Ends recorded at the same time (the sessions of grants that end together) share
// transactions, as all writes do (group.go): a thousand sessions cut at a grant's end are a
// few dozen commits and audit appends, not a thousand.
func (gs *GatewayService) EndSession(ctx context.Context, s *jitgate.Session) error {
	return gs.e.write(ctx, func(o *op) error {
		s.EndedAt = o.now
		if err := o.tx.EndSession(s); err != nil {
			return err
		}
		o.audits = append(o.audits, &jitgate.AuditEvent{Time: o.now, Actor: s.User, Action: jitgate.ActionSessionEnded,
			GrantID: s.GrantID, SessionID: s.ID, Details: map[string]string{"reason": s.EndReason,
				"bytes_in": fmt.Sprint(s.BytesIn), "bytes_out": fmt.Sprint(s.BytesOut), "statements": fmt.Sprint(s.Statements)}})
		return nil
	})
}

// RecordAudit appends events written outside the engine (the gateway's statements) to the
// audit chain in one transaction.
func (gs *GatewayService) RecordAudit(ctx context.Context, events []*jitgate.AuditEvent) error {
	e := gs.e
	return e.store.Tx(ctx, func(tx jitgate.Tx) error { return tx.AppendAudit(events...) })
}

// GrantByID returns a grant without an authorization check, for the gateway.
func (gs *GatewayService) GrantByID(ctx context.Context, id int64) (*jitgate.Grant, error) {
	e := gs.e
	var g *jitgate.Grant
	err := e.store.View(ctx, func(tx jitgate.Tx) error {
		var err error
		g, err = tx.GetGrant(id, false)
		return err
	})
	return g, err
}

// ListSessions returns gateway sessions the caller may see: their own, those under grants of
// policies they approve, or all for an admin.
func (e *Engine) ListSessions(ctx context.Context, f jitgate.SessionFilter) ([]*jitgate.Session, error) {
	u, err := e.caller(ctx)
	if err != nil {
		return nil, err
	}
	f.Visible = e.visibility(u)
	var ss []*jitgate.Session
	err = e.store.View(ctx, func(tx jitgate.Tx) error {
		ss, err = tx.ListSessions(f)
		return err
	})
	return ss, err
}
