// Package mysql provisions ephemeral MariaDB and MySQL users: one user per grant, named
// jit_<user>_<grant>@'%', holding exactly the role's roles or privileges, whose connections
// are killed and which is dropped when the grant ends (DROP USER alone leaves open
// connections running), and verified gone. It also lists the users it manages (for the drift
// reconciler) and reports standing access.
//
// Literals are quoted by the driver (interpolateParams); database and table names, which
// config validation limits to letters, digits, '_' and '$', are quoted as identifiers.
// MariaDB and MySQL store no comment on a user, so an account is recognised as jitgate's by its
// name alone: do not create jit_ users by hand, and give each server to one jitgate resource.
package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/provision"
)

// MaxNameLen is MySQL's user name limit (MariaDB allows more; the shorter one works on both).
const MaxNameLen = 32

// DefaultConnectionLimit caps an ephemeral user's connections when the config does not.
const DefaultConnectionLimit = 10

// Provisioner manages the ephemeral users of one MariaDB/MySQL resource.
type Provisioner struct {
	res   *jitgate.Resource
	key   []byte
	limit int
	db    *sql.DB
	// killWait bounds how long Revoke waits for killed connections to leave the process list.
	killWait time.Duration
}

var (
	_ jitgate.Provisioner            = (*Provisioner)(nil)
	_ jitgate.CredentialIssuer       = (*Provisioner)(nil)
	_ jitgate.RevocationVerifier     = (*Provisioner)(nil)
	_ jitgate.Reconciler             = (*Provisioner)(nil)
	_ jitgate.StandingAccessReporter = (*Provisioner)(nil)
)

// New returns a provisioner for res, logging in as res.Credentials with adminPassword and
// deriving passwords from key (which may be nil if no role of res is ephemeral: the
// provisioner then only reconciles and reports). It connects lazily; Close releases its connections.
func New(res *jitgate.Resource, adminPassword string, key []byte) (*Provisioner, error) {
	if res.Kind != jitgate.KindMySQL {
		return nil, fmt.Errorf("resource %s is %s, not mysql", res.Name, res.Kind)
	}
	if provision.Ephemeral(res) {
		if err := provision.CheckKey(key); err != nil {
			return nil, err
		}
	}
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr, cfg.DBName = res.Credentials.User, adminPassword, "tcp", res.Address, res.Database
	cfg.InterpolateParams = true
	cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = 10*time.Second, 30*time.Second, 30*time.Second
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, jitgate.Errorf(jitgate.EINVALID, "resource %s: %v", res.Name, err)
	}
	db := sql.OpenDB(connector)
	db.SetMaxOpenConns(4)
	db.SetConnMaxIdleTime(time.Minute)
	p := &Provisioner{res: res, key: key, limit: res.ConnectionLimit, db: db, killWait: 5 * time.Second}
	if p.limit == 0 {
		p.limit = DefaultConnectionLimit
	}
	return p, nil
}

// Close closes the admin connections.
func (p *Provisioner) Close() { p.db.Close() }

// Manages reports whether role has `provision: ephemeral`.
func (p *Provisioner) Manages(role string) bool { return provision.Manages(p.res, role) }

// AccountFor returns the name of g's user: jit_<user>_<grant>, at most 32 characters.
func (p *Provisioner) AccountFor(g *jitgate.Grant) string {
	return provision.AccountName(g, MaxNameLen)
}

// Login returns the login of g's user.
func (p *Provisioner) Login(g *jitgate.Grant) (*jitgate.Login, error) {
	host, port, err := provision.Endpoint(p.res)
	if err != nil {
		return nil, err
	}
	return &jitgate.Login{Kind: jitgate.KindMySQL, Host: host, Port: port, User: p.AccountFor(g),
		Password: provision.Password(p.key, p.res.Name, g), Database: p.res.Database}, nil
}

// quoteIdent quotes a database or table name ("*" stays a wildcard).
func quoteIdent(s string) string {
	if s == "*" {
		return s
	}
	return "`" + strings.ReplaceAll(s, "`", "``") + "`"
}

// privilege splits a config grant "SELECT, INSERT ON app.*" into its parts; ok is false for a
// role name.
func privilege(grant string) (privs, db, table string, ok bool) {
	privs, target, ok := strings.Cut(grant, " ON ")
	if !ok {
		return "", "", "", false
	}
	db, table, _ = strings.Cut(target, ".")
	return strings.ToUpper(strings.TrimSpace(privs)), db, table, true
}

// Grant creates g's user (or brings an existing one in line) with the derived password, a
// connection limit and exactly the role's roles and privileges.
func (p *Provisioner) Grant(ctx context.Context, g *jitgate.Grant) error {
	role := p.res.Role(g.Role)
	if role == nil {
		return fmt.Errorf("resource %s has no role %s", p.res.Name, g.Role)
	}
	name, password := p.AccountFor(g), provision.Password(p.key, p.res.Name, g)
	conn, err := p.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	exists, err := p.exists(ctx, conn, name)
	if err != nil {
		return err
	}
	stmts := []string{}
	if exists {
		// Start again from nothing, so the user holds exactly what the role says.
		stmts = append(stmts, "ALTER USER ?@'%' IDENTIFIED BY ? WITH MAX_USER_CONNECTIONS ? ACCOUNT UNLOCK",
			"REVOKE ALL PRIVILEGES, GRANT OPTION FROM ?@'%'")
	} else {
		stmts = append(stmts, "CREATE USER ?@'%' IDENTIFIED BY ? WITH MAX_USER_CONNECTIONS ?")
	}
	for i, s := range stmts {
		args := []any{name}
		if i == 0 {
			args = append(args, password, p.limit)
		}
		if _, err := conn.ExecContext(ctx, s, args...); err != nil {
			return fmt.Errorf("%s %s: %w", strings.SplitN(s, " ?", 2)[0], name, err)
		}
	}
	defaultRole := ""
	for _, gr := range role.Grants {
		var err error
		if privs, db, table, ok := privilege(gr); ok {
			_, err = conn.ExecContext(ctx, "GRANT "+privs+" ON "+quoteIdent(db)+"."+quoteIdent(table)+" TO ?@'%'", name)
		} else {
			_, err = conn.ExecContext(ctx, "GRANT "+quoteIdent(gr)+" TO ?@'%'", name)
			if defaultRole == "" {
				defaultRole = gr
			}
		}
		if err != nil {
			return fmt.Errorf("grant %s to %s: %w", gr, name, err)
		}
	}
	if defaultRole != "" {
		// MariaDB enables one default role at login; MySQL would take a list.
		if _, err := conn.ExecContext(ctx, "SET DEFAULT ROLE "+quoteIdent(defaultRole)+" FOR ?@'%'", name); err != nil {
			return fmt.Errorf("set default role of %s: %w", name, err)
		}
	}
	return nil
}

func (p *Provisioner) exists(ctx context.Context, conn *sql.Conn, name string) (bool, error) {
	var n int
	err := conn.QueryRowContext(ctx, "SELECT COUNT(*) FROM mysql.user WHERE User = ? AND Host = '%'", name).Scan(&n)
	return n > 0, err
}

// Revoke removes g's user; see RemoveAccount.
func (p *Provisioner) Revoke(ctx context.Context, g *jitgate.Grant) error {
	return p.remove(ctx, p.AccountFor(g))
}

// RemoveAccount locks the account, kills its connections (waiting until they are gone from the
// process list) and drops it. An account that is already gone is fine.
func (p *Provisioner) RemoveAccount(ctx context.Context, a jitgate.ManagedAccount) error {
	return p.remove(ctx, a.Name)
}

func (p *Provisioner) remove(ctx context.Context, name string) error {
	conn, err := p.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	exists, err := p.exists(ctx, conn, name)
	if err != nil {
		return err
	}
	if exists {
		// Lock first so no new connection starts while the others are killed.
		if _, err := conn.ExecContext(ctx, "ALTER USER ?@'%' ACCOUNT LOCK", name); err != nil {
			return fmt.Errorf("lock %s: %w", name, err)
		}
	}
	deadline := time.Now().Add(p.killWait)
	for {
		ids, err := p.connections(ctx, conn, name)
		if err != nil {
			return err
		}
		if len(ids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d connection(s) of %s survived KILL", len(ids), name)
		}
		for _, id := range ids {
			// The id is an integer read from the server: nothing to quote.
			if _, err := conn.ExecContext(ctx, fmt.Sprintf("KILL CONNECTION %d", id)); err != nil && !isUnknownThread(err) {
				return fmt.Errorf("kill connection %d of %s: %w", id, name, err)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	if _, err := conn.ExecContext(ctx, "DROP USER IF EXISTS ?@'%'", name); err != nil {
		return fmt.Errorf("drop user %s: %w", name, err)
	}
	return nil
}

// isUnknownThread reports MySQL's "Unknown thread id" (the connection ended by itself).
func isUnknownThread(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == 1094
}

func (p *Provisioner) connections(ctx context.Context, conn *sql.Conn, name string) ([]int64, error) {
	rows, err := conn.QueryContext(ctx, "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ?", name)
	if err != nil {
		return nil, fmt.Errorf("list connections of %s: %w", name, err)
	}
	return column[int64](rows)
}

// VerifyRevoked re-reads mysql.user and the process list: g's user must be gone and no
// connection may still run as it.
func (p *Provisioner) VerifyRevoked(ctx context.Context, g *jitgate.Grant) (string, error) {
	name := p.AccountFor(g)
	conn, err := p.db.Conn(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	var users, conns int
	if err := conn.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM mysql.user WHERE User = ?),
		(SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = ?)`, name, name).Scan(&users, &conns); err != nil {
		return "", fmt.Errorf("verify %s: %w", name, err)
	}
	var problems []string
	if users > 0 {
		problems = append(problems, fmt.Sprintf("user %s still exists", name))
	}
	if conns > 0 {
		problems = append(problems, fmt.Sprintf("%d connection(s) still run as %s", conns, name))
	}
	if len(problems) > 0 {
		return "", errors.New(strings.Join(problems, "; "))
	}
	return fmt.Sprintf("mysql %s: user %s absent from mysql.user; 0 connections in the process list", p.res.Address, name), nil
}

// ManagedAccounts lists the users whose names have the jit_<user>_<grant> shape.
func (p *Provisioner) ManagedAccounts(ctx context.Context) ([]jitgate.ManagedAccount, error) {
	rows, err := p.db.QueryContext(ctx, `SELECT User FROM mysql.user WHERE User LIKE 'jit\_%' AND Host = '%' ORDER BY User`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []jitgate.ManagedAccount
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, err
		}
		if id, ok := provision.GrantOf(name); ok {
			out = append(out, jitgate.ManagedAccount{Name: name, GrantID: id})
		}
	}
	return out, rows.Err()
}

// globalFlags maps mysql.user privilege columns to report flags.
var globalFlags = map[string]string{
	"Super_priv": jitgate.FlagSuperuser, "Create_user_priv": jitgate.FlagCreateRole,
	"Create_priv": jitgate.FlagCreateDB, "Grant_priv": jitgate.FlagGrantOption,
	"Repl_slave_priv": jitgate.FlagReplication,
}

// StandingAccess lists every user jitgate does not manage, with its global privileges, its
// roles and its database- and table-level grants.
func (p *Provisioner) StandingAccess(ctx context.Context) ([]jitgate.StandingAccount, error) {
	rows, err := p.db.QueryContext(ctx, `SELECT * FROM mysql.user WHERE User NOT LIKE 'jit\_%' ORDER BY User, Host`)
	if err != nil {
		return nil, fmt.Errorf("standing access on %s: %w", p.res.Name, err)
	}
	cols, err := rows.Columns()
	if err != nil {
		rows.Close()
		return nil, err
	}
	type key struct{ user, host string }
	var (
		out  []jitgate.StandingAccount
		keys []key
	)
	for rows.Next() {
		vals := make([]sql.RawBytes, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			rows.Close()
			return nil, err
		}
		var (
			k    key
			a    jitgate.StandingAccount
			role bool
		)
		for i, c := range cols {
			v := string(vals[i])
			switch {
			case c == "User":
				k.user = v
			case c == "Host":
				k.host = v
			case c == "is_role":
				role = v == "Y"
			case strings.HasSuffix(c, "_priv") && v == "Y":
				a.Attributes = append(a.Attributes, strings.ToUpper(strings.ReplaceAll(strings.TrimSuffix(c, "_priv"), "_", " ")))
				if f := globalFlags[c]; f != "" && !slices.Contains(a.Flags, f) {
					a.Flags = append(a.Flags, f)
				}
			}
		}
		if role {
			continue
		}
		a.Name = k.user + "@" + k.host
		slices.Sort(a.Flags)
		out = append(out, a)
		keys = append(keys, k)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for i, k := range keys {
		a := &out[i]
		// MariaDB keeps role grants in roles_mapping; MySQL 8 in role_edges.
		if a.MemberOf, err = p.strings(ctx, `SELECT Role FROM mysql.roles_mapping WHERE User = ? AND Host = ? ORDER BY Role`, k.user, k.host); err != nil {
			if a.MemberOf, err = p.strings(ctx, `SELECT FROM_USER FROM mysql.role_edges WHERE TO_USER = ? AND TO_HOST = ? ORDER BY FROM_USER`, k.user, k.host); err != nil {
				a.MemberOf = nil
			}
		}
		dbs, err := p.strings(ctx, `SELECT CONCAT('privileges on ', Db, '.*') FROM mysql.db WHERE User = ? AND Host = ? ORDER BY Db`, k.user, k.host)
		if err != nil {
			return nil, err
		}
		tables, err := p.strings(ctx, `SELECT CONCAT(Table_priv, ' on ', Db, '.', Table_name) FROM mysql.tables_priv WHERE User = ? AND Host = ? AND Table_priv <> '' ORDER BY Db, Table_name`, k.user, k.host)
		if err != nil {
			return nil, err
		}
		a.TableGrants = append(dbs, tables...)
		if len(a.TableGrants) > 0 {
			a.Flags = append(a.Flags, jitgate.FlagDirectTableGrants)
		}
	}
	return out, nil
}

func (p *Provisioner) strings(ctx context.Context, q string, args ...any) ([]string, error) {
	rows, err := p.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return column[string](rows)
}

// column reads the single column of rows and closes them.
func column[T any](rows *sql.Rows) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		var v T
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
