package mysql

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"testing"
)

// The scrambles match values computed independently (Python's hashlib) from the formulas in
// the protocol's documentation.
func TestScrambles(t *testing.T) {
	sc := make([]byte, 20)
	for i := range sc {
		sc[i] = byte(i + 1)
	}
	if got := hex.EncodeToString(scrambleNative(sc, "secret")); got != "b32bb3a583e1340c0a1108d58b1be49781ad8c2f" {
		t.Errorf("mysql_native_password: %s", got)
	}
	if got := hex.EncodeToString(scrambleSHA2(sc, "secret")); got != "746ebe205d56a0707acb3e796e834e0dd7b1d61743b26bd5202c7a623230c7c9" {
		t.Errorf("caching_sha2_password: %s", got)
	}
	if scrambleNative(sc, "") != nil || scrambleSHA2(sc, "") != nil {
		t.Error("an empty password is sent as no data")
	}
}

func TestPasswordEncryption(t *testing.T) {
	g := &Gateway{}
	key, pemKey, err := g.rsaKey()
	if err != nil {
		t.Fatal(err)
	}
	sc, _ := newScramble()
	enc, err := encryptPassword("jgs_a-long-credential-0123456789", sc, pemKey)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decryptPassword(key, sc, enc)
	if err != nil || got != "jgs_a-long-credential-0123456789" {
		t.Fatalf("%q %v", got, err)
	}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	if _, err := decryptPassword(other, sc, enc); err == nil {
		t.Fatal("decrypted with the wrong key")
	}
	if _, err := encryptPassword("x", sc, []byte("not pem")); err == nil {
		t.Fatal("accepted a key that is not PEM")
	}
}

// A handshake the gateway writes is read back the same, and responses round-trip.
func TestHandshakeRoundTrip(t *testing.T) {
	sc, _ := newScramble()
	if bytes.IndexByte(sc, 0) >= 0 {
		t.Fatal("scramble holds a NUL")
	}
	h := &handshake{version: "8.0.0-jitgate", connID: 7, scramble: sc, caps: serverCaps | capSSL, charset: 45, status: statusAutocommit, plugin: pluginCachingSHA2}
	got, err := parseHandshake(h.encode())
	if err != nil {
		t.Fatal(err)
	}
	if got.version != h.version || got.connID != 7 || !bytes.Equal(got.scramble, sc) || got.caps != h.caps || got.plugin != h.plugin {
		t.Fatalf("%+v", got)
	}
	r := &response{caps: serverCaps, maxPacket: 1 << 24, charset: 45, user: "alice", auth: []byte{1, 2, 3}, database: "shop-db", plugin: pluginNative}
	back, err := parseResponse(r.encode())
	if err != nil {
		t.Fatal(err)
	}
	if back.user != "alice" || !bytes.Equal(back.auth, r.auth) || back.database != "shop-db" || back.plugin != pluginNative {
		t.Fatalf("%+v", back)
	}
}
