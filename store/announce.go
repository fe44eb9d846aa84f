package store

import (
	"context"
	"database/sql/driver"
	"errors"

	"github.com/jackc/pgx/v5/stdlib"
)

// announceChannel is the PostgreSQL notification channel of change notices. It is shared by
// every installation on a database (channels are not per schema): payloads say whose they are.
const announceChannel = "jitgate_events"

// Announce queues a change notice (see jitgate.Tx): NOTIFY on PostgreSQL, nothing on SQLite.
func (t *txn) Announce(payload string) error {
	if t.s.dialect != Postgres {
		return nil
	}
	if t.readOnly {
		return errors.New("store: Announce outside a write transaction")
	}
	_, err := t.exec(`SELECT pg_notify('`+announceChannel+`', ?)`, payload)
	return err
}

// Listen receives the change notices of every instance on the store (see
// jitgate.Announcements) on a connection of its own. On SQLite, where a single process owns
// the store, it calls ready and waits for ctx.
func (s *DB) Listen(ctx context.Context, ready func(), fn func(payload string)) error {
	if s.dialect != Postgres {
		ready()
		<-ctx.Done()
		return ctx.Err()
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return s.classify(err)
	}
	// The connection is LISTENing: it must not go back to the pool.
	defer func() {
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		conn.Close()
	}()
	return conn.Raw(func(dc any) error {
		pc := dc.(*stdlib.Conn).Conn()
		if _, err := pc.Exec(ctx, "LISTEN "+announceChannel); err != nil {
			return s.classify(err)
		}
		ready()
		for {
			n, err := pc.WaitForNotification(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return s.classify(err)
			}
			fn(n.Payload)
		}
	})
}
