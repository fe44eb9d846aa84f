// Package signing signs jitgate's outgoing HTTP calls (provisioning and notification
// webhooks) so receivers can check they came from jitgate and were not altered or replayed.
//
// The X-Jitgate-Signature header is "v1=" and the hex HMAC-SHA256, under the shared secret, of
// the X-Jitgate-Timestamp header (Unix seconds), a ".", and the body. Receivers recompute it,
// compare in constant time, and reject timestamps more than a few minutes old.
package signing

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strconv"
	"time"
)

// Header names.
const (
	HeaderSignature = "X-Jitgate-Signature"
	HeaderTimestamp = "X-Jitgate-Timestamp"
)

// Sign returns the signature header value for body at timestamp ts under secret.
func Sign(secret []byte, ts string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return "v1=" + hex.EncodeToString(m.Sum(nil))
}

// Verify checks a signature in constant time.
func Verify(secret []byte, ts, signature string, body []byte) bool {
	return hmac.Equal([]byte(Sign(secret, ts, body)), []byte(signature))
}

// SetHeaders stamps req, whose body is body, with the timestamp now and its signature.
func SetHeaders(req *http.Request, secret, body []byte, now time.Time) {
	ts := strconv.FormatInt(now.Unix(), 10)
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, Sign(secret, ts, body))
}
