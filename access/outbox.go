package access

import (
	"context"
	"time"

	"github.com/jitgate/jitgate"
)

// Effects turns a committed change's event into outbox items (the notifier's messages, one
// per sink). It runs inside the change's transaction, so a change and what it must tell
// people are stored together or not at all.
type Effects func(ev jitgate.Event) []*jitgate.OutboxItem

// SetEffects makes every change write fn's items to the outbox in its own transaction. Call it
// before the engine serves.
func (e *Engine) SetEffects(fn Effects) { e.effects = fn }

// enqueueEffects writes o's events' outbox items in o's transaction, all at once.
func (e *Engine) enqueueEffects(o *op) error {
	if e.effects == nil {
		return nil
	}
	var items []*jitgate.OutboxItem
	for _, ev := range o.events {
		items = append(items, e.effects(ev)...)
	}
	if len(items) == 0 {
		return nil
	}
	return o.tx.EnqueueOutbox(items)
}

// The outbox's times are the wall clock's (delivery retries wait real time), not the engine
// clock's, which is for grants.

// EnqueueOutbox stores items (those whose key is queued already are left out): messages that
// are not the effect of a change, such as expiry warnings, which every instance may write.
func (e *Engine) EnqueueOutbox(ctx context.Context, items []*jitgate.OutboxItem) error {
	return e.store.Tx(ctx, func(tx jitgate.Tx) error { return tx.EnqueueOutbox(items) })
}

// ClaimOutbox claims for this instance, for lease, at most limit due items of sink.
func (e *Engine) ClaimOutbox(ctx context.Context, sink string, lease time.Duration, limit int) ([]*jitgate.OutboxItem, error) {
	var items []*jitgate.OutboxItem
	now := time.Now()
	err := e.store.Tx(ctx, func(tx jitgate.Tx) (err error) {
		items, err = tx.ClaimOutbox(sink, e.instance.ID, now, now.Add(lease), limit)
		return err
	})
	return items, err
}

// PurgeOutbox deletes what was delivered or given up more than keep ago, returning how many.
func (e *Engine) PurgeOutbox(ctx context.Context, keep time.Duration) (n int64, err error) {
	err = e.store.Tx(ctx, func(tx jitgate.Tx) (err error) {
		n, err = tx.PurgeOutbox(time.Now().Add(-keep))
		return err
	})
	return n, err
}

// FinishOutbox records a delivery attempt: delivered, or failed and due again at next (given
// up when next is zero).
func (e *Engine) FinishOutbox(ctx context.Context, id int64, delivered bool, next time.Time, lastErr string) error {
	return e.store.Tx(ctx, func(tx jitgate.Tx) error { return tx.FinishOutbox(id, delivered, time.Now(), next, lastErr) })
}
