package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cpuSample is the CPU time used so far by each side of a cycles run, read from /proc: the
// server processes, every PostgreSQL process on the machine (the store's backends; nothing
// else should run during a benchmark), this load generator, and the machine as a whole
// (busy and all). Differences of two samples, divided by the cycles between them, give CPU
// per cycle: a measure that holds from a fast day to a slow one far better than a rate.
type cpuSample struct {
	servers, postgres, load, busy, total time.Duration
}

// clockTick is the unit of /proc's times (USER_HZ): 100 on every Linux we run on.
const clockTick = 10 * time.Millisecond

// sampleCPU reads a cpuSample; on a system without /proc it returns zeros.
func (o *options) sampleCPU() cpuSample {
	var c cpuSample
	for _, s := range o.servers {
		if !s.dead.Load() {
			c.servers += procCPU(s.cmd.Process.Pid)
		}
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		comm, err := os.ReadFile(filepath.Join(d, "comm"))
		if err != nil || strings.TrimSpace(string(comm)) != "postgres" {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(d)); err == nil {
			c.postgres += procCPU(pid)
		}
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		c.load = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := bytes.Cut(b, []byte("\n"))
		f := strings.Fields(string(line)) // cpu user nice system idle iowait irq softirq steal ...
		for i := 1; i < len(f) && i <= 8; i++ {
			n, _ := strconv.ParseInt(f[i], 10, 64)
			c.total += time.Duration(n) * clockTick
			if i != 4 && i != 5 { // idle, iowait
				c.busy += time.Duration(n) * clockTick
			}
		}
	}
	return c
}

// procCPU is a process's user and system time (all its threads), from /proc/PID/stat.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) is in parentheses and may hold spaces: count from after it.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3 (state); utime and stime are 14, 15
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * clockTick
}

// perCycle formats the CPU used between a and b per cycle, in microseconds, and the share of
// the machine's CPU time that was busy.
func perCycle(a, b cpuSample, cycles int64) string {
	if cycles == 0 || b.total == a.total {
		return "cpu=n/a"
	}
	us := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(cycles) }
	return fmt.Sprintf("cpu_us_per_cycle=%.0f server_us=%.0f postgres_us=%.0f load_us=%.0f busy=%.0f%%",
		us(b.busy-a.busy), us(b.servers-a.servers), us(b.postgres-a.postgres), us(b.load-a.load),
		100*float64(b.busy-a.busy)/float64(b.total-a.total))
}
