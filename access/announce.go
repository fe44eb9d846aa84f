package access

import (
	"context"
	"encoding/json"
	"time"

	"github.com/jitgate/jitgate"
)

// notice is a change notice between server instances on one store: a grant that ended or was
// extended. It carries ids only; receivers read the grant from the store, the truth.
type notice struct {
	Installation string            `json:"i"`
	Origin       string            `json:"o"`
	Kind         jitgate.EventKind `json:"k"`
	Grant        int64             `json:"g"`
}

// announced reports whether the other instances hear of events of kind: the ones that act on
// what they hold (their gateway sessions and parked connections).
func announced(kind jitgate.EventKind) bool {
	return kind == jitgate.EventGrantEnded || kind == jitgate.EventGrantExtended
}

// announce queues, in o's transaction, a notice of each of o's grant events the other
// instances act on; they get them when it commits.
func (e *Engine) announce(o *op) error {
	for _, ev := range o.events {
		if ev.Grant == nil || !announced(ev.Kind) {
			continue
		}
		inst, err := e.installation(o.tx)
		if err != nil {
			return err
		}
		b, err := json.Marshal(notice{Installation: inst, Origin: e.instance.ID, Kind: ev.Kind, Grant: ev.Grant.ID})
		if err != nil {
			return err
		}
		if err := o.tx.Announce(string(b)); err != nil {
			return err
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
	var g *jitgate.Grant
	err := e.store.View(ctx, func(tx jitgate.Tx) error {
		// Channels are per database, not per schema: another installation's notice is not ours.
		if inst, err := e.installation(tx); err != nil || inst != n.Installation {
			return err
		}
		var err error
		g, err = tx.GetGrant(n.Grant, false)
		return err
	})
	if err != nil {
		e.log.Warn("cannot read an announced grant; the gateway's sweep covers it", "grant", n.Grant, "err", err)
		return
	}
	if g == nil {
		return
	}
	e.publish([]jitgate.Event{{Kind: n.Kind, Grant: g, Remote: true}})
}

func (e *Engine) listening() { e.listenOnce.Do(func() { close(e.listenReady) }) }

// Listening is closed once Run receives the change notices of the other instances on the
// store (at once on a store that has none to send: SQLite).
func (e *Engine) Listening() <-chan struct{} { return e.listenReady }
