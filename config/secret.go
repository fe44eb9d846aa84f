package config

import (
	"os"
	"strings"
	"time"

	"github.com/jitgate/jitgate"
)

// LoadPassword reads the password a Secret names: from its environment variable or its file
// (trailing newlines trimmed). A secret that names neither has no password (e.g. trust or
// certificate authentication). Errors name the variable or file, never the value.
func LoadPassword(s jitgate.Secret) (string, error) {
	switch {
	case s.PasswordEnv != "":
		v, ok := os.LookupEnv(s.PasswordEnv)
		if !ok {
			return "", jitgate.Errorf(jitgate.EINVALID, "environment variable %s (password of %s) is not set", s.PasswordEnv, s.User)
		}
		return v, nil
	case s.PasswordFile != "":
		b, err := os.ReadFile(s.PasswordFile)
		if err != nil {
			return "", jitgate.Errorf(jitgate.EINVALID, "cannot read password file of %s: %v", s.User, err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	return "", nil
}

// validateGateway checks the gateway section.
func (c *Config) validateGateway() error {
	g := c.Gateway.Postgres
	if g == nil {
		return nil
	}
	if g.Addr == "" {
		return c.Errorf("gateway.postgres.addr", "missing (e.g. 127.0.0.1:15432)")
	}
	if (g.TLSCert == "") != (g.TLSKey == "") {
		return c.Errorf("gateway.postgres", "set both tls_cert and tls_key, or neither")
	}
	g.ReuseUpstreamValue = DefaultReuseUpstream
	if g.ReuseUpstream != "" {
		d, err := ParseDuration(g.ReuseUpstream)
		if err != nil || d < 0 || d > time.Hour {
			return c.Errorf("gateway.postgres.reuse_upstream", "want a duration from 0 (off) to 1h, got %q", g.ReuseUpstream)
		}
		g.ReuseUpstreamValue = d
	}
	g.AuditFlushValue = DefaultAuditFlush
	if g.AuditFlush != "" {
		d, err := ParseDuration(g.AuditFlush)
		if err != nil || d < time.Millisecond || d > 10*time.Second {
			return c.Errorf("gateway.postgres.audit_flush", "want a duration from 1ms to 10s, got %q", g.AuditFlush)
		}
		g.AuditFlushValue = d
	}
	if g.Loops < 0 || g.Loops > 64 {
		return c.Errorf("gateway.postgres.loops", "want 1 to 64 (or 0 for one per CPU, at most 8), got %d", g.Loops)
	}
	if g.MaxUnauthenticated < 0 || g.MaxUnauthenticated > 1_000_000 {
		return c.Errorf("gateway.postgres.max_unauthenticated", "want 1 to 1000000 (or 0 for the default, 512), got %d", g.MaxUnauthenticated)
	}
	if g.MaxUnauthenticatedPerSource < 0 || g.MaxUnauthenticatedPerSource > 1_000_000 {
		return c.Errorf("gateway.postgres.max_unauthenticated_per_source", "want 1 to 1000000 (or 0 for the default, 32), got %d", g.MaxUnauthenticatedPerSource)
	}
	switch g.Relay {
	case "":
		g.Relay = "loop"
	case "loop", "goroutines":
	default:
		return c.Errorf("gateway.postgres.relay", "want loop or goroutines, got %q", g.Relay)
	}
	return nil
}

// GatewayTLSMissing reports whether the PostgreSQL gateway has neither a certificate nor
// insecure_plaintext: only --dev may then generate a self-signed pair.
func (c *Config) GatewayTLSMissing() bool {
	g := c.Gateway.Postgres
	return g != nil && g.TLSCert == "" && !g.InsecurePlaintext
}
