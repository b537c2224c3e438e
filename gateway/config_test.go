package gateway

import (
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
	"github.com/sluicegw/sluice/tlsinspect/mitm"
)

func validConfig(t *testing.T) Config {
	t.Helper()
	p, err := policy.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := Config{Name: "agent", Policy: p}
	c.Upstreams, c.Journal = []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:53")}, &journal.Memory{}
	return c
}

func TestConfigValidate(t *testing.T) {
	if err := (&Config{}).Validate(); err == nil {
		t.Fatal("the zero config is valid")
	}
	good := validConfig(t)
	if err := good.Validate(); err != nil {
		t.Fatalf("a good config: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no name", func(c *Config) { c.Name = "" }, "agent name"},
		{"name with a space", func(c *Config) { c.Name = "my agent" }, "agent name"},
		{"no policy", func(c *Config) { c.Policy = nil }, "no policy"},
		{"v6 agent net", func(c *Config) { c.AgentNet = netip.MustParsePrefix("fd5c:1ce0:5c1c::/64") }, "want an IPv4 prefix"},
		{"agent net too small", func(c *Config) { c.AgentNet = netip.MustParsePrefix("198.19.255.252/31") }, "/30 or wider"},
		{"v4 agent net6", func(c *Config) { c.AgentNet6 = netip.MustParsePrefix("198.19.255.252/30") }, "want an IPv6 prefix"},
		{"table with a space", func(c *Config) { c.Table = "my table" }, "table"},
		{"no upstream", func(c *Config) { c.Upstreams = nil }, "no upstream"},
		{"upstream port 0", func(c *Config) { c.Upstreams = []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:0")} }, "want an address and a port"},
		{"private global range", func(c *Config) { c.Global = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")} }, "global range 10.0.0.0/8"},
		{"min above max", func(c *Config) { c.MinTTL, c.MaxTTL = time.Hour, time.Minute }, "min TTL"},
		{"negative timeout", func(c *Config) { c.IdleTimeout = -time.Second }, "negative"},
		{"negative connections", func(c *Config) { c.MaxConns = -1 }, "connection limit"},
		{"no journal", func(c *Config) { c.Journal = nil }, "no journal"},
	} {
		c := validConfig(t)
		tc.mod(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate() = %v, want an error with %q", tc.name, err, tc.want)
		}
	}
	// Every problem at once.
	err := (&Config{Name: "agent"}).Validate()
	for _, want := range []string{"no policy", "no upstream", "no journal"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate of an empty config: %v, want it to name %q", err, want)
		}
	}
}

func TestParseUpstream(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.53":        "192.0.2.53:53",
		"192.0.2.53:5353":   "192.0.2.53:5353",
		"2001:db8::53":      "[2001:db8::53]:53",
		"[2001:db8::53]":    "[2001:db8::53]:53",
		"[2001:db8::53]:54": "[2001:db8::53]:54",
	} {
		got, err := ParseUpstream(in)
		if err != nil || got.String() != want {
			t.Errorf("ParseUpstream(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "dns.example", "192.0.2.53:dns", "192.0.2.300"} {
		if _, err := ParseUpstream(bad); err == nil {
			t.Errorf("ParseUpstream(%q) succeeded", bad)
		}
	}
}

func TestPolicySourceLoad(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(file, []byte("version: 1\nallow:\n  - host: a.test\n  - host: \"*\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err := PolicySource{File: file, Allow: []string{"*.com"}}.Load()
	if err == nil || !strings.Contains(err.Error(), "p.yaml:4:") || !strings.Contains(err.Error(), "public suffix") {
		t.Errorf("a bad file and a bad flag: %v, want both errors, the file's with its line", err)
	}
	if err := os.WriteFile(file, []byte("version: 1\nallow:\n  - host: a.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, _, err := PolicySource{File: file, Allow: []string{"b.test:443"}}.Load()
	if err != nil || len(p.Entries()) != 2 {
		t.Errorf("a good file and flag: %v, %v; want two entries", p, err)
	}
}

// TestPolicySourceFlags: --allow adds ports to the file's entry for the
// same host instead of conflicting with it, --allow-private marks it
// private, --accept silences the flags' warnings, and a file with errors
// still yields the warnings of its good entries.
func TestPolicySourceFlags(t *testing.T) {
	file := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(file, []byte("version: 1\nallow:\n  - host: a.test\n    ports: [443]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, _, err := PolicySource{File: file, Allow: []string{"a.test:8443,8080", "b.test:80,443"}, AllowPrivate: []string{"nas.lan:5000"}}.Load()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range p.Entries() {
		got[e.Host] = fmt.Sprintf("%v %v", e.Ports, e.Private)
	}
	want := map[string]string{"a.test": "[443 8080 8443] false", "b.test": "[80 443] false", "nas.lan": "[5000] true"}
	if !maps.Equal(got, want) {
		t.Errorf("entries %v, want %v", got, want)
	}
	_, ws, err := PolicySource{Allow: []string{"github.com"}}.Load()
	if err != nil || len(ws) != 1 || ws[0].Risk != policy.RiskGitPush {
		t.Errorf("--allow github.com: %v %v, want one git-push-risk warning", ws, err)
	}
	_, ws, err = PolicySource{Allow: []string{"github.com"}, Accept: []string{policy.RiskGitPush}}.Load()
	if err != nil || len(ws) != 0 {
		t.Errorf("--allow github.com --accept git-push-risk: %v %v, want no warning", ws, err)
	}
	if _, _, err := (PolicySource{Allow: []string{"a.test"}, Accept: []string{"everything"}}).Load(); err == nil || !strings.Contains(err.Error(), "--accept everything: unknown warning") {
		t.Errorf("--accept everything: %v", err)
	}
	// An entry with git rules takes no port from --allow: on it the rules
	// would not be checked. A port it has already is no change.
	if err := os.WriteFile(file, []byte("version: 1\nallow:\n  - host: github.com\n    git: {fetch: ['*']}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := (PolicySource{File: file, Allow: []string{"github.com:8443"}}).Load(); err == nil || !strings.Contains(err.Error(), "has git or http rules at "+file+":3, which are not checked on port 8443") {
		t.Errorf("--allow github.com:8443 onto an entry with rules: %v", err)
	}
	if p, _, err := (PolicySource{File: file, Allow: []string{"github.com:443"}}).Load(); err != nil || len(p.Entries()) != 1 {
		t.Errorf("--allow github.com:443 onto an entry with rules: %v", err)
	}
	if err := os.WriteFile(file, []byte("version: 1\nallow:\n  - host: gitlab.com\n  - host: \"*\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, ws, err = PolicySource{File: file}.Load()
	if err == nil || len(ws) != 1 || ws[0].Source != file+":3" {
		t.Errorf("a file with an error: warnings %v, err %v; want the good entry's warning beside the error", ws, err)
	}
}

func TestNameFor(t *testing.T) {
	for in, want := range map[string]string{
		"curl": "curl", "/usr/bin/openhands": "openhands", "my agent.sh": "my-agent.sh",
		"/": "agent", "..": "agent", "ünïcode": "--n--code",
		"a-very-long-command-name-that-goes-on-and-on": "a-very-long-command-name-that-go",
	} {
		if got := NameFor(in); got != want || !ValidName(got) {
			t.Errorf("NameFor(%q) = %q (valid %v), want %q", in, got, ValidName(got), want)
		}
	}
}

// TestRuledHostsFixedAtStart: a policy change may not add a host with
// rules that the agent's CA does not cover (its trust was set at start),
// and a gateway that started without such hosts takes none; hosts the CA
// covers, and hosts without rules, change freely.
func TestRuledHostsFixedAtStart(t *testing.T) {
	load := func(entries string) *policy.Policy {
		t.Helper()
		file := filepath.Join(t.TempDir(), "p.yaml")
		if err := os.WriteFile(file, []byte("version: 1\nallow:\n"+entries), 0o644); err != nil {
			t.Fatal(err)
		}
		p, _, err := PolicySource{File: file}.Load()
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	github := load("  - host: github.com\n    git: {fetch: ['*']}\n")
	gitlab := load("  - host: github.com\n    git: {fetch: ['*']}\n  - host: gitlab.com\n    git: {fetch: ['*']}\n")
	plain := load("  - host: example.com\n")
	ca, err := mitm.NewCA([]string{"github.com"})
	if err != nil {
		t.Fatal(err)
	}
	with, without := &Gateway{ca: ca}, &Gateway{}
	for _, tc := range []struct {
		g    *Gateway
		p    *policy.Policy
		want string
	}{
		{with, github, ""},
		{with, plain, ""},
		{with, gitlab, "rules for gitlab.com"},
		{without, plain, ""},
		{without, github, "rules for github.com"},
	} {
		err := tc.g.checkRuledHosts(tc.p)
		if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("checkRuledHosts(%v) = %v, want %q", ruledHosts(tc.p), err, tc.want)
		}
	}
}
