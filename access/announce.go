package access

import (
	"context"
	"encoding/json"
	"slices"
	"time"

	"github.com/jitgate/jitgate"
)

// notice is a change notice between server instances on one store: grants that ended or were
// extended. It carries ids only; receivers read each grant from the store, the truth.
type notice struct {
	Installation string            `json:"i"`
	Origin       string            `json:"o"`
	Kind         jitgate.EventKind `json:"k"`
	Grants       []int64           `json:"g"`
}

// noticeMax bounds the grants of one notice (PostgreSQL's payloads stop at 8,000 bytes).
const noticeMax = 400

// announced reports whether the other instances hear of events of kind: the ones that act on
// what they hold (their gateway sessions and parked connections).
func announced(kind jitgate.EventKind) bool {
	return kind == jitgate.EventGrantEnded || kind == jitgate.EventGrantExtended
}

// announce queues, in o's transaction, notices of o's grant events the other instances act
// on (one per kind, for all of the transaction's grants); they get them when it commits.
func (e *Engine) announce(o *op) error {
	var kinds []jitgate.EventKind
	grants := map[jitgate.EventKind][]int64{}
	for _, ev := range o.events {
		if ev.Grant == nil || !announced(ev.Kind) {
			continue
		}
		if grants[ev.Kind] == nil {
			kinds = append(kinds, ev.Kind)
		}
		grants[ev.Kind] = append(grants[ev.Kind], ev.Grant.ID)
	}
	if len(kinds) == 0 {
		return nil
	}
	inst, err := e.installation(o.tx)
	if err != nil {
		return err
	}
	for _, k := range kinds {
		for ids := range slices.Chunk(grants[k], noticeMax) {
			b, err := json.Marshal(notice{Installation: inst, Origin: e.instance.ID, Kind: k, Grants: ids})
			if err != nil {
				return err
			}
			if err := o.tx.Announce(string(b)); err != nil {
				return err
			}
		}
	}
	return nil
}

// installation returns the store's installation id, read once.
func (e *Engine) installation(tx jitgate.Tx) (string, error) {
	e.mu.RLock()
	id := e.installID
	e.mu.RUnlock()
	if id != "" {
		return id, nil
	}
	id, err := tx.InstallationID()
	if err != nil {
		return "", err
	}
	e.mu.Lock()
	e.installID = id
	e.mu.Unlock()
	return id, nil
}

// followAnnouncements receives the other instances' notices until ctx ends and publishes
// each as a Remote event, with the grant as the store has it now: so a revoke on another
// instance reaches this one's gateway sessions at once, rather than at the gateway's next
// sweep (which stays the safety net for notices lost while the connection was down).
func (e *Engine) followAnnouncements(ctx context.Context) {
	ann, ok := e.store.(jitgate.Announcements)
	if !ok {
		e.listening()
		return
	}
	for wait := time.Second; ; wait = min(wait*2, 30*time.Second) {
		err := ann.Listen(ctx, func() {
			wait = time.Second
			e.listening()
		}, func(payload string) { e.onNotice(ctx, payload) })
		if ctx.Err() != nil {
			return
		}
		e.log.Warn("lost the store's change notices; the gateway's sweep covers meanwhile", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func (e *Engine) onNotice(ctx context.Context, payload string) {
	var n notice
	if err := json.Unmarshal([]byte(payload), &n); err != nil || n.Origin == e.instance.ID || !announced(n.Kind) {
		return
	}
	var evs []jitgate.Event
	err := e.store.View(ctx, func(tx jitgate.Tx) error {
		// Channels are per database, not per schema: another installation's notice is not ours.
		if inst, err := e.installation(tx); err != nil || inst != n.Installation {
			return err
		}
		for _, id := range n.Grants {
			g, err := tx.GetGrant(id, false)
			if err != nil {
				return err
			}
			evs = append(evs, jitgate.Event{Kind: n.Kind, Grant: g, Remote: true})
		}
		return nil
	})
	if err != nil {
		e.log.Warn("cannot read announced grants; the gateway's sweep covers them", "grants", n.Grants, "err", err)
		return
	}
	e.publish(evs)
}

func (e *Engine) listening() { e.listenOnce.Do(func() { close(e.listenReady) }) }

// Listening is closed once Run receives the change notices of the other instances on the
// store (at once on a store that has none to send: SQLite).
func (e *Engine) Listening() <-chan struct{} { return e.listenReady }
