package testdb

import (
	"context"
	"database/sql"
	"os"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// DefaultMySQL is the DSN (go-sql-driver form) used when JITGATE_TEST_MYSQL is unset.
const DefaultMySQL = "root@tcp(127.0.0.1:3306)/test"

// MySQL returns a connection to the test MariaDB/MySQL server as an admin, and its config. It
// skips the test when the server is unreachable, or fails it when CI=true.
func MySQL(t testing.TB) (*sql.DB, *mysql.Config) {
	t.Helper()
	dsn := os.Getenv("JITGATE_TEST_MYSQL")
	if dsn == "" {
		dsn = DefaultMySQL
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatalf("JITGATE_TEST_MYSQL: %v", err)
	}
	cfg.InterpolateParams = true
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		if os.Getenv("CI") == "true" {
			t.Fatalf("MariaDB/MySQL at %s is required with CI=true: %v", cfg.Addr, err)
		}
		t.Skipf("MariaDB/MySQL at %s unreachable: %v; set JITGATE_TEST_MYSQL, or CI=true to make this fatal", cfg.Addr, err)
	}
	t.Cleanup(func() { db.Close() })
	return db, cfg
}
