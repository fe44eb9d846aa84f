package store

import (
	"cmp"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jitgate/jitgate"
)

// EnqueueOutbox inserts items, leaving out those whose key is there already, in one
// statement per outboxChunk items.
func (t *txn) EnqueueOutbox(items []*jitgate.OutboxItem) error {
	for chunk := range slices.Chunk(items, outboxChunk) {
		args := make([]any, 0, 5*len(chunk))
		byKey := make(map[string]*jitgate.OutboxItem, len(chunk))
		for _, it := range chunk {
			args = append(args, it.Key, it.Sink, it.Payload, ts(it.CreatedAt), ts(it.NextAt))
			if byKey[it.Key] == nil { // a key twice: the first is inserted, the second left out
				byKey[it.Key] = it
			}
		}
		rows, err := t.query(`INSERT INTO outbox (key, sink, payload, created_at, next_at) VALUES (?, ?, ?, ?, ?)`+
			strings.Repeat(", (?, ?, ?, ?, ?)", len(chunk)-1)+` ON CONFLICT (key) DO NOTHING RETURNING id, key`, args...)
		if err != nil {
			return err
		}
		for rows.Next() { // the rows inserted; those queued already return none
			var (
				id  int64
				key string
			)
			if err := rows.Scan(&id, &key); err != nil {
				rows.Close()
				return err
			}
			if it := byKey[key]; it != nil {
				it.ID = id
			}
		}
		if err := rows.Close(); err != nil {
			return err
		}
		if err := rows.Err(); err != nil {
			return err
		}
	}
	return nil
}

// outboxChunk bounds the items of one INSERT (and so the statement texts cached: one per
// count up to it). A change makes an item per event and sink: a few.
const outboxChunk = 16

// ClaimOutbox claims due items of sink (see jitgate.Tx), in one statement. On PostgreSQL the
// rows another transaction is claiming are skipped (FOR UPDATE SKIP LOCKED), so instances
// claim apart.
func (t *txn) ClaimOutbox(sink, by string, now, until time.Time, limit int) ([]*jitgate.OutboxItem, error) {
	lock := ""
	if t.s.dialect == Postgres {
		lock = " FOR UPDATE SKIP LOCKED"
	}
	items, err := collect(t, scanOutbox, `UPDATE outbox SET claimed_by = ?, claimed_until = ? WHERE id IN (
		SELECT id FROM outbox WHERE sink = ? AND next_at IS NOT NULL AND next_at <= ? AND (claimed_until IS NULL OR claimed_until <= ?)
		ORDER BY next_at, id LIMIT ?`+lock+`)
		RETURNING id, key, sink, payload, attempts, created_at, next_at`, by, ts(until), sink, ts(now), ts(now), limit)
	if err != nil {
		return nil, err
	}
	// RETURNING keeps no order: due first, as selected.
	slices.SortFunc(items, func(a, b *jitgate.OutboxItem) int {
		if c := a.NextAt.Compare(b.NextAt); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
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
