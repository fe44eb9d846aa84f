package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/jitgate/jitgate/config"
	"github.com/jitgate/jitgate/internal/clocktest"
	"github.com/jitgate/jitgate/policy"
	"github.com/jitgate/jitgate/store"
)

// expiry makes o.grants grants that end at the same instant and measures, with the engines
// running (o.replicas of them on the store, in this process), how long it takes until every
// one is expired with its audit event written. The engines share a manual clock set past the
// end at once, so the measure is the scheduler's and the store's, not timers'.
func (o *options) expiry() error {
	ctx := context.Background()
	const users, roles = 100, 100
	if o.grants > users*roles {
		return fmt.Errorf("-grants at most %d", users*roles)
	}
	var b strings.Builder
	b.WriteString("users:\n")
	for u := range users {
		fmt.Fprintf(&b, "  - {name: u%03d, groups: [engineering]}\n", u)
	}
	b.WriteString("  - {name: approver, groups: [sre]}\nresources:\n  - name: app-db\n    kind: postgres\n    address: 127.0.0.1:5432\n    database: test\n    roles:\n")
	for r := range roles {
		fmt.Fprintf(&b, "      - {name: r%03d, grants: [pg_read_all_data]}\n", r)
	}
	b.WriteString(`policies:
  - name: all
    requesters: {groups: [engineering]}
    resources: [app-db]
    roles: ["*"]
    max_duration: 1h
    approval:
      steps: [{approvers: {groups: [sre]}}]
    auto_approve: 'true'
`)
	cfg, err := config.Parse("expiry.yaml", []byte(b.String()))
	if err != nil {
		return err
	}
	set, err := policy.Compile(cfg)
	if err != nil {
		return err
	}
	t0 := time.Now().UTC().Truncate(time.Second)
	clocks := make([]*clocktest.Clock, o.replicas)
	engines := make([]*access.Engine, o.replicas)
	for i := range o.replicas {
		st, err := store.Open(ctx, o.dsn)
		if err != nil {
			return err
		}
		defer st.Close()
		clocks[i] = clocktest.New(t0)
		engines[i] = access.New(access.Options{Store: st, Policies: set, Directory: cfg.Directory(), Clock: clocks[i]})
	}
	dir := cfg.Directory()
	start := time.Now()
	for n := range o.grants {
		u, _ := dir.LookupUser(ctx, fmt.Sprintf("u%03d", n%users))
		_, err := engines[n%o.replicas].Submit(jitgate.NewContext(ctx, u), jitgate.NewRequest{Resource: "app-db",
			Role: fmt.Sprintf("r%03d", n/users), Duration: time.Hour, Reason: "load"})
		if err != nil {
			return fmt.Errorf("grant %d: %w", n, err)
		}
	}
	fmt.Printf("expiry store=%s replicas=%d grants=%d created_in=%s\n", o.store, o.replicas, o.grants, time.Since(start).Round(time.Millisecond))
	admin := jitgate.NewOperatorContext(ctx, "load")
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, e := range engines {
		go e.Run(rctx)
	}
	time.Sleep(500 * time.Millisecond) // the engines' first passes, with nothing due
	start = time.Now()
	for _, c := range clocks {
		c.Set(t0.Add(time.Hour)) // every grant's end, at once
	}
	for {
		_, gs, err := engines[0].Counts(admin)
		if err != nil {
			return err
		}
		if gs[jitgate.GrantActive] == 0 {
			break
		}
		if time.Since(start) > 10*time.Minute {
			return fmt.Errorf("%d grants still active after 10 minutes", gs[jitgate.GrantActive])
		}
		time.Sleep(10 * time.Millisecond)
	}
	all := time.Since(start)
	evs, err := engines[0].AuditEvents(admin, jitgate.AuditFilter{Newest: true, Limit: 1})
	if err != nil {
		return err
	}
	expired := 0
	for after := int64(0); ; {
		p, err := engines[0].AuditEvents(admin, jitgate.AuditFilter{AfterSeq: after, Limit: 1000})
		if err != nil {
			return err
		}
		for _, ev := range p {
			if ev.Action == jitgate.ActionGrantExpired {
				expired++
			}
			after = ev.Seq
		}
		if len(p) < 1000 {
			break
		}
	}
	fmt.Printf("expiry store=%s replicas=%d grants=%d all_expired_in=%s rate=%.0f/s expired_events=%d head_seq=%d\n",
		o.store, o.replicas, o.grants, all.Round(time.Millisecond), float64(o.grants)/all.Seconds(), expired, evs[0].Seq)
	if expired != o.grants {
		return fmt.Errorf("%d grant.expired events for %d grants", expired, o.grants)
	}
	return nil
}
