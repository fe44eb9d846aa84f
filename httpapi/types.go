// Package httpapi serves jitgate's REST API under /v1 (JSON, bearer-token authentication,
// authorization in the service layer) and is also the Go client the CLI uses.
package httpapi

import (
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
)

// MaxBodyBytes caps a request body.
const MaxBodyBytes = 64 << 10

// ErrorBody is the shape of every error response.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// CreateRequestBody is the body of POST /v1/requests.
type CreateRequestBody struct {
	Resource string `json:"resource"`
	Role     string `json:"role"`
	// Duration is a duration string such as "1h" or "90m".
	Duration   string     `json:"duration"`
	Reason     string     `json:"reason"`
	StartAt    *time.Time `json:"start_at,omitempty"`
	BreakGlass bool       `json:"break_glass,omitempty"`
}

// ReviewBody is the body of POST /v1/requests/{id}/approve and /deny.
type ReviewBody struct {
	Comment string `json:"comment"`
}

// RevokeBody is the body of POST /v1/grants/{id}/revoke.
type RevokeBody struct {
	Reason string `json:"reason"`
}

// ExtendBody is the body of POST /v1/grants/{id}/extend.
type ExtendBody struct {
	By     string `json:"by"`
	Reason string `json:"reason"`
}

// CreateTokenBody is the body of POST /v1/tokens.
type CreateTokenBody struct {
	User        string `json:"user"`
	TTL         string `json:"ttl,omitempty"`
	Description string `json:"description,omitempty"`
}

// CreatedToken is the response to POST /v1/tokens: the token, shown once, and its record.
type CreatedToken struct {
	Token  string         `json:"token"`
	Record *jitgate.Token `json:"record"`
}

// ResourceRole is one role the caller may request (GET /v1/resources).
type ResourceRole struct {
	Resource      string `json:"resource"`
	Kind          string `json:"kind"`
	Role          string `json:"role"`
	Description   string `json:"description,omitempty"`
	Policy        string `json:"policy"`
	MaxDuration   string `json:"max_duration"`
	RequireReason bool   `json:"require_reason"`
	Steps         int    `json:"approval_steps"`
	AutoApprove   string `json:"auto_approve,omitempty"`
	BreakGlassMax string `json:"break_glass_max,omitempty"`
	// Approval describes each approval step, e.g. "1 of groups sre".
	Approval []string `json:"approval,omitempty"`
}

// AuditPage is the response to GET /v1/audit: events oldest first, or newest first with
// ?newest=true. Pass NextAfter as ?after= for the next (newer) page, NextBefore as ?before= for
// the next older one with ?newest=true. More says whether further events match in the
// direction read.
type AuditPage struct {
	Events     []*jitgate.AuditEvent `json:"events"`
	NextAfter  int64                 `json:"next_after"`
	NextBefore int64                 `json:"next_before,omitempty"`
	More       bool                  `json:"more"`
}

// RequestList is the response to GET /v1/requests.
type RequestList struct {
	Requests []*jitgate.Request `json:"requests"`
}

// GrantList is the response to GET /v1/grants.
type GrantList struct {
	Grants []*jitgate.Grant `json:"grants"`
}

// TokenList is the response to GET /v1/tokens.
type TokenList struct {
	Tokens []*jitgate.Token `json:"tokens"`
}

// GatewayInfo tells clients where a protocol's gateway listens.
type GatewayInfo struct {
	Host    string `json:"host"`
	Port    string `json:"port"`
	SSLMode string `json:"sslmode"`
	// CAData is the PEM certificate clients should trust for the gateway when it is not signed
	// by a CA they know (--dev's self-signed one); empty otherwise.
	CAData string `json:"ca_data,omitempty"`
}

// Credentials is the response to POST /v1/grants/{id}/credentials: how to connect under the
// grant, through the gateway (Via "gateway") or as the grant's own ephemeral database user (Via
// "direct"). Password is shown only here.
type Credentials struct {
	GrantID int64 `json:"grant_id"`
	// Kind is the resource kind: postgres or mysql.
	Kind      string    `json:"kind"`
	Via       string    `json:"via"`
	Host      string    `json:"host"`
	Port      string    `json:"port"`
	User      string    `json:"user"`
	Database  string    `json:"database"`
	Password  string    `json:"password"`
	SSLMode   string    `json:"sslmode"`
	ExpiresAt time.Time `json:"expires_at"`
	// CAData is the gateway's certificate to trust, when it is self-signed (see GatewayInfo).
	CAData string `json:"ca_data,omitempty"`
}

// SessionList is the response to GET /v1/sessions.
type SessionList struct {
	Sessions []*jitgate.Session `json:"sessions"`
}

// StandingAccessReport is the response to GET /v1/reports/standing-access[?resource=NAME].
type StandingAccessReport struct {
	Resources []access.StandingAccessReport `json:"resources"`
}
