package tlsinspect

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
	"github.com/sluicegw/sluice/tlsinspect/mitm"
	"golang.org/x/sys/unix"
)

// Pins answers whether the resolver handed addr to this agent for name,
// and the binding is still valid.
type Pins interface {
	Pinned(name string, addr netip.Addr) bool
}

// Defaults for Config fields left zero.
const (
	DefaultHelloTimeout = 5 * time.Second
	// DefaultMaxHello is crypto/tls's own bound on a handshake message
	// (64 KiB) plus room for the record headers of a hello split into
	// many records.
	DefaultMaxHello    = 64*1024 + 2048
	DefaultDialTimeout = 5 * time.Second
	// DefaultMaxPending bounds connections still in their hello or request
	// head, so slow clients cannot exhaust the proxy.
	DefaultMaxPending = 1024
	// DefaultMaxConns bounds connections in total, fewer when the
	// descriptor limit cannot hold them (see maxConnsFor).
	DefaultMaxConns = 16384
	// DefaultIdleTimeout closes connections silent both ways for an hour.
	DefaultIdleTimeout = time.Hour
)

// keepAlive is how both sides of a proxied connection find out that the
// other end is gone: a connection idle for a minute is probed, and dropped
// when the probes go unanswered (the kernel's interval and count, by
// default 9 probes 75 s apart; leaving them unset saves two system calls
// per socket). Listeners made by Listen give it to the connections they
// accept without any system call per connection; the TLS proxy's sockets
// to the destinations get it once they have lived keepAliveAfter.
//
// A constant in effect: a value, not a package variable anyone could
// change under running connections.
func keepAlive() net.KeepAliveConfig {
	return net.KeepAliveConfig{Enable: true, Idle: time.Minute, Interval: -1, Count: -1}
}

// Config configures a Proxy.
type Config struct {
	// Agent names the agent in decisions.
	Agent string
	// Pins is the resolver's name→address table for this agent.
	Pins Pins
	// Internal are prefixes no connection may be sent to: the gateway's
	// own addresses and the agents' subnets.
	Internal []netip.Prefix
	// Journal receives every decision.
	Journal journal.Sink
	// HelloTimeout bounds the time to read a ClientHello or request head.
	HelloTimeout time.Duration
	// MaxHello bounds the bytes read before a decision.
	MaxHello int
	// DialTimeout bounds the connection to the destination.
	DialTimeout time.Duration
	// MaxPending and MaxConns bound connections awaiting a decision and in total.
	MaxPending, MaxConns int64
	// IdleTimeout closes a spliced connection that moved no data either
	// way for this long; DefaultIdleTimeout when zero, none when negative.
	IdleTimeout time.Duration
	// Interceptor takes the connections whose SNI names a host with git
	// or http rules, after the same checks as any other; without one they
	// are refused.
	Interceptor *mitm.Interceptor
	// Log reports errors that are not decisions.
	Log *slog.Logger
	// Report is report mode: a connection (or a plain HTTP request)
	// refused for what the agent asked to reach is let through to its
	// original destination, spliced as an allowed one is, and journaled
	// as a would-be refusal for the reason that would have refused it: a
	// name not allowed (or not on this port), an address not pinned to
	// the name, and a hello the proxy cannot name a host by (no SNI, an
	// IP literal or an invalid SNI, ECH, not TLS). A policy change cuts
	// no connection; each it would have cut is journaled as a would-be
	// revocation. What stays refused: the gateway's own and the agents'
	// addresses, the limits (hello size and time, connections), a
	// missing original destination, a failed dial, the plain HTTP
	// path's malformed or tunnelling requests (no Host, conflicting
	// Hosts, CONNECT, h2c: the proxy only forwards requests it rewrites),
	// and hosts with git or http rules, whose TLS is still terminated
	// and whose requests are still checked (only an address not pinned
	// passes there; on plain HTTP they stay refused).
	Report bool
}

// Proxy is the transparent proxy for one agent. It is safe for concurrent use.
type Proxy struct {
	cfg    Config
	policy atomic.Pointer[policy.Policy] // the policy in force
	dialer net.Dialer

	pending, conns atomic.Int64
	entered        atomic.Uint64 // connections ever counted in conns
	// acceptPauses counts the pauses in accepting for want of
	// descriptors or memory (the TLS loops' and the HTTP listeners').
	acceptPauses atomic.Int64

	loopsOnce sync.Once
	loops     []*loop
	loopsErr  error
	next      atomic.Uint32

	mu        sync.Mutex
	listeners []net.Listener
	tlsFds    []int // listening sockets the loops accept from

	// loopbackForTests lets the package's own tests relay to loopback
	// listeners; nothing else sets it. dstForTests, when set, stands for
	// the kernel's record of a TLS connection's original destination,
	// which only a redirect makes.
	loopbackForTests bool
	dstForTests      func(fd int) (netip.AddrPort, error)
	live             map[*net.TCPConn]*liveHTTP
	permits          func(netip.Addr, bool) bool // SetPolicy's, for decisions it overtook
	failed           chan error                  // an event loop that cannot go on (see Run)
	wg               sync.WaitGroup
	closed           bool
}

// New returns a proxy enforcing p. It does nothing until Serve.
func New(cfg Config, p *policy.Policy) (*Proxy, error) {
	if cfg.Pins == nil || cfg.Journal == nil {
		return nil, errors.New("tlsinspect: Pins and Journal are required")
	}
	cfg.HelloTimeout = cmp.Or(cfg.HelloTimeout, DefaultHelloTimeout)
	cfg.MaxHello = cmp.Or(cfg.MaxHello, DefaultMaxHello)
	cfg.DialTimeout = cmp.Or(cfg.DialTimeout, DefaultDialTimeout)
	cfg.MaxPending = cmp.Or(cfg.MaxPending, DefaultMaxPending)
	if cfg.MaxConns == 0 {
		var lim unix.Rlimit
		if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
			return nil, fmt.Errorf("tlsinspect: descriptor limit: %w", err)
		}
		cfg.MaxConns = maxConnsFor(lim.Cur)
	}
	cfg.IdleTimeout = cmp.Or(cfg.IdleTimeout, DefaultIdleTimeout)
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	px := &Proxy{cfg: cfg, live: map[*net.TCPConn]*liveHTTP{}, failed: make(chan error, 1)}
	px.policy.Store(p)
	px.dialer = net.Dialer{Timeout: cfg.DialTimeout, KeepAliveConfig: keepAlive(), Control: px.checkDial}
	return px, nil
}

// maxConnsFor is DefaultMaxConns, or as many connections as limit open
// descriptors hold: two sockets each, beside a reserve for everything
// else (the resolver, netlink, the pipes of bulk flows, the HTTP path's
// connections). A proxy out of descriptors cannot accept, and new
// connections would wait unanswered in the kernel's queue; under this
// bound, one too many is accepted and refused at once with a reset.
func maxConnsFor(limit uint64) int64 {
	if limit >= 4*DefaultMaxConns {
		return DefaultMaxConns
	}
	reserve := min(max(limit/8, 64), 1024)
	return max(int64(limit)-int64(reserve), 2) / 2
}

// eventLoops starts the proxy's event loops on first use, one per
// processor Go runs on.
func (px *Proxy) eventLoops() ([]*loop, error) {
	px.loopsOnce.Do(func() {
		for range runtime.GOMAXPROCS(0) {
			l, err := newLoop(px)
			if err != nil {
				px.loopsErr = err
				break
			}
			px.loops = append(px.loops, l)
		}
	})
	return px.loops, px.loopsErr
}

// anyLoop picks a loop for a connection handed over from a goroutine.
func (px *Proxy) anyLoop() (*loop, error) {
	loops, err := px.eventLoops()
	if len(loops) == 0 {
		return nil, cmp.Or(err, net.ErrClosed)
	}
	return loops[int(px.next.Add(1))%len(loops)], nil
}

// checkDial refuses, at the last moment, any destination inside the
// gateway or the agents' networks, whatever led to it.
func (px *Proxy) checkDial(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return err
	}
	if px.internal(ap.Addr()) {
		return fmt.Errorf("tlsinspect: refusing to dial internal address %s", ap)
	}
	return nil
}

// dstOf is where the agent meant the connection on fd to go.
func (px *Proxy) dstOf(fd int, listenPort uint16) (netip.AddrPort, error) {
	if px.dstForTests != nil {
		return px.dstForTests(fd)
	}
	return originalDst(fd, listenPort)
}

func (px *Proxy) internal(a netip.Addr) bool {
	a = a.Unmap()
	if v4, ok := policy.EmbeddedIPv4(a); ok && px.internal(v4) {
		return true // a NAT64 or 6to4 form of an internal IPv4 address
	}
	return policy.InPrefixes(px.cfg.Internal, a) || (a.IsLoopback() && !px.loopbackForTests) || a.IsUnspecified() || a.IsMulticast()
}

// ServeTLS accepts redirected TLS connections on ln until Close. The
// proxy's event loops take the listening socket over: ln itself is
// closed.
func (px *Proxy) ServeTLS(ln *net.TCPListener) error {
	fd, err := dupFd(ln)
	ln.Close() // the duplicate holds the socket open
	if err != nil {
		return fmt.Errorf("tlsinspect: taking the listener: %w", err)
	}
	px.mu.Lock()
	defer px.mu.Unlock()
	if px.closed {
		unix.Close(fd)
		return net.ErrClosed
	}
	px.tlsFds = append(px.tlsFds, fd)
	loops, err := px.eventLoops()
	if err != nil {
		return err
	}
	return loops[0].listen(fd)
}

// ServeHTTP accepts redirected plain HTTP connections on ln until Close.
func (px *Proxy) ServeHTTP(ln *net.TCPListener) {
	px.serve(ln, func(c *net.TCPConn) { px.handle(c, journal.LayerHTTP, px.inspectHTTP) })
}

// inspector decides on one connection to dst and forwards or refuses it.
// donePending ends the connection's waiting phase once a decision is made.
type inspector func(c *net.TCPConn, dst netip.AddrPort, ev journal.Event, donePending func())

// handle does what TLS and HTTP have in common: the limits, the original
// destination, the refusal of the gateway's own addresses and the pass of
// cidr entries. The rest is inspect's.
func (px *Proxy) handle(c *net.TCPConn, layer journal.Layer, inspect inspector) {
	ev := journal.Event{Agent: px.cfg.Agent, Layer: layer, Proto: "tcp"}
	if reason := px.enter(); reason != "" {
		px.refuse(c, ev, reason)
		return
	}
	defer px.conns.Add(-1)
	var once sync.Once
	donePending := func() { once.Do(func() { px.pending.Add(-1) }) }
	defer donePending()
	dst, err := OriginalDst(c)
	if err != nil {
		px.refuse(c, ev, journal.ReasonNoOrigDst)
		return
	}
	ev.Dst = dst
	pass, reason := px.route(dst, &ev)
	switch {
	case reason != "":
		px.refuse(c, ev, reason)
	case pass:
		donePending()
		px.handOver(c, dst, ev)
	default:
		inspect(c, dst, ev, donePending)
	}
}

// route is the part of a decision that needs only the destination: the
// gateway's own addresses are refused, and a destination that a cidr
// entry of the policy allows on its port passes with no name to check,
// by the policy's own choice.
func (px *Proxy) route(dst netip.AddrPort, ev *journal.Event) (pass bool, reason journal.Reason) {
	if px.internal(dst.Addr()) {
		return false, journal.ReasonGatewayDst
	}
	p := px.policy.Load()
	d := p.MatchAddr(dst.Addr(), dst.Port())
	if !d.Allow {
		return false, ""
	}
	ev.Rule, ev.PolicyHash = d.Rule(), p.Hash()
	return true, ""
}

// handOver gives a connection decided on a goroutine to an event loop,
// which dials dst and relays.
func (px *Proxy) handOver(c *net.TCPConn, dst netip.AddrPort, ev journal.Event) {
	l, err := px.anyLoop()
	if err != nil {
		ev.Detail = err.Error()
		px.refuse(c, ev, journal.ReasonDialFailed)
		return
	}
	fd, err := dupFd(c)
	if err != nil {
		ev.Detail = err.Error()
		px.refuse(c, ev, journal.ReasonDialFailed)
		return
	}
	c.Close()
	px.conns.Add(1) // the loop's now; it releases it
	if !l.do(func() { l.adopt(fd, dst, nil, ev) }) {
		px.conns.Add(-1)
		resetFd(fd)
	}
}

func (px *Proxy) serve(ln *net.TCPListener, handle func(*net.TCPConn)) {
	px.mu.Lock()
	if px.closed {
		px.mu.Unlock()
		ln.Close()
		return
	}
	px.listeners = append(px.listeners, ln)
	px.wg.Add(1)
	px.mu.Unlock()
	go func() {
		defer px.wg.Done()
		var warned time.Time
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				if time.Since(warned) >= time.Second { // as the event loops: at most once a second
					warned = time.Now()
					px.cfg.Log.Warn("proxy accept", "err", err)
				}
				px.acceptPauses.Add(1)
				time.Sleep(10 * time.Millisecond) // out of descriptors: let some close
				continue
			}
			if !px.track(c) {
				continue
			}
			go func() {
				defer px.untrack(c)
				handle(c)
			}()
		}
	}()
}

func (px *Proxy) track(c *net.TCPConn) bool {
	px.mu.Lock()
	defer px.mu.Unlock()
	if px.closed {
		reset(c)
		return false
	}
	px.live[c] = &liveHTTP{}
	px.wg.Add(1)
	return true
}

func (px *Proxy) untrack(c *net.TCPConn) {
	px.mu.Lock()
	delete(px.live, c)
	px.mu.Unlock()
	px.wg.Done()
}

// Run returns when ctx ends, or at once, with the error, when an event
// loop hits an impossible state (an epoll instance that no longer polls):
// the proxy is then unfit to run, and the gateway must end (fail closed).
// The proxy serves from ServeTLS and ServeHTTP on; Close stops it.
func (px *Proxy) Run(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-px.failed:
		return err
	}
}

// Close stops accepting, cuts every live connection and waits for their
// handlers to finish.
func (px *Proxy) Close() {
	px.mu.Lock()
	px.closed = true
	for _, ln := range px.listeners {
		ln.Close()
	}
	for c := range px.live {
		c.Close()
	}
	px.mu.Unlock()
	px.wg.Wait()               // no goroutine hands a connection over any more
	px.loopsOnce.Do(func() {}) // and none starts a loop now
	for _, l := range px.loops {
		l.stop()
	}
	px.mu.Lock()
	for _, fd := range px.tlsFds {
		unix.Close(fd)
	}
	px.tlsFds = nil
	px.mu.Unlock()
}

// enter counts a new connection against the limits, or says which one
// it would pass. A connection entered is pending until its decision.
func (px *Proxy) enter() (reason journal.Reason) {
	if px.conns.Add(1) > px.cfg.MaxConns {
		px.conns.Add(-1)
		return journal.ReasonTooManyConns
	}
	if px.pending.Add(1) > px.cfg.MaxPending {
		px.pending.Add(-1)
		px.conns.Add(-1)
		return journal.ReasonTooManyPending
	}
	px.entered.Add(1)
	return ""
}

// Conns says how many connections the proxy holds now (pending a
// decision, or relayed) and how many it has taken in all.
func (px *Proxy) Conns() (open int64, total uint64) {
	return px.conns.Load(), px.entered.Load()
}

// decideName checks a Host of the plain HTTP path as decideEntry does. A
// host with rules is refused there: its requests are checked only inside
// TLS, by the interceptor.
func (px *Proxy) decideName(raw string, dst netip.AddrPort, ev *journal.Event) (journal.Reason, *policy.Entry) {
	reason, e := px.decideEntry(raw, dst, ev)
	if (reason == "" || px.reportable(reason, e)) && e != nil && e.Inspected() {
		ev.Detail = "plain HTTP to a host with git or http rules; use https"
		return journal.ReasonHTTPNotAllowed, e
	}
	return reason, e
}

// decideEntry checks a requested name (SNI or Host) for a connection to
// dst: allowed on that port by the policy, and dst pinned to it. It
// returns the refusal reason, "" when the name may pass, and the entry
// the name matched (nil: none).
func (px *Proxy) decideEntry(raw string, dst netip.AddrPort, ev *journal.Event) (journal.Reason, *policy.Entry) {
	p := px.policy.Load()
	ev.PolicyHash = p.Hash()
	if raw == "" {
		return journal.ReasonNoSNI, nil
	}
	name, err := policy.CanonicalName(raw)
	if err != nil {
		// Recorded as sent (the journal bounds it, and whoever shows it
		// escapes it): a reviewer sees what was asked for.
		ev.Name = raw
		if _, perr := netip.ParseAddr(raw); perr == nil {
			return journal.ReasonIPLiteralSNI, nil
		}
		return journal.ReasonInvalidSNI, nil
	}
	ev.Name = name
	d := p.MatchNamePort(name, dst.Port())
	ev.Rule = d.Rule()
	var reason journal.Reason
	switch {
	case d.Reason == policy.ReasonNoPolicy:
		// No policy in force is the gateway's fault, not the agent's: it
		// stays refused in report mode too (as the resolver does).
		reason = journal.Reason(d.Reason)
	case d.Reason == policy.ReasonNameNotAllowed:
		reason = journal.ReasonSNINotAllowed
	case !d.Allow:
		reason = journal.Reason(d.Reason) // every policy word is a journal one (TestPolicyReasons)
	case !px.cfg.Pins.Pinned(name, dst.Addr()):
		return journal.ReasonNotPinned, d.Entry
	default:
		return "", d.Entry
	}
	if px.cfg.Report && !px.cfg.Pins.Pinned(name, dst.Addr()) {
		// Report mode: what an entry for the name would not be enough for.
		ev.Detail = "nor is the address one the resolver handed out for the name (" + string(journal.ReasonNotPinned) + ")"
	}
	return reason, d.Entry
}

// reportable says whether report mode lets through a connection or
// request that would be refused for reason, its name matching e (nil:
// none): see Config.Report.
func (px *Proxy) reportable(reason journal.Reason, e *policy.Entry) bool {
	if !px.cfg.Report {
		return false
	}
	if e != nil && e.Inspected() {
		// A host with rules keeps them: its TLS is terminated and each
		// request checked on the entry's ports, whatever the address.
		return reason == journal.ReasonNotPinned
	}
	switch reason {
	case journal.ReasonSNINotAllowed, journal.ReasonHostNotAllowed, journal.ReasonPortNotAllowed, journal.ReasonNotPinned,
		journal.ReasonNoSNI, journal.ReasonIPLiteralSNI, journal.ReasonInvalidSNI, journal.ReasonECH, journal.ReasonNotTLS:
		return true
	}
	return false
}

// wouldRefuse journals ev as a would-be refusal for reason: report mode
// let it through.
func (px *Proxy) wouldRefuse(ev journal.Event, reason journal.Reason) {
	ev.Kind = journal.WouldRefuse
	px.record(ev, reason)
}

// allowed journals a connection (or request) let through.
func (px *Proxy) allowed(ev journal.Event) {
	ev.Kind = journal.Allowed
	px.record(ev, journal.ReasonAllowed)
}

// record journals a decision: a refusal's reason, or allowed's.
func (px *Proxy) record(ev journal.Event, reason journal.Reason) {
	ev.Reason, ev.Time = reason, time.Now()
	if ev.PolicyHash == "" {
		ev.PolicyHash = px.policy.Load().Hash()
	}
	px.cfg.Journal.Record(ev)
}

// refuse records the refusal and resets the connection, so the agent
// fails at once instead of waiting.
func (px *Proxy) refuse(c *net.TCPConn, ev journal.Event, reason journal.Reason) {
	px.record(ev, reason)
	reset(c)
}

func reset(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}
