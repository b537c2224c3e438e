package policy

import (
	"net/netip"
	"strings"
	"testing"
)

// FuzzCanonicalName: names come from the agent. A canonical name must be
// stable and contain only what a host name may, and no address passes
// for a name: whatever netip.ParseAddr reads, mayBeAddr asks it about.
func FuzzCanonicalName(f *testing.F) {
	for _, s := range []string{"Allowed.Test.", "evil.test\x00.allowed.test", "a..b", "192.0.2.1", "xn--bcher-kva.example",
		"::ffff:192.0.2.1", "fe80::1%eth0", "1.2.3.4.", "0.0.0.0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if _, err := netip.ParseAddr(strings.TrimSuffix(s, ".")); err == nil && !mayBeAddr(strings.TrimSuffix(s, ".")) {
			t.Fatalf("mayBeAddr(%q) = false for an address", s)
		}
		c, err := CanonicalName(s)
		if err != nil {
			return
		}
		again, err := CanonicalName(c)
		if err != nil || again != c {
			t.Fatalf("CanonicalName(%q) = %q, not stable: %q %v", s, c, again, err)
		}
		if strings.Trim(c, "abcdefghijklmnopqrstuvwxyz0123456789-_.") != "" || len(c) > maxNameLen {
			t.Fatalf("CanonicalName(%q) = %q has bytes a host name may not", s, c)
		}
	})
}

// FuzzParseFile: a policy file must never crash the parser, and a policy
// built from what it accepts allows each entry's own destinations on each
// of its ports (New may still refuse a set of entries: duplicates, port
// conflicts).
func FuzzParseFile(f *testing.F) {
	f.Add([]byte("version: 1\nallow:\n  - host: a.example.com\n    ports: [443]\n  - cidr: 198.51.100.0/24\n    ports: [22]\n"))
	f.Add([]byte("version: 1\nallow: [{host: '*.x.test', private: true}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := ParseFile("f.yaml", data)
		if err != nil {
			return
		}
		p, err := New(entries)
		if err != nil {
			return
		}
		_ = Lint(p)
		for _, e := range p.Entries() {
			for _, port := range e.Ports {
				var d Decision
				switch {
				case e.Host == "":
					d = p.MatchAddr(e.Prefix.Addr(), port)
				case e.Wildcard():
					name := wildcardExample(p, e)
					if name == "" {
						continue
					}
					d = p.MatchNamePort(name, port)
				default:
					d = p.MatchNamePort(e.Host, port)
				}
				if !d.Allow {
					t.Fatalf("%s: its own destination on port %d is refused (%s)", e, port, d.Reason)
				}
			}
		}
	})
}

// wildcardExample is a name only e matches best: one label (so no longer
// wildcard can claim it) that no exact entry names, as long as the
// wildcard; "" if every such label is taken.
func wildcardExample(p *Policy, e *Entry) string {
	for _, c := range "abcdefghijklmnopqrstuvwxyz0123456789" {
		name := string(c) + e.Host[1:]
		if d := p.MatchName(name); d.Entry == e {
			return name
		}
	}
	return ""
}
