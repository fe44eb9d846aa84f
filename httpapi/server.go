package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Server is the HTTP API. Handlers only decode, call the engine and encode: every
// authorization decision is the engine's.
type Server struct {
	engine *access.Engine
	log    *slog.Logger
	mux    *http.ServeMux
	// gateways are the protocol gateways by the resource kind they serve.
	gateways map[string]*GatewayInfo
	ready    []readyCheck
}

type readyCheck struct {
	name  string
	check func() error
}

// AddReadyCheck makes /readyz answer 503 whenever check fails (a gateway whose listener has
// stopped, say). Call it before serving.
func (s *Server) AddReadyCheck(name string, check func() error) {
	s.ready = append(s.ready, readyCheck{name, check})
}

// SetGatewayFor tells the API where the gateway for resources of kind (postgres, mysql)
// listens: credentials for such resources are then session credentials for that gateway.
// Call it before serving.
func (s *Server) SetGatewayFor(kind string, g GatewayInfo) {
	if s.gateways == nil {
		s.gateways = map[string]*GatewayInfo{}
	}
	s.gateways[kind] = &g
}

// GatewayFor returns where the gateway for resources of kind listens (nil if none runs).
func (s *Server) GatewayFor(kind string) *GatewayInfo { return s.gateways[kind] }

// Mount serves h for every path the API does not own (the web UI at /).
func (s *Server) Mount(h http.Handler) { s.mux.Handle("/", h) }

// Handle serves h at pattern (the MCP endpoint at /mcp): h authenticates its callers itself.
// Call it before serving.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Gateway returns where the PostgreSQL gateway listens, or nil.
func (s *Server) Gateway() *GatewayInfo { return s.gateways[jitgate.KindPostgres] }

// New returns a Server for engine, registering its metrics in reg.
func New(engine *access.Engine, log *slog.Logger, reg *prometheus.Registry) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{engine: engine, log: log, mux: http.NewServeMux()}
	registerMetrics(reg, engine)
	s.routes(reg)
	return s
}

// ServeHTTP implements http.Handler. No request body may exceed MaxBodyBytes: one that says
// so in its Content-Length is answered 413 before a byte of it is read (so a client that sent
// "Expect: 100-continue" never sends it), and any other is cut at the limit and answered 413.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > MaxBodyBytes {
		w.Header().Set("Connection", "close")
		writeError(w, tooLarge())
		return
	}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	}
	s.mux.ServeHTTP(w, r)
}

// tooLargeError is a request body over MaxBodyBytes: 413 rather than EINVALID's 400.
type tooLargeError struct{ err *jitgate.Error }

func (e tooLargeError) Error() string { return e.err.Message }
func (e tooLargeError) Unwrap() error { return e.err }

func tooLarge() error {
	return tooLargeError{jitgate.Errorf(jitgate.EINVALID, "request body is larger than %d bytes", MaxBodyBytes)}
}

func (s *Server) routes(reg *prometheus.Registry) {
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "ok\n")
	})
	s.mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		if err := s.engine.Ping(ctx); err != nil {
			s.log.Warn("not ready", "err", err)
			http.Error(w, "store unreachable\n", http.StatusServiceUnavailable)
			return
		}
		for _, c := range s.ready {
			if err := c.check(); err != nil {
				s.log.Warn("not ready", "check", c.name, "err", err)
				http.Error(w, c.name+" not ready\n", http.StatusServiceUnavailable)
				return
			}
		}
		io.WriteString(w, "ok\n")
	})
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	s.api("GET /v1/whoami", func(r *http.Request) (any, error) { return s.engine.Whoami(r.Context()) })
	s.api("GET /v1/resources", s.resources)
	s.apiStatus("POST /v1/requests", http.StatusCreated, s.createRequest)
	s.api("GET /v1/requests", s.listRequests)
	s.api("GET /v1/requests/{id}", func(r *http.Request) (any, error) {
		id, err := pathID(r)
		if err != nil {
			return nil, err
		}
		return s.engine.GetRequest(r.Context(), id)
	})
	s.api("POST /v1/requests/{id}/approve", func(r *http.Request) (any, error) { return s.review(r, jitgate.Approve) })
	s.api("POST /v1/requests/{id}/deny", func(r *http.Request) (any, error) { return s.review(r, jitgate.Deny) })
	s.api("POST /v1/requests/{id}/cancel", func(r *http.Request) (any, error) {
		id, err := pathID(r)
		if err != nil {
			return nil, err
		}
		if err := decodeOptional(r, &struct{}{}); err != nil {
			return nil, err
		}
		return s.engine.Cancel(r.Context(), id)
	})
	s.api("GET /v1/grants", s.listGrants)
	s.api("GET /v1/grants/{id}", func(r *http.Request) (any, error) {
		id, err := pathID(r)
		if err != nil {
			return nil, err
		}
		return s.engine.GetGrant(r.Context(), id)
	})
	s.api("POST /v1/grants/{id}/revoke", func(r *http.Request) (any, error) {
		id, err := pathID(r)
		if err != nil {
			return nil, err
		}
		var b RevokeBody
		if err := decodeOptional(r, &b); err != nil {
			return nil, err
		}
		return s.engine.Revoke(r.Context(), id, b.Reason)
	})
	s.apiStatus("POST /v1/grants/{id}/extend", http.StatusCreated, func(r *http.Request) (any, error) {
		id, err := pathID(r)
		if err != nil {
			return nil, err
		}
		var b ExtendBody
		if err := decode(r, &b); err != nil {
			return nil, err
		}
		by, err := durationField("by", b.By)
		if err != nil {
			return nil, err
		}
		return s.engine.Extend(r.Context(), id, by, b.Reason)
	})
	s.apiStatus("POST /v1/grants/{id}/credentials", http.StatusCreated, s.credentials)
	s.api("GET /v1/gateways", func(r *http.Request) (any, error) {
		out := map[string]GatewayInfo{}
		for kind, g := range s.gateways {
			out[kind] = *g
		}
		return out, nil
	})
	s.apiStatus("POST /v1/audit/tool-calls", http.StatusCreated, func(r *http.Request) (any, error) {
		var tc access.ToolCall
		if err := decode(r, &tc); err != nil {
			return nil, err
		}
		return struct{}{}, s.engine.RecordToolCall(r.Context(), tc)
	})
	s.api("GET /v1/sessions", func(r *http.Request) (any, error) {
		var f jitgate.SessionFilter
		var err error
		if f.Live, err = queryBool(r, "active"); err != nil {
			return nil, err
		}
		if f.GrantID, err = queryInt(r, "grant"); err != nil {
			return nil, err
		}
		limit, err := queryInt(r, "limit")
		if err != nil {
			return nil, err
		}
		f.Limit = int(limit)
		ss, err := s.engine.ListSessions(r.Context(), f)
		return &SessionList{Sessions: nonNil(ss)}, err
	})
	s.api("GET /v1/audit", s.listAudit)
	s.api("GET /v1/audit/verify", func(r *http.Request) (any, error) { return s.engine.VerifyAudit(r.Context()) })
	s.api("GET /v1/reports/standing-access", func(r *http.Request) (any, error) {
		reports, err := s.engine.StandingAccess(r.Context(), r.URL.Query().Get("resource"))
		return &StandingAccessReport{Resources: reports}, err
	})
	s.api("GET /v1/policy/explain", s.explain)
	s.apiStatus("POST /v1/tokens", http.StatusCreated, s.createToken)
	s.api("GET /v1/tokens", func(r *http.Request) (any, error) {
		ts, err := s.engine.ListTokens(r.Context())
		return &TokenList{Tokens: nonNil(ts)}, err
	})
	s.api("POST /v1/tokens/{id}/revoke", func(r *http.Request) (any, error) {
		id, err := pathID(r)
		if err != nil {
			return nil, err
		}
		return s.engine.RevokeToken(r.Context(), id)
	})
	s.mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, jitgate.Errorf(jitgate.ENOTFOUND, "no API endpoint %s %s", r.Method, r.URL.Path))
	})
}

func (s *Server) api(pattern string, fn func(*http.Request) (any, error)) {
	s.apiStatus(pattern, http.StatusOK, fn)
}

// apiStatus registers an authenticated JSON endpoint.
func (s *Server) apiStatus(pattern string, status int, fn func(*http.Request) (any, error)) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		u, err := s.engine.Authenticate(r.Context(), strings.TrimSpace(token))
		if err != nil {
			s.fail(w, r, err)
			return
		}
		r = r.WithContext(jitgate.NewContext(r.Context(), u))
		v, err := fn(r)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeJSON(w, status, v)
	})
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := jitgate.ErrorCode(err)
	if code == jitgate.EINTERNAL || code == jitgate.EUNAVAILABLE {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeError(w, err)
}

// StatusOf maps an error code to its HTTP status.
func StatusOf(code string) int {
	switch code {
	case jitgate.EINVALID:
		return http.StatusBadRequest
	case jitgate.EUNAUTHORIZED:
		return http.StatusUnauthorized
	case jitgate.EFORBIDDEN:
		return http.StatusForbidden
	case jitgate.ENOTFOUND:
		return http.StatusNotFound
	case jitgate.ECONFLICT:
		return http.StatusConflict
	case jitgate.EUNAVAILABLE:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// WriteError answers err as every API error is answered: its status and an ErrorBody. The web
// UI's JSON endpoints use it too.
func WriteError(w http.ResponseWriter, err error) { writeError(w, err) }

// WriteJSON answers v as JSON with status, uncached.
func WriteJSON(w http.ResponseWriter, status int, v any) { writeJSON(w, status, v) }

func writeError(w http.ResponseWriter, err error) {
	var b ErrorBody
	b.Error.Code, b.Error.Message = jitgate.ErrorCode(err), jitgate.ErrorMessage(err)
	if b.Error.Code == jitgate.EUNAUTHORIZED {
		w.Header().Set("WWW-Authenticate", `Bearer realm="jitgate"`)
	}
	status := StatusOf(b.Error.Code)
	if errors.As(err, new(tooLargeError)) {
		status = http.StatusRequestEntityTooLarge
	}
	writeJSON(w, status, b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// decode reads a JSON body strictly: size-limited, no unknown fields, one value.
func decode(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
	if errors.As(err, new(*http.MaxBytesError)) || len(body) > MaxBodyBytes {
		return tooLarge()
	}
	if err != nil {
		return jitgate.Errorf(jitgate.EINVALID, "reading request body: %v", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return jitgate.Errorf(jitgate.EINVALID, "request body is empty; expected a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jitgate.Errorf(jitgate.EINVALID, "invalid JSON body: %s", jsonError(err))
	}
	if dec.More() {
		return jitgate.Errorf(jitgate.EINVALID, "invalid JSON body: more than one value")
	}
	return nil
}

// decodeOptional is decode for endpoints whose body may be left out.
func decodeOptional(r *http.Request, v any) error {
	if r.ContentLength == 0 {
		return nil
	}
	return decode(r, v)
}

func jsonError(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q must be %s, not %s", te.Field, te.Type, te.Value)
	}
	// "json: unknown field \"x\"" and the like are safe to show.
	return strings.TrimPrefix(err.Error(), "json: ")
}

func durationField(name, s string) (time.Duration, error) {
	if strings.TrimSpace(s) == "" {
		return 0, jitgate.Errorf(jitgate.EINVALID, "field %q is required (a duration such as 30m or 4h)", name)
	}
	d, err := jitgate.ParseDuration(s)
	if err != nil {
		return 0, jitgate.Errorf(jitgate.EINVALID, "field %q: %v", name, err)
	}
	return d, nil
}

func pathID(r *http.Request) (int64, error) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, jitgate.Errorf(jitgate.EINVALID, "invalid id %q", r.PathValue("id"))
	}
	return id, nil
}

func queryInt(r *http.Request, name string) (int64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, jitgate.Errorf(jitgate.EINVALID, "query parameter %q must be a non-negative integer", name)
	}
	return n, nil
}

func queryBool(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, jitgate.Errorf(jitgate.EINVALID, "query parameter %q must be true or false", name)
	}
	return b, nil
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (s *Server) resources(r *http.Request) (any, error) { return s.resourceRoles(r.Context()) }

// resourceRoles lists what the caller in ctx may request.
func (s *Server) resourceRoles(ctx context.Context) ([]ResourceRole, error) {
	rs, err := s.engine.Requestable(ctx)
	if err != nil {
		return nil, err
	}
	out := []ResourceRole{}
	for _, x := range rs {
		rr := ResourceRole{
			Resource: x.Resource.Name, Kind: x.Resource.Kind, Role: x.Role.Name, Description: x.Role.Description,
			Policy: x.Policy.Name, MaxDuration: jitgate.FormatDuration(x.Policy.MaxDuration),
			RequireReason: x.Policy.RequireReason, Steps: len(x.Policy.Steps), AutoApprove: x.Policy.AutoApprove,
		}
		if x.Policy.BreakGlass > 0 {
			rr.BreakGlassMax = jitgate.FormatDuration(x.Policy.BreakGlass)
		}
		for i := range x.Policy.Steps {
			rr.Approval = append(rr.Approval, x.Policy.Steps[i].String())
		}
		out = append(out, rr)
	}
	return out, nil
}

func (s *Server) createRequest(r *http.Request) (any, error) {
	var b CreateRequestBody
	if err := decode(r, &b); err != nil {
		return nil, err
	}
	if b.Resource == "" || b.Role == "" {
		return nil, jitgate.Errorf(jitgate.EINVALID, "fields \"resource\" and \"role\" are required")
	}
	d, err := durationField("duration", b.Duration)
	if err != nil {
		return nil, err
	}
	nr := jitgate.NewRequest{Resource: b.Resource, Role: b.Role, Duration: d, Reason: b.Reason, BreakGlass: b.BreakGlass}
	if b.StartAt != nil {
		nr.StartAt = *b.StartAt
	}
	return s.engine.Submit(r.Context(), nr)
}

func (s *Server) review(r *http.Request, d jitgate.Decision) (any, error) {
	id, err := pathID(r)
	if err != nil {
		return nil, err
	}
	var b ReviewBody
	if err := decodeOptional(r, &b); err != nil {
		return nil, err
	}
	return s.engine.Review(r.Context(), id, d, b.Comment)
}

func (s *Server) listRequests(r *http.Request) (any, error) {
	var q access.RequestQuery
	var err error
	if st := r.URL.Query().Get("state"); st != "" {
		q.State = jitgate.RequestState(st)
		if !q.State.Valid() {
			return nil, jitgate.Errorf(jitgate.EINVALID, "unknown state %q", st)
		}
	}
	if q.Mine, err = queryBool(r, "mine"); err != nil {
		return nil, err
	}
	if q.ToReview, err = queryBool(r, "to_review"); err != nil {
		return nil, err
	}
	limit, err := queryInt(r, "limit")
	if err != nil {
		return nil, err
	}
	q.Limit = int(limit)
	rs, err := s.engine.ListRequests(r.Context(), q)
	return &RequestList{Requests: nonNil(rs)}, err
}

func (s *Server) listGrants(r *http.Request) (any, error) {
	var q access.GrantQuery
	var err error
	if q.Active, err = queryBool(r, "active"); err != nil {
		return nil, err
	}
	if q.Mine, err = queryBool(r, "mine"); err != nil {
		return nil, err
	}
	q.Resource = r.URL.Query().Get("resource")
	limit, err := queryInt(r, "limit")
	if err != nil {
		return nil, err
	}
	q.Limit = int(limit)
	gs, err := s.engine.ListGrants(r.Context(), q)
	return &GrantList{Grants: nonNil(gs)}, err
}

func (s *Server) listAudit(r *http.Request) (any, error) {
	var f jitgate.AuditFilter
	var err error
	if f.AfterSeq, err = queryInt(r, "after"); err != nil {
		return nil, err
	}
	if f.BeforeSeq, err = queryInt(r, "before"); err != nil {
		return nil, err
	}
	if f.Newest, err = queryBool(r, "newest"); err != nil {
		return nil, err
	}
	if f.RequestID, err = queryInt(r, "request"); err != nil {
		return nil, err
	}
	if f.GrantID, err = queryInt(r, "grant"); err != nil {
		return nil, err
	}
	if f.SessionID, err = queryInt(r, "session"); err != nil {
		return nil, err
	}
	limit, err := queryInt(r, "limit")
	if err != nil {
		return nil, err
	}
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	f.Limit = int(limit) + 1 // one more than asked: is there more?
	f.Actor = r.URL.Query().Get("actor")
	if since := r.URL.Query().Get("since"); since != "" {
		if f.Since, err = time.Parse(time.RFC3339, since); err != nil {
			return nil, jitgate.Errorf(jitgate.EINVALID, "query parameter \"since\" must be an RFC 3339 time such as 2026-11-27T09:00:00Z")
		}
	}
	evs, err := s.engine.AuditEvents(r.Context(), f)
	if err != nil {
		return nil, err
	}
	page := &AuditPage{NextAfter: f.AfterSeq}
	if len(evs) > int(limit) {
		evs, page.More = evs[:limit], true
	}
	page.Events = nonNil(evs)
	if len(evs) > 0 {
		page.NextAfter = evs[len(evs)-1].Seq
		if f.Newest {
			page.NextAfter, page.NextBefore = evs[0].Seq, evs[len(evs)-1].Seq
		}
	}
	return page, nil
}

func (s *Server) explain(r *http.Request) (any, error) {
	q := r.URL.Query()
	if q.Get("resource") == "" || q.Get("role") == "" {
		return nil, jitgate.Errorf(jitgate.EINVALID, "query parameters \"resource\" and \"role\" are required")
	}
	var d time.Duration
	if v := q.Get("duration"); v != "" {
		var err error
		if d, err = durationField("duration", v); err != nil {
			return nil, err
		}
	}
	return s.engine.Explain(r.Context(), q.Get("user"), q.Get("resource"), q.Get("role"), d)
}

func (s *Server) createToken(r *http.Request) (any, error) {
	var b CreateTokenBody
	if err := decode(r, &b); err != nil {
		return nil, err
	}
	var ttl time.Duration
	if b.TTL != "" {
		var err error
		if ttl, err = durationField("ttl", b.TTL); err != nil {
			return nil, err
		}
	}
	if b.User == "" {
		return nil, jitgate.Errorf(jitgate.EINVALID, "field \"user\" is required")
	}
	token, rec, err := s.engine.CreateToken(r.Context(), b.User, ttl, b.Description)
	if err != nil {
		return nil, err
	}
	return &CreatedToken{Token: token, Record: rec}, nil
}

func (s *Server) credentials(r *http.Request) (any, error) {
	id, err := pathID(r)
	if err != nil {
		return nil, err
	}
	if err := decodeOptional(r, &struct{}{}); err != nil {
		return nil, err
	}
	return s.issueCredentials(r.Context(), id)
}

// issueCredentials mints a login under grant id for the caller in ctx: a session credential
// for the gateway where one serves the resource's kind.
func (s *Server) issueCredentials(ctx context.Context, id int64) (*Credentials, error) {
	in, err := s.engine.IssueLogin(ctx, id, slices.Collect(maps.Keys(s.gateways))...)
	if err != nil {
		return nil, err
	}
	out := &Credentials{GrantID: in.Grant.ID, Kind: in.Kind, Via: in.Via, Host: in.Host, Port: in.Port, User: in.User,
		Database: in.Database, Password: in.Password, SSLMode: in.SSLMode, ExpiresAt: in.ExpiresAt}
	if gw := s.gateways[in.Kind]; in.Via == access.ViaGateway && gw != nil {
		out.Host, out.Port, out.SSLMode, out.CAData = gw.Host, gw.Port, gw.SSLMode, gw.CAData
	}
	return out, nil
}
