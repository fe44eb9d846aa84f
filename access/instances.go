package access

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"time"

	"github.com/jitgate/jitgate"
)

const (
	// heartbeatEvery is how often a running instance refreshes its heartbeat and looks for
	// dead ones.
	heartbeatEvery = time.Second
	// deadAfter is how long a heartbeat may be missing before an instance counts as dead where
	// the store cannot tell at once (see jitgate.InstanceLiveness).
	deadAfter = 10 * time.Second
	// ActionInstanceRecovered: a live instance took over the work of a dead one.
	ActionInstanceRecovered = "instance.recovered"
	// SessionEndServerStopped is the end reason of a session whose server instance died.
	SessionEndServerStopped = "server stopped"
)

// newInstanceID returns a random id for this process.
func newInstanceID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// InstanceID returns this engine's server instance id (it names the sessions its gateway
// runs and the provisioning attempts it claims).
func (e *Engine) InstanceID() string { return e.instance.ID }

// runInstance registers this instance, takes its liveness lock, takes over the work of dead
// instances at once, and then keeps a heartbeat (and looks for newly dead instances) until ctx
// ends; a clean stop removes the instance's record.
func (e *Engine) runInstance(ctx context.Context) {
	if lv, ok := e.store.(jitgate.InstanceLiveness); ok {
		for {
			release, err := lv.HoldInstance(ctx, e.instance.ID)
			if err == nil {
				defer release()
				break
			}
			e.log.Error("cannot take this instance's liveness lock; retrying", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-e.clock.After(heartbeatEvery):
			}
		}
	}
	for {
		if err := e.heartbeat(ctx); err != nil && ctx.Err() == nil {
			e.log.Warn("instance heartbeat failed", "err", err)
		}
		if err := e.RecoverDeadInstances(ctx); err != nil && ctx.Err() == nil {
			e.log.Warn("cannot recover dead instances yet", "err", err)
		}
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			// A clean stop hands on what this instance had claimed at once, as a crash would
			// once found.
			if err := e.store.Tx(sctx, func(tx jitgate.Tx) error {
				if _, err := tx.ReleaseClaims(e.instance.ID, e.now()); err != nil {
					return err
				}
				_, err := tx.DeleteInstance(e.instance.ID)
				return err
			}); err != nil {
				e.log.Warn("cannot remove this instance's record", "err", err)
			}
			return
		case <-time.After(heartbeatEvery): // real time: liveness is not the grants' clock
		}
	}
}

func (e *Engine) heartbeat(ctx context.Context) error {
	in := e.instance
	in.HeartbeatAt = time.Now().UTC()
	return e.store.Tx(ctx, func(tx jitgate.Tx) error { return tx.PutInstance(&in) })
}

// RecoverDeadInstances takes over the work of every other instance found dead: its
// provisioning leases are released (the attempts become due now), its gateway sessions are
// ended in the store (reason "server stopped", with how many statements were recorded) and
// its record is removed, all audited. An instance is dead when the store says its liveness
// lock is free, or, where the store cannot tell or the check fails, when its heartbeat is older
// than 10s.
func (e *Engine) RecoverDeadInstances(ctx context.Context) error {
	var all []*jitgate.Instance
	if err := e.store.View(ctx, func(tx jitgate.Tx) (err error) { all, err = tx.ListInstances(); return err }); err != nil {
		return err
	}
	lv, canTell := e.store.(jitgate.InstanceLiveness)
	for _, in := range all {
		if in.ID == e.instance.ID {
			continue
		}
		dead := time.Since(in.HeartbeatAt) > deadAfter
		if canTell {
			// Where the lock cannot be checked (a lock file another user made, the store
			// unreachable), the heartbeat decides.
			if alive, err := lv.InstanceAlive(ctx, in.ID); err == nil {
				dead = !alive
			} else if ctx.Err() != nil {
				return err
			} else {
				e.log.Warn("cannot check an instance's liveness lock; going by its heartbeat", "instance", in.ID, "err", err)
			}
		}
		if dead {
			if err := e.takeOver(ctx, in); err != nil {
				return fmt.Errorf("take over instance %s: %w", in.ID, err)
			}
		}
	}
	return nil
}

// takeOver does a dead instance's leftovers in one transaction.
func (e *Engine) takeOver(ctx context.Context, dead *jitgate.Instance) error {
	var released, ended int
	taken := false
	err := e.write(ctx, func(o *op) error {
		released, ended, taken = 0, 0, false
		// First, so that a second instance taking over the same dead one waits here and then
		// finds nothing to do.
		existed, err := o.tx.DeleteInstance(dead.ID)
		if err != nil || !existed {
			return err
		}
		taken = true
		if released, err = o.tx.ReleaseClaims(dead.ID, o.now); err != nil {
			return err
		}
		ss, err := o.tx.ListSessions(jitgate.SessionFilter{Live: true, Instance: dead.ID, Limit: 10000})
		if err != nil {
			return err
		}
		for _, s := range ss {
			recorded, err := o.tx.CountStatements(s.ID)
			if err != nil {
				return err
			}
			s.EndedAt, s.EndReason, s.Statements = o.now, SessionEndServerStopped, recorded
			if err := o.tx.EndSession(s); err != nil {
				return err
			}
			o.audits = append(o.audits, &jitgate.AuditEvent{Time: o.now, Actor: SystemActor, Action: jitgate.ActionSessionEnded,
				GrantID: s.GrantID, SessionID: s.ID, Details: map[string]string{"reason": SessionEndServerStopped,
					"statements": fmt.Sprint(recorded), "statements_lost": "unknown: the server stopped before recording the rest",
					"instance": dead.ID}})
			ended++
		}
		return o.audit(SystemActor, ActionInstanceRecovered, 0, 0, map[string]string{"instance": dead.ID, "host": dead.Host,
			"pid": fmt.Sprint(dead.PID), "last_heartbeat": stamp(dead.HeartbeatAt), "leases_released": fmt.Sprint(released),
			"sessions_ended": fmt.Sprint(ended), "by": e.instance.ID})
	})
	if err != nil || !taken {
		return err
	}
	e.log.Warn("took over a dead server instance", "instance", dead.ID, "host", dead.Host, "pid", dead.PID,
		"leases_released", released, "sessions_ended", ended)
	if released > 0 {
		e.kick()
	}
	return nil
}

// hostname is this machine's name, for instance records.
func hostname() string {
	h, _ := os.Hostname()
	return h
}
