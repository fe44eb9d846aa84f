package provision_test

import (
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/provision"
)

func TestAccountNames(t *testing.T) {
	cases := []struct {
		user string
		id   int64
		max  int
		want string
	}{
		{"alice", 7, 63, "jit_alice_7"},
		{"o'brien.x@corp-1", 12, 63, "jit_o'brien.x@corp-1_12"},
		{strings.Repeat("a", 40), 123, 32, "jit_" + strings.Repeat("a", 24) + "_123"},
	}
	for _, c := range cases {
		got := provision.AccountName(&jitgate.Grant{ID: c.id, User: c.user}, c.max)
		if got != c.want || len(got) > c.max {
			t.Errorf("AccountName(%q, %d) = %q, want %q", c.user, c.id, got, c.want)
		}
		if id, ok := provision.GrantOf(got); !ok || id != c.id {
			t.Errorf("GrantOf(%q) = %d, %t", got, id, ok)
		}
	}
	for _, bad := range []string{"alice", "jit_alice", "jit_alice_x", "jit__0", "postgres"} {
		if id, ok := provision.GrantOf(bad); ok {
			t.Errorf("GrantOf(%q) = %d", bad, id)
		}
	}
}

func TestPasswords(t *testing.T) {
	key := []byte(strings.Repeat("k", 32))
	at := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	g := &jitgate.Grant{ID: 7, User: "alice", ActivatedAt: at}
	p := provision.Password(key, "app-db", g)
	if len(p) != 43 || strings.ContainsAny(p, `'"\ `) {
		t.Fatalf("password %q", p)
	}
	if provision.Password(key, "app-db", g) != p {
		t.Fatal("not stable")
	}
	for _, other := range []string{
		provision.Password([]byte(strings.Repeat("j", 32)), "app-db", g),
		provision.Password(key, "other-db", g),
		provision.Password(key, "app-db", &jitgate.Grant{ID: 8, User: "alice", ActivatedAt: at}),
		provision.Password(key, "app-db", &jitgate.Grant{ID: 7, User: "alice", ActivatedAt: at.Add(time.Nanosecond)}),
	} {
		if other == p {
			t.Fatal("different inputs gave the same password")
		}
	}
	if err := provision.CheckKey([]byte("short")); err == nil || !strings.Contains(err.Error(), "at least 32") {
		t.Fatalf("short key: %v", err)
	}
}
