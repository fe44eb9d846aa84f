// Package testdb gives tests fresh stores: a SQLite file in a temp dir, and a private schema in
// the local PostgreSQL (JITGATE_TEST_POSTGRES, default postgres://postgres@127.0.0.1:5432/test).
// When PostgreSQL is unreachable the PostgreSQL half is skipped, except with CI=true, where
// that is a test failure.
package testdb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultPostgres is the DSN used when JITGATE_TEST_POSTGRES is unset.
const DefaultPostgres = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// Backend is a fresh, empty database for one test, as a store DSN that may be opened several
// times (to restart an engine, or to run two engines on one database).
type Backend struct {
	Name string
	DSN  string
}

// SQLite returns a backend on a new SQLite file.
func SQLite(t testing.TB) Backend {
	return Backend{Name: "sqlite", DSN: "sqlite:" + filepath.Join(t.TempDir(), "jitgate.db")}
}

// PostgresURL returns the PostgreSQL server tests use.
func PostgresURL() string {
	if v := os.Getenv("JITGATE_TEST_POSTGRES"); v != "" {
		return v
	}
	return DefaultPostgres
}

// Postgres returns a backend on a new schema in the test PostgreSQL, dropped at cleanup. It
// skips the test when PostgreSQL is unreachable, or fails it when CI=true.
func Postgres(t testing.TB) Backend {
	t.Helper()
	dsn, cleanup, err := NewSchema()
	if errors.Is(err, ErrUnreachable) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL at %s is required with CI=true: %v", PostgresURL(), err)
		}
		t.Skipf("%v; set JITGATE_TEST_POSTGRES, or CI=true to make this fatal", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cleanup(); err != nil {
			t.Error(err)
		}
	})
	return Backend{Name: "postgres", DSN: dsn}
}

// ErrUnreachable is returned when the test PostgreSQL cannot be reached.
var ErrUnreachable = errors.New("PostgreSQL unreachable")

// NewSchema creates a fresh schema in the test PostgreSQL and returns a store DSN using it and
// a function that drops it. It is for callers that cannot fail a test directly (testscript
// setup); others use Postgres.
func NewSchema() (dsn string, cleanup func() error, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	base := PostgresURL()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		return "", nil, fmt.Errorf("%w (%s): %v", ErrUnreachable, base, err)
	}
	defer conn.Close(ctx)
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "jg_test_" + hex.EncodeToString(b[:])
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
		return "", nil, fmt.Errorf("create schema: %w", err)
	}
	cleanup = func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			return fmt.Errorf("drop schema %s: %w", schema, err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			return fmt.Errorf("drop schema %s: %w", schema, err)
		}
		return nil
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", nil, fmt.Errorf("JITGATE_TEST_POSTGRES: %w", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), cleanup, nil
}

// All returns a fresh SQLite backend and a fresh PostgreSQL backend (see Postgres), for
// running one test against both stores.
func All(t *testing.T, fn func(t *testing.T, b Backend)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, SQLite(t)) })
	t.Run("postgres", func(t *testing.T) { fn(t, Postgres(t)) })
}
