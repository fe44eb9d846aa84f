package testdb

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// PGBin is where Debian's PostgreSQL server binaries live.
const PGBin = "/usr/lib/postgresql/15/bin"

// ClusterPassword is the superuser password of a private cluster.
const ClusterPassword = "jitgate-test-superuser"

// PrivateCluster starts a throwaway PostgreSQL cluster that checks passwords for real
// (scram-sha-256 for every TCP connection) on a free loopback port, stopped at cleanup. It
// returns the address and a superuser DSN. Run as root, the server runs as the postgres user,
// as PostgreSQL requires. It skips when the server binaries are missing, except with CI=true.
func PrivateCluster(t testing.TB) (addr, superDSN string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(PGBin, "initdb")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL server binaries are required with CI=true: %v", err)
		}
		t.Skipf("no PostgreSQL server binaries in %s", PGBin)
	}
	dir, err := os.MkdirTemp("", "jitgate-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	run := func(name string, args ...string) *exec.Cmd {
		return exec.Command(filepath.Join(PGBin, name), args...)
	}
	if os.Geteuid() == 0 {
		pg, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root needs a postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(pg.Uid)
		gid, _ := strconv.Atoi(pg.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		run = func(name string, args ...string) *exec.Cmd {
			return exec.Command("runuser", append([]string{"-u", "postgres", "--", filepath.Join(PGBin, name)}, args...)...)
		}
	}
	data := filepath.Join(dir, "data")
	pwfile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwfile, []byte(ClusterPassword+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := run("initdb", "-D", data, "-U", "postgres", "--pwfile", pwfile, "--auth-local=trust",
		"--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	opts := fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -c unix_socket_directories=%s -c password_encryption=scram-sha-256 -c fsync=off", port, dir)
	if out, err := run("pg_ctl", "-D", data, "-o", opts, "-l", filepath.Join(dir, "log"), "-w", "-t", "30", "start").CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		t.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
	t.Cleanup(func() {
		if out, err := run("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop").CombinedOutput(); err != nil {
			t.Errorf("pg_ctl stop: %v\n%s", err, strings.TrimSpace(string(out)))
		}
	})
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	return addr, fmt.Sprintf("postgres://postgres:%s@%s/postgres?sslmode=disable", ClusterPassword, addr)
}
