package access

import (
	"cmp"
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/audit"
	"github.com/jitgate/jitgate/policy"
)

// Token limits.
const (
	DefaultTokenTTL = 720 * time.Hour
	MaxTokenTTL     = 8760 * time.Hour
)

// Audit actions for tokens.
const (
	ActionTokenCreated = "token.created"
	ActionTokenRevoked = "token.revoked"
)

func (e *Engine) isAdmin(u *jitgate.User) bool {
	return u.IsOperator() || (!u.IsAgent() && e.pol.IsAdmin(u.Name))
}

// CreateToken issues an API token for user, valid for ttl (DefaultTokenTTL if zero). Admins
// may, for anyone; an agent's owner may, for that agent. It returns the token, shown this
// once, and its record.
func (e *Engine) CreateToken(ctx context.Context, user string, ttl time.Duration, description string) (string, *jitgate.Token, error) {
	u, err := e.caller(ctx)
	if err != nil {
		return "", nil, err
	}
	target, err := e.dir.LookupUser(ctx, user)
	if !e.isAdmin(u) {
		if err != nil || !target.IsAgent() || target.Owner != u.Name || u.IsAgent() {
			return "", nil, jitgate.Errorf(jitgate.EFORBIDDEN, "only admins, and an agent's owner for that agent, may create tokens")
		}
	}
	if err != nil {
		return "", nil, err
	}
	if ttl == 0 {
		ttl = DefaultTokenTTL
	}
	if ttl < time.Minute || ttl > MaxTokenTTL {
		return "", nil, jitgate.Errorf(jitgate.EINVALID, "ttl must be between 1m and %s", jitgate.FormatDuration(MaxTokenTTL))
	}
	if len(description) > 200 {
		return "", nil, jitgate.Errorf(jitgate.EINVALID, "description is longer than 200 characters")
	}
	secret, hash := jitgate.NewTokenSecret()
	var tk *jitgate.Token
	err = e.write(ctx, func(o *op) error {
		tk = &jitgate.Token{User: user, Hash: hash, Description: description, CreatedBy: u.Name, CreatedAt: o.now, ExpiresAt: o.now.Add(ttl)}
		if err := o.tx.InsertToken(tk); err != nil {
			return err
		}
		details := map[string]string{"token_id": fmt.Sprint(tk.ID), "user": user, "expires_at": stamp(tk.ExpiresAt)}
		if target.IsAgent() {
			details["owner"] = target.Owner
		}
		return o.audit(u.Name, ActionTokenCreated, 0, 0, details)
	})
	if err != nil {
		return "", nil, err
	}
	return secret, tk, nil
}

// RevokeToken revokes a token; its owner or an admin may.
func (e *Engine) RevokeToken(ctx context.Context, id int64) (*jitgate.Token, error) {
	u, err := e.caller(ctx)
	if err != nil {
		return nil, err
	}
	var tk *jitgate.Token
	err = e.write(ctx, func(o *op) error {
		if tk, err = o.tx.GetToken(id); err != nil {
			return err
		}
		if tk.User != u.Name && !e.isAdmin(u) && !e.owns(ctx, u, tk.User) {
			return jitgate.Errorf(jitgate.ENOTFOUND, "token %d not found", id)
		}
		if err := o.tx.RevokeToken(id, o.now); err != nil {
			return err
		}
		tk.RevokedAt = o.now
		return o.audit(u.Name, ActionTokenRevoked, 0, 0, map[string]string{"token_id": fmt.Sprint(id), "user": tk.User})
	})
	if err != nil {
		return nil, err
	}
	return tk, nil
}

// owns reports whether u is the owner of the agent named agent.
func (e *Engine) owns(ctx context.Context, u *jitgate.User, agent string) bool {
	a, err := e.dir.LookupUser(ctx, agent)
	return err == nil && a.IsAgent() && a.Owner == u.Name
}

// ListTokens lists the caller's tokens, or everyone's for an admin.
func (e *Engine) ListTokens(ctx context.Context) ([]*jitgate.Token, error) {
	u, err := e.caller(ctx)
	if err != nil {
		return nil, err
	}
	users := []string{u.Name}
	if e.isAdmin(u) {
		users = []string{""}
	} else if !u.IsAgent() {
		// An owner sees (and may revoke) the tokens of the agents it answers for.
		all, err := e.dir.Users(ctx)
		if err != nil {
			return nil, err
		}
		for _, a := range all {
			if a.IsAgent() && a.Owner == u.Name {
				users = append(users, a.Name)
			}
		}
	}
	var out []*jitgate.Token
	err = e.store.View(ctx, func(tx jitgate.Tx) error {
		for _, user := range users {
			ts, err := tx.ListTokens(user)
			if err != nil {
				return err
			}
			out = append(out, ts...)
		}
		return nil
	})
	if len(users) > 1 {
		slices.SortFunc(out, func(a, b *jitgate.Token) int { return cmp.Compare(b.ID, a.ID) })
	}
	return out, err
}

// Authenticate returns the user a token belongs to, with their current groups. Unknown,
// expired and revoked tokens, and tokens of users no longer in the directory, are all
// EUNAUTHORIZED, with a message that says which.
func (e *Engine) Authenticate(ctx context.Context, token string) (*jitgate.User, error) {
	if token == "" {
		return nil, jitgate.Errorf(jitgate.EUNAUTHORIZED, "missing API token")
	}
	var tk *jitgate.Token
	err := e.store.View(ctx, func(tx jitgate.Tx) error {
		var err error
		tk, err = tx.TokenByHash(jitgate.HashToken(token))
		return err
	})
	switch {
	case jitgate.ErrorCode(err) == jitgate.ENOTFOUND:
		return nil, jitgate.Errorf(jitgate.EUNAUTHORIZED, "unknown API token")
	case err != nil:
		return nil, err // the store is down: fail closed
	case !tk.RevokedAt.IsZero():
		return nil, jitgate.Errorf(jitgate.EUNAUTHORIZED, "API token %d was revoked at %s", tk.ID, tk.RevokedAt.Format(time.RFC3339))
	case !e.now().Before(tk.ExpiresAt):
		return nil, jitgate.Errorf(jitgate.EUNAUTHORIZED, "API token %d expired at %s", tk.ID, tk.ExpiresAt.Format(time.RFC3339))
	}
	u, err := e.dir.LookupUser(ctx, tk.User)
	if err != nil {
		return nil, jitgate.Errorf(jitgate.EUNAUTHORIZED, "API token %d belongs to %s, who is no longer a user", tk.ID, tk.User)
	}
	return u, nil
}

// Whoami describes the caller.
type Whoami struct {
	User   string   `json:"user"`
	Groups []string `json:"groups"`
	Admin  bool     `json:"admin"`
	// Kind is "user" or "agent"; Owner names an agent's owner.
	Kind  string `json:"kind"`
	Owner string `json:"owner,omitempty"`
}

// Whoami returns the caller's name, groups and whether they are an admin.
func (e *Engine) Whoami(ctx context.Context) (*Whoami, error) {
	u, err := e.caller(ctx)
	if err != nil {
		return nil, err
	}
	groups := u.Groups
	if groups == nil {
		groups = []string{}
	}
	return &Whoami{User: u.Name, Groups: groups, Admin: e.isAdmin(u), Kind: u.KindName(), Owner: u.Owner}, nil
}

// Requestable lists the resource roles the caller may request.
func (e *Engine) Requestable(ctx context.Context) ([]policy.Requestable, error) {
	u, err := e.caller(ctx)
	if err != nil {
		return nil, err
	}
	return e.pol.Requestable(u), nil
}

// Explain says how a request by user for resource/role of duration d would be decided. Users
// may explain their own requests; admins anyone's.
func (e *Engine) Explain(ctx context.Context, user, resource, role string, d time.Duration) (*policy.Explanation, error) {
	u, err := e.caller(ctx)
	if err != nil {
		return nil, err
	}
	if user == "" {
		user = u.Name
	}
	if user != u.Name && !e.isAdmin(u) {
		return nil, jitgate.Errorf(jitgate.EFORBIDDEN, "only admins may explain policy for other users")
	}
	target, err := e.dir.LookupUser(ctx, user)
	if err != nil {
		return nil, err
	}
	users, err := e.dir.Users(ctx)
	if err != nil {
		return nil, err
	}
	return e.pol.Explain(target, users, resource, role, d, e.now())
}

// AuditEvents lists audit events. Admins may list any; other users only the events of one
// request or grant they can see (f.RequestID or f.GrantID).
func (e *Engine) AuditEvents(ctx context.Context, f jitgate.AuditFilter) ([]*jitgate.AuditEvent, error) {
	u, err := e.caller(ctx)
	if err != nil {
		return nil, err
	}
	if !e.isAdmin(u) {
		switch {
		case f.RequestID != 0:
			if _, err := e.GetRequest(ctx, f.RequestID); err != nil {
				return nil, err
			}
		case f.GrantID != 0:
			if _, err := e.GetGrant(ctx, f.GrantID); err != nil {
				return nil, err
			}
		default:
			return nil, jitgate.Errorf(jitgate.EFORBIDDEN, "only admins may list the whole audit log; filter by a request or grant you can see")
		}
	}
	var out []*jitgate.AuditEvent
	err = e.store.View(ctx, func(tx jitgate.Tx) error {
		out, err = tx.ListAudit(f)
		return err
	})
	return out, err
}

// VerifyAudit checks the whole audit chain, and its end against the latest signed checkpoint
// where checkpoints are configured (Options.Checkpoints). Any signed-in user may: the result
// names event numbers and kinds, nothing more. Checkpoints that cannot be read are an error
// (EUNAVAILABLE), never a silent pass.
func (e *Engine) VerifyAudit(ctx context.Context) (*audit.Result, error) {
	if _, err := e.caller(ctx); err != nil {
		return nil, err
	}
	if e.cps != nil {
		cp, err := e.cps.Latest(ctx)
		if err != nil {
			e.log.Error("audit verify: cannot read the checkpoints", "err", err)
			return nil, jitgate.Errorf(jitgate.EUNAVAILABLE, "cannot read the audit log's signed checkpoints (see the server log); the log was not verified")
		}
		if cp != nil {
			return audit.VerifyCheckpoint(ctx, e.store, cp, e.cps.PublicKey())
		}
	}
	return audit.Verify(ctx, e.store)
}

// Ping reports whether the store is reachable.
func (e *Engine) Ping(ctx context.Context) error { return e.store.Ping(ctx) }

// Counts returns the number of pending requests and of scheduled and active grants.
func (e *Engine) Counts(ctx context.Context) (map[jitgate.RequestState]int, map[jitgate.GrantState]int, error) {
	var (
		rs map[jitgate.RequestState]int
		gs map[jitgate.GrantState]int
	)
	err := e.store.View(ctx, func(tx jitgate.Tx) error {
		var err error
		rs, gs, err = tx.Counts([]jitgate.RequestState{jitgate.RequestPending}, []jitgate.GrantState{jitgate.GrantScheduled, jitgate.GrantActive})
		return err
	})
	return rs, gs, err
}

// Sign-in audit actions.
const (
	ActionSignedIn  = "user.signed_in"
	ActionSignedOut = "user.signed_out"
)

// SignIn starts a web (or CLI) session for user, who has just proved who they are (through
// the identity provider, or the dev sign-in of --dev): it mints an API token valid for ttl,
// stored hashed like every token, and audits it. Only jitgate itself may call it: the caller
// must be jitgate itself (jitgate.NewSystemContext), never a request's user.
func (e *Engine) SignIn(ctx context.Context, user, via string, ttl time.Duration) (string, *jitgate.Token, error) {
	u, err := e.caller(ctx)
	if err != nil {
		return "", nil, err
	}
	if !u.IsSystem() {
		return "", nil, jitgate.Errorf(jitgate.EFORBIDDEN, "sign-in sessions are started by jitgate itself")
	}
	if du, err := e.dir.LookupUser(ctx, user); err != nil {
		return "", nil, err
	} else if du.IsAgent() {
		return "", nil, jitgate.Errorf(jitgate.EFORBIDDEN, "%s is an agent; agents do not sign in (its owner mints its API tokens)", user)
	}
	secret, hash := jitgate.NewTokenSecret()
	var tk *jitgate.Token
	err = e.write(ctx, func(o *op) error {
		tk = &jitgate.Token{User: user, Hash: hash, Description: "signed in via " + via, CreatedBy: user, CreatedAt: o.now, ExpiresAt: o.now.Add(ttl)}
		if err := o.tx.InsertToken(tk); err != nil {
			return err
		}
		return o.audit(user, ActionSignedIn, 0, 0, map[string]string{"via": via, "token_id": fmt.Sprint(tk.ID), "expires_at": stamp(tk.ExpiresAt)})
	})
	if err != nil {
		return "", nil, err
	}
	return secret, tk, nil
}

// IssueCLICode stores a one-time code that signs user in on the command line once traded,
// with the PKCE challenge the trade must answer, for ttl; it returns the code. The code is
// kept in the store (only its hash), so the CLI may trade it at any replica. Only jitgate
// itself may call it (the web UI, for a signed-in user who confirmed).
func (e *Engine) IssueCLICode(ctx context.Context, user, challenge string, ttl time.Duration) (string, error) {
	u, err := e.caller(ctx)
	if err != nil {
		return "", err
	}
	if !u.IsSystem() {
		return "", jitgate.Errorf(jitgate.EFORBIDDEN, "sign-in codes are issued by jitgate itself")
	}
	code := rand.Text() // 128 random bits; not a token's form, since it is not one
	hash := jitgate.HashToken(code)
	now := e.now()
	err = e.store.Tx(ctx, func(tx jitgate.Tx) error {
		return tx.PutCLICode(&jitgate.CLICode{Hash: hash, User: user, Challenge: challenge, ExpiresAt: now.Add(ttl)}, now)
	})
	if err != nil {
		return "", err
	}
	return code, nil
}

// TakeCLICode trades a one-time code (IssueCLICode) once: it returns the user and the PKCE
// challenge, and the code is gone. Unknown, used and expired codes are all EUNAUTHORIZED.
// Only jitgate itself may call it.
func (e *Engine) TakeCLICode(ctx context.Context, code string) (user, challenge string, err error) {
	u, err := e.caller(ctx)
	if err != nil {
		return "", "", err
	}
	if !u.IsSystem() {
		return "", "", jitgate.Errorf(jitgate.EFORBIDDEN, "sign-in codes are traded by jitgate itself")
	}
	var c *jitgate.CLICode
	err = e.store.Tx(ctx, func(tx jitgate.Tx) (err error) {
		c, err = tx.TakeCLICode(jitgate.HashToken(code))
		return err
	})
	switch {
	case jitgate.ErrorCode(err) == jitgate.ENOTFOUND:
		return "", "", jitgate.Errorf(jitgate.EUNAUTHORIZED, "unknown or used code")
	case err != nil:
		return "", "", err
	case !e.now().Before(c.ExpiresAt):
		return "", "", jitgate.Errorf(jitgate.EUNAUTHORIZED, "the code expired at %s", c.ExpiresAt.Format(time.RFC3339))
	}
	return c.User, c.Challenge, nil
}

// SignOut revokes the session token: whoever holds it may end it.
func (e *Engine) SignOut(ctx context.Context, token string) error {
	return e.write(ctx, func(o *op) error {
		tk, err := o.tx.TokenByHash(jitgate.HashToken(token))
		if err != nil {
			return err
		}
		if !tk.RevokedAt.IsZero() {
			return nil
		}
		if err := o.tx.RevokeToken(tk.ID, o.now); err != nil {
			return err
		}
		return o.audit(tk.User, ActionSignedOut, 0, 0, map[string]string{"token_id": fmt.Sprint(tk.ID)})
	})
}
