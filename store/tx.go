package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/store/internal/statements"
)

// txn implements jitgate.Tx; tx is nil in a read-only View.
type txn struct {
	s        *DB
	tx       *sql.Tx
	ctx      context.Context
	readOnly bool
	// deferred holds transaction control statements (savepoints, lock limits) not sent yet:
	// they go with the next statement's round trip or the commit's, joined into one
	// simple-protocol query, so a batch of writes pays one round trip for each write's
	// release-and-mark rather than two (see flush).
	deferred []string
}

// defaultLimit is a listing's length when its filter sets none; maxLimit the most one may ask.
const (
	defaultLimit = 1000
	maxLimit     = 10000
)

// querier is what both *sql.DB and *sql.Tx offer.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// on returns what runs q: its cached prepared statement (bound to the transaction, if any) or,
// before q is cached, the transaction or database itself.
func (t *txn) on(q string) (querier, string) {
	if st := t.s.cached(q); st != nil {
		if t.tx != nil {
			return stmtQuerier{t.tx.StmtContext(t.ctx, st)}, ""
		}
		return stmtQuerier{st}, ""
	}
	if t.tx != nil {
		return t.tx, t.s.rebind(q)
	}
	return t.s.db, t.s.rebind(q)
}

// stmtQuerier adapts a prepared statement to querier; the query text is ignored.
type stmtQuerier struct{ st *sql.Stmt }

func (s stmtQuerier) ExecContext(ctx context.Context, _ string, args ...any) (sql.Result, error) {
	return s.st.ExecContext(ctx, args...)
}

func (s stmtQuerier) QueryContext(ctx context.Context, _ string, args ...any) (*sql.Rows, error) {
	return s.st.QueryContext(ctx, args...)
}

func (s stmtQuerier) QueryRowContext(ctx context.Context, _ string, args ...any) *sql.Row {
	return s.st.QueryRowContext(ctx, args...)
}

func (t *txn) exec(q string, args ...any) (sql.Result, error) {
	if t.readOnly {
		return nil, errors.New("store: write in a read-only view")
	}
	if err := t.flush(); err != nil {
		return nil, err
	}
	qr, text := t.on(q)
	return qr.ExecContext(t.ctx, text, args...)
}

func (t *txn) query(q string, args ...any) (*sql.Rows, error) {
	if err := t.flush(); err != nil {
		return nil, err
	}
	qr, text := t.on(q)
	return qr.QueryContext(t.ctx, text, args...)
}

// queryRow is QueryRowContext; a deferred control statement's failure is returned by the
// row's Scan.
func (t *txn) queryRow(q string, args ...any) rowScanner {
	if err := t.flush(); err != nil {
		return errRow{err}
	}
	qr, text := t.on(q)
	return qr.QueryRowContext(t.ctx, text, args...)
}

// rowScanner is what queryRow returns: a *sql.Row, or the error that came before it.
type rowScanner interface{ Scan(dest ...any) error }

// errRow is a row whose Scan fails with err.
type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// flush sends the deferred control statements, in the order they were made, in one round
// trip: on PostgreSQL a query without arguments goes by the simple protocol, which takes
// several statements at once.
func (t *txn) flush() error {
	if len(t.deferred) == 0 {
		return nil
	}
	q := strings.Join(t.deferred, "; ")
	t.deferred = t.deferred[:0]
	_, err := t.tx.ExecContext(t.ctx, q)
	return err
}

// forUpdate returns the row-locking suffix where the database has one. SQLite needs none: its
// write transactions hold the database's write lock from BEGIN.
func (t *txn) forUpdate(lock bool) string {
	if lock && t.s.dialect == Postgres && !t.readOnly {
		return " FOR UPDATE"
	}
	return ""
}

// Times are stored as Unix nanoseconds; the zero time is NULL.
func ts(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixNano()
}

func fromTS(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}

func limit(n int) int {
	switch {
	case n <= 0:
		return defaultLimit
	case n > maxLimit:
		return maxLimit
	}
	return n
}

// where accumulates a WHERE clause.
type where struct {
	conds []string
	args  []any
}

func (w *where) add(cond string, args ...any) {
	w.conds = append(w.conds, cond)
	w.args = append(w.args, args...)
}

// in adds "col IN (?, ?, ...)" for vals; with no vals, a condition that matches nothing.
func (w *where) in(col string, vals []string) {
	if len(vals) == 0 {
		w.add("1 = 0")
		return
	}
	cond, args := inList(col, vals)
	w.add(cond, args...)
}

// inInts adds "col IN (...)" for vals (nothing matches when there are none).
func (w *where) inInts(col string, vals []int64) {
	if len(vals) == 0 {
		w.add("1 = 0")
		return
	}
	args := make([]any, len(vals))
	for i, v := range vals {
		args[i] = v
	}
	w.add(col+" IN (?"+strings.Repeat(", ?", len(vals)-1)+")", args...)
}

// inList returns "col IN (?, ?, ...)" and its arguments, for at least one value.
func inList(col string, vals []string) (string, []any) {
	args := make([]any, len(vals))
	for i, v := range vals {
		args[i] = v
	}
	return col + " IN (?" + strings.Repeat(", ?", len(vals)-1) + ")", args
}

// visible adds v's restriction: rows whose ownerCol is v.Owner, whose agentOwnerCol is v.Owner
// (an agent's work, seen by the person who answers for it), or whose policyCol (a column, or a
// subquery's) is one of v.Policies.
func (w *where) visible(v *jitgate.Visibility, ownerCol, agentOwnerCol, policyCol string) {
	if v == nil {
		return
	}
	cond, args := "("+ownerCol+" = ? OR "+agentOwnerCol+" = ?", []any{v.Owner, v.Owner}
	if len(v.Policies) > 0 {
		in, inArgs := inList(policyCol, v.Policies)
		cond, args = cond+" OR "+in, append(args, inArgs...)
	}
	w.add(cond+")", args...)
}

func (w *where) String() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}

// ---- requests ----

const requestCols = `id, requester, requester_owner, resource, role, duration_ns, reason, start_at, break_glass,
	extends_grant, state, policy, step, steps, created_at, expires_at, decided_at, decided_by,
	decision_note, post_review_open, grant_id, version`

type scanner interface{ Scan(dest ...any) error }

// collect runs a query and scans every row with scan.
func collect[T any](t *txn, scan func(scanner) (T, error), q string, args ...any) ([]T, error) {
	rows, err := t.query(q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

func scanRequest(sc scanner) (*jitgate.Request, error) {
	var (
		r                            jitgate.Request
		dur                          int64
		start, created, exp, decided sql.NullInt64
		state                        string
	)
	err := sc.Scan(&r.ID, &r.Requester, &r.RequesterOwner, &r.Resource, &r.Role, &dur, &r.Reason, &start, &r.BreakGlass,
		&r.ExtendsGrant, &state, &r.Policy, &r.Step, &r.Steps, &created, &exp, &decided, &r.DecidedBy,
		&r.DecisionNote, &r.PostReviewOpen, &r.GrantID, &r.Version)
	if err != nil {
		return nil, err
	}
	r.Duration = time.Duration(dur)
	r.State = jitgate.RequestState(state)
	r.StartAt, r.CreatedAt, r.ExpiresAt, r.DecidedAt = fromTS(start), fromTS(created), fromTS(exp), fromTS(decided)
	return &r, nil
}

func (t *txn) InsertRequest(r *jitgate.Request) error {
	r.Version = 1
	return t.queryRow(`INSERT INTO requests (requester, requester_owner, resource, role, duration_ns, reason, start_at,
		break_glass, extends_grant, state, policy, step, steps, created_at, expires_at, decided_at,
		decided_by, decision_note, post_review_open, grant_id, version)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
		r.Requester, r.RequesterOwner, r.Resource, r.Role, int64(r.Duration), r.Reason, ts(r.StartAt), r.BreakGlass,
		r.ExtendsGrant, string(r.State), r.Policy, r.Step, r.Steps, ts(r.CreatedAt), ts(r.ExpiresAt),
		ts(r.DecidedAt), r.DecidedBy, r.DecisionNote, r.PostReviewOpen, r.GrantID, r.Version).Scan(&r.ID)
}

func (t *txn) GetRequest(id int64, lock bool) (*jitgate.Request, error) {
	r, err := scanRequest(t.queryRow(`SELECT `+requestCols+` FROM requests WHERE id = ?`+t.forUpdate(lock), id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, jitgate.Errorf(jitgate.ENOTFOUND, "request %d not found", id)
	}
	if err != nil {
		return nil, err
	}
	if r.Reviews, err = t.reviews(id); err != nil {
		return nil, err
	}
	return r, nil
}

func (t *txn) UpdateRequest(r *jitgate.Request) error {
	res, err := t.exec(`UPDATE requests SET state = ?, step = ?, decided_at = ?, decided_by = ?,
		decision_note = ?, post_review_open = ?, grant_id = ?, expires_at = ?, version = version + 1
		WHERE id = ? AND version = ?`,
		string(r.State), r.Step, ts(r.DecidedAt), r.DecidedBy, r.DecisionNote, r.PostReviewOpen,
		r.GrantID, ts(r.ExpiresAt), r.ID, r.Version)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n != 1 {
		return fmt.Errorf("request %d: %w", r.ID, jitgate.ErrStale)
	}
	r.Version++
	return nil
}

func (t *txn) ListRequests(f jitgate.RequestFilter) ([]*jitgate.Request, error) {
	var w where
	w.visible(f.Visible, "requester", "requester_owner", "policy")
	if f.NotRequester != "" {
		w.add("requester <> ?", f.NotRequester)
	}
	if f.RequesterOwner != "" {
		w.add("requester_owner = ?", f.RequesterOwner)
	}
	if len(f.Policies) > 0 {
		w.in("policy", f.Policies)
	}
	if f.BeforeID > 0 {
		w.add("id < ?", f.BeforeID)
	}
	if f.State != "" {
		w.add("state = ?", string(f.State))
	}
	if f.Requester != "" {
		w.add("requester = ?", f.Requester)
	}
	if f.Resource != "" {
		w.add("resource = ?", f.Resource)
	}
	if f.PostReviewOpen {
		w.add("post_review_open")
	}
	if f.ExtendsGrant != 0 {
		w.add("extends_grant = ?", f.ExtendsGrant)
	}
	if f.ExtendsGrants != nil {
		w.inInts("extends_grant", f.ExtendsGrants)
	}
	out, err := collect(t, scanRequest, `SELECT `+requestCols+` FROM requests`+w.String()+` ORDER BY id DESC LIMIT ?`,
		append(w.args, limit(f.Limit))...)
	if err != nil {
		return nil, err
	}
	// Attach reviews in one query rather than one per request.
	if len(out) > 0 {
		byID := make(map[int64]*jitgate.Request, len(out))
		ids := make([]any, 0, len(out))
		for _, r := range out {
			byID[r.ID] = r
			ids = append(ids, r.ID)
		}
		rvs, err := t.reviewsFor(ids)
		if err != nil {
			return nil, err
		}
		for _, rv := range rvs {
			byID[rv.RequestID].Reviews = append(byID[rv.RequestID].Reviews, rv)
		}
	}
	return out, nil
}

// ---- reviews ----

const reviewCols = `id, request_id, reviewer, step, decision, comment, created_at, post_hoc`

func (t *txn) InsertReview(rv *jitgate.Review) error {
	return t.queryRow(`INSERT INTO reviews (request_id, reviewer, step, decision, comment, created_at, post_hoc)
		VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id`,
		rv.RequestID, rv.Reviewer, rv.Step, string(rv.Decision), rv.Comment, ts(rv.CreatedAt), rv.PostHoc).Scan(&rv.ID)
}

func (t *txn) reviews(requestID int64) ([]*jitgate.Review, error) {
	return t.reviewsFor([]any{requestID})
}

func (t *txn) reviewsFor(ids []any) ([]*jitgate.Review, error) {
	ph := strings.TrimSuffix(strings.Repeat("?, ", len(ids)), ", ")
	return collect(t, scanReview, `SELECT `+reviewCols+` FROM reviews WHERE request_id IN (`+ph+`) ORDER BY id`, ids...)
}

func scanReview(sc scanner) (*jitgate.Review, error) {
	var (
		rv       jitgate.Review
		decision string
		created  sql.NullInt64
	)
	if err := sc.Scan(&rv.ID, &rv.RequestID, &rv.Reviewer, &rv.Step, &decision, &rv.Comment, &created, &rv.PostHoc); err != nil {
		return nil, err
	}
	rv.Decision = jitgate.Decision(decision)
	rv.CreatedAt = fromTS(created)
	return &rv, nil
}

// ---- grants ----

const grantCols = `id, request_id, user_name, owner, resource, role, policy, state, break_glass, starts_at,
	ends_at, activated_at, ended_at, end_reason, ended_by, extensions, prov_state, prov_attempts,
	prov_error, prov_next_at, prov_verified_at, prov_receipt, prov_claimed_by, version`

func scanGrant(sc scanner) (*jitgate.Grant, error) {
	var (
		g                                                  jitgate.Grant
		state, prov                                        string
		starts, ends, activated, ended, provNext, verified sql.NullInt64
	)
	err := sc.Scan(&g.ID, &g.RequestID, &g.User, &g.Owner, &g.Resource, &g.Role, &g.Policy, &state, &g.BreakGlass,
		&starts, &ends, &activated, &ended, &g.EndReason, &g.EndedBy, &g.Extensions, &prov,
		&g.Provision.Attempts, &g.Provision.LastError, &provNext, &verified, &g.Provision.Receipt, &g.Provision.ClaimedBy, &g.Version)
	if err != nil {
		return nil, err
	}
	g.State = jitgate.GrantState(state)
	g.Provision.State = jitgate.ProvisionState(prov)
	g.StartsAt, g.EndsAt, g.ActivatedAt, g.EndedAt = fromTS(starts), fromTS(ends), fromTS(activated), fromTS(ended)
	g.Provision.NextAt, g.Provision.VerifiedAt = fromTS(provNext), fromTS(verified)
	return &g, nil
}

func (t *txn) InsertGrant(g *jitgate.Grant) error {
	g.Version = 1
	return t.queryRow(`INSERT INTO grants (request_id, user_name, owner, resource, role, policy, state,
		break_glass, starts_at, ends_at, activated_at, ended_at, end_reason, ended_by, extensions,
		prov_state, prov_attempts, prov_error, prov_next_at, prov_verified_at, prov_receipt, prov_claimed_by, version)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
		g.RequestID, g.User, g.Owner, g.Resource, g.Role, g.Policy, string(g.State), g.BreakGlass,
		ts(g.StartsAt), ts(g.EndsAt), ts(g.ActivatedAt), ts(g.EndedAt), g.EndReason, g.EndedBy,
		g.Extensions, string(g.Provision.State), g.Provision.Attempts, g.Provision.LastError,
		ts(g.Provision.NextAt), ts(g.Provision.VerifiedAt), g.Provision.Receipt, g.Provision.ClaimedBy, g.Version).Scan(&g.ID)
}

func (t *txn) GetGrant(id int64, lock bool) (*jitgate.Grant, error) {
	g, err := scanGrant(t.queryRow(`SELECT `+grantCols+` FROM grants WHERE id = ?`+t.forUpdate(lock), id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, jitgate.Errorf(jitgate.ENOTFOUND, "grant %d not found", id)
	}
	return g, err
}

func (t *txn) Savepoint() error           { return t.utility("SAVEPOINT jg_write") }
func (t *txn) RollbackToSavepoint() error { return t.utility("ROLLBACK TO SAVEPOINT jg_write") }
func (t *txn) ReleaseSavepoint() error    { return t.utility("RELEASE SAVEPOINT jg_write") }

func (t *txn) LimitLockWaits(d time.Duration) error {
	if t.s.dialect != Postgres {
		return nil
	}
	return t.utility(fmt.Sprintf("SET LOCAL lock_timeout = %d", d.Milliseconds()))
}

// utility queues a transaction control statement (never prepared) for the next round trip
// (see flush). Its failure, if any, is the next statement's or the commit's; these fail only
// when the transaction or its connection has, and then so does everything after them.
func (t *txn) utility(q string) error {
	if t.tx == nil {
		return errors.New("store: a savepoint outside a write transaction")
	}
	t.deferred = append(t.deferred, q)
	return nil
}

func (t *txn) LockGrants(ids []int64, skipLocked bool) ([]*jitgate.Grant, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	var w where
	w.inInts("id", ids)
	lock := t.forUpdate(true)
	if lock != "" && skipLocked {
		lock += " SKIP LOCKED"
	}
	return collect(t, scanGrant, `SELECT `+grantCols+` FROM grants`+w.String()+` ORDER BY id`+lock, w.args...)
}

func (t *txn) UpdateGrant(g *jitgate.Grant) error {
	res, err := t.exec(`UPDATE grants SET state = ?, starts_at = ?, ends_at = ?, activated_at = ?,
		ended_at = ?, end_reason = ?, ended_by = ?, extensions = ?, prov_state = ?, prov_attempts = ?,
		prov_error = ?, prov_next_at = ?, prov_verified_at = ?, prov_receipt = ?, prov_claimed_by = ?, version = version + 1
		WHERE id = ? AND version = ?`,
		string(g.State), ts(g.StartsAt), ts(g.EndsAt), ts(g.ActivatedAt), ts(g.EndedAt), g.EndReason,
		g.EndedBy, g.Extensions, string(g.Provision.State), g.Provision.Attempts, g.Provision.LastError,
		ts(g.Provision.NextAt), ts(g.Provision.VerifiedAt), g.Provision.Receipt, g.Provision.ClaimedBy, g.ID, g.Version)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n != 1 {
		return fmt.Errorf("grant %d: %w", g.ID, jitgate.ErrStale)
	}
	g.Version++
	return nil
}

// grantUpdateChunks are the row counts of UpdateGrants' statements, largest first.
var grantUpdateChunks = []int{100, 20, 5, 1}

var grantUpdates sync.Map // rows → statement text

// grantUpdate returns the statement that updates rows grants from a VALUES list: columns id,
// version, then the updated ones in grantUpdateSet's order (VALUES columns are named
// column1, column2... in both SQLite and PostgreSQL; the casts type the parameters).
func grantUpdate(rows int) string {
	if s, ok := grantUpdates.Load(rows); ok {
		return s.(string)
	}
	var b strings.Builder
	b.WriteString("UPDATE grants SET ")
	for i, c := range grantUpdateSet {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s = v.column%d", c.name, i+3)
	}
	b.WriteString(", version = grants.version + 1 FROM (VALUES ")
	row := "(CAST(? AS BIGINT), CAST(? AS BIGINT)"
	for _, c := range grantUpdateSet {
		row += ", CAST(? AS " + c.typ + ")"
	}
	row += ")"
	for i := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(row)
	}
	b.WriteString(") AS v WHERE grants.id = v.column1 AND grants.version = v.column2")
	s := b.String()
	grantUpdates.Store(rows, s)
	return s
}

// grantUpdateSet are the columns UpdateGrants sets, with their SQL types.
var grantUpdateSet = []struct{ name, typ string }{
	{"state", "TEXT"}, {"starts_at", "BIGINT"}, {"ends_at", "BIGINT"}, {"activated_at", "BIGINT"}, {"ended_at", "BIGINT"},
	{"end_reason", "TEXT"}, {"ended_by", "TEXT"}, {"extensions", "BIGINT"}, {"prov_state", "TEXT"}, {"prov_attempts", "BIGINT"},
	{"prov_error", "TEXT"}, {"prov_next_at", "BIGINT"}, {"prov_verified_at", "BIGINT"}, {"prov_receipt", "TEXT"},
	{"prov_claimed_by", "TEXT"},
}

func (t *txn) UpdateGrants(gs []*jitgate.Grant) error {
	for len(gs) > 0 {
		n := grantUpdateChunks[len(grantUpdateChunks)-1]
		for _, c := range grantUpdateChunks {
			if len(gs) >= c {
				n = c
				break
			}
		}
		args := make([]any, 0, n*(2+len(grantUpdateSet)))
		for _, g := range gs[:n] {
			args = append(args, g.ID, g.Version, string(g.State), ts(g.StartsAt), ts(g.EndsAt), ts(g.ActivatedAt), ts(g.EndedAt),
				g.EndReason, g.EndedBy, g.Extensions, string(g.Provision.State), g.Provision.Attempts, g.Provision.LastError,
				ts(g.Provision.NextAt), ts(g.Provision.VerifiedAt), g.Provision.Receipt, g.Provision.ClaimedBy)
		}
		res, err := t.exec(grantUpdate(n), args...)
		if err != nil {
			return err
		}
		if got, err := res.RowsAffected(); err != nil {
			return err
		} else if got != int64(n) {
			return fmt.Errorf("%d of %d grants changed meanwhile: %w", int64(n)-got, n, jitgate.ErrStale)
		}
		for _, g := range gs[:n] {
			g.Version++
		}
		gs = gs[n:]
	}
	return nil
}

func (t *txn) ListGrants(f jitgate.GrantFilter) ([]*jitgate.Grant, error) {
	var w where
	w.visible(f.Visible, "user_name", "owner", "policy")
	switch {
	case f.State != "":
		w.add("state = ?", string(f.State))
	case f.Live:
		w.add("state IN (?, ?)", string(jitgate.GrantScheduled), string(jitgate.GrantActive))
	}
	if f.User != "" {
		w.add("user_name = ?", f.User)
	}
	if f.Resource != "" {
		w.add("resource = ?", f.Resource)
	}
	if f.Role != "" {
		w.add("role = ?", f.Role)
	}
	return collect(t, scanGrant, `SELECT `+grantCols+` FROM grants`+w.String()+` ORDER BY id DESC LIMIT ?`,
		append(w.args, limit(f.Limit))...)
}

// ---- audit ----

func (t *txn) AuditHead() (int64, string, error) {
	var (
		seq  int64
		hash string
	)
	err := t.queryRow(`SELECT seq, hash FROM audit_head WHERE id = 1`).Scan(&seq, &hash)
	return seq, hash, err
}

func (t *txn) AppendAudit(events ...*jitgate.AuditEvent) error {
	if len(events) == 0 {
		return nil
	}
	var (
		seq  int64
		prev string
	)
	// Locking the head row serializes appends: the chain has one writer at a time.
	if err := t.queryRow(`SELECT seq, hash FROM audit_head WHERE id = 1`+t.forUpdate(true)).Scan(&seq, &prev); err != nil {
		return err
	}
	args := make([]any, 0, auditCols*min(len(events), auditChunks[0]))
	bp := stmtBufs.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= maxPooledStmtBuf {
			stmtBufs.Put(bp)
		}
	}()
	var ends [auditMaxChunk]int // where each event's statements end in *bp
	for len(events) > 0 {
		// Insert in chunks of a few fixed sizes, so that the statements stay few and cached.
		n := auditChunks[len(auditChunks)-1]
		for _, c := range auditChunks {
			if len(events) >= c {
				n = c
				break
			}
		}
		// The chunk's statements are encoded one after another into one buffer, reused from
		// append to append, and copied out as one string: a session.statements event's
		// statements run to tens of kilobytes, which growing a buffer per event and copying
		// it once more turned into most of the store's garbage.
		buf := (*bp)[:0]
		for i, e := range events[:n] {
			// What is read back must be what is hashed: text that is not UTF-8 is made so.
			// Append checks the statements' text as it encodes it, so they are gone through
			// again only if some is not.
			e.MakeHeadValidUTF8()
			if len(e.Statements) > 0 {
				start := len(buf)
				var exact bool
				if buf, exact = statements.Append(buf, e.Statements); !exact {
					e.MakeValidUTF8()
					buf, _ = statements.Append(buf[:start], e.Statements)
				}
			}
			ends[i] = len(buf)
		}
		*bp = buf
		all := string(buf)
		args = args[:0]
		for i, e := range events[:n] {
			seq++
			e.Seq, e.PrevHash, e.Time = seq, prev, e.Time.UTC()
			e.Hash = e.ComputeHash()
			prev = e.Hash
			details := []byte("{}")
			if len(e.Details) > 0 {
				var err error
				if details, err = json.Marshal(e.Details); err != nil {
					return err
				}
			}
			var stmts any // NULL unless the event carries statements
			start := 0
			if i > 0 {
				start = ends[i-1]
			}
			if ends[i] > start {
				stmts = all[start:ends[i]]
			}
			args = append(args, e.Seq, e.Time.UnixNano(), e.Actor, e.Action, e.RequestID, e.GrantID, e.SessionID, string(details), stmts, e.PrevHash, e.Hash)
		}
		events = events[n:]
		if len(events) == 0 && t.s.dialect == Postgres {
			// The last chunk moves the head in the same statement: one round trip fewer.
			args = append(args, seq, prev)
			_, err := t.exec(auditInsertMovingHead(n), args...)
			return err
		}
		if _, err := t.exec(auditInsert(n), args...); err != nil {
			return err
		}
	}
	_, err := t.exec(`UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1`, seq, prev)
	return err
}

const auditCols = 11

// auditChunks are the row counts of the audit INSERT statements, largest first
// (auditMaxChunk).
// Writes append 1 to 4 events (a review that activates a grant: 3), so every size up to 4
// has its statement: one INSERT per write.
var auditChunks = []int{auditMaxChunk, 16, 4, 3, 2, 1}

const auditMaxChunk = 128

// stmtBufs holds AppendAudit's buffers for encoding statements; one larger than
// maxPooledStmtBuf (a rare huge batch) is left to the garbage collector.
var stmtBufs = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

const maxPooledStmtBuf = 4 << 20

var auditInserts sync.Map // rows → statement text

// auditInsertMovingHead is auditInsert(rows) that also sets the head (PostgreSQL: a
// data-modifying WITH) to its two arguments after the rows'.
func auditInsertMovingHead(rows int) string {
	if q, ok := auditInserts.Load(-rows); ok {
		return q.(string)
	}
	ins := auditInsert(rows)
	// The head's arguments come after the rows', but its clause comes first in the text: the
	// placeholders are numbered here (rebind leaves a query without ? as it is).
	var q strings.Builder
	n := rows * auditCols
	fmt.Fprintf(&q, "WITH head AS (UPDATE audit_head SET seq = $%d, hash = $%d WHERE id = 1) ", n+1, n+2)
	k := 0
	for _, c := range ins {
		if c == '?' {
			k++
			fmt.Fprintf(&q, "$%d", k)
			continue
		}
		q.WriteRune(c)
	}
	auditInserts.Store(-rows, q.String())
	return q.String()
}

func auditInsert(rows int) string {
	if q, ok := auditInserts.Load(rows); ok {
		return q.(string)
	}
	var q strings.Builder
	q.WriteString(`INSERT INTO audit_events (seq, time, actor, action, request_id, grant_id, session_id, details, statements, prev_hash, hash) VALUES `)
	for i := range rows {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
	}
	auditInserts.Store(rows, q.String())
	return q.String()
}

func (t *txn) ListAudit(f jitgate.AuditFilter) ([]*jitgate.AuditEvent, error) {
	var w where
	if f.AfterSeq > 0 {
		w.add("seq > ?", f.AfterSeq)
	}
	if f.BeforeSeq > 0 {
		w.add("seq < ?", f.BeforeSeq)
	}
	if !f.Since.IsZero() {
		w.add("time >= ?", f.Since.UnixNano())
	}
	if f.Actor != "" {
		w.add("actor = ?", f.Actor)
	}
	if f.RequestID != 0 {
		w.add("request_id = ?", f.RequestID)
	}
	if f.GrantID != 0 {
		w.add("grant_id = ?", f.GrantID)
	}
	if f.SessionID != 0 {
		w.add("session_id = ?", f.SessionID)
	}
	order := ""
	if f.Newest {
		order = " DESC"
	}
	return collect(t, scanAudit, `SELECT seq, time, actor, action, request_id, grant_id, session_id, details, statements, prev_hash, hash
		FROM audit_events`+w.String()+` ORDER BY seq`+order+` LIMIT ?`, append(w.args, limit(f.Limit))...)
}

func scanAudit(sc scanner) (*jitgate.AuditEvent, error) {
	var (
		e       jitgate.AuditEvent
		tm      int64
		details string
		stmts   sql.NullString
	)
	if err := sc.Scan(&e.Seq, &tm, &e.Actor, &e.Action, &e.RequestID, &e.GrantID, &e.SessionID, &details, &stmts, &e.PrevHash, &e.Hash); err != nil {
		return nil, err
	}
	if stmts.Valid && stmts.String != "" {
		var err error
		if e.Statements, err = statements.Parse(stmts.String); err != nil {
			// Listed anyway; its hash no longer matches, which Verify reports.
			e.Statements = []jitgate.Statement{{SQL: "[unparsable statements: " + stmts.String + "]"}}
		}
	}
	e.Time = time.Unix(0, tm).UTC()
	if details != "" && details != "{}" {
		if err := json.Unmarshal([]byte(details), &e.Details); err != nil {
			// A row edited into invalid JSON still gets listed; Verify flags its hash.
			e.Details = map[string]string{"_unparsable": details}
		}
	}
	return &e, nil
}

// ---- scheduler ----

func (t *txn) Due(now time.Time, n int) (*jitgate.DueWork, error) {
	d := &jitgate.DueWork{}
	nowNS := now.UnixNano()
	ids := func(q string, args ...any) ([]int64, error) {
		return collect(t, func(sc scanner) (id int64, err error) { return id, sc.Scan(&id) }, q, args...)
	}
	var err error
	// Each of these walks an index from its low end: requests_state_expires,
	// grants_state_starts, grants_state_ends, grants_prov_next.
	if d.TimedOut, err = ids(`SELECT id FROM requests WHERE state = ? AND expires_at <= ? ORDER BY expires_at LIMIT ?`,
		string(jitgate.RequestPending), nowNS, n); err != nil {
		return nil, err
	}
	if d.Activate, err = ids(`SELECT id FROM grants WHERE state = ? AND starts_at <= ? ORDER BY starts_at LIMIT ?`,
		string(jitgate.GrantScheduled), nowNS, n); err != nil {
		return nil, err
	}
	if d.Expire, err = ids(`SELECT id FROM grants WHERE state = ? AND ends_at <= ? ORDER BY ends_at LIMIT ?`,
		string(jitgate.GrantActive), nowNS, n); err != nil {
		return nil, err
	}
	if d.Provision, err = ids(`SELECT id FROM grants WHERE prov_next_at IS NOT NULL AND prov_next_at <= ? ORDER BY prov_next_at LIMIT ?`,
		nowNS, n); err != nil {
		return nil, err
	}
	var next sql.NullInt64
	err = t.queryRow(`SELECT MIN(t) FROM (
		SELECT MIN(expires_at) AS t FROM requests WHERE state = ? AND expires_at > ?
		UNION ALL SELECT MIN(starts_at) FROM grants WHERE state = ? AND starts_at > ?
		UNION ALL SELECT MIN(ends_at) FROM grants WHERE state = ? AND ends_at > ?
		UNION ALL SELECT MIN(prov_next_at) FROM grants WHERE prov_next_at IS NOT NULL AND prov_next_at > ?
	) AS due`,
		string(jitgate.RequestPending), nowNS, string(jitgate.GrantScheduled), nowNS,
		string(jitgate.GrantActive), nowNS, nowNS).Scan(&next)
	if err != nil {
		return nil, err
	}
	d.Next = fromTS(next)
	return d, nil
}

func (t *txn) DueProvisioning(now time.Time, n int) ([]int64, time.Time, error) {
	nowNS := now.UnixNano()
	ids, err := collect(t, func(sc scanner) (id int64, err error) { return id, sc.Scan(&id) },
		`SELECT id FROM grants WHERE prov_next_at IS NOT NULL AND prov_next_at <= ? ORDER BY prov_next_at LIMIT ?`, nowNS, n)
	if err != nil {
		return nil, time.Time{}, err
	}
	var next sql.NullInt64
	if err := t.queryRow(`SELECT MIN(prov_next_at) FROM grants WHERE prov_next_at IS NOT NULL AND prov_next_at > ?`, nowNS).Scan(&next); err != nil {
		return nil, time.Time{}, err
	}
	return ids, fromTS(next), nil
}

// ---- tokens ----

const tokenCols = `id, user_name, hash, description, created_by, created_at, expires_at, revoked_at`

func scanToken(sc scanner) (*jitgate.Token, error) {
	var (
		tk                        jitgate.Token
		created, expires, revoked sql.NullInt64
	)
	if err := sc.Scan(&tk.ID, &tk.User, &tk.Hash, &tk.Description, &tk.CreatedBy, &created, &expires, &revoked); err != nil {
		return nil, err
	}
	tk.CreatedAt, tk.ExpiresAt, tk.RevokedAt = fromTS(created), fromTS(expires), fromTS(revoked)
	return &tk, nil
}

func (t *txn) InsertToken(tk *jitgate.Token) error {
	return t.queryRow(`INSERT INTO api_tokens (user_name, hash, description, created_by, created_at, expires_at)
		VALUES (?, ?, ?, ?, ?, ?) RETURNING id`,
		tk.User, tk.Hash, tk.Description, tk.CreatedBy, ts(tk.CreatedAt), ts(tk.ExpiresAt)).Scan(&tk.ID)
}

func (t *txn) TokenByHash(hash string) (*jitgate.Token, error) {
	tk, err := scanToken(t.queryRow(`SELECT `+tokenCols+` FROM api_tokens WHERE hash = ?`, hash))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, jitgate.Errorf(jitgate.ENOTFOUND, "unknown token")
	}
	return tk, err
}

func (t *txn) GetToken(id int64) (*jitgate.Token, error) {
	tk, err := scanToken(t.queryRow(`SELECT `+tokenCols+` FROM api_tokens WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, jitgate.Errorf(jitgate.ENOTFOUND, "token %d not found", id)
	}
	return tk, err
}

func (t *txn) RevokeToken(id int64, at time.Time) error {
	res, err := t.exec(`UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL`, ts(at), id)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		if _, err := t.GetToken(id); err != nil {
			return err
		}
		return jitgate.Errorf(jitgate.ECONFLICT, "token %d is already revoked", id)
	}
	return nil
}

func (t *txn) PutCLICode(c *jitgate.CLICode, now time.Time) error {
	if _, err := t.exec(`DELETE FROM cli_codes WHERE expires_at <= ?`, ts(now)); err != nil {
		return err
	}
	_, err := t.exec(`INSERT INTO cli_codes (hash, user_name, challenge, expires_at) VALUES (?, ?, ?, ?)`,
		c.Hash, c.User, c.Challenge, ts(c.ExpiresAt))
	return err
}

func (t *txn) TakeCLICode(hash string) (*jitgate.CLICode, error) {
	c := jitgate.CLICode{Hash: hash}
	var exp sql.NullInt64
	err := t.queryRow(`DELETE FROM cli_codes WHERE hash = ? RETURNING user_name, challenge, expires_at`, hash).Scan(&c.User, &c.Challenge, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, jitgate.Errorf(jitgate.ENOTFOUND, "no such code")
	}
	if err != nil {
		return nil, err
	}
	c.ExpiresAt = fromTS(exp)
	return &c, nil
}

func (t *txn) ListTokens(user string) ([]*jitgate.Token, error) {
	var w where
	if user != "" {
		w.add("user_name = ?", user)
	}
	return collect(t, scanToken, `SELECT `+tokenCols+` FROM api_tokens`+w.String()+` ORDER BY id DESC LIMIT ?`, append(w.args, defaultLimit)...)
}

// ---- metrics ----

func (t *txn) Counts(rs []jitgate.RequestState, gs []jitgate.GrantState) (map[jitgate.RequestState]int, map[jitgate.GrantState]int, error) {
	reqs, grants := map[jitgate.RequestState]int{}, map[jitgate.GrantState]int{}
	// One COUNT per state walks the (state, ...) index instead of the whole table.
	for _, st := range rs {
		var n int
		if err := t.queryRow(`SELECT COUNT(*) FROM requests WHERE state = ?`, string(st)).Scan(&n); err != nil {
			return nil, nil, err
		}
		reqs[st] = n
	}
	for _, st := range gs {
		var n int
		if err := t.queryRow(`SELECT COUNT(*) FROM grants WHERE state = ?`, string(st)).Scan(&n); err != nil {
			return nil, nil, err
		}
		grants[st] = n
	}
	return reqs, grants, nil
}

// ---- gateway sessions ----

func (t *txn) InsertCredential(c *jitgate.SessionCredential) error {
	return t.queryRow(`INSERT INTO session_credentials (grant_id, user_name, hash, created_at, expires_at)
		VALUES (?, ?, ?, ?, ?) RETURNING id`, c.GrantID, c.User, c.Hash, ts(c.CreatedAt), ts(c.ExpiresAt)).Scan(&c.ID)
}

func (t *txn) CredentialByHash(hash string) (*jitgate.SessionCredential, error) {
	var (
		c                jitgate.SessionCredential
		created, expires sql.NullInt64
	)
	err := t.queryRow(`SELECT id, grant_id, user_name, hash, created_at, expires_at FROM session_credentials WHERE hash = ?`, hash).
		Scan(&c.ID, &c.GrantID, &c.User, &c.Hash, &created, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, jitgate.Errorf(jitgate.ENOTFOUND, "unknown credential")
	}
	c.CreatedAt, c.ExpiresAt = fromTS(created), fromTS(expires)
	return &c, err
}

func (t *txn) ActiveCredentials(user, resource string) ([]*jitgate.SessionCredential, error) {
	rows, err := t.query(`SELECT c.id, c.grant_id, c.user_name, c.hash, c.created_at, c.expires_at
		FROM session_credentials c JOIN grants g ON g.id = c.grant_id
		WHERE c.user_name = ? AND g.resource = ? AND g.state = ? ORDER BY c.id DESC LIMIT 1000`, user, resource, string(jitgate.GrantActive))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*jitgate.SessionCredential
	for rows.Next() {
		var (
			c                jitgate.SessionCredential
			created, expires sql.NullInt64
		)
		if err := rows.Scan(&c.ID, &c.GrantID, &c.User, &c.Hash, &created, &expires); err != nil {
			return nil, err
		}
		c.CreatedAt, c.ExpiresAt = fromTS(created), fromTS(expires)
		out = append(out, &c)
	}
	return out, rows.Err()
}

const sessionCols = `id, grant_id, user_name, resource, role, client_addr, started_at, ended_at, end_reason, bytes_in, bytes_out, statements, instance_id`

func scanSession(sc scanner) (*jitgate.Session, error) {
	var (
		s              jitgate.Session
		started, ended sql.NullInt64
	)
	if err := sc.Scan(&s.ID, &s.GrantID, &s.User, &s.Resource, &s.Role, &s.ClientAddr, &started, &ended, &s.EndReason,
		&s.BytesIn, &s.BytesOut, &s.Statements, &s.Instance); err != nil {
		return nil, err
	}
	s.StartedAt, s.EndedAt = fromTS(started), fromTS(ended)
	return &s, nil
}

func (t *txn) InsertSession(s *jitgate.Session) error {
	return t.queryRow(`INSERT INTO sessions (grant_id, user_name, resource, role, client_addr, started_at, instance_id)
		VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id`, s.GrantID, s.User, s.Resource, s.Role, s.ClientAddr, ts(s.StartedAt), s.Instance).Scan(&s.ID)
}

func (t *txn) EndSession(s *jitgate.Session) error {
	_, err := t.exec(`UPDATE sessions SET ended_at = ?, end_reason = ?, bytes_in = ?, bytes_out = ?, statements = ? WHERE id = ?`,
		ts(s.EndedAt), s.EndReason, s.BytesIn, s.BytesOut, s.Statements, s.ID)
	return err
}

func (t *txn) ListSessions(f jitgate.SessionFilter) ([]*jitgate.Session, error) {
	var w where
	w.visible(f.Visible, "user_name", "(SELECT g.owner FROM grants g WHERE g.id = sessions.grant_id)",
		"(SELECT g.policy FROM grants g WHERE g.id = sessions.grant_id)")
	if f.Live {
		w.add("ended_at IS NULL")
	}
	if f.User != "" {
		w.add("user_name = ?", f.User)
	}
	if f.GrantID != 0 {
		w.add("grant_id = ?", f.GrantID)
	}
	if f.Instance != "" {
		w.add("instance_id = ?", f.Instance)
	}
	return collect(t, scanSession, `SELECT `+sessionCols+` FROM sessions`+w.String()+` ORDER BY id DESC LIMIT ?`, append(w.args, limit(f.Limit))...)
}

// ---- directory ----

func (t *txn) PutUser(u *jitgate.User, source string, at time.Time) error {
	groups, err := json.Marshal(u.Groups)
	if err != nil {
		return err
	}
	_, err = t.exec(`INSERT INTO directory_users (name, groups_json, source, updated_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET groups_json = excluded.groups_json, source = excluded.source, updated_at = excluded.updated_at`,
		u.Name, string(groups), source, at.UnixNano())
	return err
}

func scanUser(sc scanner) (*jitgate.User, error) {
	var (
		u      jitgate.User
		groups string
	)
	if err := sc.Scan(&u.Name, &groups); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(groups), &u.Groups); err != nil {
		return nil, fmt.Errorf("user %s: groups: %w", u.Name, err)
	}
	if u.Groups == nil {
		u.Groups = []string{}
	}
	return &u, nil
}

func (t *txn) GetUser(name string) (*jitgate.User, error) {
	u, err := scanUser(t.queryRow(`SELECT name, groups_json FROM directory_users WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, jitgate.Errorf(jitgate.ENOTFOUND, "user %s not found", name)
	}
	return u, err
}

func (t *txn) ListUsers() ([]*jitgate.User, error) {
	return collect(t, scanUser, `SELECT name, groups_json FROM directory_users ORDER BY name`)
}

func (t *txn) InstallationID() (string, error) {
	var id string
	err := t.queryRow(`SELECT id FROM installation WHERE singleton = 1`).Scan(&id)
	return id, err
}

// ---- instances ----

func (t *txn) PutInstance(in *jitgate.Instance) error {
	_, err := t.exec(`INSERT INTO instances (id, host, pid, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at`,
		in.ID, in.Host, in.PID, ts(in.StartedAt), ts(in.HeartbeatAt))
	return err
}

func (t *txn) ListInstances() ([]*jitgate.Instance, error) {
	return collect(t, func(sc scanner) (*jitgate.Instance, error) {
		var (
			in                 jitgate.Instance
			started, heartbeat sql.NullInt64
		)
		if err := sc.Scan(&in.ID, &in.Host, &in.PID, &started, &heartbeat); err != nil {
			return nil, err
		}
		in.StartedAt, in.HeartbeatAt = fromTS(started), fromTS(heartbeat)
		return &in, nil
	}, `SELECT id, host, pid, started_at, heartbeat_at FROM instances ORDER BY started_at`)
}

func (t *txn) DeleteInstance(id string) (bool, error) {
	res, err := t.exec(`DELETE FROM instances WHERE id = ?`, id)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

func (t *txn) ReleaseClaims(instance string, now time.Time) (int, error) {
	res, err := t.exec(`UPDATE grants SET prov_next_at = ?, prov_claimed_by = '', version = version + 1
		WHERE prov_claimed_by = ? AND prov_next_at IS NOT NULL`, ts(now), instance)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	return int(n), err
}

func (t *txn) CountStatements(sessionID int64) (int64, error) {
	var n int64
	for after := int64(0); ; {
		evs, err := t.ListAudit(jitgate.AuditFilter{SessionID: sessionID, AfterSeq: after, Limit: defaultLimit})
		if err != nil {
			return 0, err
		}
		for _, e := range evs {
			switch e.Action {
			case jitgate.ActionSessionStatements:
				n += int64(len(e.Statements))
			case jitgate.ActionSessionStatement:
				n++
			}
			after = e.Seq
		}
		if len(evs) < defaultLimit {
			return n, nil
		}
	}
}
