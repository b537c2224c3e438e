// Package journal is sluice's decision record: the event every layer
// records and the sinks that take events.
// For now the sinks write one canonical line per decision; the durable
// store comes later behind the same Sink contract (see Async).
package journal

import (
	"net/netip"
	"strings"
	"time"
)

// Layer is the part of the gateway that decided.
type Layer string

// Layers of the gateway.
const (
	LayerDNS      Layer = "dns"
	LayerFirewall Layer = "firewall"
	LayerTLS      Layer = "tls"
	LayerHTTP     Layer = "http"
)

// Event is one decision about one agent's attempt to reach something.
type Event struct {
	Time  time.Time
	Agent string
	Layer Layer
	Allow bool
	// Reason is a stable word such as "name_not_allowed" or "no_set_entry".
	Reason string
	// Name is the DNS name, SNI or Host the agent asked for, as it sent it
	// (attacker data: bounded here, escaped by whoever renders it).
	Name string
	// Dst is the destination address and port, when there was one.
	Dst netip.AddrPort
	// Proto is "udp", "tcp", "icmp", ... for firewall events; the query type for DNS.
	Proto string
	// Rule is the policy entry that matched, "" when none did.
	Rule string
	// PolicyHash is the policy version that made the decision.
	PolicyHash string
	// Addrs are the addresses of a DNS answer: the ones handed out, or
	// for a refusal the ones dropped from it.
	Addrs []netip.Addr
	// Detail is free text for a person, such as the upstream's error.
	Detail string
}

// maxField bounds every attacker-controlled string that reaches a record.
const maxField = 300

// bound cuts s to maxField bytes and replaces control characters, so a
// hostile name cannot forge log lines or drive a terminal.
func bound(s string) string {
	if len(s) > maxField {
		s = s[:maxField] + "…"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
