package gateway

import (
	"context"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/prometheus/client_golang/prometheus"
)

// The relays a gateway's `relay` option names.
const (
	// RelayLoop relays established sessions on the process's epoll event loops (Loops), the
	// default on Linux.
	RelayLoop = "loop"
	// RelayGoroutines relays each session on a goroutine per direction (the only way on
	// other systems).
	RelayGoroutines = "goroutines"
)

// CoreOptions configures what every protocol gateway is made of.
type CoreOptions struct {
	// Protocol names the gateway ("postgres", "mysql") in metrics (a constant label) and logs.
	Protocol string
	Engine   Engine
	// Clock defaults to the system clock; Logger to discarding.
	Clock  jitgate.Clock
	Logger *slog.Logger
	// SweepEvery: see RegistryOptions (default 1s).
	SweepEvery time.Duration
	// Recorder settings; see NewRecorder (zero: the defaults).
	RecorderBuffer int
	RecorderBatch  int
	RecorderFlush  time.Duration
	// Limits and Refuse: see EntryOptions.
	Limits Limits
	Refuse func(c net.Conn, reason string)
	// Relay is RelayLoop (the default) or RelayGoroutines; Loops how many event loops to start
	// if none run yet (zero: one per two CPUs, 1-8).
	Relay string
	Loops int
}

// Core is what every protocol gateway is made of: the front door (Entry), the live sessions
// and their deadlines (Registry), the statement recorder, the pool of kept upstream
// connections (of the protocol's type U), the event loops, and the metrics. A protocol adds
// its wire protocol.
type Core[U any] struct {
	Entry    *Entry
	Registry *Registry
	Recorder *Recorder
	Pool     *Pool[U]
	// Loops is nil where sessions relay on goroutines.
	Loops *Loops
	// Conns counts the protocol's connection goroutines and the side work of kills: Close
	// waits for them.
	Conns sync.WaitGroup
	// Reused counts sessions that took a kept upstream connection; Looped those an event
	// loop relayed.
	Reused, Looped atomic.Int64

	metrics   *Metrics
	unsub     func()
	closeOnce sync.Once
}

// LoopCount is how many event loops a gateway's `loops` option asks for: n, or for zero one
// per two CPUs (at least one, at most 8). A busy loop's thread keeps one CPU busy, and the
// kernel's work for its sends (each send on a socket runs the receiver's TCP processing and
// wakes it) needs about as much again.
func LoopCount(n int) int {
	if n > 0 {
		return n
	}
	return DefaultLoops(runtime.NumCPU())
}

// DefaultLoops is the number of event loops for a host with cpus CPUs: one per two CPUs, at
// least one, at most 8.
func DefaultLoops(cpus int) int { return max(1, min(cpus/2, 8)) }

// NewCore returns a gateway's core, its pool keeping upstream connections for up to
// reuseUpstream (zero: no reuse; conn returns one's socket). It subscribes to the engine's
// grant events at once, so a grant that ends while a session starts still ends the session.
func NewCore[U any](o CoreOptions, reuseUpstream time.Duration, conn func(U) net.Conn) *Core[U] {
	if o.Clock == nil {
		o.Clock = jitgate.SystemClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Core[U]{Pool: NewPool(reuseUpstream, conn)}
	c.Registry = NewRegistry(RegistryOptions{Grants: o.Engine.GrantByID, Parked: c.Pool, SweepEvery: o.SweepEvery,
		Clock: o.Clock, Logger: o.Logger})
	c.Recorder = NewRecorder(o.Engine, o.Logger, o.RecorderBuffer, o.RecorderBatch, o.RecorderFlush)
	c.Entry = NewEntry(EntryOptions{Limits: o.Limits, Protocol: o.Protocol, Refuse: o.Refuse,
		Audit: o.Engine.RecordAudit, Clock: o.Clock, Logger: o.Logger})
	if o.Relay != RelayGoroutines {
		loops, err := StartLoops(LoopCount(o.Loops))
		if err != nil {
			o.Logger.Warn("gateway: relaying on goroutines", "protocol", o.Protocol, "err", err)
		}
		c.Loops = loops
	}
	c.metrics = NewMetrics(o.Protocol, c.Registry.Len, c.Recorder, c.Pool.Size, c.Reused.Load, c.Entry)
	c.unsub = o.Engine.Subscribe(c.Registry.OnEvent)
	return c
}

// Go runs f on a goroutine of its own that Close waits for: side work that must not block
// its caller, such as stopping a killed session's query upstream (a kill runs inside the
// engine's event delivery, which a revoke's API call waits for).
func (c *Core[U]) Go(f func()) {
	c.Conns.Add(1)
	go func() {
		defer c.Conns.Done()
		f()
	}()
}

// Drain is the first half of a graceful shutdown: it stops accepting connections (a load
// balancer then sends new ones to another instance), closes the parked upstream connections,
// and waits until every connection has ended on its own (its client left, or its grant ended
// or was revoked, which the registry still enforces: this instance's events, other instances'
// change notices and the sweep keep working) or ctx is done. It returns how many sessions are
// still live. Close afterwards ends those.
func (c *Core[U]) Drain(ctx context.Context) int {
	c.Entry.Close()
	c.Pool.Close()
	done := make(chan struct{})
	go func() {
		c.Entry.Wait()
		c.Conns.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
	return c.Registry.Len()
}

// Close stops accepting connections, ends every session ("jitgate is shutting down"), waits
// for the connection goroutines, and flushes the recorder. Calls after the first return nil.
func (c *Core[U]) Close() error {
	first := false
	c.closeOnce.Do(func() { first = true })
	if !first {
		return nil
	}
	c.Pool.Close()
	c.Entry.Close()
	c.Registry.Shutdown("jitgate is shutting down")
	c.Entry.Wait()
	c.Conns.Wait()
	c.Registry.Close()
	c.unsub()
	return c.Recorder.Close()
}

// Describe implements prometheus.Collector (see Metrics).
func (c *Core[U]) Describe(ch chan<- *prometheus.Desc) { c.metrics.Describe(ch) }

// Collect implements prometheus.Collector.
func (c *Core[U]) Collect(ch chan<- prometheus.Metric) { c.metrics.Collect(ch) }
