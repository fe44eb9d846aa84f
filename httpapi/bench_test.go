package httpapi_test

import (
	"context"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/httpapi"
	"github.com/jitgate/jitgate/internal/testdb"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/prometheus/client_golang/prometheus"
)

// cycler runs one request-create + approve (+ revoke, so the next create does not conflict)
// cycle for one requester.
type cycler interface {
	Submit(context.Context, jitgate.NewRequest) (*jitgate.Request, error)
	Review(context.Context, int64, jitgate.Decision, string) (*jitgate.Request, error)
	Revoke(context.Context, int64, string) (*jitgate.Grant, error)
}

func cycle(ctxReq, ctxApp context.Context, req, app cycler) error {
	r, err := req.Submit(ctxReq, jitgate.NewRequest{Resource: "app-db", Role: "read", Duration: time.Hour, Reason: "bench"})
	if err != nil {
		return err
	}
	if r, err = app.Review(ctxApp, r.ID, jitgate.Approve, ""); err != nil {
		return err
	}
	_, err = req.Revoke(ctxReq, r.GrantID, "")
	return err
}

// pairs are requesters and the approver who reviews them, so parallel workers never conflict.
var pairs = [][2]string{{"alice", "bob"}, {"oscar", "dave"}, {"bob", "erin"}}

// BenchmarkAPICycle measures create+approve(+revoke) cycles through the HTTP API on loopback,
// and the same cycle called on the engine directly in the same run ("direct"), on each store,
// with one worker and with two in parallel. Compare cycles/s of api to direct.
func BenchmarkAPICycle(b *testing.B) {
	for _, backend := range []func(testing.TB) testdb.Backend{testdb.SQLite, testdb.Postgres} {
		for _, mode := range []string{"direct", "api"} {
			for _, workers := range []int{1, 2} {
				bk := backend(b)
				b.Run(bk.Name+"/"+mode+"/workers="+string(rune('0'+workers)), func(b *testing.B) {
					env := testenv.New(b, bk)
					srv := httptest.NewServer(httpapi.New(env.Engine, nil, prometheus.NewRegistry()))
					defer srv.Close()
					local := jitgate.NewOperatorContext(context.Background(), "bench")
					token := func(u string) string {
						tok, _, err := env.Engine.CreateToken(local, u, time.Hour, "")
						if err != nil {
							b.Fatal(err)
						}
						return tok
					}
					type worker struct {
						ctxReq, ctxApp context.Context
						req, app       cycler
					}
					ws := make([]worker, workers)
					for i := range ws {
						p := pairs[i]
						if mode == "direct" {
							ws[i] = worker{env.As(b, p[0]), env.As(b, p[1]), env.Engine, env.Engine}
						} else {
							bg := context.Background()
							ws[i] = worker{bg, bg, httpapi.NewClient(srv.URL, token(p[0])), httpapi.NewClient(srv.URL, token(p[1]))}
						}
					}
					// Each worker takes cycles from a shared count until b.N are done.
					var done atomic.Int64
					var wg sync.WaitGroup
					errs := make(chan error, len(ws))
					b.ResetTimer()
					start := time.Now()
					for _, w := range ws {
						wg.Add(1)
						go func() {
							defer wg.Done()
							for done.Add(1) <= int64(b.N) {
								if err := cycle(w.ctxReq, w.ctxApp, w.req, w.app); err != nil {
									errs <- err
									return
								}
							}
						}()
					}
					wg.Wait()
					close(errs)
					if err := <-errs; err != nil {
						b.Fatal(err)
					}
					b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "cycles/s")
				})
			}
		}
	}
}
