package jitgate

import (
	"context"
	"time"
)

// Store persists jitgate's state. All writes happen in Tx; every state change and the audit
// event that records it commit together or not at all.
type Store interface {
	// Tx runs fn in a read-write transaction and commits if fn returns nil. Transactions are
	// serialized where they touch the same request, grant or the audit chain.
	Tx(ctx context.Context, fn func(Tx) error) error
	// View runs fn without a write transaction, for reads.
	View(ctx context.Context, fn func(Tx) error) error
	// Ping reports whether the store is reachable.
	Ping(ctx context.Context) error
	Close() error
}

// Tx is the set of store operations, run inside Store.Tx or Store.View. Lookups of a missing
// row return an *Error with ENOTFOUND.
type Tx interface {
	// InsertRequest stores r and sets its ID and Version.
	InsertRequest(r *Request) error
	// GetRequest returns a request with its reviews. With lock, the row is locked for the rest
	// of the transaction (SELECT ... FOR UPDATE where the database has it).
	GetRequest(id int64, lock bool) (*Request, error)
	// UpdateRequest writes r if its stored Version still equals r.Version, and increments
	// r.Version. It returns an *Error with ECONFLICT when the row changed meanwhile.
	UpdateRequest(r *Request) error
	ListRequests(f RequestFilter) ([]*Request, error)

	// InsertReview stores a review and sets its ID.
	InsertReview(rv *Review) error

	// InsertGrant stores g and sets its ID and Version.
	InsertGrant(g *Grant) error
	GetGrant(id int64, lock bool) (*Grant, error)
	// LockGrants reads the grants ids (in ascending id order, missing ones left out) and locks
	// them for the transaction; with skipLocked, grants another transaction holds are left out
	// rather than waited for (on PostgreSQL; SQLite has one writer at a time anyway).
	LockGrants(ids []int64, skipLocked bool) ([]*Grant, error)
	// UpdateGrant is UpdateRequest for grants.
	UpdateGrant(g *Grant) error
	// Savepoint marks a point in the transaction; RollbackToSavepoint undoes what came after
	// it (and clears PostgreSQL's failed-transaction state), ReleaseSavepoint forgets it. One
	// savepoint at a time: several writes share a transaction, each within its own.
	Savepoint() error
	RollbackToSavepoint() error
	ReleaseSavepoint() error
	// LimitLockWaits makes a statement that waits longer than d for a row another
	// transaction holds fail instead, for the rest of the transaction or until called again
	// (zero: no limit). PostgreSQL's lock_timeout; SQLite has no row locks and ignores it.
	LimitLockWaits(d time.Duration) error
	// UpdateGrants is UpdateGrant for many grants, in a few statements: it fails with ErrStale
	// unless every one of them still has its Version.
	UpdateGrants(gs []*Grant) error
	ListGrants(f GrantFilter) ([]*Grant, error)

	// AppendAudit appends events, in order, to the hash chain: it sets each one's Seq,
	// PrevHash and Hash.
	AppendAudit(events ...*AuditEvent) error
	ListAudit(f AuditFilter) ([]*AuditEvent, error)
	// AuditHead returns the sequence number and hash of the last event (0, "" when empty).
	AuditHead() (seq int64, hash string, err error)

	// InsertToken stores t and sets its ID.
	InsertToken(t *Token) error
	// TokenByHash returns the token with the given hash (ENOTFOUND if none).
	TokenByHash(hash string) (*Token, error)
	GetToken(id int64) (*Token, error)
	// RevokeToken sets the token's revocation time (ENOTFOUND if none).
	RevokeToken(id int64, at time.Time) error
	// ListTokens lists tokens, of one user if user is not empty, newest first.
	ListTokens(user string) ([]*Token, error)
	// PutCLICode stores a CLI sign-in's one-time code, deleting the codes expired by now.
	PutCLICode(c *CLICode, now time.Time) error
	// TakeCLICode deletes and returns the code with the given hash (ENOTFOUND if none): a
	// code is traded once. The caller checks its expiry.
	TakeCLICode(hash string) (*CLICode, error)

	// PutUser records a user an identity provider vouched for, with its groups, replacing
	// what was known of them.
	PutUser(u *User, source string, at time.Time) error
	// GetUser returns a recorded user (ENOTFOUND if none).
	GetUser(name string) (*User, error)
	// ListUsers lists the recorded users by name.
	ListUsers() ([]*User, error)

	// PutInstance records a server instance, or its new heartbeat.
	PutInstance(in *Instance) error
	// ListInstances lists the registered server instances.
	ListInstances() ([]*Instance, error)
	// DeleteInstance removes an instance's record, reporting whether there was one (two
	// instances taking over the same dead one: the second finds none).
	DeleteInstance(id string) (bool, error)
	// ReleaseClaims makes every provisioning attempt that instance claimed due at now and
	// unclaimed, returning how many there were.
	ReleaseClaims(instance string, now time.Time) (int, error)
	// CountStatements returns how many statements a session's audit events record.
	CountStatements(sessionID int64) (int64, error)

	// InstallationID returns this installation's random identity (made with the store).
	InstallationID() (string, error)
	// InsertCredential stores c and sets its ID.
	InsertCredential(c *SessionCredential) error
	// CredentialByHash returns the credential with the given hash (ENOTFOUND if none).
	CredentialByHash(hash string) (*SessionCredential, error)
	// ActiveCredentials returns user's credentials for grants on resource that are in state
	// active (newest first, at most 1,000).
	ActiveCredentials(user, resource string) ([]*SessionCredential, error)
	// InsertSession stores s and sets its ID.
	InsertSession(s *Session) error
	// EndSession records a session's end and its counts.
	EndSession(s *Session) error
	ListSessions(f SessionFilter) ([]*Session, error)

	// Counts returns how many requests and grants are in each state, for metrics; it only
	// counts the states named, using the state indexes.
	Counts(requestStates []RequestState, grantStates []GrantState) (map[RequestState]int, map[GrantState]int, error)

	// Due returns the ids of work due at or before now, at most limit of each kind, and the
	// earliest due time of anything not yet due (zero if nothing is scheduled).
	Due(now time.Time, limit int) (*DueWork, error)
	// DueProvisioning is Due for provisioning attempts alone: up to limit ids due at now, and
	// when the next one is due after now (zero if none is).
	DueProvisioning(now time.Time, limit int) ([]int64, time.Time, error)

	// EnqueueOutbox stores items to be delivered (sets their IDs where inserted). An item
	// whose Key is already in the outbox is left out: the message was queued once already.
	EnqueueOutbox(items []*OutboxItem) error
	// ClaimOutbox claims, for by until until, at most limit due items of sink (next attempt at
	// or before now, not claimed by a live lease), oldest first, skipping rows another
	// transaction holds.
	ClaimOutbox(sink, by string, now, until time.Time, limit int) ([]*OutboxItem, error)
	// FinishOutbox records an attempt's outcome: delivered at now; or failed with lastErr, to
	// be tried again at next (or given up when next is zero).
	FinishOutbox(id int64, delivered bool, now, next time.Time, lastErr string) error
	// PurgeOutbox deletes the items delivered or given up before before, returning how many.
	PurgeOutbox(before time.Time) (int64, error)

	// Announce queues a change notice that the other server instances on this store receive
	// when the transaction commits, and never if it rolls back (PostgreSQL NOTIFY). Where one
	// process owns the store (SQLite) it does nothing.
	Announce(payload string) error
}

// Announcements is implemented by stores that carry change notices between the server
// instances that share them (see Tx.Announce).
type Announcements interface {
	// Listen calls fn with the payload of every notice committed by any instance (this one
	// included), in commit order, until ctx ends or the connection fails; it returns the
	// reason. ready is called once it listens.
	Listen(ctx context.Context, ready func(), fn func(payload string)) error
}

// DueWork is what the scheduler has to do now.
type DueWork struct {
	TimedOut  []int64 // pending requests past their pending TTL
	Activate  []int64 // scheduled grants whose start has come
	Expire    []int64 // active grants whose end has come
	Provision []int64 // grants with provisioning work due
	// Next is the earliest future due time of any kind; zero if nothing is scheduled.
	Next time.Time
}

// Empty reports whether there is nothing due now.
func (d *DueWork) Empty() bool {
	return len(d.TimedOut)+len(d.Activate)+len(d.Expire)+len(d.Provision) == 0
}

// Visibility restricts a listing to what one caller may see, in the query itself (so that a
// limit counts only rows the caller may see): rows the caller owns (requested, holds), rows of
// the agents the caller answers for (their owner) and rows under the named policies (those the
// caller approves for). A nil *Visibility means no
// restriction (an admin).
type Visibility struct {
	Owner    string
	Policies []string
}

// RequestFilter selects requests. Zero fields do not filter.
type RequestFilter struct {
	Visible *Visibility
	// NotRequester leaves out the requests of this user (an approver's inbox).
	NotRequester string
	// RequesterOwner selects the requests of the agents this user answers for.
	RequesterOwner string
	// Policies, when not empty, selects requests under these policies only.
	Policies []string
	// BeforeID selects requests with a smaller ID (the next page, newest first).
	BeforeID  int64
	State     RequestState
	Requester string
	Resource  string
	// PostReviewOpen selects break-glass requests still awaiting their after-the-fact review.
	PostReviewOpen bool
	// ExtendsGrant selects extension requests of one grant; ExtendsGrants of any of these.
	ExtendsGrant  int64
	ExtendsGrants []int64
	// Limit caps the result; zero means the store's default (1000).
	Limit int
}

// GrantFilter selects grants. Zero fields do not filter.
type GrantFilter struct {
	Visible *Visibility
	// Live selects scheduled and active grants.
	Live     bool
	State    GrantState
	User     string
	Resource string
	Role     string
	Limit    int
}

// Provisioner switches a grant on and off in a target system. Grant and Revoke must be
// idempotent: granting twice or revoking an already revoked grant succeeds. The engine retries
// a failing call with backoff until it succeeds and shows the failure on the grant meanwhile.
// Provisioners may also implement CredentialIssuer, RevocationVerifier, Reconciler and
// StandingAccessReporter.
type Provisioner interface {
	// Manages reports whether grants of the named role are switched on and off by this
	// provisioner. Grants of other roles on the resource are left to the gateway alone.
	Manages(role string) bool
	Grant(ctx context.Context, g *Grant) error
	Revoke(ctx context.Context, g *Grant) error
}

// Directory resolves user names to users and their groups.
type Directory interface {
	// LookupUser returns the named user, or an *Error with ENOTFOUND.
	LookupUser(ctx context.Context, name string) (*User, error)
	// Users lists every known user (for explaining who may approve).
	Users(ctx context.Context) ([]*User, error)
}

// EventKind names what happened to a request or grant.
type EventKind string

// Event kinds published to subscribers after the change commits.
const (
	// EventRequestCreated: a request (or extension) was filed, whatever happens to it next.
	EventRequestCreated EventKind = "request.created"
	// EventRequestPending: a request waits for the approvers in Notify (new, or next step).
	EventRequestPending EventKind = "request.pending"
	EventRequestDecided EventKind = "request.decided"
	EventBreakGlass     EventKind = "request.break_glass"
	EventGrantStarted   EventKind = "grant.started"
	EventGrantExtended  EventKind = "grant.extended"
	EventGrantEnded     EventKind = "grant.ended"
	// EventGrantDeprovisioned: the provisioner has switched an ended grant off in its target
	// (and, where it can, verified that; see Grant.Provision.VerifiedAt).
	EventGrantDeprovisioned EventKind = "grant.deprovisioned"
	// EventRevocationUnverified: an alert; access was still there after a revoke.
	EventRevocationUnverified EventKind = "grant.revocation_unverified"
	// EventDriftRepaired: the reconciler removed an account that no live grant explains.
	EventDriftRepaired EventKind = "drift.repaired"
)

// Event tells subscribers (the gateway, notifiers) about a committed change.
type Event struct {
	Kind    EventKind
	Request *Request // set for request events
	Grant   *Grant   // set for grant events; for grant.ended its EndReason says why
	// Notify lists who should hear of it, e.g. every approver on break-glass.
	Notify []string
	// Remote marks a change made by another server instance on the same store, announced to
	// this one: the instance that made it has done its effects (notifications); this one only
	// acts on what it holds (gateway sessions).
	Remote bool
}

// NewRequest is what a requester asks for.
type NewRequest struct {
	Resource   string        `json:"resource"`
	Role       string        `json:"role"`
	Duration   time.Duration `json:"duration"`
	Reason     string        `json:"reason"`
	StartAt    time.Time     `json:"start_at,omitzero"`
	BreakGlass bool          `json:"break_glass,omitempty"`
}

// AccessService is the lifecycle of requests and grants. The caller is the user in ctx
// (see NewContext); every method authorizes it and returns EUNAUTHORIZED when ctx has none.
type AccessService interface {
	// Submit files a request as the caller. It returns EFORBIDDEN when no policy lets the
	// caller request that role, EINVALID when the duration, reason or start break the policy,
	// and ECONFLICT when the caller already has a pending request or live grant for it. An
	// auto-approved or break-glass request comes back approved with its grant.
	Submit(ctx context.Context, nr NewRequest) (*Request, error)
	// Review records the caller's approve or deny at the request's current step. The caller
	// must be an eligible approver of that step and not the requester (EFORBIDDEN); a deny
	// needs a comment (EINVALID). On a break-glass request it records the after-the-fact review.
	Review(ctx context.Context, id int64, d Decision, comment string) (*Request, error)
	// Cancel withdraws a pending request; only its requester or an admin may.
	Cancel(ctx context.Context, id int64) (*Request, error)
	// Extend asks to move a live grant's end by d; only the grant's owner may. The extension
	// is a new request decided like any other; the policy's max duration caps the grant's
	// total length.
	Extend(ctx context.Context, grantID int64, d time.Duration, reason string) (*Request, error)
	// Revoke ends a live grant now; its owner, an admin or an approver of its policy may.
	Revoke(ctx context.Context, grantID int64, reason string) (*Grant, error)
	// GetRequest returns a request the caller may see: their own, one they may review, or
	// any for an admin (ENOTFOUND otherwise).
	GetRequest(ctx context.Context, id int64) (*Request, error)
	// GetGrant returns a grant the caller may see, on the same terms as GetRequest.
	GetGrant(ctx context.Context, id int64) (*Grant, error)
}

type ctxKey struct{}

// NewContext returns a copy of ctx carrying the caller u.
func NewContext(ctx context.Context, u *User) context.Context {
	return context.WithValue(ctx, ctxKey{}, u)
}

// UserFromContext returns the caller in ctx, or nil.
func UserFromContext(ctx context.Context) *User {
	u, _ := ctx.Value(ctxKey{}).(*User)
	return u
}

// OutboxItem is one message for one notification sink, kept in the store until delivered:
// written in the transaction of the change that caused it, delivered by whichever server
// instance claims it, retried with backoff, and left to another instance when its claimer dies.
type OutboxItem struct {
	ID int64 `json:"id"`
	// Key makes an item unique: the message's id and the sink's.
	Key     string `json:"key"`
	Sink    string `json:"sink"`
	Payload string `json:"payload"`
	// Attempts counts failed deliveries so far.
	Attempts  int       `json:"attempts"`
	CreatedAt time.Time `json:"created_at"`
	// NextAt is when it is due; zero once delivered or given up.
	NextAt time.Time `json:"next_at,omitzero"`
}
