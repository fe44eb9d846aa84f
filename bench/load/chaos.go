package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

const hookSecret = "jitgate-load-hook-secret"

// hook receives the replicas' notifications and counts each message id.
type hook struct {
	url  string
	srv  *http.Server
	mu   sync.Mutex
	seen map[string]int
}

func startHook() (*hook, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	h := &hook{url: "http://" + ln.Addr().String(), seen: map[string]int{}}
	h.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m struct {
			ID string `json:"id"`
		}
		body, _ := io.ReadAll(r.Body)
		if json.Unmarshal(body, &m) == nil && m.ID != "" {
			h.mu.Lock()
			h.seen[m.ID]++
			h.mu.Unlock()
		}
	})}
	go h.srv.Serve(ln)
	return h, nil
}

func (h *hook) close() { h.srv.Close() }

// checkAfterKill checks, once the survivors had time to take the dead replica's work over,
// that nothing was lost or done twice: the audit chain verifies, no grant is active past its
// end, every stored notification was delivered, and none twice.
func (o *options) checkAfterKill() error {
	ctx := context.Background()
	out, err := exec.Command(o.bin, "audit", "--verify", "--config", o.cfg).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Audit chain OK") {
		return fmt.Errorf("audit verify after the kill: %v: %s", err, out)
	}
	db, err := pgx.Connect(ctx, o.dsn)
	if err != nil {
		return err
	}
	defer db.Close(ctx)
	// The dead replica's claims on the outbox run out after a minute's lease.
	var pending, gaveUp, overdue int
	deadline := time.Now().Add(90 * time.Second)
	for {
		if err := db.QueryRow(ctx, `SELECT count(*) FILTER (WHERE next_at IS NOT NULL), count(*) FILTER (WHERE gave_up_at IS NOT NULL) FROM outbox`).Scan(&pending, &gaveUp); err != nil {
			return err
		}
		if pending == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	now := time.Now().UnixNano()
	if err := db.QueryRow(ctx, `SELECT count(*) FROM grants WHERE state = 'active' AND ends_at <= $1`, now).Scan(&overdue); err != nil {
		return err
	}
	var stored int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&stored); err != nil {
		return err
	}
	o.hook.mu.Lock()
	dup, delivered := 0, len(o.hook.seen)
	for _, n := range o.hook.seen {
		if n > 1 {
			dup++
		}
	}
	o.hook.mu.Unlock()
	fmt.Printf("chaos audit=ok overdue_active_grants=%d outbox_stored=%d undelivered=%d given_up=%d delivered_ids=%d delivered_twice=%d\n",
		overdue, stored, pending, gaveUp, delivered, dup)
	if overdue > 0 || pending > 0 || gaveUp > 0 || delivered != stored {
		return fmt.Errorf("after the kill: %d grants active past their end, %d messages undelivered, %d given up, %d delivered of %d stored",
			overdue, pending, gaveUp, delivered, stored)
	}
	return nil
}
