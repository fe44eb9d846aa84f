package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jitgate/jitgate"
)

var _ jitgate.InstanceLiveness = (*DB)(nil)

// instanceLockClass is the first key of the PostgreSQL advisory locks instances hold ("jitg"),
// so that they do not collide with other users of advisory locks in the same database.
const instanceLockClass = 0x6a697467

// instanceLockKey is the second key: a hash of the instance id.
func instanceLockKey(id string) int32 {
	h := fnv.New32a()
	h.Write([]byte(id))
	return int32(h.Sum32())
}

// HoldInstance takes instance id's liveness lock for as long as the process lives: on
// PostgreSQL a session advisory lock on a connection of its own (the server drops it when the
// process dies), beside a SQLite database a file lock (the kernel drops it). release gives it
// up on a clean shutdown.
func (s *DB) HoldInstance(ctx context.Context, id string) (func(), error) {
	if s.dialect == Postgres {
		conn, err := s.lockInstance(ctx, id)
		if err != nil {
			return nil, err
		}
		stop, done := make(chan struct{}), make(chan struct{})
		go s.keepInstanceLock(conn, id, stop, done)
		return func() { close(stop); <-done }, nil
	}
	path, err := s.instanceLockPath(id)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: instance lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("store: instance lock %s: %w", path, err)
	}
	return func() {
		os.Remove(path)
		f.Close()
	}, nil
}

// lockInstance takes id's advisory lock on a connection of its own.
func (s *DB) lockInstance(ctx context.Context, id string) (*sql.Conn, error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, s.classify(err)
	}
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1, $2)`, instanceLockClass, instanceLockKey(id)); err != nil {
		conn.Close()
		return nil, s.classify(err)
	}
	return conn, nil
}

// keepInstanceLock checks the lock's connection every second and, should it break (the
// server restarted, the network dropped it), takes the lock again on a new one, so that the
// instance is not taken for dead for longer than it takes to reconnect. It unlocks at stop.
func (s *DB) keepInstanceLock(conn *sql.Conn, id string, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			if conn != nil {
				_, _ = conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock($1, $2)`, instanceLockClass, instanceLockKey(id))
				conn.Close()
			}
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if conn != nil && conn.PingContext(ctx) != nil {
			conn.Close()
			conn = nil
		}
		if conn == nil {
			conn, _ = s.lockInstance(ctx, id) // nil on failure: tried again next second
		}
		cancel()
	}
}

// InstanceAlive reports whether another process holds instance id's liveness lock. Where the
// store cannot tell (a SQLite database in memory), it says alive: the heartbeat decides.
func (s *DB) InstanceAlive(ctx context.Context, id string) (bool, error) {
	if s.dialect == Postgres {
		conn, err := s.db.Conn(ctx)
		if err != nil {
			return true, s.classify(err)
		}
		defer conn.Close()
		var got bool
		if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1, $2)`, instanceLockClass, instanceLockKey(id)).Scan(&got); err != nil {
			return true, s.classify(err)
		}
		if got {
			_, err = conn.ExecContext(ctx, `SELECT pg_advisory_unlock($1, $2)`, instanceLockClass, instanceLockKey(id))
		}
		return !got, s.classify(err)
	}
	path, err := s.instanceLockPath(id)
	if err != nil {
		return true, nil
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil // released on a clean shutdown, or never taken here
	}
	if err != nil {
		return true, err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return true, nil
		}
		return true, err
	}
	os.Remove(path) // the holder died: its lock file goes with it
	return false, nil
}

// instanceLockPath is the lock file of instance id beside the SQLite database.
func (s *DB) instanceLockPath(id string) (string, error) {
	if s.path == "" || s.path == ":memory:" || strings.HasPrefix(s.path, "file::memory:") || strings.ContainsAny(id, `/\`) {
		return "", errors.New("store: no file to lock beside")
	}
	return filepath.Join(filepath.Dir(s.path), "."+filepath.Base(s.path)+".instance-"+id+".lock"), nil
}
