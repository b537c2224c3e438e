package gateway

import (
	"cmp"
	"fmt"
	"net/netip"
	"regexp"
	"slices"

	"github.com/sluicegw/sluice/sandbox"
)

// Router mode (Config.Interface): the agent is every client behind an
// existing interface of the gateway, such as a bridge for VMs. It differs
// from a namespace agent at these steps of New, and nowhere else:
//
//   - claimState: the slot's link is the interface and its networks are
//     the interface's (routerSlot); the record says Router, so that no
//     undo ever deletes the interface. Another agent holding the
//     interface, or overlapping networks, is the slot's conflict as for
//     any agent.
//   - createAgent: nothing is made; the agent found when the slot was
//     chosen (sandbox.InterfaceAgent) is taken.
//   - installFirewall, startServers, forgetEarlierFlows: the agent's
//     sources are the interface's networks (firewall AgentNet4/6, the
//     resolver's Clients), not one address each.
//   - enableForwarding: the agent gives up its hold on forwarding before
//     its table goes (the interface stays, unlike a veth).
//   - connectAgent: nothing to raise; the interface is up already.
//   - RunCommand (and sluice exec) refuse: there is no namespace.

// agentLinkName matches the names gateways give their agents' veths
// (slotChooser.choose): sl<pid>, sl<pid>-<n>.
var agentLinkName = regexp.MustCompile(`^sl[0-9]+(-[0-9]+)?$`)

// routerSlot finds the interface of router mode and takes it, with its
// networks, as the agent's slot. What another agent holds (the interface
// itself, networks that overlap) is sandbox's to refuse, naming it.
func (g *Gateway) routerSlot(held []sandbox.Holder, ipv6 bool) (sandbox.Slot, error) {
	cfg := &g.cfg
	s := sandbox.Slot{Name: cfg.Name, Table: cmp.Or(cfg.Table, TablePrefix+cfg.Name), LogGroup: cfg.LogGroup, Iface: cfg.Interface}
	if agentLinkName.MatchString(cfg.Interface) {
		return s, fmt.Errorf("router mode: %s is named as sluice names the links it makes for agent namespaces, not an interface of yours: name the interface or bridge the clients are behind", cfg.Interface)
	}
	if i := slices.IndexFunc(held, func(h sandbox.Holder) bool { return h.Iface == cfg.Interface }); i >= 0 {
		return s, s.Conflict(held[i])
	}
	agent, err := sandbox.InterfaceAgent(cfg.Interface, ipv6)
	if err != nil {
		return s, err
	}
	if s.LogGroup == 0 {
		s.LogGroup = DefaultLogGroup
		for slices.ContainsFunc(held, func(h sandbox.Holder) bool { return h.LogGroup == s.LogGroup }) {
			s.LogGroup++
		}
	}
	s.Nets = []netip.Prefix{agent.Net4}
	if agent.Net6.IsValid() {
		s.Nets = append(s.Nets, agent.Net6)
	}
	g.agent = agent
	return s, nil
}
