package mysql

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
)

// Authentication plugins.
const (
	pluginCachingSHA2 = "caching_sha2_password"
	pluginNative      = "mysql_native_password"
	pluginClear       = "mysql_clear_password"
)

// caching_sha2_password's exchanges after the scramble (AuthMoreData payloads: 0x01 then one
// of these).
const (
	sha2RequestPublicKey = 0x02
	sha2FastAuthOK       = 0x03
	sha2FullAuth         = 0x04
)

// newScramble returns 20 random bytes, none of them NUL (clients read the scramble as a
// NUL-terminated string).
func newScramble() ([]byte, error) {
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	for i := range b {
		b[i] = b[i]&0x7f | 1 // printable-ish and never NUL, as servers do
		if b[i] == '$' {
			b[i] = '#'
		}
	}
	return b, nil
}

// scrambleNative is mysql_native_password's answer: SHA1(pw) XOR SHA1(scramble + SHA1(SHA1(pw))).
func scrambleNative(scramble []byte, password string) []byte {
	if password == "" {
		return nil
	}
	h1 := sha1.Sum([]byte(password))
	h2 := sha1.Sum(h1[:])
	h := sha1.New()
	h.Write(scramble[:20])
	h.Write(h2[:])
	out := h.Sum(nil)
	for i := range out {
		out[i] ^= h1[i]
	}
	return out
}

// scrambleSHA2 is caching_sha2_password's fast answer:
// SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + scramble).
func scrambleSHA2(scramble []byte, password string) []byte {
	if password == "" {
		return nil
	}
	h1 := sha256.Sum256([]byte(password))
	h2 := sha256.Sum256(h1[:])
	h := sha256.New()
	h.Write(h2[:])
	h.Write(scramble[:20])
	out := h.Sum(nil)
	for i := range out {
		out[i] ^= h1[i]
	}
	return out
}

// checkSHA2Proof reports whether auth, a client's caching_sha2_password answer to scramble,
// was made from a password whose SHA256(SHA256(pw)) is v: it recovers SHA256(pw) from the
// answer and hashes it once more.
func checkSHA2Proof(v, scramble, auth []byte) bool {
	if len(v) != sha256.Size || len(auth) != sha256.Size || len(scramble) < 20 {
		return false
	}
	h := sha256.New()
	h.Write(v)
	h.Write(scramble[:20])
	var x [sha256.Size]byte
	h.Sum(x[:0])
	for i := range x {
		x[i] ^= auth[i]
	}
	h2 := sha256.Sum256(x[:])
	return subtle.ConstantTimeCompare(h2[:], v) == 1
}

// encryptPassword encrypts password for caching_sha2_password's full authentication over a
// connection without TLS: RSA-OAEP (SHA-1) of the NUL-terminated password XOR the scramble.
func encryptPassword(password string, scramble []byte, pemKey []byte) ([]byte, error) {
	blk, _ := pem.Decode(pemKey)
	if blk == nil {
		return nil, errors.New("the server's public key is not PEM")
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("the server's public key: %w", err)
	}
	pub, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, errors.New("the server's public key is not RSA")
	}
	plain := append([]byte(password), 0)
	for i := range plain {
		plain[i] ^= scramble[i%len(scramble)]
	}
	return rsa.EncryptOAEP(sha1.New(), rand.Reader, pub, plain, nil)
}

// decryptPassword is encryptPassword's inverse on the gateway's side.
func decryptPassword(key *rsa.PrivateKey, scramble, enc []byte) (string, error) {
	plain, err := rsa.DecryptOAEP(sha1.New(), rand.Reader, key, enc, nil)
	if err != nil {
		return "", err
	}
	for i := range plain {
		plain[i] ^= scramble[i%len(scramble)]
	}
	return string(bytes.TrimRight(plain, "\x00")), nil
}

// handshake is the server's initial handshake (protocol version 10).
type handshake struct {
	version  string
	connID   uint32
	scramble []byte // 20 bytes
	caps     uint32
	charset  byte
	status   uint16
	plugin   string
}

// encode returns the handshake's payload.
func (h *handshake) encode() []byte {
	b := []byte{10}
	b = append(b, h.version...)
	b = append(b, 0)
	b = binary.LittleEndian.AppendUint32(b, h.connID)
	b = append(b, h.scramble[:8]...)
	b = append(b, 0)
	b = binary.LittleEndian.AppendUint16(b, uint16(h.caps))
	b = append(b, h.charset)
	b = binary.LittleEndian.AppendUint16(b, h.status)
	b = binary.LittleEndian.AppendUint16(b, uint16(h.caps>>16))
	b = append(b, byte(len(h.scramble)+1))
	b = append(b, make([]byte, 10)...)
	b = append(b, h.scramble[8:]...)
	b = append(b, 0)
	b = append(b, h.plugin...)
	return append(b, 0)
}

// parseHandshake reads a server's initial handshake.
func parseHandshake(b []byte) (*handshake, error) {
	if len(b) > 0 && b[0] == 0xff {
		code, state, msg := parseErr(b)
		return nil, &serverError{code, state, msg}
	}
	if len(b) < 1 || b[0] != 10 {
		return nil, errors.New("not a protocol 10 handshake")
	}
	h := &handshake{}
	var ok bool
	var rest []byte
	if h.version, rest, ok = cstr(b[1:]); !ok || len(rest) < 4+8+1+2 {
		return nil, errors.New("handshake too short")
	}
	h.connID = binary.LittleEndian.Uint32(rest)
	h.scramble = append([]byte(nil), rest[4:12]...)
	rest = rest[13:]
	h.caps = uint32(binary.LittleEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) >= 16 {
		h.charset = rest[0]
		h.status = binary.LittleEndian.Uint16(rest[1:3])
		h.caps |= uint32(binary.LittleEndian.Uint16(rest[3:5])) << 16
		n := int(rest[5])
		rest = rest[16:]
		if h.caps&capSecureConnection != 0 {
			k := max(13, n-8)
			if len(rest) < k {
				return nil, errors.New("handshake scramble too short")
			}
			h.scramble = append(h.scramble, rest[:k-1]...) // without its NUL
			rest = rest[k:]
		}
		if h.caps&capPluginAuth != 0 {
			h.plugin, _, _ = cstr(rest)
		}
	}
	if len(h.scramble) < 20 {
		return nil, errors.New("handshake scramble too short")
	}
	h.scramble = h.scramble[:20]
	return h, nil
}

// response is a client's HandshakeResponse41.
type response struct {
	caps      uint32
	maxPacket uint32
	charset   byte
	user      string
	auth      []byte
	database  string
	plugin    string
}

// sslRequestLen is the length of an SSLRequest: a HandshakeResponse cut after its filler.
const sslRequestLen = 32

// parseResponse reads a HandshakeResponse41 (or, if it is sslRequestLen bytes long, an
// SSLRequest: then only caps, maxPacket and charset are set).
func parseResponse(b []byte) (*response, error) {
	if len(b) < sslRequestLen {
		return nil, fmt.Errorf("handshake response of %d bytes is too short", len(b))
	}
	r := &response{caps: binary.LittleEndian.Uint32(b), maxPacket: binary.LittleEndian.Uint32(b[4:]), charset: b[8]}
	if r.caps&capProtocol41 == 0 {
		return nil, errors.New("client does not speak protocol 4.1")
	}
	rest := b[sslRequestLen:]
	if len(rest) == 0 {
		return r, nil
	}
	var ok bool
	if r.user, rest, ok = cstr(rest); !ok {
		return nil, errors.New("handshake response: user name not terminated")
	}
	switch {
	case r.caps&capPluginAuthLenenc != 0:
		n, k, ok := lenenc(rest)
		if !ok || uint64(len(rest)-k) < n {
			return nil, errors.New("handshake response: bad auth data length")
		}
		r.auth, rest = rest[k:k+int(n)], rest[k+int(n):]
	case r.caps&capSecureConnection != 0:
		if len(rest) < 1 || len(rest) < 1+int(rest[0]) {
			return nil, errors.New("handshake response: bad auth data length")
		}
		n := int(rest[0])
		r.auth, rest = rest[1:1+n], rest[1+n:]
	default:
		var s string
		s, rest, _ = cstr(rest)
		r.auth = []byte(s)
	}
	if r.caps&capConnectWithDB != 0 && len(rest) > 0 {
		r.database, rest, _ = cstr(rest)
	}
	if r.caps&capPluginAuth != 0 && len(rest) > 0 {
		r.plugin, _, _ = cstr(rest)
	}
	return r, nil
}

// encode returns the response's payload (no connection attributes).
func (r *response) encode() []byte {
	b := binary.LittleEndian.AppendUint32(nil, r.caps)
	b = binary.LittleEndian.AppendUint32(b, r.maxPacket)
	b = append(b, r.charset)
	b = append(b, make([]byte, 23)...)
	if r.caps&capSSL != 0 && r.user == "" && r.auth == nil {
		return b // SSLRequest
	}
	b = append(b, r.user...)
	b = append(b, 0)
	switch {
	case r.caps&capPluginAuthLenenc != 0:
		b = appendLenenc(b, uint64(len(r.auth)))
		b = append(b, r.auth...)
	default:
		b = append(b, byte(len(r.auth)))
		b = append(b, r.auth...)
	}
	if r.caps&capConnectWithDB != 0 {
		b = append(b, r.database...)
		b = append(b, 0)
	}
	if r.caps&capPluginAuth != 0 {
		b = append(b, r.plugin...)
		b = append(b, 0)
	}
	return b
}

// serverError is an ERR packet a server sent.
type serverError struct {
	Code     uint16
	SQLState string
	Message  string
}

func (e *serverError) Error() string {
	return fmt.Sprintf("Error %d (%s): %s", e.Code, e.SQLState, e.Message)
}
