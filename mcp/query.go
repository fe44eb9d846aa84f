package mcp

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/jitgate/jitgate/httpapi"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// QueryInput is one statement to run.
type QueryInput struct {
	Resource string `json:"resource" jsonschema:"the resource to run the statement on; you need an active grant there"`
	Role     string `json:"role,omitempty" jsonschema:"the role to run under, when you hold several on the resource"`
	SQL      string `json:"sql" jsonschema:"one SQL statement (no ';'-separated lists)"`
	MaxRows  int    `json:"max_rows,omitempty" jsonschema:"rows to return at most (default 100, at most 1000)"`
	MaxBytes int    `json:"max_bytes,omitempty" jsonschema:"bytes of values to return at most (default 65536, at most 1048576)"`
}

// QueryOutput is a statement's result.
type QueryOutput struct {
	Resource string `json:"resource"`
	GrantID  int64  `json:"grant_id"`
	// Columns names the result's columns (none for a statement that returns no rows).
	Columns []string `json:"columns"`
	// Rows holds the rows returned, each value as the database's text (null for NULL).
	Rows     [][]*string `json:"rows"`
	RowCount int         `json:"row_count" jsonschema:"how many rows are returned here"`
	// Truncated says the result was cut at max_rows or max_bytes; the rest was not read.
	Truncated bool   `json:"truncated"`
	Tag       string `json:"tag,omitempty" jsonschema:"the database's completion tag, e.g. SELECT 3 or UPDATE 1"`
	Note      string `json:"note,omitempty"`
}

func (s *Server) query(ctx context.Context, _ *sdk.CallToolRequest, in QueryInput) (QueryOutput, link, error) {
	if err := checkName("resource", in.Resource); err != nil {
		return QueryOutput{}, link{}, err
	}
	if in.Role != "" {
		if err := checkName("role", in.Role); err != nil {
			return QueryOutput{}, link{}, err
		}
	}
	switch {
	case strings.TrimSpace(in.SQL) == "":
		return QueryOutput{}, link{}, toolErrorf("sql is required: one SQL statement")
	case len(in.SQL) > MaxSQL:
		return QueryOutput{}, link{}, toolErrorf("sql is %d bytes long; the limit is %d", len(in.SQL), MaxSQL)
	case strings.ContainsRune(in.SQL, 0):
		return QueryOutput{}, link{}, toolErrorf("sql contains a NUL byte")
	}
	maxRows, maxBytes := in.MaxRows, in.MaxBytes
	switch {
	case maxRows == 0:
		maxRows = DefaultMaxRows
	case maxRows < 0 || maxRows > MaxRows:
		return QueryOutput{}, link{}, toolErrorf("max_rows must be from 1 to %d", MaxRows)
	}
	switch {
	case maxBytes == 0:
		maxBytes = DefaultMaxBytes
	case maxBytes < 0 || maxBytes > MaxBytes:
		return QueryOutput{}, link{}, toolErrorf("max_bytes must be from 1 to %d", MaxBytes)
	}
	g, err := s.activeGrant(ctx, in.Resource, in.Role)
	if err != nil {
		return QueryOutput{}, link{}, err
	}
	ln := link{request: g.RequestID, grant: g.ID}
	caller := s.callerName(ctx)
	var out *QueryOutput
	for attempt := 0; ; attempt++ {
		cr, err := s.credentials(ctx, caller, g.ID)
		if err != nil {
			return QueryOutput{}, ln, err
		}
		if cr.Via != access.ViaGateway {
			return QueryOutput{}, ln, toolErrorf("no jitgate gateway serves %s (%s) on this server, and query runs statements only through it, where they are audited", in.Resource, cr.Kind)
		}
		qctx, cancel := context.WithTimeout(ctx, s.o.QueryTimeout)
		switch cr.Kind {
		case jitgate.KindPostgres:
			out, err = runPostgres(qctx, cr, in.SQL, maxRows, maxBytes)
		case jitgate.KindMySQL:
			out, err = runMySQL(qctx, cr, in.SQL, maxRows, maxBytes)
		default:
			err = toolErrorf("query does not run on %s resources", cr.Kind)
		}
		timedOut := qctx.Err() == context.DeadlineExceeded
		cancel()
		if loginRefused(err) && attempt == 0 {
			// The cached credential may be from before an extension, or the server restarted:
			// mint a fresh one once.
			s.forget(caller, g.ID)
			continue
		}
		if err != nil {
			if timedOut {
				return QueryOutput{}, ln, toolErrorf("the statement ran longer than %s and was stopped; narrow it (LIMIT, WHERE)", s.o.QueryTimeout)
			}
			return QueryOutput{}, ln, err
		}
		break
	}
	out.Resource, out.GrantID = in.Resource, g.ID
	return *out, ln, nil
}

// activeGrant finds the caller's active grant on resource (and role, if given).
func (s *Server) activeGrant(ctx context.Context, resource, role string) (*jitgate.Grant, error) {
	gs, err := s.o.Backend.ListGrants(ctx, access.GrantQuery{Active: true, Mine: true, Resource: resource})
	if err != nil {
		return nil, err
	}
	var match, scheduled []*jitgate.Grant
	for _, g := range gs {
		if role != "" && g.Role != role {
			continue
		}
		if g.State == jitgate.GrantActive {
			match = append(match, g)
		} else {
			scheduled = append(scheduled, g)
		}
	}
	what := resource
	if role != "" {
		what += "/" + role
	}
	switch {
	case len(match) == 1:
		return match[0], nil
	case len(match) > 1:
		var roles []string
		for _, g := range match {
			roles = append(roles, g.Role)
		}
		return nil, toolErrorf("you hold several roles on %s (%s): pass role", resource, strings.Join(roles, ", "))
	case len(scheduled) > 0:
		return nil, toolErrorf("your grant %d on %s starts at %s; query works from then on", scheduled[0].ID, what, stamp(scheduled[0].StartsAt))
	}
	return nil, toolErrorf("no active grant on %s: call request_access first (then wait_for_decision if it is pending)", what)
}

// credentials returns a session credential for the caller's grant, minted once and kept
// until the grant ends or it stops working.
func (s *Server) credentials(ctx context.Context, caller string, grant int64) (*httpapi.Credentials, error) {
	key := credKey{caller, grant}
	s.mu.Lock()
	cr := s.creds[key]
	s.mu.Unlock()
	if cr != nil && time.Now().Before(cr.ExpiresAt) {
		return cr, nil
	}
	cr, err := s.o.Backend.Credentials(ctx, grant)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	for k, c := range s.creds { // drop what has ended meanwhile
		if !time.Now().Before(c.ExpiresAt) {
			delete(s.creds, k)
		}
	}
	s.creds[key] = cr
	s.mu.Unlock()
	return cr, nil
}

func (s *Server) forget(caller string, grant int64) {
	s.mu.Lock()
	delete(s.creds, credKey{caller, grant})
	s.mu.Unlock()
}

// loginRefused reports whether err is the gateway refusing the credential.
func loginRefused(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "28000" || pe.Code == "28P01"
	}
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == 1045
}

// dbError is a database's error as the model sees it: the database's own message and codes.
func dbError(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return toolErrorf("%s: %s (SQLSTATE %s)", pe.Severity, pe.Message, pe.Code)
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		state := ""
		if me.SQLState != [5]byte{} {
			state = " (" + string(me.SQLState[:]) + ")"
		}
		return toolErrorf("ERROR %d%s: %s", me.Number, state, me.Message)
	}
	var te *toolError
	if errors.As(err, &te) {
		return err
	}
	return toolErrorf("the statement failed: %s", clipText(err.Error(), 500))
}

// collector gathers rows up to the caps.
type collector struct {
	out               QueryOutput
	maxRows, maxBytes int
	bytes             int
}

// add adds one row; false means the caps are reached and row was not added.
func (c *collector) add(vals [][]byte, null func(i int) bool) bool {
	n := 0
	for i := range vals {
		if !null(i) {
			n += len(vals[i])
		}
	}
	if c.out.RowCount >= c.maxRows || (c.bytes+n > c.maxBytes && c.out.RowCount > 0) || n > c.maxBytes {
		c.out.Truncated = true
		c.out.Note = fmt.Sprintf("cut after %d rows (max_rows %d, max_bytes %d); the rest was not read: narrow the statement or raise the caps", c.out.RowCount, c.maxRows, c.maxBytes)
		return false
	}
	row := make([]*string, len(vals))
	for i, v := range vals {
		if !null(i) {
			s := strings.ToValidUTF8(string(v), "\uFFFD")
			row[i] = &s
		}
	}
	c.bytes += n
	c.out.Rows = append(c.out.Rows, row)
	c.out.RowCount++
	return true
}

// runPostgres runs one statement through the PostgreSQL gateway with the extended protocol
// (one statement only), results in text, reading rows one at a time and closing the
// connection at the cap (the gateway then cancels the rest upstream).
func runPostgres(ctx context.Context, cr *httpapi.Credentials, stmt string, maxRows, maxBytes int) (*QueryOutput, error) {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(cr.User, cr.Password), Host: net.JoinHostPort(cr.Host, cr.Port),
		Path: "/" + cr.Database}
	q := url.Values{"sslmode": {cr.SSLMode}, "application_name": {"jitgate-mcp"}, "connect_timeout": {"10"}}
	u.RawQuery = q.Encode()
	cfg, err := pgx.ParseConfig(u.String())
	if err != nil {
		return nil, toolErrorf("the credential does not make a valid connection: %v", err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		if loginRefused(err) {
			return nil, err
		}
		return nil, connectError(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, stmt, pgx.QueryResultFormats{pgx.TextFormatCode})
	if err != nil {
		return nil, dbError(err)
	}
	c := &collector{maxRows: maxRows, maxBytes: maxBytes, out: QueryOutput{Columns: []string{}, Rows: [][]*string{}}}
	for _, f := range rows.FieldDescriptions() {
		c.out.Columns = append(c.out.Columns, f.Name)
	}
	for rows.Next() {
		raw := rows.RawValues()
		if !c.add(raw, func(i int) bool { return raw[i] == nil }) {
			// Stop reading: drop the connection rather than drain what is left.
			_ = conn.PgConn().Conn().Close()
			rows.Close()
			return &c.out, nil
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, dbError(err)
	}
	c.out.Tag = rows.CommandTag().String()
	return &c.out, nil
}

// runMySQL runs one statement through the MySQL gateway (the text protocol, one statement:
// multi-statements stay off), reading rows one at a time and dropping the connection at the
// cap.
func runMySQL(ctx context.Context, cr *httpapi.Credentials, stmt string, maxRows, maxBytes int) (*QueryOutput, error) {
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr, cfg.DBName = cr.User, cr.Password, "tcp", net.JoinHostPort(cr.Host, cr.Port), cr.Database
	cfg.Timeout = 10 * time.Second
	if cr.SSLMode != "disable" {
		cfg.TLSConfig = "skip-verify" // as sslmode=require: encrypted, the gateway's certificate not checked
	}
	cfg.AllowNativePasswords = true
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, toolErrorf("the credential does not make a valid connection: %v", err)
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	db.SetMaxOpenConns(1)
	qctx, cancel := context.WithCancel(ctx)
	defer cancel()
	conn, err := db.Conn(qctx)
	if err != nil {
		if loginRefused(err) {
			return nil, err
		}
		return nil, connectError(err)
	}
	defer conn.Close()
	rows, err := conn.QueryContext(qctx, stmt)
	if err != nil {
		if loginRefused(err) {
			return nil, err
		}
		return nil, dbError(err)
	}
	defer rows.Close()
	c := &collector{maxRows: maxRows, maxBytes: maxBytes, out: QueryOutput{Columns: []string{}, Rows: [][]*string{}}}
	cols, err := rows.Columns()
	if err != nil {
		return nil, dbError(err)
	}
	c.out.Columns = append(c.out.Columns, cols...)
	raw := make([]sql.RawBytes, len(cols))
	dest := make([]any, len(cols))
	for i := range raw {
		dest[i] = &raw[i]
	}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, dbError(err)
		}
		vals := make([][]byte, len(raw))
		for i := range raw {
			vals[i] = raw[i]
		}
		if !c.add(vals, func(i int) bool { return raw[i] == nil }) {
			cancel() // the driver drops the connection; the gateway kills the query upstream
			return &c.out, nil
		}
	}
	if err := rows.Err(); err != nil {
		return nil, dbError(err)
	}
	if len(cols) == 0 {
		c.out.Tag = "OK"
	} else {
		c.out.Tag = fmt.Sprintf("ROWS %d", c.out.RowCount)
	}
	return &c.out, nil
}

// connectError says the gateway could not be reached or refused the session.
func connectError(err error) error {
	var pe *pgconn.PgError
	var me *mysql.MySQLError
	if errors.As(err, &pe) || errors.As(err, &me) {
		return dbError(err)
	}
	return toolErrorf("cannot reach the jitgate gateway: %s", clipText(err.Error(), 300))
}
