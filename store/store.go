// Package store persists jitgate's state in SQLite (the embedded default, through the pure-Go
// modernc.org/sqlite driver) or PostgreSQL (through pgx), with one implementation over
// database/sql and embedded goose migrations.
//
// Concurrency: every write runs in a transaction that locks what it changes. On SQLite, write
// transactions begin IMMEDIATE, so they are serialized; on PostgreSQL, rows read for update are
// locked with SELECT ... FOR UPDATE, updates compare the row's version, and every audit append
// locks the single audit_head row, which serializes the chain across server instances.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"github.com/jitgate/jitgate"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

//go:embed migrations
var migrations embed.FS

// Dialect names the database behind a store.
type Dialect string

// Dialects.
const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// DB is a jitgate.Store over database/sql.
type DB struct {
	db      *sql.DB
	dialect Dialect
	path    string // the SQLite database file

	// writeMu serializes this process's SQLite write transactions. SQLite allows one writer
	// at a time anyway; waiting here is a fair queue, where waiting on SQLite's lock would be
	// its busy handler's sleep-and-retry, which costs milliseconds under contention.
	writeMu sync.Mutex

	mu     sync.Mutex
	stmts  map[string]*sql.Stmt // prepared statements by query text (as written, with ?)
	wanted map[string]bool      // queries run since the last warm that are not prepared yet
}

// maxStmts bounds the statement cache; the store's queries are a fixed set plus a few filter
// and batch-size variants, so it is never reached in practice.
const maxStmts = 512

// cached returns q's prepared statement, or nil after noting that q is wanted. Statements are
// prepared by warm, outside any transaction: preparing inside one would need a second pooled
// connection while holding the first, and a full pool of such transactions would deadlock.
// Only SQLite uses the cache; pgx already caches prepared statements on each connection.
func (s *DB) cached(q string) *sql.Stmt {
	if s.dialect != SQLite {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.stmts[q]; ok {
		return st
	}
	if len(s.stmts)+len(s.wanted) < maxStmts {
		s.wanted[q] = true
	}
	return nil
}

// warm prepares the statements noted as wanted. A failure leaves them unprepared: the queries
// still run, parsed each time.
func (s *DB) warm(ctx context.Context) {
	s.mu.Lock()
	if len(s.wanted) == 0 {
		s.mu.Unlock()
		return
	}
	qs := make([]string, 0, len(s.wanted))
	for q := range s.wanted {
		qs = append(qs, q)
	}
	clear(s.wanted)
	s.mu.Unlock()
	for _, q := range qs {
		st, err := s.db.PrepareContext(ctx, s.rebind(q))
		if err != nil {
			continue
		}
		s.mu.Lock()
		if _, dup := s.stmts[q]; dup {
			st.Close()
		} else {
			s.stmts[q] = st
		}
		s.mu.Unlock()
	}
}

// Open opens the store named by dsn, "sqlite:PATH" or a "postgres://" URL, and brings its schema
// up to date. Extra PostgreSQL runtime parameters (e.g. search_path) may be given as URL query
// parameters.
func Open(ctx context.Context, dsn string) (*DB, error) {
	var (
		s   *DB
		err error
	)
	switch {
	case strings.HasPrefix(dsn, "sqlite:"):
		s, err = openSQLite(strings.TrimPrefix(dsn, "sqlite:"))
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		s, err = openPostgres(ctx, dsn)
	default:
		return nil, jitgate.Errorf(jitgate.EINVALID, "store %q: want sqlite:PATH or a postgres:// URL", redact(dsn))
	}
	if err != nil {
		return nil, err
	}
	if err := s.migrate(ctx); err != nil {
		s.db.Close()
		return nil, err
	}
	return s, nil
}

func openSQLite(path string) (*DB, error) {
	if path == "" {
		return nil, jitgate.Errorf(jitgate.EINVALID, "store: sqlite: needs a path")
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
	}
	// WAL lets readers run beside the writer; IMMEDIATE transactions take the write lock at
	// BEGIN so two writers never deadlock upgrading their locks; the busy timeout makes a
	// second writer wait instead of failing.
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("store: open sqlite: %w", err)
	}
	// Keep every connection: opening one runs the pragmas, and a new connection prepares
	// every statement again (database/sql's default keeps 2 idle, which under load made most
	// of a request's cost opening connections and preparing statements).
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(8)
	db.SetConnMaxIdleTime(5 * time.Minute)
	return &DB{db: db, dialect: SQLite, path: path, stmts: map[string]*sql.Stmt{}, wanted: map[string]bool{}}, nil
}

func openPostgres(ctx context.Context, dsn string) (*DB, error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, jitgate.Errorf(jitgate.EINVALID, "store: invalid postgres URL %s", redact(dsn))
	}
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(16)
	db.SetConnMaxIdleTime(5 * time.Minute)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, unavailable(fmt.Errorf("connect %s: %w", redact(dsn), err))
	}
	return &DB{db: db, dialect: Postgres, stmts: map[string]*sql.Stmt{}, wanted: map[string]bool{}}, nil
}

// Redact returns dsn with any password hidden, for logs and messages.
func Redact(dsn string) string { return redact(dsn) }

// redact hides the password in a URL.
func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		return dsn
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

func (s *DB) migrate(ctx context.Context) error {
	sub, err := fs.Sub(migrations, "migrations/"+string(s.dialect))
	if err != nil {
		return err
	}
	var opts []goose.ProviderOption
	gd := goose.DialectSQLite3
	if s.dialect == Postgres {
		gd = goose.DialectPostgres
		// Two servers starting together on one database must not both migrate.
		locker, err := lock.NewPostgresSessionLocker()
		if err != nil {
			return err
		}
		opts = append(opts, goose.WithSessionLocker(locker))
	}
	p, err := goose.NewProvider(gd, s.db, sub, opts...)
	if err != nil {
		return fmt.Errorf("store: migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("store: migrate: %w", s.classify(err))
	}
	return nil
}

// Dialect returns the store's database kind.
func (s *DB) Dialect() Dialect { return s.dialect }

// SQL returns the underlying database handle (for tests and tools).
func (s *DB) SQL() *sql.DB { return s.db }

// Close closes the database and its prepared statements.
func (s *DB) Close() error {
	s.mu.Lock()
	for q, st := range s.stmts {
		st.Close()
		delete(s.stmts, q)
	}
	s.mu.Unlock()
	return s.db.Close()
}

// Ping reports whether the database answers.
func (s *DB) Ping(ctx context.Context) error {
	if err := s.db.PingContext(ctx); err != nil {
		return s.classify(err)
	}
	return nil
}

// Tx runs fn in a write transaction.
func (s *DB) Tx(ctx context.Context, fn func(jitgate.Tx) error) error {
	s.warm(ctx)
	if s.dialect == SQLite {
		s.writeMu.Lock()
		defer s.writeMu.Unlock()
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return s.classify(err)
	}
	t := &txn{s: s, tx: tx, ctx: ctx}
	if err := fn(t); err != nil {
		_ = tx.Rollback()
		return s.classify(err)
	}
	if err := t.flush(); err != nil {
		_ = tx.Rollback()
		return s.classify(err)
	}
	if err := tx.Commit(); err != nil {
		return s.classify(err)
	}
	return nil
}

// View runs fn outside a write transaction.
func (s *DB) View(ctx context.Context, fn func(jitgate.Tx) error) error {
	s.warm(ctx)
	return s.classify(fn(&txn{s: s, ctx: ctx, readOnly: true}))
}

// unavailable marks err as "the store cannot be reached": callers fail closed.
func unavailable(err error) error {
	return fmt.Errorf("%w: %v", &jitgate.Error{Code: jitgate.EUNAVAILABLE, Message: "store unavailable"}, err)
}

// classify leaves jitgate errors alone, marks connection failures EUNAVAILABLE and unique-key
// violations ECONFLICT, and wraps anything else so its details reach logs but not callers.
func (s *DB) classify(err error) error {
	if err == nil {
		return nil
	}
	var je *jitgate.Error
	if errors.As(err, &je) {
		return err
	}
	var ne net.Error
	var ce *pgconn.ConnectError
	if errors.As(err, &ne) || errors.As(err, &ce) || errors.Is(err, sql.ErrConnDone) || errors.Is(err, context.DeadlineExceeded) {
		return unavailable(err)
	}
	// A unique key that raced (two clicks on "approve") is a stale read: retrying sees the
	// winner's row.
	var pe *pgconn.PgError
	if (errors.As(err, &pe) && pe.Code == "23505") || strings.Contains(err.Error(), "UNIQUE constraint failed") {
		return fmt.Errorf("%w: %v", jitgate.ErrStale, err)
	}
	return fmt.Errorf("store: %w", err)
}

// rebind turns the ? placeholders the queries are written with into $1, $2, ... for
// PostgreSQL. Queries never hold a literal '?'.
func (s *DB) rebind(q string) string {
	if s.dialect != Postgres {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(q[i])
	}
	return b.String()
}
