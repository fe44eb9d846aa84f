package postgres

import (
	"fmt"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"testing"
	"time"
)

// An idle loop waits in a raw epoll_pwait that keeps its P; a stop-the-world must still get
// through at once (the preemption signal interrupts the wait) rather than wait out maxWait.
func TestLoopLetsTheWorldStop(t *testing.T) {
	if _, err := startLoops(1); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // the loop is waiting
	const name = "/sched/pauses/stopping/gc:seconds"
	read := func() *metrics.Float64Histogram {
		s := []metrics.Sample{{Name: name}}
		metrics.Read(s)
		return s[0].Value.Float64Histogram()
	}
	before := read()
	const n = 20
	for i := 0; i < n; i++ {
		runtime.GC()
	}
	after := read()
	// The median time to stop the world over these collections (two stops each).
	var total uint64
	delta := make([]uint64, len(after.Counts))
	for i := range after.Counts {
		delta[i] = after.Counts[i] - before.Counts[i]
		total += delta[i]
	}
	if total < n {
		t.Fatalf("only %d stops recorded for %d collections", total, n)
	}
	var seen uint64
	for i, c := range delta {
		seen += c
		if seen*2 >= total {
			if median := time.Duration(after.Buckets[i+1] * float64(time.Second)); median > maxWait/5 {
				t.Fatalf("stopping the world took %v (median) with an idle loop; maxWait is %v", median, maxWait)
			}
			return
		}
	}
}

// An idle loop waits through the runtime, which gives up its P, so that the runtime's sysmon
// thread does not preempt it every 10 ms: it sleeps undisturbed, and work posted to it still
// runs at once.
func TestIdleLoopSleeps(t *testing.T) {
	set, err := startLoops(1)
	if err != nil {
		t.Fatal(err)
	}
	switches := func(tid int32) int {
		b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/status", tid))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
				n, err := strconv.Atoi(strings.TrimSpace(v))
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
		}
		t.Fatal("no voluntary_ctxt_switches in /proc")
		return 0
	}
	for i, l := range set.loops {
		deadline := time.Now().Add(5 * time.Second)
		for !l.idle.Load() || l.tid.Load() == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("loop %d: not idle after 5 s with no sessions", i)
			}
			time.Sleep(10 * time.Millisecond)
		}
		// Over half a second a raw wait would be preempted about 50 times, each costing the
		// thread a few switches; an idle wait lasts up to maxIdleWait.
		before := switches(l.tid.Load())
		time.Sleep(500 * time.Millisecond)
		n := switches(l.tid.Load()) - before
		if n > 10 {
			t.Errorf("loop %d: its thread switched %d times in 0.5 s while idle", i, n)
		}
		ran := make(chan struct{})
		start := time.Now()
		l.post(func() { close(ran) })
		select {
		case <-ran:
		case <-time.After(maxIdleWait / 2):
			t.Fatalf("loop %d: work posted to it waited for its idle wait to end", i)
		}
		t.Logf("loop %d: %d switches in 0.5 s idle; posted work ran after %v", i, n, time.Since(start))
	}
}
