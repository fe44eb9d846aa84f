package access

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jitgate/jitgate"
)

// Reconcile repairs drift: it lists the jitgate-managed accounts in every target whose
// provisioner can list them, and removes each one that no live grant explains (left behind by
// a crash, a database restore or a hand edit), writing a drift.repaired audit event for it.
// An account belongs to a live grant when the grant exists in this store, is on that resource,
// is active, and the account has the name the provisioner gives that grant. Accounts of grants
// that are being revoked are left to the scheduler. It returns how many accounts it removed.
func (e *Engine) Reconcile(ctx context.Context) (int, error) {
	names := make([]string, 0, len(e.provs))
	for name := range e.provs {
		names = append(names, name)
	}
	slices.Sort(names)
	var (
		errs     []error
		repaired int
	)
	for _, resource := range names {
		rc, ok := e.provs[resource].(jitgate.Reconciler)
		if !ok {
			continue
		}
		accounts, err := rc.ManagedAccounts(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("reconcile %s: %w", resource, err))
			continue
		}
		for _, a := range accounts {
			reason, grantID, err := e.orphaned(ctx, resource, rc, a)
			if err != nil {
				errs = append(errs, fmt.Errorf("reconcile %s: account %s: %w", resource, a.Name, err))
				continue
			}
			if reason == "" {
				continue
			}
			if err := rc.RemoveAccount(ctx, a); err != nil {
				errs = append(errs, fmt.Errorf("reconcile %s: remove account %s: %w", resource, a.Name, err))
				continue
			}
			e.log.Warn("drift repaired: removed an account no live grant explains", "resource", resource, "account", a.Name, "ref", a.Ref, "reason", reason)
			err = e.write(ctx, func(o *op) error {
				o.emit(jitgate.Event{Kind: jitgate.EventDriftRepaired})
				details := map[string]string{"resource": resource, "account": a.Name, "reason": reason}
				if a.Ref != "" {
					details["ref"] = a.Ref
				}
				return o.audit(SystemActor, jitgate.ActionDriftRepaired, 0, grantID, details)
			})
			if err != nil {
				errs = append(errs, err)
				continue
			}
			repaired++
		}
	}
	return repaired, errors.Join(errs...)
}

// orphaned says why account a in resource is not explained by a live grant ("" if it is), and
// the grant it names if that grant exists.
func (e *Engine) orphaned(ctx context.Context, resource string, rc jitgate.Reconciler, a jitgate.ManagedAccount) (string, int64, error) {
	var g *jitgate.Grant
	err := e.store.View(ctx, func(tx jitgate.Tx) error {
		var err error
		g, err = tx.GetGrant(a.GrantID, false)
		return err
	})
	switch {
	case jitgate.ErrorCode(err) == jitgate.ENOTFOUND:
		return fmt.Sprintf("grant %d does not exist in jitgate's store", a.GrantID), 0, nil
	case err != nil:
		return "", 0, err // store down: remove nothing
	case g.Resource != resource:
		return fmt.Sprintf("grant %d is on %s, not %s", g.ID, g.Resource, resource), g.ID, nil
	case rc.AccountFor(g) != a.Name:
		return fmt.Sprintf("grant %d belongs to %s; its account would be %s", g.ID, g.User, rc.AccountFor(g)), g.ID, nil
	case g.Provision.State == jitgate.ProvisionStateRevoking:
		return "", g.ID, nil // the scheduler is revoking it
	case g.State == jitgate.GrantActive:
		return "", g.ID, nil
	case g.State == jitgate.GrantScheduled:
		return fmt.Sprintf("grant %d has not started", g.ID), g.ID, nil
	}
	return fmt.Sprintf("grant %d %s at %s", g.ID, g.State, g.EndedAt.Format(time.RFC3339)), g.ID, nil
}

// reconcileLoop runs Reconcile at once and then every e.recon until ctx ends.
func (e *Engine) reconcileLoop(ctx context.Context) {
	for {
		if _, err := e.Reconcile(ctx); err != nil && ctx.Err() == nil {
			e.log.Error("drift reconciler pass failed; will retry", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-e.clock.After(e.recon):
		}
	}
}
