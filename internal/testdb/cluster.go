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
	c, err := StartCluster()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	})
	return c.Addr, c.SuperDSN
}

// Cluster is a throwaway PostgreSQL cluster (StartCluster).
type Cluster struct {
	// Addr is host:port on loopback; SuperDSN connects as the superuser postgres.
	Addr, SuperDSN string
	dir            string
	run            func(name string, args ...string) *exec.Cmd
}

// StartCluster starts a throwaway PostgreSQL cluster as PrivateCluster describes, with extra
// server settings (e.g. "max_connections=1200"), for tests and benchmarks. Stop removes it.
func StartCluster(settings ...string) (*Cluster, error) {
	if _, err := os.Stat(filepath.Join(PGBin, "initdb")); err != nil {
		return nil, fmt.Errorf("no PostgreSQL server binaries: %w", err)
	}
	dir, err := os.MkdirTemp("", "jitgate-pg-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir, run: func(name string, args ...string) *exec.Cmd {
		return exec.Command(filepath.Join(PGBin, name), args...)
	}}
	fail := func(err error) (*Cluster, error) {
		os.RemoveAll(dir)
		return nil, err
	}
	if os.Geteuid() == 0 {
		pg, err := user.Lookup("postgres")
		if err != nil {
			return fail(fmt.Errorf("running as root needs a postgres user: %w", err))
		}
		uid, _ := strconv.Atoi(pg.Uid)
		gid, _ := strconv.Atoi(pg.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return fail(err)
		}
		c.run = func(name string, args ...string) *exec.Cmd {
			return exec.Command("runuser", append([]string{"-u", "postgres", "--", filepath.Join(PGBin, name)}, args...)...)
		}
	}
	data := filepath.Join(dir, "data")
	pwfile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwfile, []byte(ClusterPassword+"\n"), 0o644); err != nil {
		return fail(err)
	}
	if out, err := c.run("initdb", "-D", data, "-U", "postgres", "--pwfile", pwfile, "--auth-local=trust",
		"--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync").CombinedOutput(); err != nil {
		return fail(fmt.Errorf("initdb: %v\n%s", err, out))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	opts := fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -c unix_socket_directories=%s -c password_encryption=scram-sha-256 -c fsync=off", port, dir)
	for _, s := range settings {
		opts += " -c " + s
	}
	if out, err := c.run("pg_ctl", "-D", data, "-o", opts, "-l", filepath.Join(dir, "log"), "-w", "-t", "60", "start").CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		return fail(fmt.Errorf("pg_ctl start: %v\n%s\n%s", err, out, log))
	}
	c.Addr = fmt.Sprintf("127.0.0.1:%d", port)
	c.SuperDSN = fmt.Sprintf("postgres://postgres:%s@%s/postgres?sslmode=disable", ClusterPassword, c.Addr)
	return c, nil
}

// Stop stops the cluster at once and removes its files.
func (c *Cluster) Stop() error {
	defer os.RemoveAll(c.dir)
	if out, err := c.run("pg_ctl", "-D", filepath.Join(c.dir, "data"), "-m", "immediate", "-w", "stop").CombinedOutput(); err != nil {
		return fmt.Errorf("pg_ctl stop: %v\n%s", err, strings.TrimSpace(string(out)))
	}
	return nil
}
