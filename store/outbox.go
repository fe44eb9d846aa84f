package store

import (
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jitgate/jitgate"
)

// EnqueueOutbox inserts items, leaving out those whose key is there already.
func (t *txn) EnqueueOutbox(items []*jitgate.OutboxItem) error {
	for _, it := range items {
		var id int64
		err := t.queryRow(`INSERT INTO outbox (key, sink, payload, created_at, next_at) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (key) DO NOTHING RETURNING id`,
			it.Key, it.Sink, it.Payload, ts(it.CreatedAt), ts(it.NextAt)).Scan(&id)
		switch {
		case errors.Is(err, sql.ErrNoRows): // queued already
		case err != nil:
			return err
		default:
			it.ID = id
		}
	}
	return nil
}

// ClaimOutbox claims due items of sink (see jitgate.Tx). On PostgreSQL the rows another
// transaction is claiming are skipped (FOR UPDATE SKIP LOCKED), so instances claim apart.
func (t *txn) ClaimOutbox(sink, by string, now, until time.Time, limit int) ([]*jitgate.OutboxItem, error) {
	lock := ""
	if t.s.dialect == Postgres {
		lock = " FOR UPDATE SKIP LOCKED"
	}
	items, err := collect(t, scanOutbox, `SELECT id, key, sink, payload, attempts, created_at, next_at FROM outbox
		WHERE sink = ? AND next_at IS NOT NULL AND next_at <= ? AND (claimed_until IS NULL OR claimed_until <= ?)
		ORDER BY next_at, id LIMIT ?`+lock, sink, ts(now), ts(now), limit)
	if err != nil {
		return nil, err
	}
	for _, it := range items {
		if _, err := t.exec(`UPDATE outbox SET claimed_by = ?, claimed_until = ? WHERE id = ?`, by, ts(until), it.ID); err != nil {
			return nil, err
		}
	}
	return items, nil
}

func scanOutbox(sc scanner) (*jitgate.OutboxItem, error) {
	var (
		it            jitgate.OutboxItem
		created, next sql.NullInt64
	)
	if err := sc.Scan(&it.ID, &it.Key, &it.Sink, &it.Payload, &it.Attempts, &created, &next); err != nil {
		return nil, err
	}
	it.CreatedAt, it.NextAt = fromTS(created), fromTS(next)
	return &it, nil
}

// PurgeOutbox deletes the items delivered or given up before before.
func (t *txn) PurgeOutbox(before time.Time) (int64, error) {
	res, err := t.exec(`DELETE FROM outbox WHERE delivered_at < ? OR gave_up_at < ?`, ts(before), ts(before))
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// FinishOutbox records a delivery attempt's outcome (see jitgate.Tx).
func (t *txn) FinishOutbox(id int64, delivered bool, now, next time.Time, lastErr string) error {
	var err error
	switch {
	case delivered:
		_, err = t.exec(`UPDATE outbox SET delivered_at = ?, next_at = NULL, claimed_until = NULL WHERE id = ?`, ts(now), id)
	case next.IsZero():
		_, err = t.exec(`UPDATE outbox SET gave_up_at = ?, next_at = NULL, claimed_until = NULL, attempts = attempts + 1,
			last_error = ? WHERE id = ?`, ts(now), lastErr, id)
	default:
		_, err = t.exec(`UPDATE outbox SET next_at = ?, claimed_until = NULL, attempts = attempts + 1, last_error = ?
			WHERE id = ?`, ts(next), lastErr, id)
	}
	if err != nil {
		return fmt.Errorf("outbox item %d: %w", id, err)
	}
	return nil
}
