package policy

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func mustLoad(t *testing.T, file string) *Policy {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := ParseFile(filepath.Base(file), data)
	if err != nil {
		t.Fatalf("ParseFile(%s): %v", file, err)
	}
	p, err := New(entries)
	if err != nil {
		t.Fatalf("New(%s): %v", file, err)
	}
	return p
}

func TestParseGood(t *testing.T) {
	p := mustLoad(t, "testdata/good/agent.yaml")
	tests := []struct {
		name string
		port uint16
		want Reason
	}{
		{"api.github.com", 443, ReasonAllowed},
		{"API.GitHub.com.", 443, ReasonAllowed},
		{"api.github.com", 80, ReasonPortNotAllowed},
		{"x.api.github.com", 443, ReasonNameNotAllowed},
		{"github.com", 443, ReasonNameNotAllowed},
		{"simple.pypi.test", 443, ReasonAllowed},
		{"a.b.pypi.test", 80, ReasonAllowed},
		{"pypi.test", 443, ReasonNameNotAllowed}, // a wildcard is not the apex
		{"evilpypi.test", 443, ReasonNameNotAllowed},
		{"pypi.test.evil.test", 443, ReasonNameNotAllowed},
		{"files.pythonhosted.test", 443, ReasonAllowed},
		{"internal-repo.corp", 8443, ReasonAllowed},
		{"evil.test\x00.pypi.test", 443, ReasonInvalidName},
		{"192.0.2.1", 443, ReasonInvalidName},
		{"", 443, ReasonInvalidName},
	}
	for _, tt := range tests {
		got := p.MatchNamePort(tt.name, tt.port)
		if got.Reason != tt.want {
			t.Errorf("MatchNamePort(%q, %d) = %s, want %s", tt.name, tt.port, got.Reason, tt.want)
		}
		if got.Allow != (tt.want == ReasonAllowed) {
			t.Errorf("MatchNamePort(%q, %d).Allow = %v", tt.name, tt.port, got.Allow)
		}
		if got.PolicyHash != p.Hash() {
			t.Errorf("decision carries hash %q, want %q", got.PolicyHash, p.Hash())
		}
	}
	if d := p.MatchName("internal-repo.corp"); !d.Entry.Private {
		t.Errorf("internal-repo.corp: private = false, want true")
	}
	if d := p.MatchName("simple.pypi.test"); d.Rule() != "agent.yaml:6 *.pypi.test ports 80,443" {
		t.Errorf("Rule() = %q", d.Rule())
	}
}

func TestMatchAddr(t *testing.T) {
	p := mustLoad(t, "testdata/good/agent.yaml")
	tests := []struct {
		addr string
		port uint16
		want Reason
	}{
		{"198.51.100.7", 22, ReasonAllowed},
		{"::ffff:198.51.100.7", 22, ReasonAllowed},
		{"198.51.100.7", 443, ReasonPortNotAllowed},
		{"198.51.101.7", 22, ReasonAddrNotAllowed},
	}
	for _, tt := range tests {
		if got := p.MatchAddr(netip.MustParseAddr(tt.addr), tt.port); got.Reason != tt.want {
			t.Errorf("MatchAddr(%s, %d) = %s, want %s", tt.addr, tt.port, got.Reason, tt.want)
		}
	}
}

func TestParseBad(t *testing.T) {
	want := map[string][]string{
		"unknown-key.yaml":    {"unknown-key.yaml:4: allow[0].prots: unknown key"},
		"bare-star.yaml":      {"bare-star.yaml:3: allow[0].host: a bare '*'"},
		"public-suffix.yaml":  {"public-suffix.yaml:3: allow[0].host: \"*.co.uk\": co.uk is a public suffix"},
		"bad-port.yaml":       {"bad-port.yaml:4: allow[0].ports[1]: port \"70000\""},
		"version.yaml":        {"version.yaml:1: version: unsupported version \"2\""},
		"no-version.yaml":     {"no-version.yaml:1: missing 'version: 1'"},
		"private-cidr.yaml":   {"private-cidr.yaml:3: allow[0].cidr: \"10.0.0.0/8\" is a private"},
		"cidr-no-ports.yaml":  {"cidr-no-ports.yaml:3: allow[0]: a cidr entry must list its ports"},
		"duplicate-host.yaml": {"duplicate-host.yaml:4: a.example.com is already listed at duplicate-host.yaml:3"},
		"host-and-cidr.yaml":  {"host-and-cidr.yaml:3: allow[0]: give either host or cidr"},
		"mid-wildcard.yaml":   {"mid-wildcard.yaml:3: allow[0].host: \"a.*.example.com\": a wildcard is only allowed"},
		"ip-host.yaml":        {"ip-host.yaml:3: allow[0].host: \"192.0.2.1\": \"192.0.2.1\" is an IP address"},
		"not-yaml.yaml":       {"not-yaml.yaml:2: not valid YAML"},
		"tab.yaml":            {"tab.yaml:3: a tab character: YAML indents with spaces only"},
		"local-wildcard.yaml": {
			"local-wildcard.yaml:3: allow[0].host: \"*.home.arpa\": home.arpa is a special-use name for local networks; add 'private: true'",
			"local-wildcard.yaml:4: allow[1].host: \"*.lan\": lan is a special-use name",
		},
		"unknown-accept.yaml": {
			"unknown-accept.yaml:4: allow[0].accept[0]: unknown warning \"git-push\"; one of git-push-risk,",
			"unknown-accept.yaml:5: allow[1]: comment accepts unknown warning \"push-risk\"",
		},
		"private-not-bool.yaml": {"private-not-bool.yaml:4: allow[0].private: must be true or false"},
		"name-budget.yaml": {
			"name-budget.yaml:4: allow[0].max_new_names: only a wildcard host has a budget of new names; api.example.com is one name",
			"name-budget.yaml:6: allow[1].max_new_names: must be a whole number of names a minute from 0 (no budget) to 10000",
			"name-budget.yaml:8: allow[2].max_new_names: must be a whole number",
			"name-budget.yaml:11: allow[3].max_new_names: only a wildcard host has a budget of new names; a cidr entry has no names",
		},
		"many.yaml": {
			"many.yaml:3: allow[0].host: a bare '*'",
			"many.yaml:5: allow[1].ports[0]: port \"0\"",
			"many.yaml:6: allow[2].colour: unknown key",
			"many.yaml:6: allow[2]: missing host or cidr",
		},
	}
	files, _ := filepath.Glob("testdata/bad/*.yaml")
	if len(files) != len(want) {
		t.Errorf("%d files in testdata/bad, %d expectations", len(files), len(want))
	}
	for _, f := range files {
		name := filepath.Base(f)
		data, _ := os.ReadFile(f)
		entries, err := ParseFile(name, data)
		if err == nil {
			_, err = New(entries)
		}
		var errs Errors
		if !errors.As(err, &errs) {
			t.Errorf("%s: got %v, want Errors", name, err)
			continue
		}
		if len(errs) != len(want[name]) {
			t.Errorf("%s: %d errors, want %d:\n%v", name, len(errs), len(want[name]), err)
			continue
		}
		for i, w := range want[name] {
			if !strings.HasPrefix(errs[i].Error(), w) {
				t.Errorf("%s: error %d = %q, want prefix %q", name, i, errs[i].Error(), w)
			}
		}
	}
}

func TestInspectedPorts(t *testing.T) {
	entries, err := ParseFile("i.yaml", []byte("version: 1\nallow:\n  - host: a.test\n    ports: [443]\n    tls_ports: [8443]\n  - host: b.test\n    http_ports: [8080]\n"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(entries)
	if err != nil {
		t.Fatal(err)
	}
	tls, http := p.InspectedPorts()
	if !slices.Equal(tls, []uint16{443, 8443}) || !slices.Equal(http, []uint16{80, 8080}) {
		t.Errorf("InspectedPorts = %v %v", tls, http)
	}
	if d := p.MatchNamePort("a.test", 8443); !d.Allow {
		t.Errorf("tls_ports are not part of the entry's ports: %+v", d)
	}
	if _, err := ParseFile("j.yaml", []byte("version: 1\nallow:\n  - host: a.test\n    tls_ports: [8443]\n    http_ports: [8443]\n")); err == nil {
		t.Error("a port both TLS and HTTP was accepted")
	}
	entries, _ = ParseFile("k.yaml", []byte("version: 1\nallow:\n  - host: a.test\n    tls_ports: [8080]\n  - host: b.test\n    http_ports: [8080]\n"))
	if _, err := New(entries); err == nil {
		t.Error("a port both TLS and HTTP across entries was accepted")
	}
}

func TestHashIsCanonical(t *testing.T) {
	a, _ := ParseFile("a.yaml", []byte("version: 1\nallow:\n  - host: A.example.com.\n    ports: [443, 80, 443]\n  - host: b.example.com\n"))
	b, _ := ParseFile("b.yaml", []byte("version: 1\n\nallow:\n  - host: b.example.com\n  - host: a.example.com\n"))
	pa, _ := New(a)
	pb, _ := New(b)
	if pa.Hash() != pb.Hash() {
		t.Errorf("same allow list, different hashes: %s vs %s", pa.Hash(), pb.Hash())
	}
	c, _ := ParseFile("c.yaml", []byte("version: 1\nallow:\n  - host: a.example.com\n"))
	pc, _ := New(c)
	if pc.Hash() == pa.Hash() {
		t.Errorf("different allow lists, same hash %s", pc.Hash())
	}
	var none *Policy
	if d := none.MatchName("a.example.com"); d.Allow || d.Reason != ReasonNoPolicy {
		t.Errorf("nil policy: %+v, want deny no_policy", d)
	}
}

func TestParseAllowFlag(t *testing.T) {
	tests := []struct {
		in      string
		host    string
		prefix  string
		ports   []uint16
		wantErr string
	}{
		{in: "api.github.com", host: "api.github.com", ports: []uint16{80, 443}},
		{in: "Api.GitHub.com:8443", host: "api.github.com", ports: []uint16{8443}},
		{in: "*.example.com:443", host: "*.example.com", ports: []uint16{443}},
		{in: "bücher.example", host: "xn--bcher-kva.example", ports: []uint16{80, 443}},
		{in: "198.51.100.0/24:22", prefix: "198.51.100.0/24", ports: []uint16{22}},
		{in: "198.51.100.7:22", prefix: "198.51.100.7/32", ports: []uint16{22}},
		{in: "[2001:db8::/32]:22", prefix: "2001:db8::/32", ports: []uint16{22}},
		{in: "198.51.100.7", wantErr: "needs a port"},
		{in: "10.1.2.3:22", wantErr: "private"},
		{in: "a.example.com:0", wantErr: "port"},
		{in: "*", wantErr: "bare"},
		{in: "*.com", wantErr: "public suffix"},
		{in: "a..b", wantErr: "empty label"},
		{in: "api.github.com:80,443", host: "api.github.com", ports: []uint16{80, 443}},
		{in: "api.github.com:443,80,443", host: "api.github.com", ports: []uint16{80, 443}},
		{in: "198.51.100.7:22,2222", prefix: "198.51.100.7/32", ports: []uint16{22, 2222}},
		{in: "api.github.com:80,x", wantErr: "several ports go in one value, as in api.github.com:80,443"},
		{in: "x.test:", wantErr: "no port after ':'; write x.test or x.test:443"},
		{in: "x.test:0", wantErr: "port \"0\" is not a number from 1 to 65535"},
		{in: "a.test:443/x", wantErr: "\"/x\" is a path: sluice allows hosts and ports, not paths; give --allow a.test:443"},
		{in: "x.test,y.test", wantErr: "one host per value; repeat --allow for each host"},
		{in: "2001:db8::1", wantErr: "an IPv6 address goes in brackets, as in [2001:db8::1]:443"},
		{in: "https://example.test/", wantErr: "a URL; give the host (and ports), as in --allow example.test"},
		{in: "https://user@example.test:8443/x", wantErr: "as in --allow example.test:8443"},
		{in: "example.test/path", wantErr: "\"/path\" is a path: sluice allows hosts and ports, not paths; give --allow example.test"},
		{in: "a.test:1:2", wantErr: "too many ':'"},
		{in: "*.home.arpa", wantErr: "special-use name for local networks; use --allow-private"},
		{in: "*.lan:443", wantErr: "use --allow-private"},
	}
	for _, tt := range tests {
		e, err := ParseAllowFlag(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseAllowFlag(%q) error = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseAllowFlag(%q): %v", tt.in, err)
			continue
		}
		if e.Host != tt.host || prefixString(e.Prefix) != tt.prefix || !slices.Equal(e.Ports, tt.ports) {
			t.Errorf("ParseAllowFlag(%q) = %q %q %v, want %q %q %v", tt.in, e.Host, prefixString(e.Prefix), e.Ports, tt.host, tt.prefix, tt.ports)
		}
	}
}

func TestParseAllowPrivate(t *testing.T) {
	for _, s := range []string{"*.home.arpa", "*.lan:443", "*.internal:80,443", "*.local", "nas.lan:5000", "10.1.2.3:22"} {
		e, err := ParseAllow(s, true)
		if err != nil {
			t.Errorf("ParseAllow(%q, private): %v", s, err)
			continue
		}
		if !e.Private || !strings.HasPrefix(e.Source, "--allow-private ") {
			t.Errorf("ParseAllow(%q, private) = private %v, source %q", s, e.Private, e.Source)
		}
	}
	// Special-use names only: a public suffix stays refused with private.
	for _, s := range []string{"*.com", "*.co.uk", "*.arpa"} {
		if _, err := ParseAllow(s, true); err == nil || !strings.Contains(err.Error(), "public suffix") {
			t.Errorf("ParseAllow(%q, private) = %v, want a public suffix error", s, err)
		}
	}
}

func TestHomelabWildcards(t *testing.T) {
	entries, err := ParseFile("h.yaml", []byte("version: 1\nallow:\n  - host: '*.home.arpa'\n    private: true\n  - private: true\n    host: '*.lan'\n  - host: '*.internal'\n    private: true\n  - host: '*.local'\n    private: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(entries)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"nas.home.arpa", "printer.lan", "git.internal", "pi.local"} {
		if d := p.MatchNamePort(name, 443); !d.Allow || !d.Entry.Private {
			t.Errorf("%s: %+v, want allowed, private", name, d)
		}
	}
	if d := p.MatchNamePort("home.arpa", 443); d.Allow {
		t.Errorf("the apex home.arpa is allowed by a wildcard")
	}
	// Any device that registers a name under a homelab wildcard becomes
	// reachable: warned, and acceptable.
	for _, w := range Lint(p) {
		if w.Risk != RiskPrivateWildcard || !strings.Contains(w.Msg, "wildcard over local names") {
			t.Errorf("unexpected warning: %s", w)
		}
	}
	if n := len(Lint(p)); n != 4 {
		t.Errorf("%d warnings, want one for each wildcard", n)
	}
}

func TestAcceptWarnings(t *testing.T) {
	doc := `version: 1
allow:
  - host: github.com
  - host: gitlab.com
    accept: [git-push-risk]
  # sluice: accept git-push-risk
  - host: bitbucket.org
  - host: codeberg.org   # sluice: accept git-push-risk, git-ssh
    ports: [22, 443]
  - host: "*.dev.example.com"
    private: true
  - host: huggingface.co   # we don't sluice: accept git-push-risk here
`
	entries, err := ParseFile("a.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(entries)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range Lint(p) {
		got = append(got, w.Source+" "+w.Risk)
		if !strings.Contains(w.Msg, "to accept this, add 'accept: ["+w.Risk+"]' to the entry") {
			t.Errorf("warning does not say how to accept it: %s", w)
		}
	}
	slices.Sort(got)
	want := []string{"a.yaml:10 private-wildcard", "a.yaml:12 git-push-risk", "a.yaml:3 git-push-risk"}
	if !slices.Equal(got, want) {
		t.Errorf("warnings %q, want %q", got, want)
	}
	flagEntry, _ := ParseAllowFlag("github.com")
	p, _ = New([]Entry{flagEntry})
	if ws := Lint(p); len(ws) != 1 || !strings.Contains(ws[0].Msg, "add --accept git-push-risk") {
		t.Errorf("--allow github.com: %v, want a warning naming --accept", ws)
	}
	flagEntry.Accept = []string{RiskGitPush}
	p, _ = New([]Entry{flagEntry})
	if ws := Lint(p); len(ws) != 0 {
		t.Errorf("accepted: %v", ws)
	}
}

func TestParsePartialKeepsGoodEntries(t *testing.T) {
	entries, err := ParsePartial("p.yaml", []byte("version: 1\nallow:\n  - host: github.com\n  - host: '*'\n"))
	if err == nil || len(entries) != 1 || entries[0].Host != "github.com" {
		t.Errorf("ParsePartial = %v, %v; want github.com and an error", entries, err)
	}
	if entries, _ := ParseFile("p.yaml", []byte("version: 1\nallow:\n  - host: github.com\n  - host: '*'\n")); entries != nil {
		t.Errorf("ParseFile returned entries beside errors")
	}
}

func TestForbidden(t *testing.T) {
	forbidden := []string{
		"127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "169.254.169.254",
		"0.0.0.0", "224.0.0.1", "255.255.255.255", "::", "::1", "fe80::1", "fd00:ec2::254",
		"ff02::1", "::ffff:169.254.169.254", "::ffff:192.0.2.1", "64:ff9b::a9fe:a9fe",
		"64:ff9b:1::1", "2002:7f00:1::1", "::7f00:1",
		// documentation, benchmarking and the rest of the registries
		"192.0.2.66", "198.18.2.10", "198.19.255.255", "198.51.100.1", "203.0.113.5", "192.88.99.1",
		"192.0.0.8", "192.0.0.170", "240.0.0.1", "2001:db8:66::66", "64:ff9b::c000:242", "2002:c612:20a::1",
		"3fff::1", "5f00::1", "2001::1", "2001:2::1", "2001:10::1", "2001:1::4", "2001:1ff::1",
		"100:0:0:1::1", "fec0::1",
	}
	public := []string{
		"8.8.8.8", "2606:4700::1111", "64:ff9b::808:808", "2002:808:808::1", "198.17.255.255", "198.20.0.0",
		"192.0.0.9", "192.0.0.10", "192.31.196.1", "192.52.193.1", "192.175.48.1",
		"2001:1::1", "2001:1::2", "2001:1::3", "2001:3::1", "2001:4:112::1", "2001:20::1", "2001:30::1",
		"2001:200::1", "2620:4f:8000::1",
	}
	for _, s := range forbidden {
		if !Forbidden(netip.MustParseAddr(s)) {
			t.Errorf("Forbidden(%s) = false, want true", s)
		}
	}
	for _, s := range public {
		if Forbidden(netip.MustParseAddr(s)) {
			t.Errorf("Forbidden(%s) = true, want false", s)
		}
	}
}

func TestLint(t *testing.T) {
	entries, err := ParseFile("l.yaml", []byte(`version: 1
allow:
  - host: dns.google
  - host: github.com
  - host: "*.amazonaws.com"
  - host: "*.corp.example"
    private: true
  - cidr: 198.0.0.0/8
    ports: [22]
  - host: pypi.org
`))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := New(entries)
	var got []string
	for _, w := range Lint(p) {
		got = append(got, w.String())
	}
	want := []string{"dns.google serves DNS over HTTPS", "github.com accepts git pushes", "anyone can create", "private: true", "very wide range"}
	if len(got) != len(want) {
		t.Fatalf("Lint gave %d warnings, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for _, w := range want {
		if !slices.ContainsFunc(got, func(g string) bool { return strings.Contains(g, w) }) {
			t.Errorf("no warning containing %q in\n%s", w, strings.Join(got, "\n"))
		}
	}
}

func TestEmbeddedIPv4(t *testing.T) {
	tests := []struct {
		in, want string // want "" for no embedded address
	}{
		{"64:ff9b::c612:1", "198.18.0.1"}, // NAT64
		{"64:ff9b::7f00:1", "127.0.0.1"},  // NAT64
		{"64:ff9b::a9fe:a9fe", "169.254.169.254"},
		{"2002:c612:1::", "198.18.0.1"},      // 6to4, subnet and host bits zero
		{"2002:7f00:1:ffff::1", "127.0.0.1"}, // 6to4 with subnet and host bits
		{"2002:a9fe:a9fe::1", "169.254.169.254"},
		{"::ffff:169.254.169.254", "169.254.169.254"},
		{"64:ff9b:0:1::c612:1", ""}, // outside the /96
		{"64:ff9b:1::c612:1", ""},   // local-use NAT64: the position is not known
		{"2003:c612:1::", ""},
		{"2001:db8::1", ""},
		{"::7f00:1", ""},
		{"198.18.0.1", ""},
	}
	for _, tt := range tests {
		got, ok := EmbeddedIPv4(netip.MustParseAddr(tt.in))
		if want := tt.want != ""; ok != want || (ok && got != netip.MustParseAddr(tt.want)) {
			t.Errorf("EmbeddedIPv4(%s) = %v, %v; want %q", tt.in, got, ok, tt.want)
		}
	}
}

func TestNameBudget(t *testing.T) {
	entries, err := ParseFile("n.yaml", []byte(`version: 1
allow:
  - host: "*.default.test"
  - host: "*.ten.test"
    max_new_names: 10
  - host: "*.off.test"
    max_new_names: 0
  - host: exact.test
`))
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(entries)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int{"a.default.test": DefaultMaxNewNames, "a.ten.test": 10, "a.off.test": 0, "exact.test": 0} {
		if got := p.MatchName(name).Entry.NameBudget(); got != want {
			t.Errorf("%s: budget %d, want %d", name, got, want)
		}
	}
	flag, err := ParseAllowFlag("*.flag.test")
	if err != nil || flag.NameBudget() != DefaultMaxNewNames {
		t.Errorf("--allow wildcard: budget %d, %v; want the default", flag.NameBudget(), err)
	}
	var warned []string
	for _, w := range Lint(p) {
		if strings.Contains(w.Msg, "max_new_names: 0") {
			warned = append(warned, w.Source)
		}
	}
	if !slices.Equal(warned, []string{"n.yaml:6"}) {
		t.Errorf("budget-off warnings at %v, want [n.yaml:6]", warned)
	}
	// The budget is part of what is allowed, so part of the hash; the
	// default written out is the same policy as the default left out.
	hash := func(doc string) string {
		t.Helper()
		es, err := ParseFile("h.yaml", []byte("version: 1\nallow:\n  - host: \"*.h.test\"\n"+doc))
		if err != nil {
			t.Fatal(err)
		}
		p, err := New(es)
		if err != nil {
			t.Fatal(err)
		}
		return p.Hash()
	}
	def, hundred, ten, off := hash(""), hash("    max_new_names: 100\n"), hash("    max_new_names: 10\n"), hash("    max_new_names: 0\n")
	if def != hundred || def == ten || def == off || ten == off {
		t.Errorf("hashes default %s, 100 %s, 10 %s, off %s: want default = 100 and the rest distinct", def, hundred, ten, off)
	}
}

func TestCheckGlobalRange(t *testing.T) {
	ok := []string{"198.18.0.0/15", "198.18.2.0/24", "192.0.2.0/24", "192.0.2.66/32", "198.51.100.0/24",
		"203.0.113.0/24", "2001:db8::/32", "2001:db8:a::/64", "3fff::/20", "2001:2::/48"}
	bad := []string{"198.16.0.0/14", "192.0.0.0/16", "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12",
		"192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "0.0.0.0/0", "224.0.0.0/4",
		"2001:db8::/31", "fc00::/7", "fd00::/8", "fe80::/10", "ff00::/8", "::1/128", "::/0", "8.8.8.0/24"}
	for _, s := range ok {
		if err := CheckGlobalRange(netip.MustParsePrefix(s)); err != nil {
			t.Errorf("CheckGlobalRange(%s) = %v, want nil", s, err)
		}
	}
	for _, s := range bad {
		err := CheckGlobalRange(netip.MustParsePrefix(s))
		if err == nil || !strings.Contains(err.Error(), s) {
			t.Errorf("CheckGlobalRange(%s) = %v, want an error naming it", s, err)
		}
	}
}

// TestLabRangeCIDREntry: a cidr entry may name a documentation or
// benchmarking range without private: true; a private range still needs it.
func TestLabRangeCIDREntry(t *testing.T) {
	for _, s := range []string{"198.51.100.7:22", "[2001:db8::/32]:22", "198.18.0.0/15:22"} {
		if _, err := ParseAllowFlag(s); err != nil {
			t.Errorf("ParseAllowFlag(%s): %v", s, err)
		}
	}
	if _, err := ParseAllowFlag("10.0.0.0/8:22"); err == nil {
		t.Error("a private range was accepted without private: true")
	}
}

// TestParseRules: git and http rules, with file:line errors for what is
// wrong, and warnings for git hosts left without them.
func TestParseRules(t *testing.T) {
	good := `version: 1
allow:
  - host: github.com
    git:
      fetch: ["*"]
      push: ["Acme/Agent-Sandbox.git"]
      push_refs: ["refs/heads/agent/*"]
  - host: api.github.com
    http:
      - methods: [GET, HEAD]
        paths: ["/repos/acme/*"]
`
	entries, err := ParseFile("r.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(entries)
	if err != nil {
		t.Fatal(err)
	}
	g := entries[0].Git
	if g == nil || !slices.Equal(g.Push, []string{"acme/agent-sandbox"}) || g.DeleteRefs || !entries[1].Inspected() || entries[1].Git != nil {
		t.Errorf("rules: %+v %+v", entries[0], entries[1])
	}
	if !MatchRepo(g.Push, "acme/agent-sandbox") || MatchRepo(g.Push, "acme/other") || !MatchRepo(g.Fetch, "x/y") ||
		!MatchRef(g.PushRefs, "refs/heads/agent/x") || MatchRef(g.PushRefs, "refs/heads/main") || MatchRef(g.PushRefs, "refs/heads/agent/x/y") {
		t.Error("matching")
	}
	plain, _ := New([]Entry{{Host: "github.com", Ports: []uint16{443}}})
	if p.Hash() == plain.Hash() {
		t.Error("the rules do not change the policy's hash")
	}
	for _, w := range Lint(p) {
		if strings.Contains(w.Msg, "no git or http rules") {
			t.Errorf("a warning for hosts that have rules: %s", w)
		}
	}
	for _, tc := range []struct{ yaml, want string }{
		{"  - host: '*.github.com'\n    git: {fetch: ['*']}\n", "b.yaml:3: allow[0]: git and http rules need one exact host"},
		{"  - host: github.com\n    git: {fetch: ['acme']}\n", "b.yaml:4: allow[0].git.fetch[0]: \"acme\": want owner/repo"},
		{"  - host: github.com\n    git: {push: ['a/b/c']}\n", "allow[0].git.push[0]"},
		{"  - host: github.com\n    git: {push_refs: ['heads/main']}\n", "allow[0].git.push_refs[0]"},
		{"  - host: github.com\n    git: {delete_refs: maybe}\n", "allow[0].git.delete_refs: must be true or false"},
		{"  - host: github.com\n    git: {pull: ['*']}\n", "allow[0].git.pull: unknown key"},
		{"  - host: github.com\n    git: [fetch]\n", "allow[0].git: must be a mapping"},
		{"  - host: api.github.com\n    http:\n      - methods: [FETCH]\n        paths: ['/x']\n", "allow[0].http[0].methods[0]: method \"FETCH\""},
		{"  - host: api.github.com\n    http:\n      - methods: [GET]\n        paths: ['/x/../y']\n", "allow[0].http[0].paths[0]"},
		{"  - host: api.github.com\n    http:\n      - methods: [GET]\n", "allow[0].http[0]: an http rule needs methods and paths"},
		{"  - cidr: 198.51.100.0/24\n    ports: [443]\n    http:\n      - methods: [GET]\n        paths: ['/']\n", "git and http rules need one exact host"},
		{"  - host: github.com\n    ports: [443, 8443]\n    git: {fetch: ['*']}\n", "allow[0].ports: port 8443: git and http rules are checked on 443, 80 and the entry's tls_ports"},
	} {
		entries, err := ParseFile("b.yaml", []byte("version: 1\nallow:\n"+tc.yaml))
		if err == nil {
			_, err = New(entries)
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.yaml, err, tc.want)
		}
	}
	entries, _ = ParseFile("w.yaml", []byte("version: 1\nallow:\n  - host: gitlab.com\n    ports: [22, 443]\n  - host: ssh.github.com\n"))
	p, _ = New(entries)
	var got []string
	for _, w := range Lint(p) {
		got = append(got, w.Msg)
	}
	for _, want := range []string{"gitlab.com on port 22", "gitlab.com accepts git pushes", "ssh.github.com is git over SSH"} {
		if !slices.ContainsFunc(got, func(g string) bool { return strings.Contains(g, want) }) {
			t.Errorf("no warning %q in %q", want, got)
		}
	}
}

// TestRuleMadeOnce: the rule New makes once for each entry (recorded with
// every decision) is the one formatted from the entry, for every example
// policy (rules, budgets, private entries, prefixes).
func TestRuleMadeOnce(t *testing.T) {
	files, _ := filepath.Glob("../examples/*.yaml")
	if len(files) == 0 {
		t.Fatal("no example policies")
	}
	n := 0
	for _, f := range files {
		for _, e := range mustLoad(t, f).Entries() {
			d := Decision{Entry: e}
			if want := e.Source + " " + e.String(); d.Rule() != want || e.rule == "" {
				t.Errorf("%s: rule %q, formatted %q", f, d.Rule(), want)
			}
			n++
		}
	}
	if n < 10 {
		t.Errorf("only %d entries checked", n)
	}
}
