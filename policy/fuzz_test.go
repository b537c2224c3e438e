package policy

import (
	"strings"
	"testing"
)

// FuzzCanonicalName: names come from the agent. A canonical name must be
// stable and contain only what a host name may.
func FuzzCanonicalName(f *testing.F) {
	for _, s := range []string{"Allowed.Test.", "evil.test\x00.allowed.test", "a..b", "192.0.2.1", "xn--bcher-kva.example"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
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

// FuzzParseFile: a policy file must never crash the parser, and whatever
// it accepts must build a policy.
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
		_ = p.MatchNamePort("a.example.com", 443)
	})
}
