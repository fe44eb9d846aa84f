package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jitgate/jitgate/internal/testdb"
	"github.com/jitgate/jitgate/store"
	"github.com/rogpeppe/go-internal/testscript"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"jitgate": func() { os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) },
	})
}

// TestScripts runs the end-to-end CLI scripts in testdata/script through the built binary
// against a real server on a free port, once on SQLite and once on PostgreSQL.
func TestScripts(t *testing.T) {
	testdb.All(t, func(t *testing.T, b testdb.Backend) {
		testscript.Run(t, testscript.Params{
			Dir: "testdata/script",
			Setup: func(env *testscript.Env) error {
				// Setup runs on the script's goroutine: it returns errors rather than failing t.
				dsn := "sqlite:" + filepath.Join(env.WorkDir, "jitgate.db")
				if b.Name == "postgres" {
					// Each script gets a schema of its own.
					var cleanup func() error
					var err error
					if dsn, cleanup, err = testdb.NewSchema(); err != nil {
						return err
					}
					env.Defer(func() { cleanup() })
				}
				addr, err := freeAddr()
				if err != nil {
					return err
				}
				gwAddr, err := freeAddr()
				if err != nil {
					return err
				}
				upstream, database, err := testdb.PrepareUpstream()
				switch {
				case err == nil:
					env.Setenv("UPSTREAM", "ok")
				case errors.Is(err, testdb.ErrUnreachable) && os.Getenv("CI") != "true":
					// Scripts that need it skip with [!upstream].
				default:
					return err
				}
				myUpstream, err := testdb.PrepareMySQLUpstream()
				switch {
				case err == nil:
					env.Setenv("MYSQL_UPSTREAM", "ok")
				case errors.Is(err, testdb.ErrMySQLUnreachable) && os.Getenv("CI") != "true":
					// Scripts that need it skip with [!mysql].
				default:
					return err
				}
				myGwAddr, err := freeAddr()
				if err != nil {
					return err
				}
				// UNIQ makes user names (and so jit_ role names in the shared PostgreSQL) unique
				// to this script run.
				uniq := make([]byte, 4)
				rand.Read(uniq)
				env.Setenv("UNIQ", "u"+hex.EncodeToString(uniq))
				cfg := filepath.Join(env.WorkDir, "jitgate.yaml")
				if data, err := os.ReadFile(cfg); err == nil {
					r := strings.NewReplacer("STORE_DSN", dsn, "GATEWAY_ADDR", gwAddr, "UPSTREAM_ADDR", upstream, "UPSTREAM_DB", database,
						"MYSQL_GATEWAY_ADDR", myGwAddr, "MYSQL_ADDR", myUpstream, "UNIQ", env.Getenv("UNIQ"))
					if err := os.WriteFile(cfg, []byte(r.Replace(string(data))), 0o600); err != nil {
						return err
					}
				}
				env.Setenv("STORE", dsn)
				env.Setenv("JG_GWMY_PASSWORD", testdb.MySQLUpstreamPassword)
				env.Setenv("ADDR", addr)
				env.Setenv("JITGATE_SERVER", "http://"+addr)
				env.Setenv("HOME", env.WorkDir)
				env.Setenv("XDG_CONFIG_HOME", filepath.Join(env.WorkDir, ".config"))
				return nil
			},
			Condition: func(cond string) (bool, error) {
				switch cond {
				case "upstream":
					_, _, err := testdb.PrepareUpstream()
					return err == nil, nil
				case "mysql":
					// The MariaDB/MySQL upstream and a mariadb or mysql client.
					_, err := testdb.PrepareMySQLUpstream()
					_, e1 := exec.LookPath("mariadb")
					_, e2 := exec.LookPath("mysql")
					if err == nil && e1 != nil && e2 != nil && os.Getenv("CI") == "true" {
						return false, errors.New("CI=true needs the mariadb client")
					}
					return err == nil && (e1 == nil || e2 == nil), nil
				}
				return false, fmt.Errorf("unknown condition %q", cond)
			},
			Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
				"waitserver":  waitServer,
				"setstdout":   setStdout,
				"filemode":    fileMode,
				"pgrole":      pgRole,
				"sleep":       sleepCmd,
				"sleepuntil":  sleepUntil,
				"setjson":     setJSON,
				"storeexec":   storeExec,
				"crashtrials": crashTrials,
				"mcpcall":     mcpCall,
				"mcphttp":     mcpHTTP,
			},
		})
	})
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// waitServer waits up to 10s for $JITGATE_SERVER/healthz.
func waitServer(ts *testscript.TestScript, neg bool, args []string) {
	url := ts.Getenv("JITGATE_SERVER") + "/readyz"
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	ts.Fatalf("server at %s not ready after 10s", url)
}

// setStdout sets the environment variable args[0] to the last command's trimmed stdout.
func setStdout(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: setstdout VAR")
	}
	ts.Setenv(args[0], strings.TrimSpace(ts.ReadFile("stdout")))
}

// fileMode checks a file's permission bits: filemode PATH 0600.
func fileMode(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: filemode PATH MODE")
	}
	st, err := os.Stat(ts.MkAbs(args[0]))
	ts.Check(err)
	if got := fmt.Sprintf("%04o", st.Mode().Perm()); got != args[1] {
		ts.Fatalf("%s has mode %s, want %s", args[0], got, args[1])
	}
}

// pgRole waits for a role in the test PostgreSQL to be present or absent: pgrole NAME
// present|absent [TIMEOUT]. Without a timeout it checks once.
func pgRole(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 2 || len(args) > 3 || (args[1] != "present" && args[1] != "absent") {
		ts.Fatalf("usage: pgrole NAME present|absent [TIMEOUT]")
	}
	var wait time.Duration
	if len(args) == 3 {
		var err error
		wait, err = time.ParseDuration(args[2])
		ts.Check(err)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testdb.PostgresURL())
	ts.Check(err)
	defer conn.Close(ctx)
	deadline := time.Now().Add(wait)
	for {
		var exists bool
		ts.Check(conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, args[0]).Scan(&exists))
		if exists == (args[1] == "present") {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("role %s is not %s after %s", args[0], args[1], wait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// storeExec runs one SQL statement on the script's store, as someone with write access to the
// database could: storeexec 'DELETE FROM audit_events WHERE seq > 2'.
func storeExec(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: storeexec SQL")
	}
	st, err := store.Open(context.Background(), ts.Getenv("STORE"))
	ts.Check(err)
	defer st.Close()
	_, err = st.SQL().Exec(args[0])
	ts.Check(err)
}

// setJSON sets the environment variable args[0] to the top-level field args[1] of the JSON
// object the last command printed: setjson ENDS_AT ends_at.
func setJSON(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: setjson VAR FIELD")
	}
	var obj map[string]any
	ts.Check(json.Unmarshal([]byte(ts.ReadFile("stdout")), &obj))
	v, ok := obj[args[1]]
	if !ok {
		ts.Fatalf("no field %q in the last stdout", args[1])
	}
	ts.Setenv(args[0], fmt.Sprint(v))
}

// sleepUntil waits until an RFC 3339 time has passed, plus a second: sleepuntil $ENDS_AT.
// Scripts use it where a real deadline must pass while nothing runs (a grant ending while the
// server is down); it refuses to wait more than 60s.
func sleepUntil(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: sleepuntil RFC3339-TIME")
	}
	t, err := time.Parse(time.RFC3339Nano, args[0])
	ts.Check(err)
	d := time.Until(t) + time.Second
	if d > time.Minute {
		ts.Fatalf("sleepuntil %s: %s away; keep scripts fast", args[0], d)
	}
	time.Sleep(d)
}

// sleepCmd waits for a duration: sleep 5s. Scripts use it only where real time must pass
// (a grant ending while the server is down).
func sleepCmd(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: sleep DURATION")
	}
	d, err := time.ParseDuration(args[0])
	ts.Check(err)
	if d > 30*time.Second {
		ts.Fatalf("sleep %s: keep scripts fast (at most 30s)", d)
	}
	time.Sleep(d)
}
