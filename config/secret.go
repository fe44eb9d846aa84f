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
	if err := c.validateListener("gateway.postgres", "127.0.0.1:15432", c.Gateway.Postgres); err != nil {
		return err
	}
	if err := c.validateListener("gateway.mysql", "127.0.0.1:13306", c.Gateway.MySQL); err != nil {
		return err
	}
	if k := c.Gateway.Kubernetes; k != nil && k.InsecurePlaintext {
		return c.Errorf("gateway.kubernetes.insecure_plaintext", "the Kubernetes gateway is HTTPS only (kubectl sends bearer tokens)")
	}
	return c.validateListener("gateway.kubernetes", "127.0.0.1:16443", c.Gateway.Kubernetes)
}

// validateListener checks one protocol gateway's section (at path) and fills in its defaults.
func (c *Config) validateListener(path, example string, g *Listener) error {
	if g == nil {
		return nil
	}
	if g.Addr == "" {
		return c.Errorf(path+".addr", "missing (e.g. %s)", example)
	}
	if (g.TLSCert == "") != (g.TLSKey == "") {
		return c.Errorf(path, "set both tls_cert and tls_key, or neither")
	}
	g.ReuseUpstreamValue = DefaultReuseUpstream
	if g.ReuseUpstream != "" {
		d, err := ParseDuration(g.ReuseUpstream)
		if err != nil || d < 0 || d > time.Hour {
			return c.Errorf(path+".reuse_upstream", "want a duration from 0 (off) to 1h, got %q", g.ReuseUpstream)
		}
		g.ReuseUpstreamValue = d
	}
	g.AuditFlushValue = DefaultAuditFlush
	if g.AuditFlush != "" {
		d, err := ParseDuration(g.AuditFlush)
		if err != nil || d < time.Millisecond || d > 10*time.Second {
			return c.Errorf(path+".audit_flush", "want a duration from 1ms to 10s, got %q", g.AuditFlush)
		}
		g.AuditFlushValue = d
	}
	if g.MaxUnauthenticated < 0 || g.MaxUnauthenticated > 1_000_000 {
		return c.Errorf(path+".max_unauthenticated", "want 1 to 1000000 (or 0 for the default, 512), got %d", g.MaxUnauthenticated)
	}
	if g.MaxUnauthenticatedPerSource < 0 || g.MaxUnauthenticatedPerSource > 1_000_000 {
		return c.Errorf(path+".max_unauthenticated_per_source", "want 1 to 1000000 (or 0 for the default, 32), got %d", g.MaxUnauthenticatedPerSource)
	}
	if g.Loops < 0 || g.Loops > 64 {
		return c.Errorf(path+".loops", "want 1 to 64 (or 0 for one per two CPUs, 1-8), got %d", g.Loops)
	}
	switch g.Relay {
	case "":
		g.Relay = "loop"
	case "loop", "goroutines":
	default:
		return c.Errorf(path+".relay", "want loop or goroutines, got %q", g.Relay)
	}
	return nil
}
