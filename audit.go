package jitgate

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"slices"
	"time"
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
	h := sha256.New()
	var buf [8]byte
	writeInt := func(v int64) {
		binary.BigEndian.PutUint64(buf[:], uint64(v))
		h.Write(buf[:])
	}
	writeStr := func(s string) {
		writeInt(int64(len(s)))
		h.Write([]byte(s))
	}
	writeStr("jitgate-audit-v1")
	writeInt(e.Seq)
	writeInt(e.Time.UnixNano())
	writeStr(e.Actor)
	writeStr(e.Action)
	writeInt(e.RequestID)
	writeInt(e.GrantID)
	writeInt(e.SessionID)
	keys := make([]string, 0, len(e.Details))
	for k := range e.Details {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	writeInt(int64(len(keys)))
	for _, k := range keys {
		writeStr(k)
		writeStr(e.Details[k])
	}
	if len(e.Statements) > 0 {
		// Only events that carry statements encode them, so every older event keeps its hash.
		writeStr("statements")
		writeInt(int64(len(e.Statements)))
		for _, st := range e.Statements {
			writeInt(st.N)
			writeInt(st.Start.UnixNano())
			writeInt(st.DurationUS)
			writeStr(st.SQL)
			writeStr(st.SQLState)
			writeStr(st.Tag)
			writeStr(st.Protocol)
		}
	}
	writeStr(e.PrevHash)
	return hex.EncodeToString(h.Sum(nil))
}

// AuditFilter selects audit events. Zero fields do not filter.
type AuditFilter struct {
	// AfterSeq returns events with Seq > AfterSeq (for paging by sequence).
	AfterSeq  int64
	Since     time.Time
	Actor     string
	RequestID int64
	GrantID   int64
	SessionID int64
	// Limit caps the number of events; zero means the store's default (1000).
	Limit int
}
