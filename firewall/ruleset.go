// Package firewall programs the gateway's kernel: the nftables table that
// redirects an agent's DNS to the resolver, admits its new flows only to
// address.port pairs the resolver put in its sets, rejects and logs
// everything else; the guard table shared by the agents of a namespace;
// the agent's tracked flows; and the kernel's log of refused packets.
package firewall

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
)

// Names of the things in our table. Reasons in log prefixes are the ones
// the NFLOG reader turns back into journal events.
const (
	DefaultTable   = "sluice"
	set4           = "allow4"
	set6           = "allow6"
	setAlive       = "alive"
	setRevoked4    = "revoked4"
	setRevoked6    = "revoked6"
	aliveKey       = 1
	chainAgentIn   = "agent_in"
	chainAgentFw   = "agent_fwd"
	chainAgentDead = "agent_dead"
	logPrefix      = "sluice "
	// reportPrefix is the log prefix of a would-be refusal: a packet
	// that report mode let through (Config.Report).
	reportPrefix = logPrefix + "would_refuse "
	// DefaultHeartbeat is how long the gateway keeps admitting new flows
	// after sluice last proved it was alive.
	DefaultHeartbeat = 3 * time.Second
	// DefaultSetSize bounds each allow set; an answer that would overflow it
	// fails (SERVFAIL) instead of evicting anything.
	DefaultSetSize = 65536
	// maxBatch keeps one netlink batch well under the size at which the
	// kernel refuses it (EMSGSIZE near 10k elements).
	maxBatch = 1000
)

// Reasons the kernel logs for refused packets: journal's words, in the
// log prefix of each refusing rule, which the NFLOG reader reads back.
const (
	ReasonNoSetEntry  = journal.ReasonNoSetEntry
	ReasonQUIC        = journal.ReasonQUIC
	ReasonDoT         = journal.ReasonDoT
	ReasonGatewayPort = journal.ReasonGatewayPort
	ReasonSpoofed     = journal.ReasonSpoofed
	ReasonGatewayDown = journal.ReasonGatewayNotAlive
	ReasonRevoked     = journal.ReasonRevoked
)

// Config says what the table enforces for one agent.
type Config struct {
	// NetNSFd is an open handle of the gateway's network namespace; -1
	// means the namespace of the calling process.
	NetNSFd int
	// Flows, when set, deletes the tracked flows of revoked addresses in
	// walks shared with other gateways (sluice serve's agents); it must
	// work in the namespace NetNSFd names. nil: each Manager walks alone.
	Flows *FlowSweeper
	// Table is the name of our inet table; DefaultTable when empty.
	Table string
	// AgentIface is the gateway's side of the agent's veth.
	AgentIface string
	// AgentAddr4 and AgentAddr6 are the only source addresses the agent may
	// use; packets from any other are dropped. AgentAddr6 may be invalid
	// when the agent has no IPv6.
	AgentAddr4, AgentAddr6 netip.Addr
	// AgentNet4 and AgentNet6, when valid, widen the agent's sources to
	// whole networks: router mode, where the agent is every client behind
	// an existing interface (VMs on a bridge), not one address at the end
	// of a veth. AgentAddr4 and AgentAddr6 are then unused.
	AgentNet4, AgentNet6 netip.Prefix
	// DNSPort is where the resolver listens on the gateway's agent-side
	// addresses; agent DNS to any address on port 53 is redirected there.
	DNSPort uint16
	// TLSProxyPort and HTTPProxyPort are where the transparent proxy
	// listens; agent TCP to TLSPorts and HTTPPorts, at any address, is
	// redirected there. Zero proxy ports disable the redirects.
	TLSProxyPort, HTTPProxyPort uint16
	TLSPorts, HTTPPorts         []uint16
	// LogGroup is the NFLOG group refusals are logged to.
	LogGroup uint16
	// Prefixes are the policy's entries without DNS.
	Prefixes []*policy.Entry
	// Heartbeat is how long new flows pass without a heartbeat;
	// DefaultHeartbeat when zero.
	Heartbeat time.Duration
	// SetSize bounds each allow set; DefaultSetSize when zero.
	SetSize uint32
	// RefreshByDelete forces the delete-and-add refresh of element timeouts
	// that kernels before 6.12 need; it is chosen from the kernel version
	// otherwise.
	RefreshByDelete bool
	// Log reports kernel errors.
	Log *slog.Logger
	// Report is report mode: the forward chain's refusals of what the
	// agent sends out (no set entry, QUIC, DNS over TLS) log the packet
	// as a would-be refusal and let it through, and a policy change
	// cuts no flow (see Revoke). What protects the gateway and the
	// agent's accountability stays: spoofed sources are dropped, no
	// gateway port but the resolver and the proxies is reachable,
	// nothing starts a flow into the agent, and a lapsed heartbeat
	// refuses everything new (fail closed: with sluice dead nothing
	// could journal what passes).
	Report bool

	// connOpts are added to the nftables connection's options; tests pass
	// nftables.WithTestDial to capture the netlink messages without a kernel.
	connOpts []nftables.ConnOption
}

// Manager owns one table. It is safe for concurrent use.
type Manager struct {
	cfg     Config
	table   *nftables.Table
	sets    map[string]*nftables.Set
	refresh bool // refresh timeouts by delete-and-add

	connMu sync.Mutex // serialises batches on conn
	conn   *nftables.Conn

	// batches and elements count the kernel transactions of Allow.
	batches, elements atomic.Int64

	// forgetFn deletes tracked flows (forgetFlows; tests without a kernel
	// replace it).
	forgetFn func(netnsFd int, match func(flow) bool) (int, error)

	mu       sync.Mutex // guards the fields below
	expiry   map[elemKey]time.Time
	revoked  map[elemKey]time.Time // in the revoked sets until then
	pending  []*allowReq
	flushing bool // a leader is committing pending requests
}

// New opens a lasting netlink connection to the gateway's namespace. It
// changes nothing until Install.
func New(cfg Config) (*Manager, error) {
	cfg.Table = cmp.Or(cfg.Table, DefaultTable)
	cfg.Heartbeat = cmp.Or(cfg.Heartbeat, DefaultHeartbeat)
	cfg.SetSize = cmp.Or(cfg.SetSize, DefaultSetSize)
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.AgentIface == "" || !(cfg.AgentAddr4.Is4() || cfg.AgentNet4.Addr().Is4()) || cfg.DNSPort == 0 {
		return nil, errors.New("firewall: AgentIface, AgentAddr4 (or AgentNet4) and DNSPort are required")
	}
	if cfg.AgentNet4.IsValid() && !cfg.AgentNet4.Addr().Is4() {
		return nil, errors.New("firewall: AgentNet4 must be an IPv4 prefix")
	}
	if cfg.AgentNet6.IsValid() && !cfg.AgentNet6.Addr().Is6() {
		return nil, errors.New("firewall: AgentNet6 must be an IPv6 prefix")
	}
	opts := []nftables.ConnOption{nftables.AsLasting()}
	if cfg.NetNSFd >= 0 {
		opts = append(opts, nftables.WithNetNSFd(cfg.NetNSFd))
	}
	opts = append(opts, cfg.connOpts...)
	conn, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("firewall: open nftables connection: %w", err)
	}
	m := &Manager{
		cfg:      cfg,
		conn:     conn,
		table:    &nftables.Table{Name: cfg.Table, Family: nftables.TableFamilyINet},
		expiry:   map[elemKey]time.Time{},
		revoked:  map[elemKey]time.Time{},
		forgetFn: forgetFlows,
		refresh:  cfg.RefreshByDelete || !kernelAtLeast(6, 12),
	}
	if cfg.Flows != nil {
		m.forgetFn = cfg.Flows.forgetIn
	}
	return m, nil
}

// Install replaces our table, in one atomic batch, with the full ruleset.
// The heartbeat element is part of the batch, so the agent can resolve and
// connect from the moment Install returns.
func (m *Manager) Install() error {
	m.connMu.Lock()
	defer m.connMu.Unlock()
	c := m.conn
	// Add-then-delete makes the delete succeed whether or not a table was
	// there; the add that follows builds the new one in the same batch.
	c.AddTable(m.table)
	c.DelTable(m.table)
	c.AddTable(m.table)
	if err := m.addSets(); err != nil {
		return err
	}
	m.addChains(false)
	if err := c.SetAddElements(m.sets[setAlive], []nftables.SetElement{m.aliveElem()}); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("firewall: install table inet %s: %w", m.cfg.Table, err)
	}
	m.mu.Lock()
	clear(m.expiry)
	m.mu.Unlock()
	return nil
}

func (m *Manager) addSets() error {
	k4, err := nftables.ConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)
	if err != nil {
		return err
	}
	k6, err := nftables.ConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetService)
	if err != nil {
		return err
	}
	m.sets = map[string]*nftables.Set{
		set4:     {Table: m.table, Name: set4, KeyType: k4, Concatenation: true, HasTimeout: true, Size: m.cfg.SetSize},
		set6:     {Table: m.table, Name: set6, KeyType: k6, Concatenation: true, HasTimeout: true, Size: m.cfg.SetSize},
		setAlive: {Table: m.table, Name: setAlive, KeyType: nftables.TypeMark, HasTimeout: true},
		// Destinations revoked by a policy change: their open flows meet a
		// refusal before the established-accept (see Revoke).
		setRevoked4: {Table: m.table, Name: setRevoked4, KeyType: k4, Concatenation: true, HasTimeout: true, Size: m.cfg.SetSize},
		setRevoked6: {Table: m.table, Name: setRevoked6, KeyType: k6, Concatenation: true, HasTimeout: true, Size: m.cfg.SetSize},
	}
	for _, name := range []string{set4, set6, setAlive, setRevoked4, setRevoked6} {
		if err := m.conn.AddSet(m.sets[name], nil); err != nil {
			return fmt.Errorf("firewall: add set %s: %w", name, err)
		}
	}
	return nil
}

// addChains adds the chains and their rules; with flush, it replaces the
// rules of chains that exist (Reconfigure).
func (m *Manager) addChains(flush bool) {
	c, t, agent := m.conn, m.table, m.cfg.AgentIface
	accept := nftables.ChainPolicyAccept
	// chain adds a chain (a no-op when it exists) and, when the rules are
	// being replaced, empties it first: in the same batch, so that no
	// packet ever meets a chain half rebuilt.
	chain := func(ch *nftables.Chain) *nftables.Chain {
		ch = c.AddChain(ch)
		if flush {
			c.FlushChain(ch)
		}
		return ch
	}
	base := func(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		return chain(&nftables.Chain{Name: name, Table: t, Type: typ, Hooknum: hook, Priority: prio, Policy: &accept})
	}
	add := func(ch *nftables.Chain, exprs []expr.Any) {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs})
	}

	// Only the agent's own addresses, before anything else looks at the
	// packet: a spoofed source must not reach the resolver or the proxy
	// (which the redirects below send traffic to) any more than the sets.
	spoof := base("prerouting_filter", nftables.ChainTypeFilter, nftables.ChainHookPrerouting, nftables.ChainPriorityMangle)
	// The agent kernel's housekeeping from the unspecified address (IPv6
	// duplicate address detection, multicast listener reports, router
	// solicitations; IPv4 has none on this link) is no attempt to reach
	// anything: dropped, counted, and not journaled as a refusal.
	add(spoof, rule(iif(agent, true), nfproto(true), addrIn(netip.MustParsePrefix("::/128"), true, true), &expr.Counter{}, verdict(expr.VerdictDrop)))
	src4, src6 := m.sources()
	if m.router() {
		// A VM asks for its address from the unspecified one: DHCP to the
		// host's own server (the user's addressing, not sluice's) passes.
		add(spoof, rule(iif(agent, true), nfproto(false), addrIn(netip.MustParsePrefix("0.0.0.0/32"), true, true),
			addrIn(netip.MustParsePrefix("255.255.255.255/32"), false, true),
			l4proto(unix.IPPROTO_UDP), sport(68), dport(67), verdict(expr.VerdictAccept)))
	}
	m.refuseIf(spoof, ReasonSpoofed, rule(iif(agent, true), nfproto(false), addrIn(src4, true, false)), verdict(expr.VerdictDrop))
	if m.has6() {
		// Link-local sources stay: neighbour discovery needs them, and
		// they are never forwarded.
		m.refuseIf(spoof, ReasonSpoofed, rule(iif(agent, true), nfproto(true),
			addrIn(src6, true, false),
			addrIn(netip.MustParsePrefix("fe80::/10"), true, false)), verdict(expr.VerdictDrop))
	}

	// The dead-man switch's refusals, in a chain of their own (see the
	// jumps to it below); added before the chains that jump to it.
	dead := chain(&nftables.Chain{Name: chainAgentDead, Table: t})
	m.refuseTCP(dead, ReasonGatewayDown, nil)
	m.refuseIf(dead, ReasonGatewayDown, l4proto(unix.IPPROTO_UDP), rejectPort())

	pre := base("prerouting", nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest)
	// redirect sends the agent's PROTO to PORT (and what else matches) to
	// the gateway's port TO. In router mode, TCP it would redirect is
	// refused here instead when the heartbeat has lapsed: with
	// br_netfilter passing the bridge's frames to the IP hooks, the
	// kernel sends the reset of a bridged packet straight out of the
	// bridge port, past the NAT that would give it back the address and
	// port the client connected to; a reset from the gateway's address
	// and the proxy's port is not one the client takes, and it would
	// wait for a timeout. Before the redirect the packet still has its
	// own destination. One lookup of the heartbeat per new flow to these
	// ports; the fib lookup only once it lapsed.
	redirect := func(proto byte, port uint16, match []expr.Any, to uint16) {
		if m.router() && proto == unix.IPPROTO_TCP {
			add(pre, rule(iif(agent, true), l4proto(proto), dport(port), notInSet(setAlive, aliveKey), match, jump(chainAgentDead)))
		}
		add(pre, rule(iif(agent, true), l4proto(proto), dport(port), match, redirectTo(to)))
	}
	// DNS to any address is the resolver's, so resolv.conf edits change nothing.
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		redirect(proto, 53, nil, m.cfg.DNSPort)
	}
	// TLS and HTTP to any address go to the proxy, which checks each
	// connection's name against the address it was sent to.
	for _, r := range []struct {
		ports []uint16
		to    uint16
	}{{m.cfg.TLSPorts, m.cfg.TLSProxyPort}, {m.cfg.HTTPPorts, m.cfg.HTTPProxyPort}} {
		if r.to == 0 {
			continue
		}
		for _, p := range r.ports {
			// Not the gateway's own addresses: those go on to the input
			// chain and are refused there like any other gateway port.
			redirect(unix.IPPROTO_TCP, p, notLocal(), r.to)
		}
	}

	// The gateway itself: only the redirected resolver and proxy ports,
	// and the neighbour discovery IPv6 needs on the link.
	in := chain(&nftables.Chain{Name: chainAgentIn, Table: t})
	add(in, rule(ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), verdict(expr.VerdictAccept)))
	add(in, rule(l4proto(unix.IPPROTO_ICMPV6), icmp6Type(135), verdict(expr.VerdictAccept)))
	add(in, rule(l4proto(unix.IPPROTO_ICMPV6), icmp6Type(136), verdict(expr.VerdictAccept)))
	if m.router() {
		// Router mode: the VMs' DHCP server may be the host's own (dnsmasq,
		// networkd, libvirt): addressing is the user's setup, and its
		// requests come as broadcasts, before the drop below.
		// Only a client's request to the server (from the client port,
		// broadcast or to the bridge's own network), not UDP 67 or 547 to
		// any address of the gateway's.
		for _, dst := range []netip.Prefix{netip.MustParsePrefix("255.255.255.255/32"), src4} {
			add(in, rule(nfproto(false), addrIn(dst, false, true), l4proto(unix.IPPROTO_UDP), sport(68), dport(67), verdict(expr.VerdictAccept)))
		}
		if m.has6() {
			for _, dst := range []netip.Prefix{netip.MustParsePrefix("ff02::1:2/128"), netip.MustParsePrefix("fe80::/10")} {
				add(in, rule(nfproto(true), addrIn(netip.MustParsePrefix("fe80::/10"), true, true), addrIn(dst, false, true),
					l4proto(unix.IPPROTO_UDP), sport(546), dport(547), verdict(expr.VerdictAccept)))
			}
		}
	}
	// Link-level chatter (router solicitations, mDNS) is not an attempt to
	// reach anything: drop it without a log line.
	add(in, rule(pktType(unix.PACKET_MULTICAST), verdict(expr.VerdictDrop)))
	add(in, rule(pktType(unix.PACKET_BROADCAST), verdict(expr.VerdictDrop)))
	// The dead-man switch, as in the forward chain: a stopped sluice still
	// has its sockets, so without it the kernel would complete handshakes
	// on the proxy's listening socket and queue DNS queries that nobody
	// reads, and the agent would hang instead of failing. Refuse as a
	// closed port does.
	// One lookup of the heartbeat per new packet here, on the resolver's
	// path: the refusals are in a chain of their own (above).
	add(in, rule(notInSet(setAlive, aliveKey), jump(chainAgentDead)))
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		add(in, rule(l4proto(proto), dport(m.cfg.DNSPort), ctDNAT(), verdict(expr.VerdictAccept)))
	}
	for _, port := range []uint16{m.cfg.TLSProxyPort, m.cfg.HTTPProxyPort} {
		if port != 0 {
			add(in, rule(l4proto(unix.IPPROTO_TCP), dport(port), ctDNAT(), verdict(expr.VerdictAccept)))
		}
	}
	m.refuseTCP(in, ReasonGatewayPort, nil)
	m.refuseIf(in, ReasonGatewayPort, nil, rejectAdmin())
	input := base("input", nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter)
	add(input, rule(iif(agent, true), jump(chainAgentIn)))

	// Forwarded agent traffic: new flows only to the sets and the policy's prefixes.
	fw := chain(&nftables.Chain{Name: chainAgentFw, Table: t})
	add(fw, rule(ctState(expr.CtStateBitINVALID), verdict(expr.VerdictDrop)))
	// A destination revoked by a policy change is refused even to flows
	// that were established before: deleting their tracking entries is
	// not enough, a mid-stream packet may make a new one. Report mode
	// revokes nothing (see Revoke), so it has no such rule.
	if !m.cfg.Report {
		m.refuseIf(fw, ReasonRevoked, rule(nfproto(false), l4proto(unix.IPPROTO_TCP), daddrPortIn(setRevoked4, false)), rejectTCP())
		if m.has6() {
			m.refuseIf(fw, ReasonRevoked, rule(nfproto(true), l4proto(unix.IPPROTO_TCP), daddrPortIn(setRevoked6, true)), rejectTCP())
		}
	}
	add(fw, rule(ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), verdict(expr.VerdictAccept)))
	if !m.has6() {
		// The agent was given no IPv6 (configuration, not policy): refused
		// in report mode too.
		m.refuseIf(fw, ReasonNoSetEntry, nfproto(true), rejectAdmin())
	}
	m.refuseIf(fw, ReasonGatewayDown, rule(l4proto(unix.IPPROTO_TCP), notInSet(setAlive, aliveKey)), rejectTCP())
	m.refuseIf(fw, ReasonGatewayDown, notInSet(setAlive, aliveKey), rejectAdmin())
	m.declineIf(fw, ReasonQUIC, rule(l4proto(unix.IPPROTO_UDP), dport(443)), rejectAdmin())
	m.declineIf(fw, ReasonDoT, rule(l4proto(unix.IPPROTO_TCP), dport(853)), rejectTCP())
	m.declineIf(fw, ReasonDoT, rule(l4proto(unix.IPPROTO_UDP), dport(853)), rejectAdmin())
	add(fw, rule(nfproto(false), l4proto(unix.IPPROTO_TCP), daddrPortIn(set4, false), verdict(expr.VerdictAccept)))
	if m.has6() {
		add(fw, rule(nfproto(true), l4proto(unix.IPPROTO_TCP), daddrPortIn(set6, true), verdict(expr.VerdictAccept)))
	}
	for _, e := range m.cfg.Prefixes {
		for _, port := range e.Ports {
			add(fw, rule(nfproto(e.Prefix.Addr().Is6()), l4proto(unix.IPPROTO_TCP), addrIn(e.Prefix, false, true),
				dport(port), verdict(expr.VerdictAccept)))
		}
	}
	m.declineIf(fw, ReasonNoSetEntry, l4proto(unix.IPPROTO_TCP), rejectTCP())
	m.declineIf(fw, ReasonNoSetEntry, nil, rejectAdmin())

	forward := base("forward", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter)
	if m.router() {
		// Router mode: one VM to another on the same bridge is switched
		// traffic (seen here when br_netfilter passes bridged frames to
		// the IP hooks): it leaves nothing, so it is not the agent's
		// egress.
		// Only to the bridge's own networks: traffic routed back out of
		// the bridge to anywhere else (a route through a host on it) is
		// the agent's egress, and goes on to the agent's chain.
		add(forward, rule(iif(agent, true), oif(agent, true), nfproto(false), addrIn(src4, false, true), verdict(expr.VerdictAccept)))
		if m.has6() {
			add(forward, rule(iif(agent, true), oif(agent, true), nfproto(true), addrIn(src6, false, true), verdict(expr.VerdictAccept)))
		}
	}
	add(forward, rule(iif(agent, true), jump(chainAgentFw)))
	// What a revoked destination still sends back goes nowhere.
	add(forward, rule(oif(agent, true), nfproto(false), l4proto(unix.IPPROTO_TCP), addrPortIn(setRevoked4, false, true), verdict(expr.VerdictDrop)))
	if m.has6() {
		add(forward, rule(oif(agent, true), nfproto(true), l4proto(unix.IPPROTO_TCP), addrPortIn(setRevoked6, true, true), verdict(expr.VerdictDrop)))
	}
	// Nothing starts a flow into the agent.
	add(forward, rule(oif(agent, true), ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), verdict(expr.VerdictAccept)))
	add(forward, rule(oif(agent, true), verdict(expr.VerdictDrop)))

	// Nor does the gateway itself (the host, in real use), whose packets
	// to the agent leave through the output hook. A NAT chain sees only
	// the first packet of a flow the gateway starts, so the answers of the
	// resolver and the proxy never meet it (no cost per answer); nor do
	// the resets and ICMP errors the chains above send (they carry the
	// refused packet's tracking, or are related to it), nor neighbour
	// discovery (not tracked).
	outNAT := base("output_nat", nftables.ChainTypeNAT, nftables.ChainHookOutput, nftables.ChainPriorityNATDest)
	if m.router() {
		// The host's DHCP server answers the VMs (above).
		add(outNAT, rule(oif(agent, true), nfproto(false), l4proto(unix.IPPROTO_UDP), sport(67), dport(68), verdict(expr.VerdictAccept)))
		add(outNAT, rule(oif(agent, true), nfproto(true), l4proto(unix.IPPROTO_UDP), sport(547), dport(546), verdict(expr.VerdictAccept)))
	}
	add(outNAT, rule(oif(agent, true), verdict(expr.VerdictDrop)))

	post := base("postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource)
	add(post, rule(iif(agent, true), oif(agent, false), &expr.Masq{}))
}

// refuseTCP ends the TCP packets that match like refuse, but answers those
// from a link-local source with ICMPv6 administratively prohibited: the
// kernel routes a reset by its destination alone, and one to a link-local
// address leaves through whichever link's fe80::/64 route comes first,
// not the agent's, so the agent would wait for a timeout. ICMPv6 errors
// go back out of the interface the refused packet came in on.
func (m *Manager) refuseTCP(ch *nftables.Chain, reason journal.Reason, match []expr.Any) {
	linkLocal := addrIn(netip.MustParsePrefix("fe80::/10"), true, true)
	m.refuseIf(ch, reason, rule(l4proto(unix.IPPROTO_TCP), nfproto(true), linkLocal, match), rejectAdmin())
	m.refuseIf(ch, reason, rule(l4proto(unix.IPPROTO_TCP), match), rejectTCP())
}

// refuseIf adds two rules for packets that match: one that logs them to
// NFLOG under a rate limit (so a flood cannot flood the journal), and one
// that applies the final verdict whether or not the log rule fired.
func (m *Manager) refuseIf(ch *nftables.Chain, reason journal.Reason, match []expr.Any, final expr.Any) {
	m.logIf(ch, logPrefix+string(reason), match)
	m.conn.AddRule(&nftables.Rule{Table: m.table, Chain: ch, Exprs: rule(match, final)})
}

// declineIf is refuseIf for a refusal of the agent's own traffic that
// report mode turns into a would-be refusal: the packets that match are
// logged as such (under the same rate limit) and accepted.
func (m *Manager) declineIf(ch *nftables.Chain, reason journal.Reason, match []expr.Any, final expr.Any) {
	if !m.cfg.Report {
		m.refuseIf(ch, reason, match, final)
		return
	}
	m.logIf(ch, reportPrefix+string(reason), match)
	m.conn.AddRule(&nftables.Rule{Table: m.table, Chain: ch, Exprs: rule(match, verdict(expr.VerdictAccept))})
}

// logIf adds the rule that logs the packets that match to NFLOG under
// prefix, at most 50 a second (burst 100), so that a flood cannot flood
// the journal.
func (m *Manager) logIf(ch *nftables.Chain, prefix string, match []expr.Any) {
	limit := &expr.Limit{Type: expr.LimitTypePkts, Rate: 50, Unit: expr.LimitTimeSecond, Burst: 100}
	m.conn.AddRule(&nftables.Rule{Table: m.table, Chain: ch,
		Exprs: rule(match, limit, logTo(m.cfg.LogGroup, prefix))})
}

// Remove deletes our table. A table that is already gone is not an error.
func (m *Manager) Remove() error {
	m.connMu.Lock()
	defer m.connMu.Unlock()
	m.conn.AddTable(m.table)
	m.conn.DelTable(m.table)
	if err := m.conn.Flush(); err != nil {
		return fmt.Errorf("firewall: remove table inet %s: %w", m.cfg.Table, err)
	}
	return nil
}

// Close releases the netlink connection; the table stays.
func (m *Manager) Close() error {
	m.cfg.Log.Debug("set updates", "transactions", m.batches.Load(), "elements", m.elements.Load())
	return m.conn.CloseLasting()
}

// removeTable deletes a table left by an earlier run in this namespace,
// and reports whether there was one.
func removeTable(name string) (existed bool, err error) {
	err = withConn(func(c *nftables.Conn) error {
		// Asked first: a transaction the kernel aborts (no such table)
		// costs it about 12 ms, a listing 0.04 ms.
		tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == name }) {
			return nil
		}
		c.DelTable(&nftables.Table{Name: name, Family: nftables.TableFamilyINet})
		if err := c.Flush(); errors.Is(err, unix.ENOENT) {
			return nil // gone meanwhile
		} else if err != nil {
			return err
		}
		existed = true
		return nil
	})
	return existed, err
}

func kernelAtLeast(major, minor int) bool {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return false
	}
	var maj, mnr int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &maj, &mnr); err != nil {
		return false // unknown: take the refresh that works everywhere
	}
	return maj > major || maj == major && mnr >= minor
}

// sources are the agent's source networks: its one address each, or in
// router mode the networks behind its interface. src6 is invalid when
// the agent has no IPv6.
func (m *Manager) sources() (src4, src6 netip.Prefix) {
	src4, src6 = m.cfg.AgentNet4, m.cfg.AgentNet6
	if !src4.IsValid() {
		src4 = netip.PrefixFrom(m.cfg.AgentAddr4, 32)
	}
	if !src6.IsValid() && m.cfg.AgentAddr6.IsValid() {
		src6 = netip.PrefixFrom(m.cfg.AgentAddr6, 128)
	}
	return src4.Masked(), src6.Masked()
}

// router reports router mode: the agent is the networks behind an
// existing interface (AgentNet4).
func (m *Manager) router() bool { return m.cfg.AgentNet4.IsValid() }

// has6 reports whether the agent has IPv6.
func (m *Manager) has6() bool { return m.cfg.AgentAddr6.IsValid() || m.cfg.AgentNet6.IsValid() }
