package gateway

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"

	"github.com/sluicegw/sluice/firewall"
	"github.com/sluicegw/sluice/sandbox"
)

// The pools an agent's link and log group come from when the config
// names none. The links take ranges that no real network uses: /30s of
// the benchmarking block (RFC 2544), from the top down, and /64s of a
// fixed unique-local /48, one pair per agent: 1,024 agents, which sluice
// serve may run in one namespace.
const (
	AgentPool      = "198.19.240.0/20"
	AgentPool6     = "fd5c:1ce0:5c1c::/48"
	agentPoolSlots = 1024
)

// DefaultLogGroup is the first NFLOG group the kernel logs an agent's
// refusals to; each agent of a namespace takes its own.
const DefaultLogGroup = 9323

// TablePrefix starts the name of every agent's table: inet sluice-NAME.
const TablePrefix = "sluice-"

// poolNets returns the i-th pair of agent networks of the pools.
func poolNets(i int) (netip.Prefix, netip.Prefix) {
	pool := netip.MustParsePrefix(AgentPool)
	top := binary.BigEndian.Uint32(pool.Addr().AsSlice()) + 1<<(32-pool.Bits())
	var base [4]byte
	binary.BigEndian.PutUint32(base[:], top-4-4*uint32(i))
	v6 := netip.MustParsePrefix(AgentPool6).Addr().As16()
	v6[6], v6[7] = byte(i>>8), byte(i)
	return netip.PrefixFrom(netip.AddrFrom4(base), 30), netip.PrefixFrom(netip.AddrFrom16(v6), 64)
}

// slotChooser picks an agent's slot from the config and what the
// namespace's other agents hold (see sandbox.StateConfig.Choose).
type slotChooser struct {
	cfg  *Config
	ipv6 bool           // the agent gets IPv6
	nets []netip.Prefix // the gateway's own and connected networks
	pid  int            // names the link
}

// choose takes what the config names and, for the rest, the first of
// each pool that no other agent holds. An agent network that overlaps a
// network of the gateway is refused; one another agent holds is refused
// by sandbox, naming it.
func (c slotChooser) choose(held []sandbox.Holder) (sandbox.Slot, error) {
	cfg := c.cfg
	s := sandbox.Slot{Name: cfg.Name, Table: cmp.Or(cfg.Table, TablePrefix+cfg.Name), LogGroup: cfg.LogGroup}
	taken := func(f func(h sandbox.Holder) bool) bool { return slices.ContainsFunc(held, f) }
	s.Iface = fmt.Sprintf("sl%d", c.pid)
	for i := 1; taken(func(h sandbox.Holder) bool { return h.Iface == s.Iface }); i++ {
		s.Iface = fmt.Sprintf("sl%d-%d", c.pid, i)
	}
	if s.LogGroup == 0 {
		s.LogGroup = DefaultLogGroup
		for taken(func(h sandbox.Holder) bool { return h.LogGroup == s.LogGroup }) {
			s.LogGroup++
		}
	}
	free := func(n netip.Prefix) bool {
		return !taken(func(h sandbox.Holder) bool {
			return slices.ContainsFunc(h.Nets, n.Overlaps)
		}) && !slices.ContainsFunc(c.nets, n.Overlaps)
	}
	net4, net6 := cfg.AgentNet, cfg.AgentNet6
	if !net4.IsValid() || c.ipv6 && !net6.IsValid() {
		found := false
		for i := range agentPoolSlots {
			p4, p6 := poolNets(i)
			if (net4.IsValid() || free(p4)) && (net6.IsValid() || !c.ipv6 || free(p6)) {
				net4, net6, found = cmp.Or(net4, p4), cmp.Or(net6, p6), true
				break
			}
		}
		if !found {
			return s, fmt.Errorf("no free agent network left in %s and %s; choose one with --agent-net/--agent-net6", AgentPool, AgentPool6)
		}
	}
	s.Nets = []netip.Prefix{net4}
	if c.ipv6 {
		s.Nets = append(s.Nets, net6)
	}
	// Other agents' links are networks of the gateway too; an overlap
	// with one of those is sandbox's to refuse, naming the agent.
	own := slices.DeleteFunc(slices.Clone(c.nets), func(n netip.Prefix) bool {
		return taken(func(h sandbox.Holder) bool { return slices.ContainsFunc(h.Nets, n.Overlaps) })
	})
	for _, n := range s.Nets {
		if slices.ContainsFunc(own, n.Overlaps) {
			return s, fmt.Errorf("the agent link %s overlaps a network of this gateway; choose another with --agent-net/--agent-net6", n)
		}
	}
	return s, nil
}

// stateConfig is how the gateway's records are kept and undone.
func stateConfig(dir string, choose func([]sandbox.Holder) (sandbox.Slot, error)) sandbox.StateConfig {
	return sandbox.StateConfig{
		Dir: dir, Choose: choose, RemoveTable: firewall.RemoveTable,
		ForgetFlows: func(nets []netip.Prefix) error { _, err := firewall.ForgetFlows(-1, nets); return err },
		SetGuard: func(p sandbox.ForwardingPlan, ifaces []string) error {
			return firewall.SetGuard(firewall.ForwardingPlan(p), ifaces)
		},
	}
}

// claimedSlot is a slot claimed for a gateway before New (claimSlots).
type claimedSlot struct {
	state   *sandbox.State
	routes6 bool // the namespace can carry IPv6 out (gatewayHasIPv6)
	// forwarding says the agent's hold on forwarding is taken already,
	// with the others' (sandbox.EnableForwardingAll).
	forwarding bool
	// own and connected are the gateway's addresses and the networks it
	// reaches directly, listed once for all the claims (gatewayAddrs),
	// before any of these agents' links exist; listed says they were.
	own, connected []netip.Prefix
	listed         bool
}

// claimSlots claims the slots of the namespace agents cfgs in one pass
// under the records' lock (sandbox.ClaimAll) and gives each Config its
// own (Config.claimed) or returns its error: sluice serve's agents, which
// would otherwise queue for the lock one claim at a time. Every cfg names
// the same state directory; none is in router mode.
func claimSlots(cfgs []*Config, log *slog.Logger) []error {
	errs := make([]error, len(cfgs))
	if len(cfgs) == 0 {
		return errs
	}
	routes6 := gatewayHasIPv6()
	var own, connected, nets []netip.Prefix
	listed := false
	specs := make([]sandbox.ClaimSpec, len(cfgs))
	pid := os.Getpid()
	for i, cfg := range cfgs {
		c := slotChooser{cfg: cfg, ipv6: !cfg.NoIPv6 && routes6, pid: pid}
		specs[i] = sandbox.ClaimSpec{AgentNetNS: cfg.Namespace, Choose: func(held []sandbox.Holder) (sandbox.Slot, error) {
			if !listed { // once, under the lock, after the recovery
				var err error
				if own, connected, err = gatewayAddrs(); err != nil {
					return sandbox.Slot{}, err
				}
				nets, listed = slices.Concat(own, connected), true
			}
			c.nets = nets
			return c.choose(held)
		}}
	}
	states, claimErrs, undone, err := sandbox.ClaimAll(stateConfig(cfgs[0].StateDir, nil), specs)
	for _, u := range undone {
		log.Info("cleaned up after an earlier run that did not exit cleanly: " + u)
	}
	var claimed []*sandbox.State
	ipv6 := false
	for i := range cfgs {
		switch {
		case err != nil:
			errs[i] = err
		case claimErrs[i] != nil:
			errs[i] = claimErrs[i]
		default:
			cfgs[i].claimed = &claimedSlot{state: states[i], routes6: routes6, own: own, connected: connected, listed: listed}
			claimed = append(claimed, states[i])
			ipv6 = ipv6 || len(states[i].Nets) > 1 && routes6
		}
	}
	// Their holds on forwarding too, and the guard once: no agent's link
	// exists yet (each is made down, and raised once its table is in), so
	// forwarding on now opens nothing. Should it fail, each takes its own.
	if err := sandbox.EnableForwardingAll(claimed, ipv6); err != nil {
		log.Warn("the agents' forwarding could not be taken at once: each takes its own", "err", err)
		return errs
	}
	for _, cfg := range cfgs {
		if cfg.claimed != nil {
			cfg.claimed.forwarding = true
		}
	}
	return errs
}

// Recover undoes what gateways that died left in the current network
// namespace (their agents, links, tables, files, and the forwarding they
// held), as New does first, and says what it did.
func Recover(stateDir string) ([]string, error) {
	return sandbox.Recover(stateConfig(stateDir, nil))
}
