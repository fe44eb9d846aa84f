package jitgate

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Audit actions written by the lifecycle engine.
const (
	ActionRequestCreated     = "request.created"
	ActionRequestReviewed    = "request.reviewed"
	ActionRequestStepPassed  = "request.step_approved"
	ActionRequestApproved    = "request.approved"
	ActionRequestDenied      = "request.denied"
	ActionRequestCancelled   = "request.cancelled"
	ActionRequestTimedOut    = "request.timed_out"
	ActionBreakGlass         = "request.break_glass"
	ActionPostReview         = "request.post_reviewed"
	ActionGrantScheduled     = "grant.scheduled"
	ActionGrantActivated     = "grant.activated"
	ActionGrantExtended      = "grant.extended"
	ActionGrantExpired       = "grant.expired"
	ActionGrantRevoked       = "grant.revoked"
	ActionGrantProvisioned   = "grant.provisioned"
	ActionGrantDeprovisioned = "grant.deprovisioned"
	ActionProvisionFailed    = "grant.provision_failed"
	// ActionRevocationVerified is the revocation receipt: the provisioner re-read the target
	// after revoking and found the access gone.
	ActionRevocationVerified = "grant.revocation_verified"
	// ActionRevocationUnverified is an alert: the access was still there after a revoke. The
	// revoke is retried until a verification passes.
	ActionRevocationUnverified = "grant.revocation_unverified"
	// ActionDriftRepaired: the reconciler removed a jitgate-managed account that no live grant
	// explains (left behind by a crash, a restore or a hand edit).
	ActionDriftRepaired = "drift.repaired"
)

// Statement is one statement run through the gateway, as its session.statements audit event
// records it.
type Statement struct {
	// N numbers the session's statements from 1.
	N          int64     `json:"n"`
	Start      time.Time `json:"start"`
	DurationUS int64     `json:"duration_us"`
	SQL        string    `json:"sql"`
	// SQLState is the error's SQLSTATE if the statement failed; Tag the command tag if not.
	SQLState string `json:"sqlstate,omitempty"`
	Tag      string `json:"tag,omitempty"`
	// Protocol is "extended" for Parse/Bind/Execute, empty for a simple query.
	Protocol string `json:"protocol,omitempty"`
}

// AuditEvent is one append-only, hash-chained record of a state change.
type AuditEvent struct {
	// Seq numbers events 1, 2, 3, ... with no gaps.
	Seq       int64             `json:"seq"`
	Time      time.Time         `json:"time"`
	Actor     string            `json:"actor"`
	Action    string            `json:"action"`
	RequestID int64             `json:"request_id,omitempty"`
	GrantID   int64             `json:"grant_id,omitempty"`
	SessionID int64             `json:"session_id,omitempty"`
	Details   map[string]string `json:"details,omitempty"`
	// Statements are the statements a session.statements event records: the gateway writes
	// one such event per session and batch rather than one event per statement. The hash
	// covers them.
	Statements []Statement `json:"statements,omitempty"`
	// PrevHash is the Hash of the event before (empty for the first event).
	PrevHash string `json:"prev_hash"`
	// Hash is ComputeHash of this event.
	Hash string `json:"hash"`
}

// ComputeHash returns the hex SHA-256 of the event's canonical encoding, which covers every
// field but Hash itself, PrevHash included: changing, removing or reordering any event breaks
// the chain from that event on.
//
// The encoding is a version tag followed by each field length-prefixed, and the details
// sorted by key, so that no two different events encode alike.
func (e *AuditEvent) ComputeHash() string {
	// The encoding is built in one buffer, reused across calls, and hashed once: a
	// session.statements event carries hundreds of strings, and writing each to a hash.Hash
	// would copy it to the heap.
	bp := hashBufs.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= 1<<20 {
			hashBufs.Put(bp)
		}
	}()
	b := (*bp)[:0]
	b = appendHashStr(b, "jitgate-audit-v1")
	b = binary.BigEndian.AppendUint64(b, uint64(e.Seq))
	b = binary.BigEndian.AppendUint64(b, uint64(e.Time.UnixNano()))
	b = appendHashStr(b, e.Actor)
	b = appendHashStr(b, e.Action)
	b = binary.BigEndian.AppendUint64(b, uint64(e.RequestID))
	b = binary.BigEndian.AppendUint64(b, uint64(e.GrantID))
	b = binary.BigEndian.AppendUint64(b, uint64(e.SessionID))
	keys := make([]string, 0, len(e.Details))
	for k := range e.Details {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = binary.BigEndian.AppendUint64(b, uint64(len(keys)))
	for _, k := range keys {
		b = appendHashStr(b, k)
		b = appendHashStr(b, e.Details[k])
	}
	if len(e.Statements) > 0 {
		// Only events that carry statements encode them, so every older event keeps its hash.
		b = appendHashStr(b, "statements")
		b = binary.BigEndian.AppendUint64(b, uint64(len(e.Statements)))
		for _, st := range e.Statements {
			b = binary.BigEndian.AppendUint64(b, uint64(st.N))
			b = binary.BigEndian.AppendUint64(b, uint64(st.Start.UnixNano()))
			b = binary.BigEndian.AppendUint64(b, uint64(st.DurationUS))
			b = appendHashStr(b, st.SQL)
			b = appendHashStr(b, st.SQLState)
			b = appendHashStr(b, st.Tag)
			b = appendHashStr(b, st.Protocol)
		}
	}
	b = appendHashStr(b, e.PrevHash)
	*bp = b
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// hashBufs holds ComputeHash's buffers.
var hashBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// appendHashStr appends s length-prefixed, as ComputeHash encodes strings.
func appendHashStr(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(len(s)))
	return append(b, s...)
}

// MakeValidUTF8 replaces each run of bytes that is not UTF-8 in the event's text (actor,
// details, statements) with U+FFFD. A store calls it before hashing: JSON and PostgreSQL's
// text hold only UTF-8, so the event read back must be the one whose hash was taken. A
// statement sent by a client with client_encoding LATIN1, say, would otherwise break the
// chain's verification.
func (e *AuditEvent) MakeValidUTF8() {
	e.MakeHeadValidUTF8()
	for i := range e.Statements {
		st := &e.Statements[i]
		st.SQL, st.SQLState, st.Tag, st.Protocol = validUTF8(st.SQL), validUTF8(st.SQLState), validUTF8(st.Tag), validUTF8(st.Protocol)
	}
}

// MakeHeadValidUTF8 is MakeValidUTF8 for everything but the statements: a store that checks
// the statements' text as it encodes them calls it, and MakeValidUTF8 only for an event whose
// statements were not UTF-8.
func (e *AuditEvent) MakeHeadValidUTF8() {
	e.Actor = validUTF8(e.Actor)
	e.Action = validUTF8(e.Action)
	for k, v := range e.Details {
		if vk, vv := validUTF8(k), validUTF8(v); vk != k || vv != v {
			delete(e.Details, k)
			e.Details[vk] = vv
		}
	}
}

func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// AuditFilter selects audit events. Zero fields do not filter.
type AuditFilter struct {
	// AfterSeq returns events with Seq > AfterSeq (for paging by sequence).
	AfterSeq int64
	// BeforeSeq returns events with Seq < BeforeSeq (for paging back from the newest).
	BeforeSeq int64
	// Newest returns the newest matching events first (the default is the oldest first).
	Newest    bool
	Since     time.Time
	Actor     string
	RequestID int64
	GrantID   int64
	SessionID int64
	// Limit caps the number of events; zero means the store's default (1000).
	Limit int
}
