package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/jitgate/jitgate/audit"
	"github.com/jitgate/jitgate/config"
	"github.com/jitgate/jitgate/policy"
	"github.com/jitgate/jitgate/store"
)

// auditLog fills a store with o.events audit events and measures verifying and reading it.
func (o *options) auditLog() error {
	ctx := context.Background()
	st, err := store.Open(ctx, o.dsn)
	if err != nil {
		return err
	}
	defer st.Close()
	start := time.Now()
	const batch = 1000
	for n := int64(0); n < o.events; n += batch {
		evs := make([]*jitgate.AuditEvent, 0, batch)
		for i := range min(batch, o.events-n) {
			evs = append(evs, &jitgate.AuditEvent{Time: time.Now().UTC(), Actor: "user" + fmt.Sprint((n+i)%50), Action: jitgate.ActionRequestCreated,
				RequestID: n + i + 1, Details: map[string]string{"resource": "app-db", "role": "read", "reason": "INC-" + fmt.Sprint(n+i), "duration": "1h"}})
		}
		if err := st.Tx(ctx, func(tx jitgate.Tx) error { return tx.AppendAudit(evs...) }); err != nil {
			return err
		}
		if (n/batch)%500 == 0 && n > 0 {
			fmt.Fprintf(os.Stderr, "load: %d events written (%s)\n", n, time.Since(start).Round(time.Second))
		}
	}
	fmt.Printf("audit store=%s events=%d written_in=%s\n", o.store, o.events, time.Since(start).Round(time.Millisecond))

	// A full verification: time and the most memory held while it ran.
	stop := make(chan struct{})
	peak := make(chan uint64)
	go func() {
		var m runtime.MemStats
		var max uint64
		for {
			runtime.ReadMemStats(&m)
			if m.HeapInuse > max {
				max = m.HeapInuse
			}
			select {
			case <-stop:
				peak <- max
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	runtime.GC()
	debug.FreeOSMemory()
	t0 := time.Now()
	res, err := audit.Verify(ctx, st)
	full := time.Since(t0)
	close(stop)
	heap := <-peak
	if err != nil {
		return err
	}
	if !res.OK {
		return fmt.Errorf("the chain does not verify: %s", res.Message)
	}
	fmt.Printf("audit full_verify=%s events=%d peak_heap=%.1fMiB\n", full.Round(time.Millisecond), res.Events, float64(heap)/(1<<20))

	// The engine as the web UI uses it: a first (whole) check, then a page view's.
	cfg, err := config.Parse("load.yaml", []byte(auditConfig))
	if err != nil {
		return err
	}
	set, err := policy.Compile(cfg)
	if err != nil {
		return err
	}
	eng := access.New(access.Options{Store: st, Policies: set, Directory: cfg.Directory()})
	admin := jitgate.NewOperatorContext(ctx, "load")
	if _, _, err := eng.AuditCheck(admin); err != nil {
		return err
	}
	for i := range 100 { // what happened between two page views
		ev := &jitgate.AuditEvent{Time: time.Now().UTC(), Actor: "bob", Action: jitgate.ActionRequestCreated, RequestID: int64(i)}
		if err := st.Tx(ctx, func(tx jitgate.Tx) error { return tx.AppendAudit(ev) }); err != nil {
			return err
		}
	}
	var views, pages []time.Duration
	for range 20 {
		t0 := time.Now()
		res, _, err := eng.AuditCheck(admin)
		if err != nil || !res.OK {
			return fmt.Errorf("page view check: %v %+v", err, res)
		}
		views = append(views, time.Since(t0))
		t0 = time.Now()
		if _, err := eng.AuditEvents(admin, jitgate.AuditFilter{Newest: true, Limit: 201}); err != nil {
			return err
		}
		pages = append(pages, time.Since(t0))
	}
	fmt.Printf("audit page_view_check_median=%s newest_page_median=%s (20 views; the first check saw 100 new events)\n",
		median(views).Round(time.Microsecond), median(pages).Round(time.Microsecond))
	return nil
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

var auditConfig = strings.TrimSpace(`
users:
  - {name: bob, groups: [sre]}
resources:
  - name: app-db
    kind: postgres
    address: 127.0.0.1:5432
    database: test
    roles:
      - {name: read, grants: [pg_read_all_data]}
policies:
  - name: p
    requesters: {groups: [sre]}
    resources: [app-db]
    roles: [read]
    max_duration: 1h
    approval:
      steps: [{approvers: {users: [bob]}}]
`)
