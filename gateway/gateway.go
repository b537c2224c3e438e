// Package gateway is sluice's engine as a library: it makes the namespace
// it runs in the gateway of an agent, wiring the agent's namespace and
// link (sandbox), the nftables table (firewall), the filtering resolver
// (dnsfilter), the transparent proxy (tlsinspect) and the decision
// journal, and holds the policy in force.
//
// New sets everything up, Run serves until its context ends or a part
// fails, RunCommand runs a command as the agent, and Close undoes it all.
// An agent whose namespace has a name (Config.Namespace) can instead be
// detached (Detach): its namespace and processes stay, cut off, for the
// next New with the same name to adopt.
package gateway

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluicegw/sluice/dnsfilter"
	"github.com/sluicegw/sluice/firewall"
	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/metrics"
	"github.com/sluicegw/sluice/policy"
	"github.com/sluicegw/sluice/sandbox"
	"github.com/sluicegw/sluice/tlsinspect"
	"github.com/sluicegw/sluice/tlsinspect/mitm"
)

// Gateway is everything one gateway sets up in the namespace it was
// started in, with the undo steps in the order they must run.
type Gateway struct {
	cfg Config
	log *slog.Logger
	// keepTable is set when the forwarding hold could not be given up
	// (see enableForwarding) or the agent's tracked flows could not be
	// deleted at the end (forgetEarlierFlows): the table and the record
	// then stay at teardown, for the next start's recovery to undo both.
	keepTable bool
	// forwardingHeld says sluice serve took the agent's hold on
	// forwarding with its other agents' (claimSlots).
	forwardingHeld bool
	policy         atomic.Pointer[policy.Policy] // the policy in force
	reload         sync.Mutex                    // one policy change at a time
	change         sync.Mutex                    // held from working out a change to its end
	allow          allowances                    // reviewers' additions
	agent          *sandbox.Agent
	state          *sandbox.State
	fw             *firewall.Manager
	cleanup        []func() error // run last to first
	fatal          chan error     // a part that cannot go on says so here

	// The parts that run until the gateway closes (start).
	ctx     context.Context
	stop    func() error
	running sync.WaitGroup

	// The files a command started in the agent gets as resolv.conf and
	// CA bundle (launchFiles), once written.
	resolvConf, caBundle string
	launchWritten        bool

	// Set while starting: the listening sockets, the networks, the
	// pieces the later steps wire together.
	journal           *journal.Async
	resolver          *dnsfilter.Server
	proxy             *tlsinspect.Proxy
	ca                *mitm.CA // for the hosts with rules; nil when none
	pins              *dnsfilter.Pins
	dnsConns          []net.PacketConn
	dnsLn             net.Listener
	tlsLn, httpLn     *net.TCPListener
	dnsPort           uint16
	net4, net6        netip.Prefix
	ipv6              bool // the agent's IPv6 goes out (net6, and a default IPv6 route)
	own, connected    []netip.Prefix
	upstreamResolvers []string
}

// New validates cfg and sets the gateway up: after it returns, the agent's
// namespace exists behind a ruleset that admits only what the policy
// allows. Whatever step fails, what the earlier ones did is undone (an
// adopted namespace and its processes stay, as Detach leaves them).
//
// The order keeps the agent's namespace closed at every moment, which
// matters for a named one that a run before left with processes in it.
// What a dead run left is undone first, link before table (claimState):
// once the link is gone the namespace has nothing but loopback. The new
// link is made with the gateway's end down (createAgent): a veth delivers
// nothing to a peer that is down, whatever the agent does with its end.
// The table goes in, the tracked flows of earlier agents on these
// addresses go, the servers start, and only then is the link raised
// (connectAgent).
//
// In router mode (cfg.Interface) nothing is made and nothing is raised:
// the interface and its clients are there before New and after Close (see
// router.go). What is there before the table goes in is the user's own
// setup, as when sluice does not run; sluice's part opens nothing before
// the table is in: forwarding is switched on after it.
func New(cfg Config) (g *Gateway, err error) {
	if cl := cfg.claimed; cl != nil {
		defer func() {
			if err != nil && (g == nil || g.state == nil) {
				_ = cl.state.Release() // claimed for it (claimSlots), never taken
			}
		}()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	g = &Gateway{cfg: cfg, log: cfg.Log, fatal: make(chan error, 1)}
	g.policy.Store(cfg.Policy)
	g.allow.base, g.allow.proposals = cfg.Policy, map[string]*proposal{}
	defer func() {
		if err != nil {
			// Detach, not Close: a start that failed must not kill the
			// processes of a namespace it adopted. A namespace it made
			// itself holds nothing of anyone's: it goes.
			undo := g.Detach
			if g.agent != nil && g.agent.Namespace != "" && !g.agent.Adopted {
				undo = g.Close
			}
			if cerr := undo(); cerr != nil {
				g.log.Error("cleanup after failed start incomplete", "err", cerr)
			}
		}
	}()
	reportUpstreams := func() {}
	if !cfg.upstreamsProbed {
		reportUpstreams = probeUpstreams(cfg.Upstreams, g.log, "--upstream") // meanwhile, so that start waits for it the least
	}
	for _, step := range []func() error{
		g.claimState, g.startJournal, g.createAgent, g.listen, g.installFirewall,
		g.forgetEarlierFlows, g.enableForwarding, g.startJournalReader, g.startServers,
		g.writeLaunchFiles, g.connectAgent,
	} {
		if err := step(); err != nil {
			return g, err
		}
	}
	reportUpstreams()
	p := cfg.Policy
	attrs := []any{"agent", cfg.Name, "iface", g.state.Iface, "table", g.state.Table, "policy", p.Hash(), "entries", len(p.Entries()), "upstream", g.upstreamResolvers, "ipv6", g.ipv6}
	if cfg.Interface != "" {
		attrs = append(attrs, "router", true, "clients", g.agentNets(), "gateway", g.agent.Gateway)
	}
	if cfg.Namespace != "" {
		attrs = append(attrs, "netns", cfg.Namespace, "adopted", g.agent.Adopted)
	}
	if cfg.Report {
		attrs = append(attrs, "mode", ModeReport)
	}
	g.log.Info("gateway ready", attrs...)
	if cfg.Report {
		g.log.Warn("report mode: what the policy would refuse is let through and journaled as would_refuse; the agent is not confined")
	}
	return g, nil
}

// claimState takes the agent's slot in this namespace's crash-safe
// records: its name, table, link, log group and networks, none of which
// another agent of the namespace holds. What earlier runs that died left
// is cleaned up first: an agent link still there while its agent lives
// (or while the kernel tears down its namespace) would otherwise hold its
// networks.
func (g *Gateway) claimState() error {
	if cl := g.cfg.claimed; cl != nil {
		g.own, g.connected = cl.own, cl.connected
		if !cl.listed {
			var err error
			if g.own, g.connected, err = gatewayAddrs(); err != nil {
				return err
			}
		}
		g.forwardingHeld = cl.forwarding
		return g.tookState(cl.state, cl.routes6)
	}
	routes6 := gatewayHasIPv6()
	c := slotChooser{cfg: &g.cfg, ipv6: !g.cfg.NoIPv6 && routes6, pid: os.Getpid()}
	choose := func(held []sandbox.Holder) (sandbox.Slot, error) {
		var err error
		if g.own, g.connected, err = gatewayAddrs(); err != nil {
			return sandbox.Slot{}, err
		}
		if g.cfg.Interface != "" {
			// The interface's IPv6 network is the agent's whenever it has
			// one, so that its clients' IPv6 is judged as theirs; it
			// goes out only with a default IPv6 route (g.ipv6).
			return g.routerSlot(held, !g.cfg.NoIPv6)
		}
		c.nets = slices.Concat(g.own, g.connected)
		return c.choose(held)
	}
	sc := stateConfig(g.cfg.StateDir, choose)
	sc.AgentNetNS, sc.Router = g.cfg.Namespace, g.cfg.Interface != ""
	st, undone, err := sandbox.Claim(sc)
	for _, u := range undone {
		g.log.Info("cleaned up after an earlier run that did not exit cleanly: " + u)
	}
	if err != nil {
		return err
	}
	return g.tookState(st, routes6)
}

// tookState makes st, the slot claimed, the gateway's.
func (g *Gateway) tookState(st *sandbox.State, routes6 bool) error {
	g.state = st
	g.net4 = st.Nets[0]
	if len(st.Nets) > 1 {
		g.net6 = st.Nets[1]
	}
	g.ipv6 = g.net6.IsValid() && routes6
	g.cleanup = append(g.cleanup, func() error {
		if g.keepTable {
			return nil // the record stays with the table, for the next start to undo
		}
		return st.Release()
	})
	// For `sluice status`: the policy at start (a reload does not update it).
	return st.SetPolicy(g.cfg.Policy.Hash())
}

// journalBatch bounds a batch of the journal: the writer goroutine
// writes one in a go, holding up the data path's goroutines for that long
// when they share a core, so a batch stays a fraction of a millisecond of
// work. (A store's batches wait a little to fill: journal.Lingerer.)
const journalBatch = 128

// startJournal starts the hand-off of records from the layers to the
// journal's store. It is closed last of all, after every part that
// records has stopped, so that it stores their last records too.
func (g *Gateway) startJournal() error {
	a, err := journal.NewAsync(journal.AsyncConfig{Writer: g.cfg.Journal, Log: g.log, Agent: g.cfg.Name, Batch: journalBatch})
	if err != nil {
		return err
	}
	g.journal = a
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := a.Run(context.Background()); err != nil {
			g.reportFatal(fmt.Errorf("journal: %w", err))
		}
	}()
	g.cleanup = append(g.cleanup, func() error {
		err := a.Close()
		<-done
		if n := a.Dropped(); n > 0 {
			g.log.Warn("journal records dropped: the store fell behind", "records", n)
		}
		return err
	})
	return nil
}

// createAgent makes the agent's namespace (or, with a Namespace, opens
// it: made when absent, adopted with its processes when present) and its
// link, with the gateway's end down: nothing crosses the link until
// connectAgent raises it, after the ruleset is installed. Close and
// Detach remove the link first of all. In router mode there is nothing
// to make: the interface's agent was found with the slot (routerSlot).
func (g *Gateway) createAgent() error {
	if g.cfg.Interface != "" {
		g.log.Debug("router mode: the agent is the clients behind the interface", "iface", g.state.Iface, "gateway", g.agent.Gateway, "gateway6", g.agent.Gateway6, "clients", g.agentNets())
		return nil
	}
	agent, err := sandbox.NewAgent(sandbox.AgentConfig{Iface: g.state.Iface, Net4: g.net4, Net6: g.net6, Namespace: g.cfg.Namespace, Log: g.log})
	if err != nil {
		return fmt.Errorf("create agent namespace: %w", err)
	}
	g.agent = agent
	if agent.Adopted {
		g.log.Info("adopted the agent namespace an earlier run left, with its processes", "netns", agent.Namespace)
	}
	g.log.Debug("agent link made", "iface", g.state.Iface, "agent", agent.Addr, "gateway", agent.Gateway, "agent6", agent.Addr6, "netns", agent.Namespace)
	return nil
}

// connectAgent raises the agent's link (and routes the agent through
// it), the last step of New: the table, the servers and the heartbeat
// are in place.
func (g *Gateway) connectAgent() error {
	if err := g.agent.Connect(); err != nil {
		return err
	}
	g.log.Debug("agent link up", "iface", g.state.Iface)
	return nil
}

// listen binds the resolver's and the proxy's sockets on the agent's link.
// The servers close their sockets when shut down; the cleanup closes them
// whatever step fails first (closing twice is harmless).
func (g *Gateway) listen() error {
	var sockets []io.Closer
	g.cleanup = append(g.cleanup, func() error {
		for _, s := range sockets {
			_ = s.Close()
		}
		return nil
	})
	var err error
	if g.dnsConns, g.dnsLn, g.dnsPort, err = listenDNS(g.state.Iface, min(runtime.GOMAXPROCS(0), maxDNSSockets)); err != nil {
		return err
	}
	sockets = append(sockets, g.dnsLn)
	for _, pc := range g.dnsConns {
		sockets = append(sockets, pc)
	}
	if g.tlsLn, err = listenTCP(g.state.Iface); err != nil {
		return err
	}
	sockets = append(sockets, g.tlsLn)
	if g.httpLn, err = listenTCP(g.state.Iface); err != nil {
		return err
	}
	sockets = append(sockets, g.httpLn)
	return nil
}

// installFirewall installs the agent's table in one batch.
func (g *Gateway) installFirewall() error {
	p := g.cfg.Policy
	tlsPorts, httpPorts := p.InspectedPorts()
	var net4, net6 netip.Prefix
	if g.agent.Router {
		net4, net6 = g.net4, g.net6 // every client of the interface
	}
	mgr, err := firewall.New(firewall.Config{
		NetNSFd: -1, Flows: g.cfg.Flows, AgentIface: g.state.Iface, AgentAddr4: g.agent.Addr, AgentAddr6: g.agent.Addr6, AgentNet4: net4, AgentNet6: net6,
		Table: g.state.Table, DNSPort: g.dnsPort, LogGroup: g.state.LogGroup, Prefixes: p.Prefixes(),
		TLSProxyPort: listenPort(g.tlsLn), HTTPProxyPort: listenPort(g.httpLn), TLSPorts: tlsPorts, HTTPPorts: httpPorts,
		Log: g.log, Report: g.cfg.Report,
	})
	if err != nil {
		return err
	}
	g.cleanup = append(g.cleanup, mgr.Close)
	if err := mgr.Install(); err != nil {
		return err
	}
	g.fw = mgr
	g.cleanup = append(g.cleanup, func() error {
		if g.keepTable {
			return errors.New("teardown incomplete: the table stays, refusing everything; the next start removes it")
		}
		return mgr.Remove()
	})
	return nil
}

// forgetEarlierFlows deletes the tracked flows an earlier agent on these
// addresses left, which must not pass for this one's (see
// firewall.ForgetFlows); the command has not started yet, so this agent
// has none. (Unless the caller did: Config.FlowsForgotten.) The agent's
// own go when the gateway closes, once its link is gone; an agent that
// dies instead has them deleted by the recovery that undoes it
// (sandbox.StateConfig.ForgetFlows). Should that deletion fail at the
// close, the record stays with the table, and the next start's recovery
// deletes them.
func (g *Gateway) forgetEarlierFlows() error {
	nets := g.agentNets()
	forget := func() (int, error) { return g.fw.ForgetFlows(nets) }
	if !g.cfg.FlowsForgotten || g.cfg.Interface != "" {
		if n, err := forget(); err != nil {
			return err
		} else if n > 0 {
			g.log.Debug("forgot the tracked flows of an earlier agent", "flows", n)
		}
	}
	g.cleanup = append(g.cleanup, func() error {
		if _, err := forget(); err != nil {
			g.keepTable = true
			return fmt.Errorf("delete the agent's tracked flows: %w", err)
		}
		return nil
	})
	return nil
}

// Counts is what the gateway counts of itself, for metrics. Call it once
// New has returned.
func (g *Gateway) Counts() metrics.AgentCounts {
	var c metrics.AgentCounts
	if g.fw != nil {
		c.SetElements = g.fw.Elements()
	}
	if g.pins != nil {
		c.Pins = g.pins.Len()
	}
	if g.proxy != nil {
		c.ProxyOpen, c.ProxyTotal = g.proxy.Conns()
	}
	if g.journal != nil {
		c.JournalWritten, c.JournalDropped = g.journal.Written(), g.journal.Dropped()
	}
	return c
}

func (g *Gateway) agentNets() []netip.Prefix {
	nets := []netip.Prefix{g.net4}
	if g.net6.IsValid() {
		nets = append(nets, g.net6)
	}
	return nets
}

// enableForwarding switches forwarding on where it is off, behind the
// namespace's guard, recording the old values in the crash-safe state
// first; the last agent of the namespace to go restores them. The agent
// gives up its hold before its table goes: a router-mode agent's
// interface stays, and without the hold the guard drops what it
// forwards (or forwarding is off again) before the table is gone.
func (g *Gateway) enableForwarding() error {
	g.cleanup = append(g.cleanup, func() error {
		err := g.state.ReleaseForwarding()
		if err != nil {
			// The guard may still exempt the agent's link, and forwarding
			// be on: without its table the link would be forwarded
			// unfiltered (router mode's interface stays up). The table
			// stays, refusing everything once its heartbeat lapses.
			g.keepTable = true
		}
		return err
	})
	if g.forwardingHeld {
		return nil // taken with the other agents' (claimSlots)
	}
	if err := g.state.EnableForwarding(g.ipv6); err != nil {
		return fmt.Errorf("enable forwarding: %w", err)
	}
	return nil
}

// startJournalReader binds the kernel's log of refused packets and starts
// reading it, and the heartbeat of the dead-man switch. Without the log
// the gateway would refuse in silence, so it does not start.
func (g *Gateway) startJournalReader() error {
	reader, err := firewall.NewLogReader(firewall.LogReaderConfig{
		Group: g.state.LogGroup, Agent: g.cfg.Name, PolicyHash: func() string { return g.policy.Load().Hash() },
		Journal: g.journal, Log: g.log,
	})
	if err != nil {
		return fmt.Errorf("%w (is nfnetlink_log available?)", err)
	}
	g.cleanup = append(g.cleanup, reader.Close)
	g.start(reader)
	g.start(g.fw)
	return nil
}

// runner is a part of the gateway that works until its context ends.
type runner interface{ Run(context.Context) error }

// start runs r until the gateway closes. A part that stops by itself
// before then has failed: the gateway ends (see reportFatal).
func (g *Gateway) start(r runner) {
	if g.stop == nil {
		ctx, cancel := context.WithCancel(context.Background())
		g.ctx = ctx
		g.stop = func() error { cancel(); g.running.Wait(); return nil }
		g.cleanup = append(g.cleanup, func() error { return g.stop() })
	}
	g.running.Add(1)
	go func() {
		defer g.running.Done()
		err := r.Run(g.ctx)
		if g.ctx.Err() == nil {
			g.reportFatal(fmt.Errorf("%T stopped: %w", r, cmp.Or(err, errors.New("no error"))))
		}
	}()
}

// startServers starts the proxy and then the resolver: once the resolver
// answers, the agent can connect.
func (g *Gateway) startServers() error {
	p, agent := g.cfg.Policy, g.agent
	var clients []netip.Prefix
	if agent.Router {
		clients = g.agentNets() // every client of the interface
	} else {
		clients = append(clients, netip.PrefixFrom(agent.Addr, 32))
		if agent.Addr6.IsValid() {
			clients = append(clients, netip.PrefixFrom(agent.Addr6, 128))
		}
	}
	// Every agent network is internal, not only this agent's: an answer
	// must not open another agent (of this serve, or another sluice) to
	// this one.
	internal := slices.Concat(g.own, g.agentNets(), g.cfg.peerNets,
		[]netip.Prefix{netip.MustParsePrefix(AgentPool), netip.MustParsePrefix(AgentPool6)})
	pins := dnsfilter.NewPins(dnsfilter.DefaultMaxPins)
	g.pins = pins
	interceptor, err := g.startInterceptor()
	if err != nil {
		return fmt.Errorf("interception CA: %w", err)
	}
	proxy, err := tlsinspect.New(tlsinspect.Config{
		Agent: g.cfg.Name, Pins: pins, Internal: internal, Journal: g.journal,
		HelloTimeout: g.cfg.HelloTimeout, IdleTimeout: g.cfg.IdleTimeout, MaxConns: g.cfg.MaxConns,
		Interceptor: interceptor, Log: g.log, Report: g.cfg.Report,
	}, p)
	if err != nil {
		return err
	}
	g.proxy = proxy
	g.cleanup = append(g.cleanup, func() error { proxy.Close(); return nil })
	if err := proxy.ServeTLS(g.tlsLn); err != nil {
		return err
	}
	proxy.ServeHTTP(g.httpLn)
	g.start(proxy)
	for _, u := range g.cfg.Upstreams {
		g.upstreamResolvers = append(g.upstreamResolvers, u.String())
	}
	fwd := &dnsfilter.Forwarder{Servers: g.upstreamResolvers}
	g.cleanup = append(g.cleanup, func() error { fwd.Close(); return nil })
	srv, err := dnsfilter.New(dnsfilter.Config{
		Agent: g.cfg.Name, Clients: clients, Internal: internal, Connected: g.connected, Global: g.cfg.Global,
		IPv6: g.ipv6, Upstream: fwd, Allower: g.fw, Pins: pins, Journal: g.journal,
		MinTTL: g.cfg.MinTTL, MaxTTL: g.cfg.MaxTTL, Log: g.log, Report: g.cfg.Report, AnswerTime: g.cfg.AnswerTime,
	}, p)
	if err != nil {
		return err
	}
	g.resolver = srv
	if err := srv.Serve(g.dnsLn, g.dnsConns...); err != nil {
		return err
	}
	g.start(srv)
	g.cleanup = append(g.cleanup, func() error { srv.Shutdown(); return nil })
	g.start(expireAllowances{g})
	return nil
}

// reportFatal takes a part's report of an impossible state; the first one
// ends Run or RunCommand (and with it the agent), the others are logged.
func (g *Gateway) reportFatal(err error) {
	select {
	case g.fatal <- err:
	default:
		g.log.Error("the gateway failed again", "err", err)
	}
}

// Run serves until ctx ends or a part of the gateway fails; it returns
// that part's error. The gateway keeps enforcing (fail closed) until
// Close.
func (g *Gateway) Run(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-g.fatal:
		return err
	}
}

// RunCommand runs args as the agent, as user, and returns its exit status
// the way a shell reports it. Signals that arrive on sigs are relayed to
// it. If a part of the gateway fails meanwhile, the agent is killed and
// the failure returned. An agent in router mode has no namespace to run
// a command in: sandbox.ErrRouterMode.
func (g *Gateway) RunCommand(args []string, user sandbox.Credential, sigs <-chan os.Signal) (int, error) {
	if g.agent.Router {
		return 0, sandbox.ErrRouterMode
	}
	if err := g.state.SetCommand(args); err != nil { // for `sluice status`
		return 0, err
	}
	resolv, bundle, err := g.launchFiles()
	if err != nil {
		return 0, err
	}
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		code, err := g.agent.Run(sandbox.Launch{
			NetNS: g.cfg.Namespace, Args: args, ResolvConf: resolv, CABundle: bundle, User: user, Env: os.Environ(),
			Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
		}, sigs, func(pid int) {
			if err := g.state.SetAgent(pid); err != nil {
				g.log.Error("cannot record the agent's process: a crash now would leave it running", "err", err)
			}
		})
		done <- result{code, err}
	}()
	select {
	case r := <-done:
		return r.code, r.err
	case err := <-g.fatal:
		g.log.Error("the gateway failed: ending the agent", "err", err)
		g.agent.Kill()
		<-done
		return 0, err
	}
}

// Close undoes everything New did and reports every step that failed:
// the agent is removed (sluice run's end; an agent taken out of sluice
// serve's config). The agent goes first, its processes and then its
// link: until the link is gone, the table is all that stands between a
// process of the agent and the outside, so removing the table (or
// restoring forwarding) before would let a process still alive there
// through unfiltered. A named namespace loses its name between two
// rounds of killing, so that nothing enters it by name after the first
// and survives. The other steps run last to first.
//
// In router mode the interface stays, and so do its clients: the agent
// gives up its hold on forwarding first (the guard then drops what the
// interface forwards, or forwarding is off again), then its table goes.
// From then on the interface is what the user's own setup makes of it,
// as before New: if forwarding was on before sluice, the clients are
// forwarded as the host's own firewall says.
func (g *Gateway) Close() error { return g.teardown(true) }

// Detach undoes what New did but keeps the agent's named namespace and
// the processes in it, for the next New with the same Namespace to adopt
// (sluice serve stopping or restarting). The link goes first, so the
// namespace is left with loopback alone and nothing it sends leaves it,
// then the rest as Close does: table, tracked flows, forwarding held,
// files and record. Without a Namespace there is nothing to keep (a
// namespace without a name cannot be found again), and Detach is Close.
//
// sluice serve should Detach on SIGTERM: that is what `systemctl stop`
// and `systemctl restart` send, and an upgrade or a restart of the
// service must not kill the work of the agents' processes. They are
// cut off meanwhile, and served again by the next start; an agent
// taken out of the config is the one to Close.
func (g *Gateway) Detach() error {
	if g.cfg.Namespace == "" {
		return g.Close()
	}
	return g.teardown(false)
}

// teardown undoes New: with end, the agent's processes and namespace go
// too (Close); without, they stay (Detach). Once it has run, the gateway
// is done, and another call does nothing more.
func (g *Gateway) teardown(end bool) error {
	var errs []error
	if g.agent != nil {
		if end {
			g.agent.Kill()
			if err := g.agent.RemoveName(); err != nil {
				errs = append(errs, fmt.Errorf("remove the agent namespace %s: %w", g.agent.Namespace, err))
			}
			g.agent.Kill()
		}
		if err := g.agent.Close(); err != nil {
			// Fail closed: the table, the forwarding settings and the
			// record stay; once the heartbeat lapses the table refuses
			// everything, and the next start retries.
			return errors.Join(append(errs, fmt.Errorf("the agent's link is still there, so its table stays (refusing everything); the next start removes both: %w", err))...)
		}
		g.agent = nil
	}
	for _, f := range slices.Backward(g.cleanup) {
		if err := f(); err != nil {
			errs = append(errs, err)
		}
	}
	g.cleanup = nil
	return errors.Join(errs...)
}

// listenTCP binds a proxy listener on a free port, on every address but
// only for connections that arrive on the agent's link.
func listenTCP(iface string) (*net.TCPListener, error) {
	ln, err := tlsinspect.Listen(*bindToDevice(iface), "[::]:0")
	if err != nil {
		return nil, fmt.Errorf("proxy socket: %w", err)
	}
	return ln, nil
}

func listenPort(ln net.Listener) uint16 { return uint16(ln.Addr().(*net.TCPAddr).Port) }

func bindToDevice(iface string) *net.ListenConfig {
	return &net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = unix.BindToDevice(int(fd), iface) })
		return errors.Join(err, serr)
	}}
}

// listenDNS binds the resolver's UDP and TCP sockets on one port, on every
// address but only for packets that arrive on the agent's link, whatever
// address the redirect picks. UDP has n sockets, joined by SO_REUSEPORT,
// among which the kernel spreads the agent's flows. (A reuseport group is
// per device, so no two agents' sockets share one.)
func listenDNS(iface string, n int) ([]net.PacketConn, net.Listener, uint16, error) {
	lc := bindToDevice(iface)
	ulc := lc
	if n > 1 {
		ulc = &net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) })
			return errors.Join(err, serr, lc.Control(network, address, c))
		}}
	}
	ctx := context.Background()
	var lastErr error
	for range 20 {
		pc, err := ulc.ListenPacket(ctx, "udp", "[::]:0")
		if err != nil {
			return nil, nil, 0, fmt.Errorf("resolver socket: %w", err)
		}
		pcs := []net.PacketConn{pc}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := lc.Listen(ctx, "tcp", fmt.Sprintf("[::]:%d", port))
		for err == nil && len(pcs) < n {
			if pc, err = ulc.ListenPacket(ctx, "udp", fmt.Sprintf("[::]:%d", port)); err == nil {
				pcs = append(pcs, pc)
			}
		}
		if err == nil {
			return pcs, ln, uint16(port), nil
		}
		for _, pc := range pcs {
			pc.Close()
		}
		if ln != nil {
			ln.Close()
		}
		lastErr = err
	}
	return nil, nil, 0, fmt.Errorf("resolver socket: no port free for both UDP and TCP: %w", lastErr)
}

// maxDNSSockets bounds the resolver's UDP sockets per agent, one per
// core: past a few cores, one agent's queries do not need more, and
// sluice serve runs many agents.
const maxDNSSockets = 4

// gatewayHasIPv6 reports whether this namespace can carry IPv6 to the
// outside: it has IPv6 and a default IPv6 route.
func gatewayHasIPv6() bool {
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		return false
	}
	routes, err := sandbox.Dump(func() ([]netlink.Route, error) { return netlink.RouteList(nil, netlink.FAMILY_V6) })
	if err != nil {
		return false
	}
	for _, r := range routes {
		if r.Dst == nil || r.Dst.IP.IsUnspecified() {
			return true
		}
	}
	return false
}

// gatewayAddrs returns the gateway's own addresses (as single-address
// prefixes), which no answer may point into, and the networks they are
// on, which only private entries may reach and the agent's link must not
// overlap.
func gatewayAddrs() (own, connected []netip.Prefix, err error) {
	addrs, err := sandbox.Dump(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, nil, fmt.Errorf("list gateway addresses: %w", err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		own = append(own, netip.PrefixFrom(ip, ip.BitLen()))
		if ones, _ := a.Mask.Size(); !ip.IsLoopback() && !ip.IsLinkLocalUnicast() {
			connected = append(connected, netip.PrefixFrom(ip, ones).Masked())
		}
	}
	return own, connected, nil
}
