package postgres

import (
	"runtime"
	"runtime/metrics"
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
