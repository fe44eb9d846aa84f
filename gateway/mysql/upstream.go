package mysql

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/config"
	"github.com/jitgate/jitgate/gateway"
)

// Upstream says how to log in to the real database for a grant.
type Upstream struct {
	// Addr is the server's host:port.
	Addr     string
	User     string
	Password string
	// Database is the default database of the login ("" for none).
	Database string
	// TLS, when set, is used if the server offers TLS; TLSRequired refuses a server that does
	// not.
	TLS         *tls.Config
	TLSRequired bool
}

// UpstreamFunc returns how to log in to the real database for a grant.
type UpstreamFunc func(g *jitgate.Grant) (*Upstream, error)

// Catalog finds resources by name.
type Catalog interface {
	Resource(name string) *jitgate.Resource
}

// LoginFunc returns the login of the ephemeral account provisioned for a grant (see
// access.Engine.ProvisionedLogin).
type LoginFunc func(g *jitgate.Grant) (*jitgate.Login, error)

// ConfigUpstream returns an UpstreamFunc that logs in to a grant's MySQL resource with the
// grant's own ephemeral jit_ user where its role has `provision: ephemeral` (logins may be nil
// if no role does), and otherwise with the login configured as the role's upstream. It never
// logs in as a more privileged account to narrow it afterwards: the client could undo that.
// The resource's sslmode decides TLS to the server: disable; prefer (the default: TLS when
// the server offers it, unverified); require (TLS, unverified); verify-ca and verify-full
// (TLS, the certificate verified against the system's roots and the host name).
func ConfigUpstream(cat Catalog, logins LoginFunc) UpstreamFunc {
	return func(g *jitgate.Grant) (*Upstream, error) {
		res := cat.Resource(g.Resource)
		if res == nil || res.Kind != jitgate.KindMySQL {
			return nil, jitgate.Errorf(jitgate.ENOTFOUND, "%s is not a MySQL resource", g.Resource)
		}
		role := res.Role(g.Role)
		u := &Upstream{Addr: res.Address, Database: res.Database}
		if _, _, err := net.SplitHostPort(u.Addr); err != nil {
			u.Addr = net.JoinHostPort(u.Addr, "3306")
		}
		switch {
		case role != nil && role.Provision == jitgate.ProvisionEphemeral && logins != nil:
			login, err := logins(g)
			if err != nil {
				return nil, err
			}
			u.User, u.Password = login.User, login.Password
		case role == nil || role.Upstream == nil:
			return nil, jitgate.Errorf(jitgate.EINVALID, "role %s/%s has no upstream login configured", g.Resource, g.Role)
		default:
			pw, err := config.LoadPassword(*role.Upstream)
			if err != nil {
				return nil, err
			}
			u.User, u.Password = role.Upstream.User, pw
		}
		host, _, _ := net.SplitHostPort(u.Addr)
		switch res.SSLMode {
		case "disable":
		case "", "prefer":
			u.TLS = &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12} //nolint:gosec // sslmode prefer, as libpq
		case "require":
			u.TLS, u.TLSRequired = &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}, true //nolint:gosec // sslmode require
		default:
			u.TLS, u.TLSRequired = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}, true
		}
		return u, nil
	}
}

// upstream is one logged-in connection to the real database.
type upstream struct {
	conn    net.Conn
	cfg     *Upstream
	connID  uint32 // the server's thread id, for KILL QUERY
	version string
	secure  bool
}

// errUnsupported marks an upstream that cannot serve the client's capabilities.
var errUnsupported = errors.New("unsupported")

// login connects to cfg and logs in with the client's stream capabilities, character set and
// packet size, so that the stream after login is what the client expects.
func login(ctx context.Context, cfg *Upstream, clientCaps uint32, charset byte, maxPacket uint32) (*upstream, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	tc, err := d.DialContext(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, err
	}
	nc := gateway.NewBufConn(tc) // so that an event loop can take the socket over
	u, err := handshakeUpstream(ctx, nc, cfg, clientCaps, charset, maxPacket)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return u, nil
}

func handshakeUpstream(ctx context.Context, nc net.Conn, cfg *Upstream, clientCaps uint32, charset byte, maxPacket uint32) (*upstream, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	} else {
		_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
	}
	p := &packetIO{rw: nc, max: 1 << 20}
	b, err := p.read()
	if err != nil {
		return nil, fmt.Errorf("read handshake: %w", err)
	}
	h, err := parseHandshake(b)
	if err != nil {
		return nil, err
	}
	if h.caps&capProtocol41 == 0 || h.caps&capSecureConnection == 0 {
		return nil, fmt.Errorf("%w: server %s does not speak protocol 4.1", errUnsupported, h.version)
	}
	if missing := clientCaps & streamCaps &^ h.caps; missing != 0 {
		return nil, fmt.Errorf("%w: server %s lacks capabilities 0x%x the client uses", errUnsupported, h.version, missing)
	}
	caps := clientCaps&streamCaps | capProtocol41 | capSecureConnection | capLongPassword | h.caps&(capPluginAuth|capPluginAuthLenenc)
	if cfg.Database != "" {
		caps |= capConnectWithDB
	}
	if maxPacket == 0 {
		maxPacket = 1 << 24
	}
	u := &upstream{conn: nc, cfg: cfg, connID: h.connID, version: h.version}
	if cfg.TLS != nil && h.caps&capSSL != 0 {
		caps |= capSSL
		req := &response{caps: caps, maxPacket: maxPacket, charset: charset}
		if err := p.write(req.encode()); err != nil {
			return nil, err
		}
		tc := tls.Client(nc, cfg.TLS)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("TLS: %w", err)
		}
		u.conn, u.secure, p.rw = tc, true, tc
	} else if cfg.TLSRequired {
		return nil, fmt.Errorf("%w: server %s does not offer TLS, which the resource's sslmode requires", errUnsupported, h.version)
	}
	plugin := h.plugin
	if plugin == "" {
		plugin = pluginNative
	}
	auth, err := u.authData(plugin, h.scramble)
	if err != nil {
		return nil, err
	}
	resp := &response{caps: caps, maxPacket: maxPacket, charset: charset, user: cfg.User, auth: auth, database: cfg.Database, plugin: plugin}
	if err := p.write(resp.encode()); err != nil {
		return nil, err
	}
	scramble := h.scramble
	for {
		b, err := p.read()
		if err != nil {
			return nil, fmt.Errorf("login: %w", err)
		}
		switch {
		case len(b) == 0:
			return nil, errors.New("login: empty packet")
		case b[0] == 0x00:
			_ = nc.SetDeadline(time.Time{})
			return u, nil
		case b[0] == 0xff:
			code, state, msg := parseErr(b)
			return nil, &serverError{code, state, msg}
		case b[0] == 0xfe: // AuthSwitchRequest
			name, rest, _ := cstr(b[1:])
			if len(rest) > 0 && rest[len(rest)-1] == 0 {
				rest = rest[:len(rest)-1]
			}
			plugin, scramble = name, append([]byte(nil), rest...)
			auth, err := u.authData(plugin, scramble)
			if err != nil {
				return nil, err
			}
			if err := p.write(auth); err != nil {
				return nil, err
			}
		case b[0] == 0x01 && plugin == pluginCachingSHA2 && len(b) == 2 && b[1] == sha2FastAuthOK:
			// the OK follows
		case b[0] == 0x01 && plugin == pluginCachingSHA2 && len(b) == 2 && b[1] == sha2FullAuth:
			if u.secure {
				err = p.write(append([]byte(cfg.Password), 0))
			} else {
				err = p.write([]byte{sha2RequestPublicKey})
			}
			if err != nil {
				return nil, err
			}
		case b[0] == 0x01 && plugin == pluginCachingSHA2 && !u.secure:
			enc, err := encryptPassword(cfg.Password, scramble, b[1:])
			if err != nil {
				return nil, err
			}
			if err := p.write(enc); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("login: unexpected packet 0x%02x during %s authentication", b[0], plugin)
		}
	}
}

// authData is the first answer to plugin's challenge.
func (u *upstream) authData(plugin string, scramble []byte) ([]byte, error) {
	switch plugin {
	case pluginNative:
		return scrambleNative(scramble, u.cfg.Password), nil
	case pluginCachingSHA2:
		return scrambleSHA2(scramble, u.cfg.Password), nil
	case pluginClear:
		if !u.secure {
			return nil, fmt.Errorf("%w: the server asks for the password in clear without TLS", errUnsupported)
		}
		return append([]byte(u.cfg.Password), 0), nil
	}
	return nil, fmt.Errorf("%w: authentication plugin %q", errUnsupported, plugin)
}

// command sends one command on a connection between commands and returns the first packet of
// its response.
func (u *upstream) command(cmd byte, arg string, timeout time.Duration) ([]byte, error) {
	if err := u.conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	p := &packetIO{rw: u.conn, max: 1 << 20}
	if err := p.write(append([]byte{cmd}, arg...)); err != nil {
		return nil, err
	}
	b, err := p.read()
	if err != nil {
		return nil, err
	}
	if len(b) > 0 && b[0] == 0xff {
		code, state, msg := parseErr(b)
		return nil, &serverError{code, state, msg}
	}
	return b, u.conn.SetDeadline(time.Time{})
}

// reset makes a connection whose session ended cleanly fit for another session of the same
// grant: COM_RESET_CONNECTION rolls back, drops temporary tables, closes prepared statements,
// releases locks and resets every session variable; then the login's default database is
// selected again (the client may have changed it).
func (u *upstream) reset(timeout time.Duration) error {
	b, err := u.command(comResetConnection, "", timeout)
	if err != nil {
		return fmt.Errorf("COM_RESET_CONNECTION: %w", err)
	}
	if len(b) == 0 || b[0] != 0x00 {
		return errors.New("COM_RESET_CONNECTION: no OK")
	}
	if u.cfg.Database != "" {
		if _, err := u.command(comInitDB, u.cfg.Database, timeout); err != nil {
			return fmt.Errorf("COM_INIT_DB: %w", err)
		}
	}
	return nil
}

// killQuery stops the query running on u: KILL QUERY from a second login of the same account
// (an account may always kill its own threads).
func (u *upstream) killQuery(ctx context.Context) error {
	side, err := login(ctx, &Upstream{Addr: u.cfg.Addr, User: u.cfg.User, Password: u.cfg.Password, TLS: u.cfg.TLS, TLSRequired: u.cfg.TLSRequired},
		capProtocol41, 45, 0)
	if err != nil {
		return err
	}
	defer side.conn.Close()
	_, err = side.command(comQuery, "KILL QUERY "+strconv.FormatUint(uint64(u.connID), 10), 5*time.Second)
	var se *serverError
	if errors.As(err, &se) && se.Code == 1094 { // unknown thread: it ended already
		err = nil
	}
	_ = (&packetIO{rw: side.conn}).write([]byte{comQuit})
	return err
}
