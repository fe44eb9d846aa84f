// Package signing signs jitgate's outgoing HTTP calls (provisioning and notification
// webhooks) so receivers can check they came from jitgate and were not altered or replayed.
//
// The X-Jitgate-Signature header is "v1=" and the hex HMAC-SHA256, under the shared secret, of
// the X-Jitgate-Timestamp header (Unix seconds), a ".", and the body. Receivers recompute it,
// compare in constant time, and reject timestamps more than a few minutes old.
package signing

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
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

// Post sends body as JSON to u with c, signed under secret at now (unsigned if secret is
// nil), with Idempotency-Key set when key is not empty. Any answer but 2xx is an error that
// quotes the start of the answer. Client errors never repeat the URL, which may be a secret
// (a Slack webhook's).
func Post(ctx context.Context, c *http.Client, u string, body, secret []byte, key string, now time.Time) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return errors.New("invalid URL")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "jitgate/1")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	if secret != nil {
		SetHeaders(req, secret, body, now)
	}
	resp, err := c.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			return fmt.Errorf("%s: %w", ue.Op, ue.Err)
		}
		return err
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("answered %s: %s", resp.Status, bytes.TrimSpace(snippet))
	}
	return nil
}
