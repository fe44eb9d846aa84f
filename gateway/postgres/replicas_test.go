package postgres_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/jitgate/jitgate/config"
	"github.com/jitgate/jitgate/gateway/postgres"
	"github.com/jitgate/jitgate/internal/testdb"
	"github.com/jitgate/jitgate/policy"
	"github.com/jitgate/jitgate/store"
)

// replica is one server instance: an engine on the shared store, running.
func replica(t *testing.T, cfg *config.Config, set *policy.Set, dsn string) *access.Engine {
	t.Helper()
	st, err := store.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	eng := access.New(access.Options{Store: st, Policies: set, Directory: cfg.Directory()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { eng.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; st.Close() })
	select {
	case <-eng.Listening():
	case <-time.After(10 * time.Second):
		t.Fatal("the engine does not receive change notices")
	}
	return eng
}

// A revoke on replica A closes replica B's gateway sessions at once, through PostgreSQL's
// change notices: B's sweep is off (an hour), so nothing else could. The latency from the
// revoke's call to the session's end is logged per round (JITGATE_REPLICA_ROUNDS, default 30).
func TestRevokeOnAnotherReplica(t *testing.T) {
	addr, db := testdb.GatewayUpstream(t)
	b := testdb.Postgres(t)
	cfg, err := config.Parse("gw.yaml", []byte(fmt.Sprintf(gwConfig, addr, db)))
	if err != nil {
		t.Fatal(err)
	}
	set, err := policy.Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a, bEng := replica(t, cfg, set, b.DSN), replica(t, cfg, set, b.DSN)
	gw := postgres.New(postgres.Options{Engine: bEng.GatewayService(), Upstream: postgres.ConfigUpstream(set, nil),
		InsecurePlaintext: true, SweepEvery: time.Hour})
	t.Cleanup(func() { gw.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gw.Serve(ln)
	e := &env{addr: ln.Addr().String()}
	u, _ := cfg.Directory().LookupUser(context.Background(), "alice")
	alice := jitgate.NewContext(context.Background(), u)

	rounds := 30
	if n, err := strconv.Atoi(os.Getenv("JITGATE_REPLICA_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	var lat []time.Duration
	for i := range rounds {
		r, err := a.Submit(alice, jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: time.Hour, Reason: "test"})
		if err != nil {
			t.Fatal(err)
		}
		in, err := bEng.IssueLogin(alice, r.GrantID, jitgate.KindPostgres)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := pgx.Connect(context.Background(), e.dsn("alice", in.Password))
		if err != nil {
			t.Fatal(err)
		}
		if err := conn.Ping(context.Background()); err != nil {
			t.Fatal(err)
		}
		ended := make(chan error, 1)
		go func() {
			_, err := conn.Exec(context.Background(), "SELECT pg_sleep(30)")
			ended <- err
		}()
		waitActivity(t, "SELECT pg_sleep(30)", true)
		start := time.Now()
		if _, err := a.Revoke(alice, r.GrantID, fmt.Sprintf("round %d", i)); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-ended:
			if sqlstate(err) != "57P01" {
				t.Fatalf("round %d: the session ended with %v", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: replica B's session still runs 10 s after the revoke on A", i)
		}
		lat = append(lat, time.Since(start))
		conn.Close(context.Background())
	}
	slices.Sort(lat)
	t.Logf("revoke on A to session closed on B, %d rounds: p50 %s, p99 %s, max %s", rounds,
		lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)*99/100].Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))
}
