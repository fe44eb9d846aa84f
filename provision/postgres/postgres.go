// Package postgres provisions ephemeral PostgreSQL users: one login role per grant, named
// jit_<user>_<grant>, holding exactly the role's target privileges, valid until the grant's
// end, dropped when it ends (after its connections are terminated), and verified gone. It also
// lists the users it manages (for the drift reconciler) and reports standing access.
//
// jitgate logs in with the resource's credentials. That login needs CREATEROLE, membership (with
// ADMIN OPTION) in the roles it hands out, and pg_signal_backend to end sessions; a superuser
// works too.
package postgres

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/provision"
)

// MaxNameLen is PostgreSQL's identifier limit (NAMEDATALEN-1).
const MaxNameLen = 63

// DefaultConnectionLimit caps an ephemeral user's connections when the config does not.
const DefaultConnectionLimit = 10

// commentPrefix marks a role as jitgate-managed; the reconciler trusts only roles carrying it.
const commentPrefix = "jitgate-managed"

// Provisioner manages the ephemeral users of one PostgreSQL resource.
type Provisioner struct {
	res     *jitgate.Resource
	install string
	key     []byte
	owner   string
	limit   int
	pool    *pgxpool.Pool
}

var (
	_ jitgate.Provisioner            = (*Provisioner)(nil)
	_ jitgate.CredentialIssuer       = (*Provisioner)(nil)
	_ jitgate.RevocationVerifier     = (*Provisioner)(nil)
	_ jitgate.Reconciler             = (*Provisioner)(nil)
	_ jitgate.StandingAccessReporter = (*Provisioner)(nil)
)

// New returns a provisioner for res of the jitgate installation install (see
// jitgate.Tx.InstallationID), logging in as res.Credentials with adminPassword and
// deriving passwords from key (which may be nil if no role of res is ephemeral: the
// provisioner then only reconciles and reports). It connects lazily; Close releases its connections.
func New(res *jitgate.Resource, install, adminPassword string, key []byte) (*Provisioner, error) {
	if res.Kind != jitgate.KindPostgres {
		return nil, fmt.Errorf("resource %s is %s, not postgres", res.Name, res.Kind)
	}
	if provision.Ephemeral(res) {
		if err := provision.CheckKey(key); err != nil {
			return nil, err
		}
	}
	sslmode := res.SSLMode
	if sslmode == "" {
		sslmode = "prefer"
	}
	u := &url.URL{Scheme: "postgres", Host: res.Address, Path: "/" + res.Database, User: url.User(res.Credentials.User),
		RawQuery: url.Values{"sslmode": {sslmode}, "connect_timeout": {"10"}, "application_name": {"jitgate"}}.Encode()}
	cfg, err := pgxpool.ParseConfig(u.String())
	if err != nil {
		return nil, jitgate.Errorf(jitgate.EINVALID, "resource %s: invalid address %q", res.Name, res.Address)
	}
	cfg.ConnConfig.Password = adminPassword
	cfg.MaxConns = 4
	cfg.MaxConnIdleTime = time.Minute
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, err
	}
	if install == "" || strings.ContainsAny(install, " %_'") {
		pool.Close()
		return nil, fmt.Errorf("resource %s: invalid installation id %q", res.Name, install)
	}
	p := &Provisioner{res: res, install: install, key: key, owner: res.Owner, limit: res.ConnectionLimit, pool: pool}
	if p.owner == "" {
		p.owner = res.Credentials.User
	}
	if p.limit == 0 {
		p.limit = DefaultConnectionLimit
	}
	return p, nil
}

// Close closes the admin connections.
func (p *Provisioner) Close() { p.pool.Close() }

// Manages reports whether role has `provision: ephemeral`.
func (p *Provisioner) Manages(role string) bool { return provision.Manages(p.res, role) }

// AccountFor returns the name of g's user: jit_<user>_<grant>.
func (p *Provisioner) AccountFor(g *jitgate.Grant) string {
	return provision.AccountName(g, MaxNameLen)
}

// Login returns the login of g's user on the resource itself.
func (p *Provisioner) Login(g *jitgate.Grant) (*jitgate.Login, error) {
	host, port, err := provision.Endpoint(p.res)
	if err != nil {
		return nil, err
	}
	sslmode := p.res.SSLMode
	if sslmode == "" {
		sslmode = "prefer"
	}
	return &jitgate.Login{Kind: jitgate.KindPostgres, Host: host, Port: port, User: p.AccountFor(g),
		Password: provision.Password(p.key, p.res.Name, g), Database: p.res.Database, SSLMode: sslmode}, nil
}

// comment marks a role as this installation's, for this resource and grant.
func (p *Provisioner) comment(g *jitgate.Grant) string {
	return fmt.Sprintf("%s grant=%d resource=%s user=%s", p.mark(), g.ID, p.res.Name, g.User)
}

// mark starts the comment of every role this installation creates.
func (p *Provisioner) mark() string { return commentPrefix + " install=" + p.install }

// ident quotes a name as a PostgreSQL identifier.
func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

// scramVerifier returns the SCRAM-SHA-256 verifier of password, so that the password itself
// never reaches the server (or its statement log).
func scramVerifier(password string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	const iter = 4096
	salted, err := pbkdf2.Key(sha256.New, password, salt, iter, sha256.Size)
	if err != nil {
		return "", err
	}
	mac := func(k []byte, msg string) []byte {
		h := hmac.New(sha256.New, k)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	clientKey := mac(salted, "Client Key")
	stored := sha256.Sum256(clientKey)
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iter, b64(salt), b64(stored[:]), b64(mac(salted, "Server Key"))), nil
}

// Grant creates g's user (or brings an existing one in line): LOGIN with the derived password,
// VALID UNTIL the grant's end, a connection limit, the jitgate-managed comment, and membership
// in exactly the role's grants.
func (p *Provisioner) Grant(ctx context.Context, g *jitgate.Grant) error {
	role := p.res.Role(g.Role)
	if role == nil {
		return fmt.Errorf("resource %s has no role %s", p.res.Name, g.Role)
	}
	name := p.AccountFor(g)
	verifier, err := scramVerifier(provision.Password(p.key, p.res.Name, g))
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		var (
			exists  bool
			comment string
		)
		err := tx.QueryRow(ctx, `SELECT true, COALESCE(shobj_description(oid, 'pg_authid'), '') FROM pg_roles WHERE rolname = $1`,
			name).Scan(&exists, &comment)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if exists && !strings.HasPrefix(comment, p.mark()+" ") {
			// Never take over a role this installation did not make (a hand-made one, or
			// another jitgate's that manages this database too).
			return fmt.Errorf("role %s exists and is not this jitgate's (its comment is %q); refusing to take it over", name, comment)
		}
		verb := "CREATE"
		if exists {
			verb = "ALTER"
		}
		// Utility statements take no bind parameters: pgx's simple protocol quotes the
		// literals ($1, $2) on the client side.
		attrs := fmt.Sprintf("LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT PASSWORD $1 VALID UNTIL $2 CONNECTION LIMIT %d", p.limit)
		if _, err := tx.Exec(ctx, verb+" ROLE "+ident(name)+" "+attrs, pgx.QueryExecModeSimpleProtocol,
			verifier, g.EndsAt.UTC().Format(time.RFC3339)); err != nil {
			return fmt.Errorf("%s role %s: %w", strings.ToLower(verb), name, err)
		}
		if _, err := tx.Exec(ctx, "COMMENT ON ROLE "+ident(name)+" IS $1", pgx.QueryExecModeSimpleProtocol, p.comment(g)); err != nil {
			return err
		}
		// Exactly the role's grants: add the missing, drop any other (a hand edit, or a
		// changed config for a re-granted extension).
		rows, err := tx.Query(ctx, `SELECT b.rolname FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid
			JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = $1`, name)
		if err != nil {
			return err
		}
		have, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		for _, want := range role.Grants {
			if !slices.Contains(have, want) {
				if _, err := tx.Exec(ctx, "GRANT "+ident(want)+" TO "+ident(name)); err != nil {
					return fmt.Errorf("grant %s to %s: %w", want, name, err)
				}
			}
		}
		for _, extra := range have {
			if !slices.Contains(role.Grants, extra) {
				if _, err := tx.Exec(ctx, "REVOKE "+ident(extra)+" FROM "+ident(name)); err != nil {
					return fmt.Errorf("revoke %s from %s: %w", extra, name, err)
				}
			}
		}
		return nil
	})
}

// Revoke removes g's user; see RemoveAccount.
func (p *Provisioner) Revoke(ctx context.Context, g *jitgate.Grant) error {
	return p.remove(ctx, p.AccountFor(g))
}

// RemoveAccount switches the account off (NOLOGIN), terminates its sessions (waiting for
// them to exit), hands what it owns to the configured owner, drops the rest of its
// privileges, and drops it. An account that is already gone is fine.
func (p *Provisioner) RemoveAccount(ctx context.Context, a jitgate.ManagedAccount) error {
	return p.remove(ctx, a.Name)
}

// owned reports whether role name exists, and whether this installation made it.
func (p *Provisioner) owned(ctx context.Context, name string) (exists, ours bool, err error) {
	var comment string
	err = p.pool.QueryRow(ctx, `SELECT COALESCE(shobj_description(oid, 'pg_authid'), '') FROM pg_roles WHERE rolname = $1`, name).Scan(&comment)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, false, nil
	}
	if err != nil {
		return false, false, err
	}
	return true, strings.HasPrefix(comment, p.mark()+" "), nil
}

func (p *Provisioner) remove(ctx context.Context, name string) error {
	exists, ours, err := p.owned(ctx, name)
	if err != nil {
		return err
	}
	if !exists || !ours {
		return nil // gone already, or never ours: a role of that name that jitgate did not make is left alone
	}
	// NOLOGIN first, in its own statement, so no new session starts while we end the others.
	if _, err := p.pool.Exec(ctx, "ALTER ROLE "+ident(name)+" NOLOGIN"); err != nil {
		return fmt.Errorf("alter role %s nologin: %w", name, err)
	}
	if err := p.terminate(ctx, name); err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		for _, stmt := range []string{
			"REASSIGN OWNED BY " + ident(name) + " TO " + ident(p.owner),
			"DROP OWNED BY " + ident(name),
			"DROP ROLE IF EXISTS " + ident(name),
		} {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("%s: %w", strings.SplitN(stmt, " BY", 2)[0], err)
			}
		}
		return nil
	})
}

// terminate ends every session of role name and waits (up to 5s) for each to exit.
func (p *Provisioner) terminate(ctx context.Context, name string) error {
	rows, err := p.pool.Query(ctx, `SELECT pid, pg_terminate_backend(pid, 5000) FROM pg_stat_activity
		WHERE usename = $1 AND pid <> pg_backend_pid()`, name)
	if err != nil {
		return fmt.Errorf("terminate sessions of %s: %w", name, err)
	}
	defer rows.Close()
	var failed []string
	for rows.Next() {
		var (
			pid int32
			ok  bool
		)
		if err := rows.Scan(&pid, &ok); err != nil {
			return err
		}
		if !ok {
			failed = append(failed, strconv.Itoa(int(pid)))
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("terminate sessions of %s: %w", name, err)
	}
	if len(failed) > 0 {
		return fmt.Errorf("sessions of %s still running (pids %s)", name, strings.Join(failed, ", "))
	}
	return nil
}

// VerifyRevoked re-reads pg_roles and pg_stat_activity: g's user must be gone and no session
// may still run as it (or as any dropped role).
func (p *Provisioner) VerifyRevoked(ctx context.Context, g *jitgate.Grant) (string, error) {
	name := p.AccountFor(g)
	exists, ours, err := p.owned(ctx, name)
	if err != nil {
		return "", fmt.Errorf("verify %s: %w", name, err)
	}
	if exists && !ours {
		return fmt.Sprintf("postgres %s: no role %s of this jitgate (a role of that name that jitgate did not make is left alone)", p.res.Address, name), nil
	}
	var (
		canLogin     bool
		sessions     int
		orphanedPIDs int
	)
	err = p.pool.QueryRow(ctx, `SELECT
		COALESCE((SELECT rolcanlogin FROM pg_roles WHERE rolname = $1), false),
		(SELECT count(*) FROM pg_stat_activity WHERE usename = $1),
		(SELECT count(*) FROM pg_stat_activity WHERE usesysid IS NOT NULL AND usesysid NOT IN (SELECT oid FROM pg_roles))`,
		name).Scan(&canLogin, &sessions, &orphanedPIDs)
	if err != nil {
		return "", fmt.Errorf("verify %s: %w", name, err)
	}
	var problems []string
	if exists {
		problems = append(problems, fmt.Sprintf("role %s still exists (can log in: %t)", name, canLogin))
	}
	if sessions > 0 {
		problems = append(problems, fmt.Sprintf("%d session(s) still run as %s", sessions, name))
	}
	if orphanedPIDs > 0 {
		problems = append(problems, fmt.Sprintf("%d session(s) still run as a dropped role", orphanedPIDs))
	}
	if len(problems) > 0 {
		return "", errors.New(strings.Join(problems, "; "))
	}
	return fmt.Sprintf("postgres %s: role %s absent from pg_roles; 0 sessions in pg_stat_activity", p.res.Address, name), nil
}

var grantInComment = regexp.MustCompile(`\bgrant=(\d+)\b`)

// ManagedAccounts lists the roles this installation made for this resource (by their comment).
func (p *Provisioner) ManagedAccounts(ctx context.Context) ([]jitgate.ManagedAccount, error) {
	rows, err := p.pool.Query(ctx, `SELECT r.rolname, d.description FROM pg_roles r
		JOIN pg_shdescription d ON d.objoid = r.oid AND d.classoid = 'pg_authid'::regclass
		WHERE r.rolname LIKE 'jit\_%' AND d.description LIKE $1 ORDER BY r.rolname`,
		p.mark()+" %resource="+p.res.Name+" %")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []jitgate.ManagedAccount
	for rows.Next() {
		var name, comment string
		if err := rows.Scan(&name, &comment); err != nil {
			return nil, err
		}
		if !strings.Contains(comment, " resource="+p.res.Name+" ") {
			continue // LIKE matched a resource whose name merely contains ours
		}
		a := jitgate.ManagedAccount{Name: name}
		if m := grantInComment.FindStringSubmatch(comment); m != nil {
			a.GrantID, _ = strconv.ParseInt(m[1], 10, 64)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// StandingAccess lists every login role that jitgate does not manage, with its attributes,
// the roles it holds (transitively) and its direct table privileges.
func (p *Provisioner) StandingAccess(ctx context.Context) ([]jitgate.StandingAccount, error) {
	rows, err := p.pool.Query(ctx, `
		WITH RECURSIVE member_of(member, roleid) AS (
			SELECT member, roleid FROM pg_auth_members
			UNION SELECT m.member, a.roleid FROM member_of m JOIN pg_auth_members a ON a.member = m.roleid
		), tables AS (
			SELECT a.grantee, n.nspname || '.' || c.relname AS rel, a.privilege_type
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
			WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f') AND a.grantee <> c.relowner
			  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
		)
		SELECT r.rolname, r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolreplication, r.rolbypassrls,
			ARRAY(SELECT b.rolname FROM member_of m JOIN pg_roles b ON b.oid = m.roleid WHERE m.member = r.oid ORDER BY 1),
			ARRAY(SELECT string_agg(t.privilege_type, ', ' ORDER BY t.privilege_type) || ' on ' || t.rel
			      FROM tables t WHERE t.grantee = r.oid GROUP BY t.rel ORDER BY t.rel)
		FROM pg_roles r
		WHERE r.rolcanlogin AND NOT EXISTS (SELECT 1 FROM pg_shdescription d
			WHERE d.objoid = r.oid AND d.classoid = 'pg_authid'::regclass AND d.description LIKE 'jitgate-managed %')
		ORDER BY r.rolname`)
	if err != nil {
		return nil, fmt.Errorf("standing access on %s: %w", p.res.Name, err)
	}
	defer rows.Close()
	var out []jitgate.StandingAccount
	for rows.Next() {
		var (
			a                               jitgate.StandingAccount
			super, crole, cdb, repl, bypass bool
		)
		if err := rows.Scan(&a.Name, &super, &crole, &cdb, &repl, &bypass, &a.MemberOf, &a.TableGrants); err != nil {
			return nil, err
		}
		for _, f := range []struct {
			on         bool
			attr, flag string
		}{
			{super, "SUPERUSER", jitgate.FlagSuperuser}, {crole, "CREATEROLE", jitgate.FlagCreateRole},
			{cdb, "CREATEDB", jitgate.FlagCreateDB}, {repl, "REPLICATION", jitgate.FlagReplication},
			{bypass, "BYPASSRLS", jitgate.FlagBypassRLS},
		} {
			if f.on {
				a.Attributes = append(a.Attributes, f.attr)
				a.Flags = append(a.Flags, f.flag)
			}
		}
		if len(a.TableGrants) > 0 {
			a.Flags = append(a.Flags, jitgate.FlagDirectTableGrants)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}
