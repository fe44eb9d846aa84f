package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	_ "embed"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/jitgate/jitgate/config"
	"github.com/jitgate/jitgate/gateway"
	kubegateway "github.com/jitgate/jitgate/gateway/kubernetes"
	mygateway "github.com/jitgate/jitgate/gateway/mysql"
	pggateway "github.com/jitgate/jitgate/gateway/postgres"
	"github.com/jitgate/jitgate/httpapi"
	"github.com/jitgate/jitgate/mcp"
	"github.com/jitgate/jitgate/policy"
	"github.com/jitgate/jitgate/store"
	"github.com/jitgate/jitgate/web"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
)

//go:embed dev.yaml
var devConfig []byte

type serverOpts struct {
	config   string
	dev      bool
	store    string
	httpAddr string
	logLevel string
}

func (a *app) serverCmd() *cobra.Command {
	var o serverOpts
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the jitgate server: REST API, scheduler and gateways",
		Long: `Run the jitgate server. It serves the REST API on server.http_addr, runs the scheduler that
activates, expires and revokes grants, and stops gracefully on SIGINT or SIGTERM.

With --dev it needs no file and no service: a built-in demo config, a SQLite store in a temp
dir (unless --store), and ready-to-paste commands with API tokens for the demo users.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.dev == (o.config != "") {
				return usagef("give either --config FILE or --dev")
			}
			return a.runServer(cmd.Context(), o)
		},
	}
	cmd.Flags().StringVar(&o.config, "config", "", "config file")
	cmd.Flags().BoolVar(&o.dev, "dev", false, "run the built-in demo config on a temporary SQLite store")
	cmd.Flags().StringVar(&o.store, "store", "", "store (sqlite:PATH or postgres://...), overriding the config's server.store")
	cmd.Flags().StringVar(&o.httpAddr, "http-addr", "", "API listen address, overriding the config's server.http_addr")
	cmd.Flags().StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}

// newLogger logs text to a terminal and JSON otherwise.
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("--log-level: %v", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	if isTerminal(w) {
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return slog.New(slog.NewJSONHandler(w, opts)), nil
}

func isTerminal(w io.Writer) bool {
	if u, ok := w.(interface{ Unwrap() io.Writer }); ok {
		w = u.Unwrap()
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// runtime is a wired-up engine on an open store.
type runtime struct {
	cfg    *config.Config
	set    *policy.Set
	store  *store.DB
	engine *access.Engine
	// checkpoints signs the audit chain's head (server only; its signer nil when off).
	checkpoints *checkpoints
	// close releases the store and the provisioners' connections.
	close func()
}

// openRuntime loads the config (or the dev config), opens the store and builds the engine.
// With targets, it also connects the provisioners (the server does; local CLI commands that
// only touch the store do not, so they need no target passwords).
func openRuntime(ctx context.Context, cfgPath string, dev, targets bool, storeOverride string, log *slog.Logger) (*runtime, error) {
	var (
		cfg *config.Config
		err error
	)
	if dev {
		cfg, err = config.Parse("dev.yaml (built in)", devConfig)
	} else {
		cfg, err = config.Load(cfgPath)
	}
	if err != nil {
		return nil, err
	}
	if storeOverride != "" {
		cfg.Server.Store = storeOverride
	}
	set, err := policy.Compile(cfg)
	if err != nil {
		return nil, err
	}
	st, err := store.Open(ctx, cfg.Server.Store)
	if err != nil {
		return nil, err
	}
	provs, closeProvs := map[string]jitgate.Provisioner{}, func() {}
	cps := &checkpoints{}
	if targets {
		devDir := ""
		if dev && strings.HasPrefix(cfg.Server.Store, "sqlite:") {
			devDir = filepath.Dir(strings.TrimPrefix(cfg.Server.Store, "sqlite:"))
		}
		if cps, err = serverCheckpoints(cfg, dev, devDir, log); err != nil {
			st.Close()
			return nil, err
		}
		if cps.signer != nil {
			cps.signer.Store = st
		}
		var install string
		err := st.View(ctx, func(tx jitgate.Tx) (err error) { install, err = tx.InstallationID(); return err })
		if err == nil {
			provs, closeProvs, err = provisioners(cfg, set.Resources(), dev, install)
		}
		if err != nil {
			st.Close()
			return nil, err
		}
	}
	dir := &access.Directory{Static: cfg.Directory(), Store: st}
	eng := access.New(access.Options{Store: st, Policies: set, Directory: dir, Logger: log,
		Provisioners: provs, ReconcileInterval: cfg.Server.ReconcileIntervalValue, Checkpoints: cps.source})
	return &runtime{cfg: cfg, set: set, store: st, engine: eng, checkpoints: cps, close: func() { closeProvs(); st.Close() }}, nil
}

func (a *app) runServer(ctx context.Context, o serverOpts) error {
	log, err := newLogger(a.stderr, o.logLevel)
	if err != nil {
		return err
	}
	if o.dev && o.store == "" {
		dir, err := os.MkdirTemp("", "jitgate-dev-")
		if err != nil {
			return err
		}
		o.store = "sqlite:" + filepath.Join(dir, "jitgate.db")
	}
	rt, err := openRuntime(ctx, o.config, o.dev, true, o.store, log)
	if err != nil {
		return err
	}
	defer rt.close()
	addr := rt.cfg.Server.HTTPAddr
	if o.httpAddr != "" {
		addr = o.httpAddr
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	api := httpapi.New(rt.engine, log, reg)
	var devUsers []string
	if o.dev {
		for _, u := range rt.cfg.Users {
			devUsers = append(devUsers, u.Name)
		}
	}
	var sso web.SignInMethod
	if oc := rt.cfg.OIDC; oc != nil {
		secret, err := config.LoadPassword(jitgate.Secret{User: "oidc client secret", PasswordEnv: oc.ClientSecretEnv, PasswordFile: oc.ClientSecretFile})
		if err != nil {
			ln.Close()
			return err
		}
		o, err := web.NewOIDC(ctx, web.OIDCOptions{Name: oc.Name, Issuer: oc.Issuer, ClientID: oc.ClientID, ClientSecret: secret,
			RedirectURL: oc.RedirectURL, UsernameClaim: oc.UsernameClaim, GroupsClaim: oc.GroupsClaim, Scopes: oc.Scopes,
			Engine: rt.engine, Logger: log})
		if err != nil {
			ln.Close()
			return err
		}
		sso = o
	}
	ui, err := web.New(web.Options{Engine: rt.engine, DevUsers: devUsers, SignIn: sso, Logger: log})
	if err != nil {
		ln.Close()
		return err
	}
	api.Mount(ui)
	api.Handle("/mcp", mcp.NewHTTPHandler(mcp.New(mcp.Options{Backend: api.Local(), Log: log}), rt.engine.Authenticate))
	notifier, err := newNotifier(rt, log, reg)
	if err != nil {
		ln.Close()
		return err
	}
	gws, err := startGateways(rt, o.dev, log, api, reg)
	if err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{
		Handler:           api,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	url := "http://" + ln.Addr().String()
	log.Info("jitgate server listening", "url", url, "store", store.Redact(rt.cfg.Server.Store))

	if o.dev {
		var demo demoSetup
		if res := rt.set.Resource("demo-db"); res != nil && gws.pg != nil {
			demo = setUpDemoDB(ctx, res)
			if demo.OK {
				log.Info("dev: demo database ready", "done", strings.Join(demo.Done, "; "))
			} else {
				log.Warn("dev: demo database not set up", "why", demo.Why)
			}
		}
		var myDemo demoSetup
		if res := rt.set.Resource("demo-mysql"); res != nil && gws.my != nil {
			myDemo = setUpDemoMySQL(ctx, res)
			if myDemo.OK {
				log.Info("dev: demo MySQL database ready", "done", strings.Join(myDemo.Done, "; "))
			} else {
				log.Warn("dev: demo MySQL database not set up", "why", myDemo.Why)
			}
		}
		if err := a.printDevTour(ctx, rt, url, o.store, api.Gateway(), demo, api.GatewayFor(jitgate.KindMySQL), myDemo); err != nil {
			ln.Close()
			return err
		}
	}

	// The engine and the notifier outlive the signal: during the drain they still end grants
	// (and with them sessions) and deliver what that says.
	stopping := ctx
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	if notifier != nil {
		notifier.Start(ctx)
		defer func() { cancel(); notifier.Wait() }()
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := rt.engine.Run(ctx); err != nil {
			log.Error("scheduler stopped", "err", err)
		}
	}()
	// The checkpointer is stopped after the gateway, so its last checkpoint covers the
	// sessions' ends.
	cpCtx, cpStop := context.WithCancel(context.Background())
	cpDone := make(chan struct{})
	if s := rt.checkpoints.signer; s != nil {
		go func() { defer close(cpDone); s.Run(cpCtx) }()
	} else {
		close(cpDone)
	}
	defer func() { cpStop(); <-cpDone }()
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	select {
	case err := <-serveErr:
		gws.Close()
		cancel()
		wg.Wait()
		return fmt.Errorf("serve: %w", err)
	case <-stopping.Done():
	}
	// A second signal ends the drain at once.
	again := make(chan os.Signal, 1)
	signal.Notify(again, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(again)
	log.Info("shutting down: finishing in-flight requests")
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	err = srv.Shutdown(sctx)
	gws.Drain(log, rt.cfg.Server.DrainTimeoutValue, again)
	gws.Close() // ends what the drain left and flushes the statement recorders
	cancel()
	wg.Wait()
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("stopped")
	return nil
}

// printDevTour mints a token for each demo user and prints commands to paste.
func (a *app) printDevTour(ctx context.Context, rt *runtime, url, storePath string, gw *httpapi.GatewayInfo, demo demoSetup,
	myGW *httpapi.GatewayInfo, myDemo demoSetup) error {
	local := jitgate.NewOperatorContext(ctx, "dev-server")
	tokens := map[string]string{}
	for _, u := range []string{"alice", "bob", "carol", "triage-bot"} {
		tok, _, err := rt.engine.CreateToken(local, u, 24*time.Hour, "jitgate server --dev")
		if err != nil {
			return err
		}
		tokens[u] = tok
	}
	w := a.stdout
	fmt.Fprintf(w, `
jitgate dev server on %s (store %s)
Demo users: alice (engineering, requests access), bob (sre, approves), carol (admin);
the AI agent triage-bot (alice answers for it and approves its requests).
Web UI: open %s and sign in as any of them with a click (--dev only).
No jitgate on your PATH? Run: go install ./cmd/jitgate
`, url, storePath, url)
	if gw != nil {
		addr := rt.set.Resource("demo-db").Address
		switch {
		case !demo.OK:
			fmt.Fprintf(w, "\nThe demo database is NOT set up, so sessions through the gateway will fail: %s.\nTo set it up, run %s\n", demo.Why, demo.Fix)
		case len(demo.Done) > 0:
			fmt.Fprintf(w, "\nDemo database on %s: %s.\n", addr, strings.Join(demo.Done, "; "))
		}
		fmt.Fprintf(w, "PostgreSQL gateway (TLS, self-signed certificate) on %s:%s, in front of %s.\n", gw.Host, gw.Port, addr)
	}
	myOK := myGW != nil && myDemo.OK
	if myGW != nil {
		addr := rt.set.Resource("demo-mysql").Address
		if myOK {
			fmt.Fprintf(w, "Demo MySQL database on %s: %s.\n", addr, strings.Join(myDemo.Done, "; "))
			fmt.Fprintf(w, "MySQL gateway (TLS, self-signed certificate) on %s:%s, in front of %s.\n", myGW.Host, myGW.Port, addr)
		} else {
			fmt.Fprintf(w, "No MySQL demo (optional): %s.\nTo try the MySQL gateway on %s:%s, run %s\n", myDemo.Why, myGW.Host, myGW.Port, myDemo.Fix)
		}
	}
	if cp := rt.checkpoints; cp != nil && cp.signer != nil {
		fmt.Fprintf(w, "Audit checkpoints: signed with %s into %s every minute and at shutdown.\n", cp.keyFile, cp.witnessFile)
	}
	fmt.Fprintf(w, `
In another terminal:

  export JITGATE_SERVER=%s
  alias as-alice='JITGATE_TOKEN=%s jitgate'
  alias as-bob='JITGATE_TOKEN=%s jitgate'
  alias as-carol='JITGATE_TOKEN=%s jitgate'
  alias as-bot='JITGATE_TOKEN=%s jitgate'

  as-alice resources                                       # what alice may request
  as-alice request demo-db --role read --for 10m --reason "check an order"   # auto-approved
`, url, tokens["alice"], tokens["bob"], tokens["carol"], tokens["triage-bot"])
	if gw != nil {
		fmt.Fprint(w, `  as-alice connect demo-db -- -c "SELECT * FROM orders"   # psql through the gateway
`)
	}
	fmt.Fprint(w, `  as-alice request demo-db --role write --for 1h --reason "fix order 42"     # waits for bob
  as-bob requests --to-review
  as-bob approve 2 --comment "ok, go ahead"
`)
	if gw != nil {
		fmt.Fprint(w, `  as-alice connect demo-db --role write -- -c "UPDATE orders SET status = 'paid' WHERE id = 42"
`)
	}
	fmt.Fprint(w, `  as-alice grants --active
  as-alice extend 2 --by 30m --reason "needs longer"
  as-bob revoke 1 --reason "done"
`)
	agentRequest := 4 // after two requests and an extension
	if myOK {
		fmt.Fprint(w, `  as-alice request demo-mysql --role read --for 10m --reason "same on MariaDB"   # auto-approved
  as-alice connect demo-mysql -- -e "SELECT * FROM orders"   # the mariadb client through the MySQL gateway
`)
		agentRequest++
	}
	fmt.Fprintf(w, `  as-bot request demo-db --role read --for 10m --reason "INC-7: orders stuck"   # an agent asks; alice decides
  as-alice approve %d
  as-bot grants --active
`, agentRequest)
	if gw != nil {
		fmt.Fprint(w, `  as-alice request demo-db --role read --for 20s --reason "watch it end"
  as-alice connect demo-db --role read -- -c "SELECT pg_sleep(60)"   # cut off at the grant's end
  as-carol sessions                                        # every session and how it ended
`)
	}
	fmt.Fprintf(w, `  as-carol audit --tail 10                                 # every step (and statement), newest last
  as-carol audit --verify

AI agents: an MCP client (an IDE, a desktop assistant) runs triage-bot's tools with
  JITGATE_SERVER=%s JITGATE_TOKEN=<the as-bot token above> jitgate mcp
or speaks streamable HTTP to %s/mcp with "Authorization: Bearer <that token>".

Tokens expire in 24h. Stop the server with Ctrl-C.

`, url, url)
	return nil
}

// gateways are the protocol gateways the server runs (nil where the config has none).
type gateways struct {
	pg   *pggateway.Gateway
	my   *mygateway.Gateway
	kube *kubegateway.Gateway
}

// drainable is what shutting down does with each gateway.
type drainable interface {
	Sessions() int
	Drain(ctx context.Context) int
	Close() error
}

// all returns the gateways that run.
func (g *gateways) all() []drainable {
	var out []drainable
	if g.pg != nil {
		out = append(out, g.pg)
	}
	if g.my != nil {
		out = append(out, g.my)
	}
	if g.kube != nil {
		out = append(out, g.kube)
	}
	return out
}

// Sessions returns the number of live sessions of every gateway.
func (g *gateways) Sessions() int {
	n := 0
	for _, gw := range g.all() {
		n += gw.Sessions()
	}
	return n
}

// Drain closes the gateways' listeners and waits until their sessions have ended on their
// own or with their grants, for at most timeout (negative: no cap) and until a signal on
// again; the engine keeps ending grants meanwhile. Close ends what is left.
func (g *gateways) Drain(log *slog.Logger, timeout time.Duration, again <-chan os.Signal) {
	n := g.Sessions()
	if n == 0 || timeout == 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	limit := "until each ends or its grant does"
	if timeout > 0 {
		limit = "for at most " + jitgate.FormatDuration(timeout) + " (server.drain_timeout)"
	}
	log.Info("draining: the gateways accept no new connections (other replicas take them); live sessions continue "+limit+
		"; signal again to end them now", "sessions", n)
	go func() {
		select {
		case <-again:
			log.Warn("second signal: ending the live gateway sessions now")
			cancel()
		case <-ctx.Done():
		}
	}()
	var (
		wg   sync.WaitGroup
		rest atomic.Int64
	)
	for _, gw := range g.all() {
		wg.Go(func() { rest.Add(int64(gw.Drain(ctx))) })
	}
	wg.Wait()
	if n := rest.Load(); n > 0 {
		log.Warn("drain over: ending the sessions still live", "sessions", n)
	} else {
		log.Info("drained: every gateway session has ended")
	}
}

// Close ends every session of each gateway and flushes their statement recorders.
func (g *gateways) Close() {
	for _, gw := range g.all() {
		gw.Close()
	}
}

// gatewayTLS returns the TLS config of a gateway's listener: its files, a fresh self-signed
// pair for --dev, or nil with insecure_plaintext.
func gatewayTLS(rt *runtime, path string, l *config.Listener, dev bool) (*tls.Config, error) {
	switch {
	case l.TLSCert != "":
		return gateway.LoadTLS(l.TLSCert, l.TLSKey)
	case dev:
		return gateway.SelfSigned("127.0.0.1", "localhost")
	case !l.InsecurePlaintext:
		return nil, fmt.Errorf("%s: %s needs tls_cert and tls_key (or insecure_plaintext: true for local experiments)", rt.cfg.File, path)
	}
	return nil, nil
}

// gatewayListen listens on a gateway's address; --dev takes a free port if it is taken, so
// the demo starts on any machine.
func gatewayListen(addr string, dev bool) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil && dev {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		return nil, fmt.Errorf("gateway: listen on %s: %w", addr, err)
	}
	return ln, nil
}

// protocolGateway is what the server does with any protocol's gateway.
type protocolGateway interface {
	prometheus.Collector
	Serve(ln net.Listener) error
	Ready() error
}

// startGateways starts the protocol gateways the config has.
func startGateways(rt *runtime, dev bool, log *slog.Logger, api *httpapi.Server, reg *prometheus.Registry) (*gateways, error) {
	gws := &gateways{}
	gs := rt.engine.GatewayService()
	limits := func(l *config.Listener) gateway.Limits {
		return gateway.Limits{MaxUnauthenticated: l.MaxUnauthenticated, MaxUnauthenticatedPerSource: l.MaxUnauthenticatedPerSource}
	}
	kubeUpstreams, err := kubernetesUpstreams(rt.set.Resources())
	if err != nil {
		return nil, err
	}
	for _, p := range []struct {
		kind, name string
		l          *config.Listener
		start      func(l *config.Listener, tlsCfg *tls.Config) protocolGateway
	}{
		{jitgate.KindPostgres, "PostgreSQL", rt.cfg.Gateway.Postgres, func(l *config.Listener, tlsCfg *tls.Config) protocolGateway {
			gws.pg = pggateway.New(pggateway.Options{Engine: gs, Upstream: pggateway.ConfigUpstream(rt.set, gs.ProvisionedLogin), TLS: tlsCfg,
				InsecurePlaintext: l.InsecurePlaintext, ReuseUpstream: l.ReuseUpstreamValue, RecorderFlush: l.AuditFlushValue,
				Relay: l.Relay, Loops: l.Loops, Logger: log, Limits: limits(l)})
			return gws.pg
		}},
		{jitgate.KindMySQL, "MySQL", rt.cfg.Gateway.MySQL, func(l *config.Listener, tlsCfg *tls.Config) protocolGateway {
			gws.my = mygateway.New(mygateway.Options{Engine: gs, Upstream: mygateway.ConfigUpstream(rt.set, gs.ProvisionedLogin), TLS: tlsCfg,
				InsecurePlaintext: l.InsecurePlaintext, ReuseUpstream: l.ReuseUpstreamValue, RecorderFlush: l.AuditFlushValue,
				Relay: l.Relay, Loops: l.Loops, Logger: log, Limits: limits(l)})
			return gws.my
		}},
		{jitgate.KindKubernetes, "Kubernetes", rt.cfg.Gateway.Kubernetes, func(l *config.Listener, tlsCfg *tls.Config) protocolGateway {
			gws.kube = kubegateway.New(kubegateway.Options{Engine: gs, Upstreams: kubeUpstreams, TLS: tlsCfg,
				RecorderFlush: l.AuditFlushValue, Logger: log, Limits: limits(l)})
			return gws.kube
		}},
	} {
		if p.l == nil {
			continue
		}
		tlsCfg, err := gatewayTLS(rt, "gateway."+p.kind, p.l, dev)
		if err != nil {
			gws.Close()
			return nil, err
		}
		ln, err := gatewayListen(p.l.Addr, dev)
		if err != nil {
			gws.Close()
			return nil, err
		}
		gw := p.start(p.l, tlsCfg)
		reg.MustRegister(gw)
		api.AddReadyCheck(p.kind+" gateway", gw.Ready)
		name := p.name
		go func() {
			if err := gw.Serve(ln); err != nil {
				log.Error(name+" gateway stopped; /readyz now fails", "err", err)
			}
		}()
		host, port, _ := net.SplitHostPort(ln.Addr().String())
		sslmode := "require"
		if tlsCfg == nil {
			sslmode = "disable"
		}
		info := httpapi.GatewayInfo{Host: host, Port: port, SSLMode: sslmode}
		if der, ok := selfSigned(tlsCfg); ok {
			// A self-signed certificate (--dev's, or one the config names): clients such as
			// kubectl are told what to trust.
			info.CAData = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
		}
		api.SetGatewayFor(p.kind, info)
		log.Info(name+" gateway listening", "addr", ln.Addr().String(), "tls", tlsCfg != nil)
	}
	return gws, nil
}

// selfSigned returns the certificate a gateway serves if it signed itself.
func selfSigned(cfg *tls.Config) ([]byte, bool) {
	if cfg == nil || len(cfg.Certificates) == 0 || len(cfg.Certificates[0].Certificate) == 0 {
		return nil, false
	}
	der := cfg.Certificates[0].Certificate[0]
	c, err := x509.ParseCertificate(der)
	if err != nil || c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) != nil {
		return nil, false
	}
	return der, true
}
