package firewall

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"runtime"
	"time"

	"github.com/google/nftables"
)

type elemKey struct {
	addr netip.Addr
	port uint16
}

// elemBytes encodes addr . port the way the kernel stores a concatenation:
// each field padded to a multiple of 4 bytes.
func elemBytes(k elemKey) []byte {
	b := k.addr.AsSlice()
	b = binary.BigEndian.AppendUint16(b, k.port)
	return append(b, 0, 0)
}

// allowReq is one answer's set update waiting for a batch.
type allowReq struct {
	fresh, known []elemKey // new to the kernel; known but expiring too soon
	unrevoke     []elemKey // among them, those in the revoked sets
	timeout      time.Duration
	deadline     time.Time
	done         chan error
}

// Allow admits TCP connections to every addr on every port for at least
// need, and returns after the kernel has acknowledged it.
//
// Elements already known to outlive need cost no netlink call (the common
// case of a cached answer). The others join a group commit: the first
// caller becomes the leader and writes every pending update in one batch,
// while later callers wait for the acknowledgement of the batch that holds
// their elements. Each caller still returns only after its own elements are
// in the kernel.
func (m *Manager) Allow(ctx context.Context, addrs []netip.Addr, ports []uint16, need time.Duration) error {
	need = max(need, time.Second)
	now := time.Now()
	deadline := now.Add(need)
	m.mu.Lock()
	if m.allKnownLocked(addrs, ports, deadline) {
		m.mu.Unlock()
		return nil
	}
	req := m.classifyLocked(addrs, ports, now, deadline)
	if len(req.fresh)+len(req.known) == 0 {
		m.mu.Unlock()
		return nil
	}
	req.unrevoke = m.unrevokeLocked(req.fresh, now)
	req.timeout = need
	req.done = make(chan error, 1)
	m.pending = append(m.pending, req)
	if m.flushing {
		m.mu.Unlock()
		select {
		case err := <-req.done:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	m.flushing = true
	// Let goroutines that are ready to run (other answers on their way
	// here) join this batch: with few threads, a leader that flushed at
	// once would commit one element per transaction.
	m.mu.Unlock()
	runtime.Gosched()
	m.mu.Lock()
	for len(m.pending) > 0 {
		batch := m.pending
		m.pending = nil
		m.mu.Unlock()
		committed, err := m.commit(batch)
		m.mu.Lock()
		for _, r := range batch {
			for _, k := range append(r.fresh, r.known...) {
				if committed[k] && m.expiry[k].Before(r.deadline) {
					m.expiry[k] = r.deadline
				}
			}
			r.done <- err
		}
	}
	m.flushing = false
	if len(m.expiry) > 4*int(m.cfg.SetSize) {
		m.sweepLocked(now)
	}
	m.mu.Unlock()
	return <-req.done
}

// allKnownLocked reports whether every element is known to outlive
// deadline. exp is when we asked the kernel plus the timeout, so the
// kernel's own expiry is never earlier.
func (m *Manager) allKnownLocked(addrs []netip.Addr, ports []uint16, deadline time.Time) bool {
	for _, a := range addrs {
		a = a.Unmap()
		if a.Is6() && !m.has6() {
			continue
		}
		for _, p := range ports {
			if exp, ok := m.expiry[elemKey{a, p}]; !ok || exp.Before(deadline) {
				return false
			}
		}
	}
	return true
}

func (m *Manager) classifyLocked(addrs []netip.Addr, ports []uint16, now, deadline time.Time) *allowReq {
	r := &allowReq{deadline: deadline}
	for _, a := range addrs {
		a = a.Unmap()
		if a.Is6() && !m.has6() {
			continue // the agent has no IPv6 route; nothing to open
		}
		for _, p := range ports {
			k := elemKey{a, p}
			exp, ok := m.expiry[k]
			switch {
			case ok && !exp.Before(deadline):
			case ok && exp.After(now):
				r.known = append(r.known, k)
			default:
				r.fresh = append(r.fresh, k)
			}
		}
	}
	return r
}

// commit writes the batch's elements, in chunks the kernel accepts, and
// reports which elements it holds now. Where two requests name the same
// element, the longer timeout wins.
func (m *Manager) commit(batch []*allowReq) (map[elemKey]bool, error) {
	timeouts := map[elemKey]time.Duration{}
	refresh := map[elemKey]bool{}
	unrevoke := map[elemKey]bool{}
	var order []elemKey
	for _, r := range batch {
		for _, k := range r.unrevoke {
			unrevoke[k] = true
		}
		for i, k := range append(r.fresh, r.known...) {
			if _, seen := timeouts[k]; !seen {
				order = append(order, k)
			}
			timeouts[k] = max(timeouts[k], r.timeout)
			if i >= len(r.fresh) {
				refresh[k] = true
			}
		}
	}
	m.connMu.Lock()
	defer m.connMu.Unlock()
	committed := make(map[elemKey]bool, len(order))
	for len(order) > 0 {
		chunk := order[:min(len(order), maxBatch)]
		order = order[len(chunk):]
		m.queue(chunk, timeouts, refresh, unrevoke)
		if err := m.conn.Flush(); err != nil {
			return committed, fmt.Errorf("firewall: add %d elements to the agent's sets: %w", len(chunk), err)
		}
		for _, k := range chunk {
			committed[k] = true
		}
		m.batches.Add(1)
		m.elements.Add(int64(len(chunk)))
	}
	return committed, nil
}

// queue adds one batch's messages. Each set gets one message per step, not
// one per element: the kernel acknowledges every message, and thousands of
// acknowledgements overflow the socket's receive buffer.
//
// To refresh the timeout of an element the kernel already has, kernels
// before 6.12 need it deleted and added again; adding it first makes the
// delete safe even if it lapsed in the meantime, and the three steps are one
// transaction, so no packet ever sees the element missing.
//
// An element that a policy change revoked and an answer now allows again
// leaves the revoked sets in the same transaction (added first, so that
// the delete succeeds even if it lapsed there meanwhile).
func (m *Manager) queue(keys []elemKey, timeouts map[elemKey]time.Duration, refresh, unrevoke map[elemKey]bool) {
	emit := func(keys []elemKey, add bool) {
		v4, v6 := splitFamilies(keys, func(k elemKey) time.Duration {
			if add {
				return timeouts[k]
			}
			return 0
		})
		m.setOp(set4, set6, v4, v6, add)
	}
	var back []elemKey
	for _, k := range keys {
		if unrevoke[k] {
			back = append(back, k)
		}
	}
	if len(back) > 0 {
		r4, r6 := splitFamilies(back, fixed(time.Second))
		m.setOp(setRevoked4, setRevoked6, r4, r6, true)
		d4, d6 := splitFamilies(back, fixed(0))
		m.setOp(setRevoked4, setRevoked6, d4, d6, false)
	}
	emit(keys, true)
	if !m.refresh {
		return
	}
	var again []elemKey
	for _, k := range keys {
		if refresh[k] {
			again = append(again, k)
		}
	}
	if len(again) > 0 {
		emit(again, false)
		emit(again, true)
	}
}

// Elements counts the elements Allow put in the agent's sets, expired
// ones included until they are swept: what sluice knows of them, never a
// dump of the kernel's. It is read at every metrics scrape, so it takes
// the lock the resolver's answers wait on only to read the map's length.
func (m *Manager) Elements() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.expiry)
}

func (m *Manager) sweepLocked(now time.Time) {
	for k, exp := range m.expiry {
		if !exp.After(now) {
			delete(m.expiry, k)
		}
	}
}

func (m *Manager) aliveElem() nftables.SetElement {
	return nftables.SetElement{Key: binary.BigEndian.AppendUint32(nil, aliveKey), Timeout: m.cfg.Heartbeat}
}

// Heartbeat proves sluice alive for another Config.Heartbeat. Call it well
// within that period: once it lapses, the agent's new flows are refused.
func (m *Manager) Heartbeat() error {
	m.connMu.Lock()
	defer m.connMu.Unlock()
	set := m.sets[setAlive]
	el := []nftables.SetElement{m.aliveElem()}
	_ = m.conn.SetAddElements(set, el)
	_ = m.conn.SetDeleteElements(set, []nftables.SetElement{{Key: el[0].Key}})
	_ = m.conn.SetAddElements(set, el)
	if err := m.conn.Flush(); err != nil {
		return fmt.Errorf("firewall: heartbeat: %w", err)
	}
	return nil
}

// Run keeps the dead-man switch alive until ctx is done, refreshing it
// three times per Config.Heartbeat. A refresh that fails is logged: the
// agent's new flows are refused once the element lapses (fail closed).
func (m *Manager) Run(ctx context.Context) error {
	t := time.NewTicker(m.cfg.Heartbeat / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := m.Heartbeat(); err != nil {
				m.cfg.Log.Error("heartbeat failed: the agent's new connections will be refused", "err", err)
			}
		}
	}
}
