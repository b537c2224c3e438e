package firewall

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/google/nftables"

	"github.com/sluicegw/sluice/policy"
)

// RevokeFor is how long a revoked destination stays refused to flows that
// were open before: longer than a TCP peer keeps retransmitting into
// silence, so that no packet of such a flow gets through after.
const RevokeFor = 30 * time.Minute

// Revoke takes out of the agent's sets every element that keep refuses,
// after a policy change: new flows to it are refused at once, open ones
// meet a refusal before the established-accept (their tracking entries
// are deleted too), for RevokeFor or until an answer allows it again.
// Elements keep accepts are untouched, and so are their flows. It returns
// the number of elements revoked.
func (m *Manager) Revoke(keep func(addr netip.Addr, port uint16) bool) (int, error) {
	now := time.Now()
	m.mu.Lock()
	var doomed []elemKey
	for k, exp := range m.expiry {
		if exp.After(now) && !keep(k.addr, k.port) {
			doomed = append(doomed, k)
			delete(m.expiry, k)
			m.revoked[k] = now.Add(RevokeFor)
		}
	}
	m.mu.Unlock()
	if len(doomed) == 0 {
		return 0, nil
	}
	slices.SortFunc(doomed, func(a, b elemKey) int { return a.addr.Compare(b.addr)*2 + cmpPort(a.port, b.port) })
	m.connMu.Lock()
	defer m.connMu.Unlock()
	for chunk := range slices.Chunk(doomed, maxBatch/2) {
		v4, v6 := splitFamilies(chunk, fixed(0))
		r4, r6 := splitFamilies(chunk, fixed(RevokeFor))
		// Into the revoked sets and out of the allow sets in one
		// transaction: no packet sees the element in neither.
		m.setOp(setRevoked4, setRevoked6, r4, r6, true)
		m.setOp(set4, set6, v4, v6, false)
		if err := m.conn.Flush(); err != nil {
			return 0, fmt.Errorf("firewall: revoke %d elements: %w", len(chunk), err)
		}
	}
	var agent []netip.Prefix
	for _, a := range []netip.Addr{m.cfg.AgentAddr4, m.cfg.AgentAddr6} {
		if a.IsValid() {
			agent = append(agent, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	cut := make(map[elemKey]bool, len(doomed))
	for _, k := range doomed {
		cut[k] = true
	}
	if _, err := m.forgetTo(m.cfg.NetNSFd, agent, cut); err != nil {
		return len(doomed), err
	}
	return len(doomed), nil
}

func cmpPort(a, b uint16) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// splitFamilies turns keys into set elements by family, each with its
// timeout (none when zero: a delete carries none).
func splitFamilies(keys []elemKey, timeout func(elemKey) time.Duration) (v4, v6 []nftables.SetElement) {
	for _, k := range keys {
		el := nftables.SetElement{Key: elemBytes(k), Timeout: timeout(k)}
		if k.addr.Is6() {
			v6 = append(v6, el)
		} else {
			v4 = append(v4, el)
		}
	}
	return v4, v6
}

// fixed is the same timeout for every element.
func fixed(d time.Duration) func(elemKey) time.Duration {
	return func(elemKey) time.Duration { return d }
}

// setOp queues adding (or deleting) elements to a pair of sets.
func (m *Manager) setOp(name4, name6 string, v4, v6 []nftables.SetElement, add bool) {
	for _, s := range []struct {
		name string
		els  []nftables.SetElement
	}{{name4, v4}, {name6, v6}} {
		if len(s.els) == 0 {
			continue
		}
		if add {
			_ = m.conn.SetAddElements(m.sets[s.name], s.els) // errors only for anonymous sets
		} else {
			_ = m.conn.SetDeleteElements(m.sets[s.name], s.els)
		}
	}
}

// unrevokeLocked returns the keys among keys that are in the revoked sets
// and forgets them there: an answer allowed them again. The caller takes
// them out of the revoked sets in the batch that adds them to the allow
// sets.
func (m *Manager) unrevokeLocked(keys []elemKey, now time.Time) []elemKey {
	if len(m.revoked) == 0 {
		return nil
	}
	var out []elemKey
	for _, k := range keys {
		if until, ok := m.revoked[k]; ok {
			delete(m.revoked, k)
			if until.After(now) {
				out = append(out, k)
			}
		}
	}
	return out
}

// Reconfigure replaces the rules for a changed policy (its cidr entries
// and the ports the proxy inspects) in one transaction, keeping the sets
// and their elements. Open flows to a cidr entry that is gone are refused
// from now on, as Revoke does for set elements.
func (m *Manager) Reconfigure(prefixes []*policy.Entry, tlsPorts, httpPorts []uint16) error {
	m.connMu.Lock()
	defer m.connMu.Unlock()
	revoked := revokedPrefixes(m.revokedPrefixes, m.cfg.Prefixes, prefixes)
	prev := m.cfg
	prevRevoked := m.revokedPrefixes
	m.cfg.Prefixes, m.cfg.TLSPorts, m.cfg.HTTPPorts = prefixes, tlsPorts, httpPorts
	m.revokedPrefixes = revoked
	m.addChains(true)
	if err := m.conn.Flush(); err != nil {
		m.cfg, m.revokedPrefixes = prev, prevRevoked
		return fmt.Errorf("firewall: replace the rules of table inet %s: %w", m.cfg.Table, err)
	}
	return nil
}

// revokedPrefixes returns the prefix and ports whose open flows are to be
// refused after the policy's cidr entries went from old to now: those
// refused before and still not allowed, and those old allowed that now
// does not.
func revokedPrefixes(before, old, now []*policy.Entry) []*policy.Entry {
	allowed := func(p netip.Prefix, port uint16) bool {
		return slices.ContainsFunc(now, func(e *policy.Entry) bool { return e.Prefix == p && slices.Contains(e.Ports, port) })
	}
	var out []*policy.Entry
	for _, e := range slices.Concat(before, old) {
		var ports []uint16
		for _, port := range e.Ports {
			if !allowed(e.Prefix, port) && !slices.ContainsFunc(out, func(r *policy.Entry) bool {
				return r.Prefix == e.Prefix && slices.Contains(r.Ports, port)
			}) {
				ports = append(ports, port)
			}
		}
		if len(ports) > 0 {
			out = append(out, &policy.Entry{Prefix: e.Prefix, Ports: ports})
		}
	}
	return out
}
