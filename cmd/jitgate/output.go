package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/internal/textsafe"
)

// table writes aligned columns.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	if strings.Join(header, "") != "" {
		t.row(toAny(header)...)
	}
	return t
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

func (t *table) row(cols ...any) {
	for i, c := range cols {
		if i > 0 {
			fmt.Fprint(t.tw, "\t")
		}
		fmt.Fprint(t.tw, textsafe.Line(fmt.Sprint(c)))
	}
	fmt.Fprintln(t.tw)
}

func (t *table) flush() error { return t.tw.Flush() }

// human renders d roughly, for people: "42m", "3h10m", "2d4h", "35s".
func human(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 24*time.Hour:
		h, m := int(d.Hours()), int(d.Minutes())%60
		if m == 0 {
			return fmt.Sprintf("%dh", h)
		}
		return fmt.Sprintf("%dh%dm", h, m)
	}
	days, h := int(d.Hours())/24, int(d.Hours())%24
	if h == 0 {
		return fmt.Sprintf("%dd", days)
	}
	return fmt.Sprintf("%dd%dh", days, h)
}

// relative renders t against now: "in 42m" or "3m ago".
func relative(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	if t.After(now) {
		return "in " + human(t.Sub(now))
	}
	return human(now.Sub(t)) + " ago"
}

// truncate folds s's white space and cuts it to at most n characters.
func truncate(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

// requestWhen describes a request's timing for the table.
func requestWhen(r *jitgate.Request, now time.Time) string {
	if r.State == jitgate.RequestPending {
		return "times out " + relative(r.ExpiresAt, now)
	}
	return string(r.State) + " " + relative(r.DecidedAt, now)
}

// grantWhen describes a grant's timing: "expires in 42m", "starts in 2h", "expired 3m ago".
func grantWhen(g *jitgate.Grant, now time.Time) string {
	switch g.State {
	case jitgate.GrantScheduled:
		return "starts " + relative(g.StartsAt, now)
	case jitgate.GrantActive:
		return "expires " + relative(g.EndsAt, now)
	}
	return string(g.State) + " " + relative(g.EndedAt, now)
}

func printRequests(w io.Writer, rs []*jitgate.Request, now time.Time) error {
	t := newTable(w, "ID", "STATE", "REQUESTER", "RESOURCE", "ROLE", "FOR", "STEP", "WHEN", "REASON")
	for _, r := range rs {
		role := r.Role
		if r.ExtendsGrant != 0 {
			role += fmt.Sprintf(" (extends grant %d)", r.ExtendsGrant)
		}
		if r.BreakGlass {
			role += " (break-glass)"
		}
		step := "-"
		if r.State == jitgate.RequestPending {
			step = fmt.Sprintf("%d/%d", r.Step+1, r.Steps)
		}
		t.row(r.ID, r.State, r.RequesterLabel(), r.Resource, role, jitgate.FormatDuration(r.Duration), step, requestWhen(r, now), truncate(r.Reason, 40))
	}
	return t.flush()
}

func printGrants(w io.Writer, gs []*jitgate.Grant, now time.Time) error {
	t := newTable(w, "ID", "STATE", "USER", "RESOURCE", "ROLE", "WHEN", "PROVISION")
	for _, g := range gs {
		prov := string(g.Provision.State)
		if g.Provision.LastError != "" {
			prov += fmt.Sprintf(" (failing after %d attempts: %s)", g.Provision.Attempts, truncate(g.Provision.LastError, 40))
		}
		t.row(g.ID, g.State, g.HolderLabel(), g.Resource, g.Role, grantWhen(g, now), prov)
	}
	return t.flush()
}

func printAudit(w io.Writer, evs []*jitgate.AuditEvent) error {
	t := newTable(w, "SEQ", "TIME", "ACTOR", "ACTION", "REQUEST", "GRANT", "DETAILS")
	for _, e := range evs {
		keys := make([]string, 0, len(e.Details))
		for k := range e.Details {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, 0, len(keys))
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s=%q", k, e.Details[k]))
		}
		t.row(e.Seq, e.Time.Local().Format("2006-01-02 15:04:05"), e.Actor, e.Action, dash(e.RequestID), dash(e.GrantID), truncate(strings.Join(parts, " "), 100))
		// A session.statements event: one line per statement under it.
		for _, st := range e.Statements {
			d := fmt.Sprintf("n=%d sql=%q", st.N, st.SQL)
			if st.SQLState != "" {
				d += fmt.Sprintf(" sqlstate=%q", st.SQLState)
			}
			if st.Tag != "" {
				d += fmt.Sprintf(" tag=%q", st.Tag)
			}
			d += fmt.Sprintf(" duration_us=%d", st.DurationUS)
			t.row("", st.Start.Local().Format("2006-01-02 15:04:05"), e.Actor, "  statement", dash(e.RequestID), dash(e.GrantID), truncate(d, 100))
		}
	}
	return t.flush()
}

func dash(n int64) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprint(n)
}

// printRequest shows one request in detail, with its reviews and grant.
func printRequest(w io.Writer, r *jitgate.Request, g *jitgate.Grant, now time.Time) {
	fmt.Fprintf(w, "Request %d: %s\n", r.ID, r.State)
	kv := newTable(w, "", "")
	kv.row("Requester", r.RequesterLabel())
	kv.row("Access", fmt.Sprintf("%s/%s for %s", r.Resource, r.Role, jitgate.FormatDuration(r.Duration)))
	if r.ExtendsGrant != 0 {
		kv.row("Extends", fmt.Sprintf("grant %d", r.ExtendsGrant))
	}
	if !r.StartAt.IsZero() {
		kv.row("Start", fmt.Sprintf("%s (%s)", r.StartAt.Local().Format(time.RFC3339), relative(r.StartAt, now)))
	}
	kv.row("Reason", r.Reason)
	kv.row("Policy", fmt.Sprintf("%s (%d approval step(s))", r.Policy, r.Steps))
	kv.row("Created", fmt.Sprintf("%s (%s)", r.CreatedAt.Local().Format(time.RFC3339), relative(r.CreatedAt, now)))
	if r.State == jitgate.RequestPending {
		kv.row("Waiting", fmt.Sprintf("step %d of %d; times out %s", r.Step+1, r.Steps, relative(r.ExpiresAt, now)))
	} else {
		kv.row("Decided", fmt.Sprintf("%s by %s (%s): %s", r.State, r.DecidedBy, relative(r.DecidedAt, now), r.DecisionNote))
	}
	if r.BreakGlass {
		state := "done"
		if r.PostReviewOpen {
			state = "OPEN: an approver must review this break-glass use"
		}
		kv.row("Break-glass", "after-the-fact review "+state)
	}
	kv.flush()
	if len(r.Reviews) > 0 {
		fmt.Fprintln(w, "\nReviews:")
		t := newTable(w, "  WHO", "STEP", "DECISION", "WHEN", "COMMENT")
		for _, rv := range r.Reviews {
			step := fmt.Sprint(rv.Step + 1)
			if rv.PostHoc {
				step = "after the fact"
			}
			t.row("  "+rv.Reviewer, step, rv.Decision, relative(rv.CreatedAt, now), rv.Comment)
		}
		t.flush()
	}
	if g != nil {
		fmt.Fprintln(w)
		printGrant(w, g, now)
	}
}

// printGrant shows one grant in detail.
func printGrant(w io.Writer, g *jitgate.Grant, now time.Time) {
	fmt.Fprintf(w, "Grant %d: %s\n", g.ID, g.State)
	kv := newTable(w, "", "")
	kv.row("User", g.HolderLabel())
	kv.row("Access", g.Resource+"/"+g.Role)
	kv.row("Window", fmt.Sprintf("%s → %s", g.StartsAt.Local().Format(time.RFC3339), g.EndsAt.Local().Format(time.RFC3339)))
	kv.row("When", grantWhen(g, now))
	if g.Extensions > 0 {
		kv.row("Extended", fmt.Sprintf("%d time(s)", g.Extensions))
	}
	if !g.EndedAt.IsZero() {
		kv.row("Ended", fmt.Sprintf("by %s: %s", g.EndedBy, g.EndReason))
	}
	prov := string(g.Provision.State)
	if g.Provision.LastError != "" {
		prov += fmt.Sprintf(" — failing after %d attempt(s): %s; next try %s", g.Provision.Attempts, g.Provision.LastError, relative(g.Provision.NextAt, now))
	}
	kv.row("Provisioning", prov)
	if !g.Provision.VerifiedAt.IsZero() {
		kv.row("Revocation", fmt.Sprintf("verified %s, %s after the grant ended", g.Provision.VerifiedAt.Local().Format(time.RFC3339),
			g.TimeToRevoke().Round(time.Millisecond)))
		kv.row("Receipt", g.Provision.Receipt)
	}
	kv.row("Request", fmt.Sprint(g.RequestID))
	kv.flush()
}
