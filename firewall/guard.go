package firewall

import (
	"errors"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
)

// GuardTable is the table that keeps the forwarding sluice switched on
// for its agents from opening paths between the gateway's other
// interfaces. It is shared by every agent of the namespace: each agent's
// own table judges only what arrives on or leaves through its link, and a
// drop in one agent's table would be final for every other's packets too.
const GuardTable = "sluice-guard"

const setAgents = "agents"

// SetGuard makes the guard table of the current network namespace drop
// forwarded packets of each family of plan that neither arrive on nor
// leave through one of ifaces (the agents' links), or removes the table
// when plan switches nothing on. It replaces whatever guard was there in
// one batch, so there is no moment without one.
func SetGuard(plan ForwardingPlan, ifaces []string) error {
	return withConn(func(c *nftables.Conn) error { return setGuard(c, plan, ifaces) })
}

func setGuard(c *nftables.Conn, plan ForwardingPlan, ifaces []string) error {
	t := &nftables.Table{Name: GuardTable, Family: nftables.TableFamilyINet}
	// Add-then-delete makes the delete succeed whether or not a table was
	// there.
	c.AddTable(t)
	c.DelTable(t)
	if plan.Enable4 || plan.Enable6 {
		if err := addGuard(c, t, plan, ifaces); err != nil {
			return err
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("firewall: set the forwarding guard: %w", err)
	}
	return nil
}

func addGuard(c *nftables.Conn, t *nftables.Table, plan ForwardingPlan, ifaces []string) error {
	c.AddTable(t)
	// Host byte order, as nft declares ifname sets, so that `nft list`
	// shows the names.
	agents := &nftables.Set{Table: t, Name: setAgents, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian}
	var elems []nftables.SetElement
	for _, name := range ifaces {
		if name == "" || len(name) >= len(ifname("")) {
			return errors.New("firewall: guard: bad interface name " + name)
		}
		elems = append(elems, nftables.SetElement{Key: ifname(name)})
	}
	if err := c.AddSet(agents, elems); err != nil {
		return fmt.Errorf("firewall: guard: %w", err)
	}
	accept := nftables.ChainPolicyAccept
	fw := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	add := func(exprs []expr.Any) { c.AddRule(&nftables.Rule{Table: t, Chain: fw, Exprs: exprs}) }
	// A flow the guard let start goes on without a lookup: only a packet
	// that passed every chain is tracked as established, so none between
	// the other interfaces ever is (an invalid one is not established
	// either, and meets the drops below).
	add(rule(ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), verdict(expr.VerdictAccept)))
	// An agent's packets are its own table's to judge.
	add(rule(metaIn(expr.MetaKeyIIFNAME, setAgents), verdict(expr.VerdictAccept)))
	add(rule(metaIn(expr.MetaKeyOIFNAME, setAgents), verdict(expr.VerdictAccept)))
	if plan.Enable4 {
		add(rule(nfproto(false), verdict(expr.VerdictDrop)))
	}
	if plan.Enable6 {
		add(rule(nfproto(true), verdict(expr.VerdictDrop)))
	}
	return nil
}

// metaIn is `meta KEY @set`.
func metaIn(key expr.MetaKey, set string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: set},
	}
}
