package firewall

import (
	"errors"
	"fmt"
	"slices"
	"strings"

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
	// Checked before anything is queued on c: a shared connection sends
	// whatever is queued with its next transaction.
	elems, err := guardElems(ifaces)
	if err != nil {
		return err
	}
	if (plan.Enable4 || plan.Enable6) && guardIs(c, t, plan) {
		// Only the links changed (an agent came or went): the set's
		// elements are replaced in one transaction, and the chain stays
		// hooked. Replacing the table takes its hook out and puts it back,
		// which costs the kernel several milliseconds more; sluice serve
		// changes the guard for every agent it starts.
		set := guardSet(t)
		c.FlushSet(set)
		if err := c.SetAddElements(set, elems); err != nil {
			return fmt.Errorf("firewall: guard: %w", err)
		}
		if err := c.Flush(); err != nil {
			return fmt.Errorf("firewall: set the forwarding guard's links: %w", err)
		}
		return nil
	}
	// Add-then-delete makes the delete succeed whether or not a table was
	// there.
	c.AddTable(t)
	c.DelTable(t)
	if plan.Enable4 || plan.Enable6 {
		if err := addGuard(c, t, plan, elems); err != nil {
			return err
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("firewall: set the forwarding guard: %w", err)
	}
	return nil
}

func addGuard(c *nftables.Conn, t *nftables.Table, plan ForwardingPlan, elems []nftables.SetElement) error {
	c.AddTable(t)
	if err := c.AddSet(guardSet(t), elems); err != nil {
		return fmt.Errorf("firewall: guard: %w", err)
	}
	accept := nftables.ChainPolicyAccept
	fw := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	for _, exprs := range guardRules(plan) {
		c.AddRule(&nftables.Rule{Table: t, Chain: fw, Exprs: exprs})
	}
	return nil
}

// guardRules are the guard's forward chain for plan.
func guardRules(plan ForwardingPlan) [][]expr.Any {
	rules := [][]expr.Any{
		// A flow the guard let start goes on without a lookup: only a
		// packet that passed every chain is tracked as established, so
		// none between the other interfaces ever is (an invalid one is
		// not established either, and meets the drops below).
		rule(ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), verdict(expr.VerdictAccept)),
		// An agent's packets are its own table's to judge.
		rule(metaIn(expr.MetaKeyIIFNAME, setAgents), verdict(expr.VerdictAccept)),
		rule(metaIn(expr.MetaKeyOIFNAME, setAgents), verdict(expr.VerdictAccept)),
	}
	if plan.Enable4 {
		rules = append(rules, rule(nfproto(false), verdict(expr.VerdictDrop)))
	}
	if plan.Enable6 {
		rules = append(rules, rule(nfproto(true), verdict(expr.VerdictDrop)))
	}
	return rules
}

// guardSet is the set of the agents' links. Host byte order, as nft
// declares ifname sets, so that `nft list` shows the names.
func guardSet(t *nftables.Table) *nftables.Set {
	return &nftables.Set{Table: t, Name: setAgents, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian}
}

func guardElems(ifaces []string) ([]nftables.SetElement, error) {
	var elems []nftables.SetElement
	for _, name := range ifaces {
		if name == "" || len(name) >= len(ifname("")) {
			return nil, errors.New("firewall: guard: bad interface name " + name)
		}
		elems = append(elems, nftables.SetElement{Key: ifname(name)})
	}
	return elems, nil
}

// guardIs says whether the namespace's guard is in place for plan: its
// table active, its set, and its forward chain hooked as addGuard hooks
// it, with exactly the rules of guardRules(plan).
// Anything else (no guard, one for another plan, one changed by hand) is
// replaced whole.
func guardIs(c *nftables.Conn, t *nftables.Table, plan ForwardingPlan) bool {
	if _, err := c.GetSetByName(t, setAgents); err != nil {
		return false
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil || !slices.ContainsFunc(tables, func(x *nftables.Table) bool { return x.Name == t.Name && x.Flags == 0 }) {
		return false // gone, or dormant
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil || !slices.ContainsFunc(chains, func(ch *nftables.Chain) bool {
		return ch.Table.Name == t.Name && ch.Name == "forward" && ch.Type == nftables.ChainTypeFilter &&
			ch.Hooknum != nil && *ch.Hooknum == *nftables.ChainHookForward &&
			ch.Priority != nil && *ch.Priority == *nftables.ChainPriorityFilter &&
			ch.Policy != nil && *ch.Policy == nftables.ChainPolicyAccept
	}) {
		return false // not hooked as the guard hooks it
	}
	rules, err := c.GetRules(t, &nftables.Chain{Name: "forward", Table: t})
	if err != nil {
		return false
	}
	want := guardRules(plan)
	if len(rules) != len(want) {
		return false
	}
	for i, r := range rules {
		if exprsString(r.Exprs) != exprsString(want[i]) {
			return false
		}
	}
	return true
}

// exprsString spells out a rule's expressions, field by field.
func exprsString(exprs []expr.Any) string {
	var b strings.Builder
	for _, e := range exprs {
		fmt.Fprintf(&b, "%T%+v;", e, e)
	}
	return b.String()
}

// metaIn is `meta KEY @set`.
func metaIn(key expr.MetaKey, set string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: set},
	}
}
