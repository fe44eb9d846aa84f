// Package webhook provisions grants in anything jitgate has no driver for (a cloud group, a
// Kubernetes binding, a ticket) by POSTing JSON to a URL: one call when a grant starts and one
// when it ends. Each call is signed with HMAC-SHA256 and carries an idempotency key that stays
// the same across retries, so the receiver can apply it once. Any answer but 2xx is an error:
// the engine retries it with backoff and shows it on the grant.
//
// Signature: see internal/signing. The X-Jitgate-Signature header is "v1=" and the hex
// HMAC-SHA256, under the resource's secret, of the X-Jitgate-Timestamp header (Unix seconds), a
// ".", and the body. Receivers should reject timestamps more than a few minutes old.
package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/internal/signing"
)

// Header names.
const (
	HeaderSignature      = signing.HeaderSignature
	HeaderTimestamp      = signing.HeaderTimestamp
	HeaderIdempotencyKey = "Idempotency-Key"
)

// Payload is the JSON body of a call.
type Payload struct {
	// Action is "grant" or "revoke".
	Action string `json:"action"`
	// IdempotencyKey repeats the Idempotency-Key header.
	IdempotencyKey string `json:"idempotency_key"`
	Resource       string `json:"resource"`
	Grant          Grant  `json:"grant"`
}

// Grant is what a receiver learns of the grant.
type Grant struct {
	ID         int64     `json:"id"`
	User       string    `json:"user"`
	Role       string    `json:"role"`
	Grants     []string  `json:"grants"`
	State      string    `json:"state"`
	StartsAt   time.Time `json:"starts_at"`
	EndsAt     time.Time `json:"ends_at"`
	EndReason  string    `json:"end_reason,omitempty"`
	BreakGlass bool      `json:"break_glass,omitempty"`
}

// Provisioner calls one webhook resource.
type Provisioner struct {
	res    *jitgate.Resource
	secret []byte
	client *http.Client
	now    func() time.Time
}

var _ jitgate.Provisioner = (*Provisioner)(nil)

// New returns a provisioner for res that signs with secret. client may be nil (a client with
// a 10s timeout is used).
func New(res *jitgate.Resource, secret []byte, client *http.Client) (*Provisioner, error) {
	if res.Kind != jitgate.KindWebhook {
		return nil, fmt.Errorf("resource %s is %s, not webhook", res.Name, res.Kind)
	}
	if len(secret) == 0 {
		return nil, jitgate.Errorf(jitgate.EINVALID, "resource %s: the webhook signing secret is empty", res.Name)
	}
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	return &Provisioner{res: res, secret: secret, client: client, now: time.Now}, nil
}

// Manages reports true: a webhook resource provisions every role.
func (p *Provisioner) Manages(string) bool { return true }

// Grant tells the receiver that g started (or was extended: the key then changes with the end).
func (p *Provisioner) Grant(ctx context.Context, g *jitgate.Grant) error {
	return p.call(ctx, "grant", fmt.Sprintf("jitgate:%s:grant:%d:%d", p.res.Name, g.ID, g.EndsAt.Unix()), g)
}

// Revoke tells the receiver that g ended.
func (p *Provisioner) Revoke(ctx context.Context, g *jitgate.Grant) error {
	return p.call(ctx, "revoke", fmt.Sprintf("jitgate:%s:revoke:%d", p.res.Name, g.ID), g)
}

// Sign returns the signature header value for body at timestamp ts under secret.
func Sign(secret []byte, ts string, body []byte) string { return signing.Sign(secret, ts, body) }

// Verify checks a request's signature in constant time; receivers (and tests) use it.
func Verify(secret []byte, ts, signature string, body []byte) bool {
	return signing.Verify(secret, ts, signature, body)
}

func (p *Provisioner) call(ctx context.Context, action, key string, g *jitgate.Grant) error {
	var grants []string
	if r := p.res.Role(g.Role); r != nil {
		grants = r.Grants
	}
	body, err := json.Marshal(Payload{Action: action, IdempotencyKey: key, Resource: p.res.Name, Grant: Grant{
		ID: g.ID, User: g.User, Role: g.Role, Grants: grants, State: string(g.State), StartsAt: g.StartsAt,
		EndsAt: g.EndsAt, EndReason: g.EndReason, BreakGlass: g.BreakGlass}})
	if err != nil {
		return err
	}
	if err := signing.Post(ctx, p.client, p.res.Address, body, p.secret, key, p.now()); err != nil {
		return fmt.Errorf("webhook %s: %w", p.res.Name, err)
	}
	return nil
}
