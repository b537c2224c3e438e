// Package journal is sluice's decision record. For now it holds the event
// type and sinks that write one canonical line per decision; the durable
// store comes later behind the same Sink interface.
package journal

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
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

// Sink receives decisions. Record must not block the caller for long: it
// sits on the path of a DNS answer or a connection.
type Sink interface {
	Record(Event)
}

// LogSink writes each event as one structured log line.
type LogSink struct {
	Log *slog.Logger
	// Allowed also logs decisions that allowed something; refusals are
	// always logged.
	Allowed bool
}

// Record logs ev at WARN when it is a refusal and at INFO otherwise.
func (s LogSink) Record(ev Event) {
	if ev.Allow && !s.Allowed {
		return
	}
	level, msg := slog.LevelWarn, "refused"
	if ev.Allow {
		level, msg = slog.LevelInfo, "allowed"
	}
	attrs := []slog.Attr{
		slog.String("agent", ev.Agent),
		slog.String("layer", string(ev.Layer)),
		slog.String("reason", ev.Reason),
	}
	if ev.Name != "" {
		attrs = append(attrs, slog.String("name", bound(ev.Name)))
	}
	if ev.Dst.IsValid() {
		attrs = append(attrs, slog.String("dst", ev.Dst.String()))
	}
	if ev.Proto != "" {
		attrs = append(attrs, slog.String("proto", ev.Proto))
	}
	if ev.Rule != "" {
		attrs = append(attrs, slog.String("rule", ev.Rule))
	}
	attrs = append(attrs, slog.String("policy", ev.PolicyHash))
	if len(ev.Addrs) > 0 {
		addrs := make([]string, len(ev.Addrs))
		for i, a := range ev.Addrs {
			addrs[i] = a.String()
		}
		attrs = append(attrs, slog.String("addrs", strings.Join(addrs, ",")))
	}
	if ev.Detail != "" {
		attrs = append(attrs, slog.String("detail", bound(ev.Detail)))
	}
	s.Log.LogAttrs(context.Background(), level, msg, attrs...)
}

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

// Discard is a Sink that drops every event, for tests and benchmarks.
type Discard struct{}

// Record does nothing.
func (Discard) Record(Event) {}

// Memory is a Sink that keeps every event, for tests. It is safe for
// concurrent use.
type Memory struct {
	mu     sync.Mutex
	events []Event
}

// Record keeps ev.
func (m *Memory) Record(ev Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.events = append(m.events, ev)
}

// Last returns the latest event, the zero Event when there is none.
func (m *Memory) Last() Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.events) == 0 {
		return Event{}
	}
	return m.events[len(m.events)-1]
}
