package jitgate

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseDuration parses a Go duration ("90m", "1h30m", "45s") or a whole number of days ("7d").
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 || n > 3650 {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (use e.g. 30m, 4h, 7d)", s)
	}
	return d, nil
}

// FormatDuration renders d compactly: "1h", "1h30m", "45s", "2d".
func FormatDuration(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	s := d.String()
	s = strings.Replace(s, "m0s", "m", 1)
	s = strings.Replace(s, "h0m", "h", 1)
	return s
}

// MarshalJSON renders the duration as a string such as "1h30m", which is what people and
// scripts write back.
func (r Request) MarshalJSON() ([]byte, error) {
	type plain Request
	return json.Marshal(struct {
		plain
		Duration string `json:"duration"`
	}{plain(r), FormatDuration(r.Duration)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *Request) UnmarshalJSON(b []byte) error {
	type plain Request
	var v struct {
		*plain
		Duration string `json:"duration"`
	}
	v.plain = (*plain)(r)
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	d, err := ParseDuration(v.Duration)
	if err != nil {
		return err
	}
	r.Duration = d
	return nil
}

// FormatTime renders t for messages people read: RFC 3339 in UTC, to the second
// ("2026-12-02T14:02:11Z"), so that a time is never ambiguous across zones.
func FormatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }
