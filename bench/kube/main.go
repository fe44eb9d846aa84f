// Command kube measures GET requests through jitgate's Kubernetes gateway against the same
// requests sent straight to the API server, in one run, alternating round by round.
//
// It starts the test cluster (internal/testkube: etcd and a real kube-apiserver), an engine on
// a fresh SQLite store with the real RBAC provisioner, and the gateway with statement audit on,
// then grants a view role on a namespace holding one ConfigMap. Both paths GET that ConfigMap
// with the same identity: straight to the API server as jitgate impersonating the grant's
// subject (exactly what the gateway sends), or through the gateway with the grant's session
// credential. So the API server does the same work on both paths, and the difference is the
// gateway's hop, its checks and its audit.
//
// Each round measures, per path: one client's requests for -seconds (latency p50 and p99), and
// -workers clients' (throughput). It prints each round and the mean and standard error of the
// added latencies and of the throughput ratio.
//
//	go run ./bench/kube -rounds 6 -seconds 3s
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/jitgate/jitgate/config"
	"github.com/jitgate/jitgate/gateway"
	"github.com/jitgate/jitgate/gateway/kubernetes"
	"github.com/jitgate/jitgate/internal/testkube"
	"github.com/jitgate/jitgate/policy"
	kprov "github.com/jitgate/jitgate/provision/kubernetes"
	"github.com/jitgate/jitgate/store"
)

const cfgTemplate = `
users:
  - {name: alice, groups: [engineering]}
  - {name: bob, groups: [sre]}
resources:
  - name: k8s
    kind: kubernetes
    address: %s
    ca_file: %s
    token_env: JG_BENCH_KUBE_TOKEN
    roles:
      - {name: view, grants: [clusterrole/view], namespaces: [bench]}
policies:
  - name: all
    requesters: {groups: [engineering]}
    resources: [k8s]
    roles: [view]
    max_duration: 24h
    approval:
      steps: [{approvers: {groups: [sre]}}]
    auto_approve: 'true'
`

func main() {
	rounds := flag.Int("rounds", 6, "rounds (each measures both paths)")
	seconds := flag.Duration("seconds", 3*time.Second, "length of each measurement")
	workers := flag.Int("workers", 8, "parallel clients for the throughput measurement")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run (load generator and gateway) to this file")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	if err := run(*rounds, *seconds, *workers); err != nil {
		log.Print(err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

// path is one way to the API server.
type path struct {
	name   string
	url    string
	header http.Header
	tls    *tls.Config
}

func run(rounds int, seconds time.Duration, workers int) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "jitgate-bench-kube-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	c, err := testkube.Start(ctx, dir)
	if err != nil {
		return err
	}
	defer c.Stop()
	if err := c.CreateNamespace(ctx, "bench"); err != nil {
		return err
	}
	if err := c.Admin(ctx, http.MethodPost, "/api/v1/namespaces/bench/configmaps",
		[]byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"app"},"data":{"greeting":"hello"}}`), nil); err != nil {
		return err
	}
	os.Setenv("JG_BENCH_KUBE_TOKEN", c.JitgateToken)
	cfg, err := config.Parse("bench.yaml", fmt.Appendf(nil, cfgTemplate, c.URL, c.CAFile))
	if err != nil {
		return err
	}
	set, err := policy.Compile(cfg)
	if err != nil {
		return err
	}
	res := set.Resource("k8s")
	prov, err := kprov.New(res, "bench", c.JitgateToken)
	if err != nil {
		return err
	}
	st, err := store.Open(ctx, "sqlite:"+dir+"/jitgate.db")
	if err != nil {
		return err
	}
	defer st.Close()
	eng := access.New(access.Options{Store: st, Policies: set, Directory: cfg.Directory(),
		Provisioners: map[string]jitgate.Provisioner{"k8s": prov}})
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go eng.Run(runCtx)
	gwTLS, err := gateway.SelfSigned("127.0.0.1")
	if err != nil {
		return err
	}
	upTLS, err := kprov.TLSConfig(res, c.JitgateToken)
	if err != nil {
		return err
	}
	u, _ := url.Parse(c.URL)
	gw := kubernetes.New(kubernetes.Options{Engine: eng.GatewayService(), TLS: gwTLS,
		Upstreams: map[string]*kubernetes.Upstream{"k8s": {URL: u, TLS: upTLS, Token: c.JitgateToken}}})
	defer gw.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go gw.Serve(ln)

	alice, _ := cfg.Directory().LookupUser(ctx, "alice")
	actx := jitgate.NewContext(ctx, alice)
	r, err := eng.Submit(actx, jitgate.NewRequest{Resource: "k8s", Role: "view", Duration: 12 * time.Hour, Reason: "benchmark"})
	if err != nil {
		return err
	}
	var g *jitgate.Grant
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		g, err = eng.GatewayService().GrantByID(ctx, r.GrantID)
		if err == nil && g.Provision.State == jitgate.ProvisionStateGranted {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("grant not provisioned: %+v %v", g, err)
		}
	}
	in, err := eng.IssueLogin(actx, g.ID, jitgate.KindKubernetes)
	if err != nil {
		return err
	}
	gwPool := x509.NewCertPool()
	gwPool.AppendCertsFromPEM(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: gwTLS.Certificates[0].Certificate[0]}))
	direct := path{name: "direct", url: c.URL, tls: upTLS, header: http.Header{
		"Authorization": {"Bearer " + c.JitgateToken}, "Impersonate-User": {jitgate.KubernetesUser(g)},
		"Impersonate-Group": {jitgate.KubernetesGroup(g)}}}
	through := path{name: "gateway", url: "https://" + ln.Addr().String(), tls: &tls.Config{RootCAs: gwPool},
		header: http.Header{"Authorization": {"Bearer " + in.Password}}}

	fmt.Printf("# %s, GET /api/v1/namespaces/bench/configmaps/app, %d rounds of %s per measurement, %d workers\n",
		time.Now().UTC().Format(time.RFC3339), rounds, seconds, workers)
	fmt.Printf("%-6s %-8s %10s %10s %12s %14s %14s\n", "round", "path", "p50_us", "p99_us", fmt.Sprintf("rps_%dw", workers),
		"cluster_cpu_us", "process_cpu_us")
	var addP50, addP99, ratio, addCPU []float64
	for i := range rounds {
		order := []path{direct, through}
		if i%2 == 1 {
			order = []path{through, direct}
		}
		got := map[string][5]float64{}
		for _, p := range order {
			p50, p99, err := latency(p, seconds)
			if err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
			cluster0, self0 := cpu(c.Pids()...), cpu(os.Getpid())
			rps, n, err := throughput(p, seconds, workers)
			if err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
			clusterCPU, selfCPU := (cpu(c.Pids()...)-cluster0)/float64(n), (cpu(os.Getpid())-self0)/float64(n)
			got[p.name] = [5]float64{p50, p99, rps, clusterCPU, selfCPU}
			fmt.Printf("%-6d %-8s %10.0f %10.0f %12.0f %14.1f %14.1f\n", i+1, p.name, p50, p99, rps, clusterCPU, selfCPU)
		}
		d, t := got["direct"], got["gateway"]
		addP50, addP99, ratio = append(addP50, t[0]-d[0]), append(addP99, t[1]-d[1]), append(ratio, t[2]/d[2])
		addCPU = append(addCPU, t[4]-d[4])
	}
	gw.Recorder().Sync()
	rec, lost, _, _, _ := gw.Recorder().Stats()
	fmt.Printf("\nadded latency p50: %.0f µs (SE %.0f); p99: %.0f µs (SE %.0f); %d-worker throughput: %.3fx direct (SE %.3f)\n",
		mean(addP50), se(addP50), mean(addP99), se(addP99), workers, mean(ratio), se(ratio))
	fmt.Printf("gateway CPU per request (this process's CPU per request, gateway path minus direct path): %.1f µs (SE %.1f)\n",
		mean(addCPU), se(addCPU))
	fmt.Printf("requests audited: %d, lost: %d\n", rec, lost)
	return nil
}

// client returns an HTTP/2 client for p.
func client(p path) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: p.tls.Clone(), ForceAttemptHTTP2: true,
		MaxIdleConnsPerHost: 16}}
}

func get(c *http.Client, p path) error {
	req, _ := http.NewRequest(http.MethodGet, p.url+"/api/v1/namespaces/bench/configmaps/app", nil)
	req.Header = p.header.Clone()
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	var buf [4096]byte
	for {
		if _, err := resp.Body.Read(buf[:]); err != nil {
			break
		}
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET: %s", resp.Status)
	}
	return nil
}

// latency runs one client for d and returns the p50 and p99 request latency in µs.
func latency(p path, d time.Duration) (float64, float64, error) {
	c := client(p)
	defer c.CloseIdleConnections()
	if err := get(c, p); err != nil { // warm the connection
		return 0, 0, err
	}
	var lat []float64
	for end := time.Now().Add(d); time.Now().Before(end); {
		t0 := time.Now()
		if err := get(c, p); err != nil {
			return 0, 0, err
		}
		lat = append(lat, float64(time.Since(t0).Microseconds()))
	}
	slices.Sort(lat)
	return lat[len(lat)/2], lat[len(lat)*99/100], nil
}

// cpu returns the CPU time (user and system) the processes have used, in µs.
func cpu(pids ...int) float64 {
	total := 0.0
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// The fields after the command (which is in parentheses and may hold spaces).
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		total += (ut + st) * 1e6 / clockTicks
	}
	return total
}

// clockTicks is the kernel's USER_HZ, the unit of /proc/PID/stat's times (100 on Linux).
const clockTicks = 100

// throughput runs n clients for d and returns requests per second and how many were made.
func throughput(p path, d time.Duration, n int) (float64, int64, error) {
	var (
		done atomic.Int64
		wg   sync.WaitGroup
		mu   sync.Mutex
		fail error
	)
	start := time.Now()
	end := start.Add(d)
	for range n {
		wg.Go(func() {
			c := client(p)
			defer c.CloseIdleConnections()
			for time.Now().Before(end) {
				if err := get(c, p); err != nil {
					mu.Lock()
					fail = err
					mu.Unlock()
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	return float64(done.Load()) / time.Since(start).Seconds(), done.Load(), fail
}

func mean(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// se is the standard error of the mean.
func se(v []float64) float64 {
	if len(v) < 2 {
		return 0
	}
	m, s := mean(v), 0.0
	for _, x := range v {
		s += (x - m) * (x - m)
	}
	return math.Sqrt(s/float64(len(v)-1)) / math.Sqrt(float64(len(v)))
}
