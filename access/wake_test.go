package access_test

import (
	"testing"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/jitgate/jitgate/internal/testdb"
	"github.com/jitgate/jitgate/internal/testenv"
)

// A change wakes the scheduler when it makes work due before the scheduler would look by
// itself, and always while the scheduler runs a pass (which may have read the store before the
// change); otherwise it leaves it asleep.
func TestChangesWakeTheSchedulerWhenNeeded(t *testing.T) {
	env := testenv.New(t, testdb.SQLite(t))
	eng := env.Engine
	access.SchedulerWoken(eng)
	now := env.Clock.Now()

	access.SchedulerInPass(eng)
	if _, err := eng.Submit(env.As(t, "alice"), jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: time.Hour, Reason: "x"}); err != nil {
		t.Fatal(err)
	}
	if !access.SchedulerWoken(eng) {
		t.Fatal("a change during a scheduler pass did not wake the scheduler")
	}

	access.SchedulerSleepsUntil(eng, now.Add(15*time.Second))
	if _, err := eng.Submit(env.As(t, "oscar"), jitgate.NewRequest{Resource: "app-db", Role: "write", Duration: time.Hour, Reason: "x"}); err != nil {
		t.Fatal(err)
	}
	if access.SchedulerWoken(eng) {
		t.Fatal("a request pending for hours woke a scheduler due to look in 15 s")
	}
	r, err := eng.Submit(env.As(t, "oscar"), jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: 10 * time.Second, Reason: "x"})
	if err != nil || r.GrantID == 0 {
		t.Fatalf("auto-approved request: %+v, %v", r, err)
	}
	if !access.SchedulerWoken(eng) {
		t.Fatal("a grant ending in 10 s did not wake a scheduler due to look in 15 s")
	}
}
