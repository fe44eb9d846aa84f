package jitgate

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"time"
)

// TokenPrefix starts every API token, so that secret scanners and people can tell one.
const TokenPrefix = "jg_"

// Token is an API token's record. The token itself is shown once at creation; only its
// SHA-256 is stored (tokens are 256 random bits, so a fast hash is enough).
type Token struct {
	ID          int64     `json:"id"`
	User        string    `json:"user"`
	Hash        string    `json:"-"`
	Description string    `json:"description,omitempty"`
	CreatedBy   string    `json:"created_by"`
	CreatedAt   time.Time `json:"created_at"`
	ExpiresAt   time.Time `json:"expires_at"`
	RevokedAt   time.Time `json:"revoked_at,omitzero"`
}

// CLICode is a CLI sign-in's one-time code (see web's /cli/login), kept by its hash until it
// is traded for a token at any replica: the user it signs in, the PKCE challenge its trade
// must answer, and when it lapses.
type CLICode struct {
	Hash      string
	User      string
	Challenge string
	ExpiresAt time.Time
}

// NewTokenSecret returns a fresh random token and its hash.
func NewTokenSecret() (token, hash string) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	token = TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	return token, HashToken(token)
}

// HashToken returns the hex SHA-256 of a token, as stored.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
	return hex.EncodeToString(sum[:])
}

// HashCredential returns how a gateway session credential is stored: the hex SHA-256 of its
// SHA-256. The double hash is what MySQL's caching_sha2_password keeps of a password, so the
// MySQL gateway can check a client's scrambled proof against it without the credential ever
// crossing the wire (GatewayService.AuthenticateProof); the single SHA-256 the proof is made
// from is stored nowhere, so reading the store is not enough to log in.
func HashCredential(secret string) string {
	h1 := sha256.Sum256([]byte(strings.TrimSpace(secret)))
	h2 := sha256.Sum256(h1[:])
	return hex.EncodeToString(h2[:])
}
