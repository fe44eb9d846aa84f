// Package audit verifies jitgate's hash-chained audit log and exports it.
//
// Every event's hash covers its fields and the previous event's hash (see
// jitgate.AuditEvent.ComputeHash), and the store keeps the chain's head (last sequence number
// and hash) in a row of its own. Editing an event breaks its hash; deleting one leaves a gap in
// the sequence and a broken link; reordering breaks the links; cutting events off the end no
// longer matches the head.
package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/jitgate/jitgate"
)

// Problem kinds reported by Verify.
const (
	ProblemEdited    = "edited"    // an event's hash does not match its contents
	ProblemMissing   = "missing"   // a sequence number is missing (deleted or reordered)
	ProblemBadLink   = "bad_link"  // an event's prev_hash is not the hash of the event before it
	ProblemTruncated = "truncated" // the chain ends before the recorded head
)

// Result is the outcome of Verify.
type Result struct {
	OK bool `json:"ok"`
	// Events is how many events were checked.
	Events int64 `json:"events"`
	// HeadSeq and HeadHash are the chain's recorded head.
	HeadSeq  int64  `json:"head_seq"`
	HeadHash string `json:"head_hash"`
	// FirstBad is the sequence number of the first event found wrong (0 if OK).
	FirstBad int64  `json:"first_bad,omitempty"`
	Problem  string `json:"problem,omitempty"`
	Message  string `json:"message,omitempty"`
	// Checkpoint is the signed checkpoint the chain was also checked against (nil if none: the
	// end of the chain could then have been cut or rewritten unnoticed).
	Checkpoint *Checkpoint `json:"checkpoint,omitempty"`

	last Mark
}

// pageSize is how many events Verify reads per query.
const pageSize = 1000

// Verify walks the whole chain in sequence order and reports the first event that was edited,
// deleted or reordered, or a chain cut short of its recorded head.
func Verify(ctx context.Context, s jitgate.Store) (*Result, error) {
	return VerifyFrom(ctx, s, Mark{})
}

// Mark is a point of the chain already verified: event Seq, whose hash is Hash (the zero Mark
// is the chain's start).
type Mark struct {
	Seq  int64  `json:"seq"`
	Hash string `json:"hash"`
}

// Last returns the point of the chain a successful res verified up to.
func (res *Result) Last() Mark { return res.last }

// VerifyFrom is Verify for the events after from, which was verified before (by this process):
// each is checked against its predecessor's hash, starting from from.Hash, and the end against
// the recorded head. It reads only the events after from, so a page view can verify the new
// events since the last view rather than the whole log; Verify checks everything.
func VerifyFrom(ctx context.Context, s jitgate.Store, from Mark) (*Result, error) {
	res := &Result{}
	prevSeq, prevHash := from.Seq, from.Hash
	bad := func(seq int64, problem, format string, args ...any) (*Result, error) {
		res.FirstBad, res.Problem, res.Message = seq, problem, fmt.Sprintf(format, args...)
		return res, nil
	}
	err := s.View(ctx, func(tx jitgate.Tx) error {
		var err error
		res.HeadSeq, res.HeadHash, err = tx.AuditHead()
		return err
	})
	if err != nil {
		return nil, err
	}
	if from.Seq > res.HeadSeq {
		return bad(res.HeadSeq+1, ProblemTruncated, "the chain's head records event %d, but event %d was verified before: events were deleted from the end", res.HeadSeq, from.Seq)
	}
	for {
		var page []*jitgate.AuditEvent
		err := s.View(ctx, func(tx jitgate.Tx) error {
			var err error
			page, err = tx.ListAudit(jitgate.AuditFilter{AfterSeq: prevSeq, Limit: pageSize})
			return err
		})
		if err != nil {
			return nil, err
		}
		for _, e := range page {
			if e.Seq != prevSeq+1 {
				return bad(prevSeq+1, ProblemMissing, "event %d is missing (the next stored event is %d): deleted or renumbered", prevSeq+1, e.Seq)
			}
			if e.PrevHash != prevHash {
				return bad(e.Seq, ProblemBadLink, "event %d does not follow event %d: its prev_hash does not match", e.Seq, prevSeq)
			}
			if e.ComputeHash() != e.Hash {
				return bad(e.Seq, ProblemEdited, "event %d (%s by %s) was edited: its hash does not match its contents", e.Seq, e.Action, e.Actor)
			}
			prevSeq, prevHash = e.Seq, e.Hash
			res.Events++
		}
		if len(page) < pageSize {
			break
		}
	}
	// Events appended after the head was read are fine; a chain that stops short is not.
	if prevSeq < res.HeadSeq {
		return bad(prevSeq+1, ProblemTruncated, "the chain ends at event %d but its head records event %d: events were deleted from the end", prevSeq, res.HeadSeq)
	}
	if prevSeq == res.HeadSeq && prevHash != res.HeadHash {
		return bad(prevSeq, ProblemEdited, "event %d does not match the chain's recorded head", prevSeq)
	}
	res.OK = true
	res.last = Mark{Seq: prevSeq, Hash: prevHash}
	return res, nil
}

// Export writes every event with Seq > after as JSON lines, in sequence order, so the chain
// can be kept outside jitgate's database and re-verified there.
func Export(ctx context.Context, s jitgate.Store, after int64, w io.Writer) (last int64, err error) {
	enc := json.NewEncoder(w)
	last = after
	for {
		var page []*jitgate.AuditEvent
		if err := s.View(ctx, func(tx jitgate.Tx) error {
			var err error
			page, err = tx.ListAudit(jitgate.AuditFilter{AfterSeq: last, Limit: pageSize})
			return err
		}); err != nil {
			return last, err
		}
		for _, e := range page {
			if err := enc.Encode(e); err != nil {
				return last, err
			}
			last = e.Seq
		}
		if len(page) < pageSize {
			return last, nil
		}
	}
}
