// Package provision holds what jitgate's provisioners share: the names of the accounts they
// create per grant, and the passwords of those accounts, which are derived from a server key
// rather than stored. The provisioners themselves live in provision/postgres (PostgreSQL),
// provision/mysql (MariaDB and MySQL) and provision/webhook (anything else).
package provision

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/jitgate/jitgate"
)

// Prefix starts the name of every account jitgate creates. Do not create accounts with this
// prefix by hand: the drift reconciler removes those no live grant explains.
const Prefix = "jit_"

// MinKeyLen is the shortest acceptable provisioning key.
const MinKeyLen = 32

// AccountName returns the name of g's account: jit_<user>_<grant id>, with the user part
// shortened so the whole fits in maxLen bytes (63 for PostgreSQL, 32 for MySQL). The grant id
// keeps it unique; the user part makes it readable in the target's own logs.
func AccountName(g *jitgate.Grant, maxLen int) string {
	id := "_" + strconv.FormatInt(g.ID, 10)
	user := g.User
	if room := maxLen - len(Prefix) - len(id); len(user) > room {
		user = user[:max(room, 0)]
	}
	return Prefix + user + id
}

// GrantOf reads the grant id back from an account name, reporting whether the name has the
// shape AccountName gives.
func GrantOf(name string) (int64, bool) {
	rest, ok := strings.CutPrefix(name, Prefix)
	i := strings.LastIndexByte(rest, '_')
	if !ok || i < 0 {
		return 0, false
	}
	id, err := strconv.ParseInt(rest[i+1:], 10, 64)
	return id, err == nil && id > 0
}

// Password derives the password of g's account on resource from key with HMAC-SHA256. It
// is as unpredictable as the key, never stored (a leaked store backup holds no database
// passwords), and the same on every server instance that shares the key, so the gateway and
// the credentials endpoint agree with the provisioner without coordinating. The activation
// time is mixed in so that a grant id reused after a store restore gets a new password.
func Password(key []byte, resource string, g *jitgate.Grant) string {
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "jitgate account password v1\x00%s\x00%d\x00%s\x00%d", resource, g.ID, g.User, g.ActivatedAt.UnixNano())
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Manages reports whether res's role has `provision: ephemeral`: the database provisioners
// handle those roles and leave the others to the gateway.
func Manages(res *jitgate.Resource, role string) bool {
	r := res.Role(role)
	return r != nil && r.Provision == jitgate.ProvisionEphemeral
}

// Endpoint splits res.Address into the host and port a grant's login connects to.
func Endpoint(res *jitgate.Resource) (host, port string, err error) {
	host, port, err = net.SplitHostPort(res.Address)
	if err != nil {
		return "", "", jitgate.Errorf(jitgate.EINVALID, "resource %s: address %q is not host:port", res.Name, res.Address)
	}
	return host, port, nil
}

// Ephemeral reports whether any role of res has `provision: ephemeral`.
func Ephemeral(res *jitgate.Resource) bool {
	for _, r := range res.Roles {
		if r.Provision == jitgate.ProvisionEphemeral {
			return true
		}
	}
	return false
}

// CheckKey refuses a provisioning key that is too short to derive passwords from.
func CheckKey(key []byte) error {
	if len(key) < MinKeyLen {
		return jitgate.Errorf(jitgate.EINVALID, "the provisioning key must be at least %d characters (got %d); generate one with: openssl rand -base64 48", MinKeyLen, len(key))
	}
	return nil
}
