package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/testdb"
)

// TestDevTour runs `jitgate server --dev` as a new user would and then every command of the
// tour it prints, in order, through a shell with the printed aliases: a request, an automatic
// and a manual approval, psql sessions through the gateway, a mariadb session through the
// MySQL gateway, a session cut off at its grant's end, the sessions list, the audit log and its verification.
func TestDevTour(t *testing.T) {
	t.Parallel() // 20 s of it is a grant running out
	if testing.Short() {
		t.Skip("runs the dev server and a 20 s grant")
	}
	if _, err := exec.LookPath("psql"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("psql is not installed")
		}
		t.Skip("psql is not installed")
	}
	if _, _, err := testdb.PrepareUpstream(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	// The test binary runs as jitgate when called by that name (see TestMain).
	bin := filepath.Join(t.TempDir(), "jitgate")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(self, bin); err != nil {
		t.Fatal(err)
	}
	addr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	srv := exec.Command(bin, "server", "--dev", "--http-addr", addr, "--store", "sqlite:"+filepath.Join(t.TempDir(), "jitgate.db"))
	srv.Dir = t.TempDir()
	srv.Env = append(os.Environ(), "PGUSER=postgres")
	stdout, _ := srv.StdoutPipe()
	var logs syncBuf
	srv.Stderr = &logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		srv.Process.Signal(syscall.SIGINT)
		srv.Wait()
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	}()
	var tour []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		tour = append(tour, line)
		if strings.HasPrefix(line, "Tokens expire") {
			break
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	text := strings.Join(tour, "\n")
	if !strings.Contains(text, "Demo database on") && !strings.Contains(text, "PostgreSQL gateway") || strings.Contains(text, "NOT set up") {
		t.Fatalf("the dev server did not set up its demo database:\n%s", text)
	}
	// Where MariaDB and its client are here (always with CI=true), the MySQL demo is part of
	// the tour.
	_, myErr := testdb.PrepareMySQLUpstream()
	_, clientErr := exec.LookPath("mariadb")
	if (myErr == nil && clientErr == nil || os.Getenv("CI") == "true") && !strings.Contains(text, "as-alice connect demo-mysql") {
		t.Fatalf("the dev server did not set up its MySQL demo (MariaDB: %v; client: %v):\n%s", myErr, clientErr, text)
	}
	// bash gets the printed export and aliases, then each tour command.
	prelude := []string{"shopt -s expand_aliases"}
	alias := regexp.MustCompile(`^\s+alias as-\w+='.*'$`)
	var commands []string
	for _, line := range tour {
		switch {
		case strings.HasPrefix(strings.TrimSpace(line), "export JITGATE_SERVER="):
			prelude = append(prelude, strings.TrimSpace(line))
		case alias.MatchString(line):
			prelude = append(prelude, strings.TrimSpace(line))
		case strings.HasPrefix(line, "  as-"):
			cmd, _, _ := strings.Cut(line, "   #") // the comment
			commands = append(commands, strings.TrimSpace(cmd))
		}
	}
	if len(commands) < 12 {
		t.Fatalf("the tour prints %d commands:\n%s", len(commands), text)
	}
	path := filepath.Dir(bin) + string(os.PathListSeparator) + os.Getenv("PATH")
	for _, c := range commands {
		sh := exec.Command("bash", "-c", strings.Join(prelude, "\n")+"\n"+c)
		sh.Env = append(os.Environ(), "PATH="+path, "HOME="+t.TempDir())
		start := time.Now()
		out, err := sh.CombinedOutput()
		t.Logf("$ %s (%s)\n%s", c, time.Since(start).Round(time.Millisecond), out)
		switch {
		case strings.Contains(c, "pg_sleep"):
			// Cut off at the grant's end, with jitgate's reason.
			if err == nil || !strings.Contains(string(out), "expired at") {
				t.Fatalf("%s: %v, want the session cut at the grant's end", c, err)
			}
		case err != nil:
			t.Fatalf("%s: %v", c, err)
		}
		if strings.Contains(c, "audit --verify") && !strings.Contains(string(out), "Audit chain OK") {
			t.Fatalf("verify: %s", out)
		}
		if strings.Contains(c, "connect demo-mysql") && !strings.Contains(string(out), "grace") {
			t.Fatalf("%s: no orders through the MySQL gateway: %s", c, out)
		}
		if strings.HasPrefix(c, "as-carol sessions") && !strings.Contains(string(out), "expired at") {
			t.Fatalf("sessions do not show the cut-off one: %s", out)
		}
	}
}

// syncBuf collects a subprocess's output (read after Wait).
type syncBuf struct {
	strings.Builder
}
