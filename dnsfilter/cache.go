package dnsfilter

import (
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/sluicegw/sluice/policy"
)

type cacheKey struct {
	name  string
	qtype uint16
}

// cached is a filtered upstream answer: what the agent may be told, never
// the raw upstream message.
type cached struct {
	// policy is the policy the answer was filtered under: an entry that
	// changed (private: true taken away) filters differently, so the
	// answer is good for that policy only.
	policy *policy.Policy
	msg    *dns.Msg // answer and authority sections, TTLs as first served
	addrs  []netip.Addr
	stored time.Time
	ttl    time.Duration // how long msg may be served
	// note says what the upstream answered when that gives the agent
	// nothing ("198.51.100.53:53 answered NXDOMAIN"), for the journal.
	note string
}

// cache holds filtered answers for at most max keys. When full, an
// arbitrary entry makes room: names are the agent's choice, so no order of
// eviction is safe from an adversary anyway, and the bound is what matters.
type cache struct {
	mu      sync.Mutex
	entries map[cacheKey]*cached
	max     int
}

func newCache(max int) *cache {
	return &cache{entries: map[cacheKey]*cached{}, max: max}
}

// get returns the entry filtered under p and its age, or nil when
// absent, expired or filtered under another policy.
func (c *cache) get(k cacheKey, p *policy.Policy, now time.Time) (*cached, time.Duration) {
	if c.max == 0 {
		return nil, 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[k]
	if e == nil || e.policy != p {
		return nil, 0
	}
	age := now.Sub(e.stored)
	if age >= e.ttl {
		delete(c.entries, k)
		return nil, 0
	}
	return e, age
}

func (c *cache) put(k cacheKey, e *cached) {
	if c.max == 0 || e.ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	putBounded(c.entries, k, e, c.max)
}

// putBounded sets m[k] = v, first making room for a new key, when m
// holds max already, by deleting an arbitrary one.
func putBounded[K comparable, V any](m map[K]V, k K, v V, max int) {
	if _, ok := m[k]; !ok && len(m) >= max {
		for old := range m {
			delete(m, old)
			break
		}
	}
	m[k] = v
}
