package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/jitgate/jitgate/audit"
	"github.com/jitgate/jitgate/policy"
)

// Client calls a jitgate server's API. Errors come back as *jitgate.Error with the server's
// code and message.
type Client struct {
	// BaseURL is the server, e.g. http://127.0.0.1:8080.
	BaseURL string
	Token   string
	HTTP    *http.Client
}

// NewClient returns a client for the server at baseURL with token.
func NewClient(baseURL, token string) *Client {
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), Token: token, HTTP: &http.Client{Timeout: 30 * time.Second}}
}

// do sends method path with body (JSON-encoded if not nil) and decodes the response into out.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	u := c.BaseURL + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return jitgate.Errorf(jitgate.EINVALID, "invalid server URL %q", c.BaseURL)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return jitgate.Errorf(jitgate.EUNAVAILABLE, "cannot reach jitgate at %s: %v", c.BaseURL, unwrapURLError(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return jitgate.Errorf(jitgate.EUNAVAILABLE, "reading response from %s: %v", c.BaseURL, err)
	}
	if resp.StatusCode >= 300 {
		var eb ErrorBody
		if json.Unmarshal(data, &eb) == nil && eb.Error.Code != "" {
			return &jitgate.Error{Code: eb.Error.Code, Message: eb.Error.Message}
		}
		return jitgate.Errorf(jitgate.EINTERNAL, "%s %s: HTTP %d", method, path, resp.StatusCode)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return jitgate.Errorf(jitgate.EINTERNAL, "%s %s: unexpected response: %v", method, path, err)
	}
	return nil
}

func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

func id(n int64) string { return strconv.FormatInt(n, 10) }

// Whoami returns the caller.
func (c *Client) Whoami(ctx context.Context) (*access.Whoami, error) {
	var out access.Whoami
	return &out, c.do(ctx, "GET", "/v1/whoami", nil, nil, &out)
}

// Resources lists the roles the caller may request.
func (c *Client) Resources(ctx context.Context) ([]ResourceRole, error) {
	var out []ResourceRole
	return out, c.do(ctx, "GET", "/v1/resources", nil, nil, &out)
}

// Submit files a request.
func (c *Client) Submit(ctx context.Context, nr jitgate.NewRequest) (*jitgate.Request, error) {
	b := CreateRequestBody{Resource: nr.Resource, Role: nr.Role, Duration: jitgate.FormatDuration(nr.Duration), Reason: nr.Reason, BreakGlass: nr.BreakGlass}
	if !nr.StartAt.IsZero() {
		b.StartAt = &nr.StartAt
	}
	var out jitgate.Request
	return &out, c.do(ctx, "POST", "/v1/requests", nil, b, &out)
}

// Review approves or denies a request.
func (c *Client) Review(ctx context.Context, reqID int64, d jitgate.Decision, comment string) (*jitgate.Request, error) {
	var out jitgate.Request
	return &out, c.do(ctx, "POST", "/v1/requests/"+id(reqID)+"/"+string(d), nil, ReviewBody{Comment: comment}, &out)
}

// Cancel cancels a pending request.
func (c *Client) Cancel(ctx context.Context, reqID int64) (*jitgate.Request, error) {
	var out jitgate.Request
	return &out, c.do(ctx, "POST", "/v1/requests/"+id(reqID)+"/cancel", nil, nil, &out)
}

// Extend asks to extend a grant.
func (c *Client) Extend(ctx context.Context, grantID int64, d time.Duration, reason string) (*jitgate.Request, error) {
	var out jitgate.Request
	return &out, c.do(ctx, "POST", "/v1/grants/"+id(grantID)+"/extend", nil, ExtendBody{By: jitgate.FormatDuration(d), Reason: reason}, &out)
}

// Revoke ends a grant.
func (c *Client) Revoke(ctx context.Context, grantID int64, reason string) (*jitgate.Grant, error) {
	var out jitgate.Grant
	return &out, c.do(ctx, "POST", "/v1/grants/"+id(grantID)+"/revoke", nil, RevokeBody{Reason: reason}, &out)
}

// GetRequest returns one request.
func (c *Client) GetRequest(ctx context.Context, reqID int64) (*jitgate.Request, error) {
	var out jitgate.Request
	return &out, c.do(ctx, "GET", "/v1/requests/"+id(reqID), nil, nil, &out)
}

// GetGrant returns one grant.
func (c *Client) GetGrant(ctx context.Context, grantID int64) (*jitgate.Grant, error) {
	var out jitgate.Grant
	return &out, c.do(ctx, "GET", "/v1/grants/"+id(grantID), nil, nil, &out)
}

var _ jitgate.AccessService = (*Client)(nil)

// ListRequests lists requests.
func (c *Client) ListRequests(ctx context.Context, q access.RequestQuery) ([]*jitgate.Request, error) {
	v := url.Values{}
	if q.State != "" {
		v.Set("state", string(q.State))
	}
	if q.Mine {
		v.Set("mine", "true")
	}
	if q.ToReview {
		v.Set("to_review", "true")
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	var out RequestList
	return out.Requests, c.do(ctx, "GET", "/v1/requests", v, nil, &out)
}

// ListGrants lists grants.
func (c *Client) ListGrants(ctx context.Context, q access.GrantQuery) ([]*jitgate.Grant, error) {
	v := url.Values{}
	if q.Active {
		v.Set("active", "true")
	}
	if q.Mine {
		v.Set("mine", "true")
	}
	if q.Resource != "" {
		v.Set("resource", q.Resource)
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	var out GrantList
	return out.Grants, c.do(ctx, "GET", "/v1/grants", v, nil, &out)
}

// Audit returns a page of audit events.
func (c *Client) Audit(ctx context.Context, f jitgate.AuditFilter) (*AuditPage, error) {
	v := url.Values{}
	if f.Newest {
		v.Set("newest", "true")
	}
	for k, n := range map[string]int64{"after": f.AfterSeq, "before": f.BeforeSeq, "request": f.RequestID, "grant": f.GrantID, "session": f.SessionID, "limit": int64(f.Limit)} {
		if n > 0 {
			v.Set(k, id(n))
		}
	}
	if f.Actor != "" {
		v.Set("actor", f.Actor)
	}
	if !f.Since.IsZero() {
		v.Set("since", f.Since.UTC().Format(time.RFC3339))
	}
	var out AuditPage
	return &out, c.do(ctx, "GET", "/v1/audit", v, nil, &out)
}

// VerifyAudit checks the audit chain.
func (c *Client) VerifyAudit(ctx context.Context) (*audit.Result, error) {
	var out audit.Result
	return &out, c.do(ctx, "GET", "/v1/audit/verify", nil, nil, &out)
}

// StandingAccess reads the standing-access report for resource (all resources if empty).
func (c *Client) StandingAccess(ctx context.Context, resource string) (*StandingAccessReport, error) {
	var out StandingAccessReport
	q := url.Values{}
	if resource != "" {
		q.Set("resource", resource)
	}
	return &out, c.do(ctx, "GET", "/v1/reports/standing-access", q, nil, &out)
}

// Explain asks how a request would be decided.
func (c *Client) Explain(ctx context.Context, user, resource, role string, d time.Duration) (*policy.Explanation, error) {
	v := url.Values{"resource": {resource}, "role": {role}}
	if user != "" {
		v.Set("user", user)
	}
	if d > 0 {
		v.Set("duration", jitgate.FormatDuration(d))
	}
	var out policy.Explanation
	return &out, c.do(ctx, "GET", "/v1/policy/explain", v, nil, &out)
}

// CreateToken issues a token (admins only).
func (c *Client) CreateToken(ctx context.Context, user string, ttl time.Duration, description string) (*CreatedToken, error) {
	b := CreateTokenBody{User: user, Description: description}
	if ttl > 0 {
		b.TTL = jitgate.FormatDuration(ttl)
	}
	var out CreatedToken
	return &out, c.do(ctx, "POST", "/v1/tokens", nil, b, &out)
}

// RevokeToken revokes a token.
func (c *Client) RevokeToken(ctx context.Context, tokenID int64) (*jitgate.Token, error) {
	var out jitgate.Token
	return &out, c.do(ctx, "POST", "/v1/tokens/"+id(tokenID)+"/revoke", nil, nil, &out)
}

// ListTokens lists tokens.
func (c *Client) ListTokens(ctx context.Context) ([]*jitgate.Token, error) {
	var out TokenList
	return out.Tokens, c.do(ctx, "GET", "/v1/tokens", nil, nil, &out)
}

// String describes the client for messages.
func (c *Client) String() string { return fmt.Sprintf("jitgate at %s", c.BaseURL) }

// Credentials mints a gateway credential for a grant.
func (c *Client) Credentials(ctx context.Context, grantID int64) (*Credentials, error) {
	var out Credentials
	return &out, c.do(ctx, "POST", "/v1/grants/"+id(grantID)+"/credentials", nil, nil, &out)
}

// Gateways returns where the server's gateways listen, by resource kind.
func (c *Client) Gateways(ctx context.Context) (map[string]GatewayInfo, error) {
	out := map[string]GatewayInfo{}
	return out, c.do(ctx, http.MethodGet, "/v1/gateways", nil, nil, &out)
}

// RecordToolCall records one MCP tool call of the caller in the audit log.
func (c *Client) RecordToolCall(ctx context.Context, tc access.ToolCall) error {
	return c.do(ctx, http.MethodPost, "/v1/audit/tool-calls", nil, tc, nil)
}

// Sessions lists gateway sessions.
func (c *Client) Sessions(ctx context.Context, f jitgate.SessionFilter) ([]*jitgate.Session, error) {
	v := url.Values{}
	if f.Live {
		v.Set("active", "true")
	}
	if f.GrantID > 0 {
		v.Set("grant", id(f.GrantID))
	}
	if f.Limit > 0 {
		v.Set("limit", strconv.Itoa(f.Limit))
	}
	var out SessionList
	return out.Sessions, c.do(ctx, "GET", "/v1/sessions", v, nil, &out)
}
