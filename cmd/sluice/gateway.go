package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluicegw/sluice/dnsfilter"
	"github.com/sluicegw/sluice/firewall"
	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
	"github.com/sluicegw/sluice/tlsinspect"
)

// gateway is everything one sluice run sets up in the namespace it was
// started in, with the undo steps in the order they must run.
type gateway struct {
	log     *slog.Logger
	agent   *firewall.Agent
	state   *firewall.State
	cleanup []func() error // run last to first
}

func newGateway(o *runOptions, p *policy.Policy, log *slog.Logger) (g *gateway, err error) {
	g = &gateway{log: log}
	defer func() {
		if err != nil {
			if cerr := g.close(); cerr != nil {
				log.Error("cleanup after failed start incomplete", "err", cerr)
			}
		}
	}()
	net4, err := netip.ParsePrefix(o.agentNet)
	if err != nil || !net4.Addr().Is4() {
		return g, fmt.Errorf("--agent-net %q: want an IPv4 prefix such as %s", o.agentNet, defaultAgentNet)
	}
	var net6 netip.Prefix
	if !o.noIPv6 && gatewayHasIPv6() {
		if net6, err = netip.ParsePrefix(o.agentNet6); err != nil || !net6.Addr().Is6() {
			return g, fmt.Errorf("--agent-net6 %q: want an IPv6 prefix such as %s", o.agentNet6, defaultAgentNet6)
		}
	}
	// An earlier run that died is cleaned up first: its agent link, still
	// there while its agent lives (or while the kernel tears down its
	// namespace), would otherwise fail the overlap check below.
	iface := fmt.Sprintf("sl%d", os.Getpid())
	st, undone, err := firewall.Claim(firewall.DefaultTable, iface)
	for _, u := range undone {
		log.Info("cleaned up after an earlier run that did not exit cleanly: " + u)
	}
	if err != nil {
		return g, err
	}
	g.state = st
	g.cleanup = append(g.cleanup, st.Release)
	own, connected, err := gatewayAddrs()
	if err != nil {
		return g, err
	}
	for _, n := range []netip.Prefix{net4, net6} {
		if n.IsValid() && slices.ContainsFunc(slices.Concat(own, connected), func(a netip.Prefix) bool { return a.Overlaps(n) }) {
			return g, fmt.Errorf("the agent link %s overlaps a network of this gateway; choose another with --agent-net/--agent-net6", n)
		}
	}

	plan, err := firewall.PlanForwarding(net6.IsValid())
	if err != nil {
		return g, fmt.Errorf("read forwarding settings: %w", err)
	}

	// The agent namespace has no process until the command starts, so no
	// packet can cross the link before the ruleset below is installed.
	agent, err := firewall.NewAgent(firewall.AgentConfig{Iface: iface, Net4: net4, Net6: net6})
	if err != nil {
		return g, fmt.Errorf("create agent namespace: %w", err)
	}
	g.agent = agent // close removes it first, before anything else
	log.Debug("agent link up", "iface", iface, "agent", agent.Addr, "gateway", agent.Gateway, "agent6", agent.Addr6)

	pc, ln, port, err := listenDNS(iface)
	if err != nil {
		return g, err
	}
	// The servers close their sockets when shut down; this closes them
	// whatever step fails first (closing twice is harmless).
	sockets := []io.Closer{pc, ln}
	g.cleanup = append(g.cleanup, func() error {
		for _, s := range sockets {
			_ = s.Close()
		}
		return nil
	})
	tlsLn, err := listenTCP(iface)
	if err != nil {
		return g, err
	}
	sockets = append(sockets, tlsLn)
	httpLn, err := listenTCP(iface)
	if err != nil {
		return g, err
	}
	sockets = append(sockets, httpLn)
	tlsPorts, httpPorts := p.InspectedPorts()
	mgr, err := firewall.New(firewall.Config{
		NetNSFd: -1, AgentIface: iface, AgentAddr4: agent.Addr, AgentAddr6: agent.Addr6,
		DNSPort: port, LogGroup: nflogGroup, Prefixes: p.Prefixes(), Guard: plan, Log: log,
		TLSProxyPort: listenPort(tlsLn), HTTPProxyPort: listenPort(httpLn), TLSPorts: tlsPorts, HTTPPorts: httpPorts,
	})
	if err != nil {
		return g, err
	}
	g.cleanup = append(g.cleanup, mgr.Close)
	if err := mgr.Install(); err != nil {
		return g, err
	}
	g.cleanup = append(g.cleanup, mgr.Remove)
	// Flows an earlier agent on these addresses left in the connection
	// tracking table must not pass for this one's (see ForgetFlows); the
	// command has not started yet, so this agent has none.
	agentNets := []netip.Prefix{net4}
	if net6.IsValid() {
		agentNets = append(agentNets, net6)
	}
	if n, err := firewall.ForgetFlows(-1, agentNets); err != nil {
		return g, err
	} else if n > 0 {
		log.Debug("forgot the tracked flows of an earlier agent", "flows", n)
	}
	g.cleanup = append(g.cleanup, func() error { _, err := firewall.ForgetFlows(-1, agentNets); return err })
	if err := st.EnableForwarding(plan); err != nil {
		return g, fmt.Errorf("enable forwarding: %w", err)
	}

	sink := journal.LogSink{Log: log, Allowed: o.logAllowed}
	ctx, cancel := context.WithCancel(context.Background())
	g.cleanup = append(g.cleanup, func() error { cancel(); return nil })
	reader := &firewall.LogReader{Group: nflogGroup, Agent: iface, PolicyHash: p.Hash, Journal: sink, Log: log}
	// Every refusal is journaled: without the kernel's log of refused
	// packets the gateway would refuse in silence, so it does not start.
	stop, err := reader.Start(ctx)
	if err != nil {
		return g, fmt.Errorf("%w (is nfnetlink_log available?)", err)
	}
	g.cleanup = append(g.cleanup, func() error { stop(); return nil })
	go heartbeat(ctx, mgr, firewall.DefaultHeartbeat/3, log)

	upstreams, err := upstreamServers(o.upstream)
	if err != nil {
		return g, err
	}
	clients := []netip.Prefix{netip.PrefixFrom(agent.Addr, 32)}
	internal := append(own, net4)
	if agent.Addr6.IsValid() {
		clients = append(clients, netip.PrefixFrom(agent.Addr6, 128))
		internal = append(internal, net6)
	}
	pins := dnsfilter.NewPins(dnsfilter.DefaultMaxPins)
	proxy, err := tlsinspect.New(tlsinspect.Config{Agent: iface, Pins: pins, Internal: internal, Journal: sink, HelloTimeout: o.helloTimeout, IdleTimeout: o.idleTimeout, MaxConns: o.maxConns, Log: log}, p)
	if err != nil {
		return g, err
	}
	g.cleanup = append(g.cleanup, func() error { proxy.Close(); return nil })
	if err := proxy.ServeTLS(tlsLn); err != nil {
		return g, err
	}
	proxy.ServeHTTP(httpLn)
	fwd := &dnsfilter.Forwarder{Servers: upstreams}
	g.cleanup = append(g.cleanup, func() error { fwd.Close(); return nil })
	srv, err := dnsfilter.New(dnsfilter.Config{
		Agent: iface, Clients: clients, Internal: internal, Connected: connected, Global: o.global, IPv6: agent.Addr6.IsValid(),
		Upstream: fwd,
		Allower:  mgr, Pins: pins, Journal: sink,
		MinTTL: o.minTTL, MaxTTL: o.maxTTL, Log: log,
	}, p)
	if err != nil {
		return g, err
	}
	if err := srv.Serve(pc, ln); err != nil {
		return g, err
	}
	g.cleanup = append(g.cleanup, func() error { srv.Shutdown(); return nil })
	log.Info("gateway ready", "policy", p.Hash(), "entries", len(p.Entries()), "upstream", upstreams, "ipv6", agent.Addr6.IsValid())
	return g, nil
}

// close undoes everything newGateway did and reports every step that
// failed. The agent goes first, its processes and then its link: until the
// link is gone, the table is all that stands between a process of the
// agent and the outside, so removing the table (or restoring forwarding)
// before would let a process still alive there through unfiltered. The
// other steps run last to first.
func (g *gateway) close() error {
	var errs []error
	if g.agent != nil {
		g.agent.Kill()
		if err := g.agent.Close(); err != nil {
			errs = append(errs, err)
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
// address the redirect picks.
func listenDNS(iface string) (net.PacketConn, net.Listener, uint16, error) {
	lc := bindToDevice(iface)
	ctx := context.Background()
	var lastErr error
	for range 20 {
		pc, err := lc.ListenPacket(ctx, "udp", "[::]:0")
		if err != nil {
			return nil, nil, 0, fmt.Errorf("resolver socket: %w", err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := lc.Listen(ctx, "tcp", fmt.Sprintf("[::]:%d", port))
		if err == nil {
			return pc, ln, uint16(port), nil
		}
		pc.Close()
		lastErr = err
	}
	return nil, nil, 0, fmt.Errorf("resolver socket: no port free for both UDP and TCP: %w", lastErr)
}

// gatewayHasIPv6 reports whether this namespace can carry IPv6 to the
// outside: it has IPv6 and a default IPv6 route.
func gatewayHasIPv6() bool {
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		return false
	}
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V6)
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
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
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
