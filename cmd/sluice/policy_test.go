package main

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicegw/sluice/gateway"
	"github.com/sluicegw/sluice/journal"
)

// writeJournal makes a journal in a new directory with evs and returns
// its path.
func writeJournal(t *testing.T, evs []journal.Event) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "journal.db")
	s, err := journal.OpenStore(journal.StoreConfig{Path: path, Coalesce: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WriteEvents(evs); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestPolicySuggest: from a journal of one agent's allowed decisions,
// refusals for want of an entry and would-be refusals, `sluice policy
// suggest` prints a policy that loads as `sluice check` loads it and
// allows each of them; it leaves out other agents, older records,
// refusals no entry changes and hosts with git or http rules, and says so.
func TestPolicySuggest(t *testing.T) {
	now := time.Now()
	ev := func(ago time.Duration, agent string, layer journal.Layer, kind journal.Kind, reason journal.Reason, name, dst, proto string) journal.Event {
		e := journal.Event{Time: now.Add(-ago), Agent: agent, Layer: layer, Kind: kind, Reason: reason, Name: name, Proto: proto, PolicyHash: "sha256:1"}
		if dst != "" {
			e.Dst = netip.MustParseAddrPort(dst)
		}
		return e
	}
	const fw, dns, tls, http = journal.LayerFirewall, journal.LayerDNS, journal.LayerTLS, journal.LayerHTTP
	const refused, allowed, would = journal.Refused, journal.Allowed, journal.WouldRefuse
	answer := ev(time.Minute, "sh", dns, allowed, journal.ReasonAllowed, "api.example.com.", "", "A")
	answer.Addrs, answer.Rule = []netip.Addr{netip.MustParseAddr("192.0.2.10")}, "--allow api.example.com:443 api.example.com ports 443"
	dropped := ev(time.Minute, "sh", dns, journal.Dropped, journal.ReasonAddrsDropped, "nas.lan.", "", "A")
	dropped.Addrs = []netip.Addr{netip.MustParseAddr("10.0.0.1")}
	evs := []journal.Event{
		ev(48*time.Hour, "sh", dns, refused, journal.ReasonNameNotAllowed, "old.example.com.", "", "A"),
		ev(time.Minute, "other", tls, refused, journal.ReasonSNINotAllowed, "other.example.com", "192.0.2.3:443", "tcp"),
		answer,
		ev(59*time.Second, "sh", tls, allowed, journal.ReasonAllowed, "api.example.com", "192.0.2.10:443", "tcp"),
		ev(58*time.Second, "sh", fw, refused, journal.ReasonNoSetEntry, "", "192.0.2.10:8443", "tcp"),
		ev(57*time.Second, "sh", dns, refused, journal.ReasonNameNotAllowed, "dl.example.com.", "", "AAAA"),
		ev(56*time.Second, "sh", fw, refused, journal.ReasonNoSetEntry, "", "198.51.100.7:22", "tcp"),
		ev(56*time.Second, "sh", fw, refused, journal.ReasonNoSetEntry, "", "192.0.2.66:53", "udp"),
		ev(55*time.Second, "sh", tls, refused, journal.ReasonECH, "evil.example.com", "192.0.2.66:443", "tcp"),
		ev(55*time.Second, "sh", tls, refused, journal.ReasonNotPinned, "api2.example.com", "192.0.2.66:443", "tcp"),
		ev(54*time.Second, "sh", http, would, journal.ReasonHostNotAllowed, "new.example.com", "192.0.2.11:80", "tcp"),
		ev(54*time.Second, "sh", tls, would, journal.ReasonPortNotAllowed, "api.example.com", "192.0.2.10:9443", "tcp"),
		dropped,
		ev(53*time.Second, "sh", journal.LayerGit, allowed, journal.ReasonAllowed, "git.example.com", "192.0.2.20:443", "POST"),
		ev(53*time.Second, "sh", tls, allowed, journal.ReasonAllowed, "git.example.com", "192.0.2.20:443", "tcp"),
		{Time: now, Layer: journal.LayerPolicy, Kind: journal.Changed, Reason: journal.ReasonReload, Agent: "sh", PolicyHash: "sha256:2", OldPolicy: "sha256:1"},
	}
	// One address answered for two names: a flow without a name is the
	// name's whose answer came last before it.
	for i, name := range []string{"a.example.net.", "b.example.net."} {
		e := ev(time.Duration(40-2*i)*time.Second, "sh", dns, allowed, journal.ReasonAllowed, name, "", "A")
		e.Addrs, e.Rule = []netip.Addr{netip.MustParseAddr("192.0.2.40")}, "agent.yaml:3 "+name+" ports 443"
		evs = append(evs, e, ev(time.Duration(39-2*i)*time.Second, "sh", fw, refused, journal.ReasonNoSetEntry, "", fmt.Sprintf("192.0.2.40:%d", 2222+i), "tcp"))
	}
	for i := range 6 {
		evs = append(evs, ev(50*time.Second, "sh", tls, refused, journal.ReasonSNINotAllowed, fmt.Sprintf("n%d.pkg.example.com", i), "192.0.2.30:443", "tcp"))
	}
	path := writeJournal(t, evs)

	code, out, errOut := sluice(t, "policy", "suggest", "--journal", path, "--agent", "sh")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	t.Logf("stdout:\n%s\nstderr:\n%s", out, errOut)
	file := filepath.Join(t.TempDir(), "suggested.yaml")
	writeFile(t, file, out)
	p, warnings, err := gateway.PolicySource{File: file}.Load()
	if err != nil {
		t.Fatalf("the suggestion does not load: %v\n%s", err, out)
	}
	var got []string
	for _, e := range p.Entries() {
		got = append(got, e.String())
	}
	want := []string{"*.pkg.example.com ports 443", "a.example.net ports 443,2222", "api.example.com ports 443,8443,9443",
		"b.example.net ports 443,2223", "dl.example.com ports 80,443",
		"nas.lan ports 80,443", "new.example.com ports 80", "198.51.100.7/32 ports 22"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("entries:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(warnings) > 0 {
		t.Errorf("warnings: %v", warnings)
	}
	for _, w := range []struct {
		name string
		port uint16
	}{{"api.example.com", 443}, {"api.example.com", 8443}, {"api.example.com", 9443}, {"dl.example.com", 443}, {"new.example.com", 80}, {"n0.pkg.example.com", 443}} {
		if d := p.MatchNamePort(w.name, w.port); !d.Allow {
			t.Errorf("%s:%d was seen and is not allowed: %s", w.name, w.port, d.Reason)
		}
	}
	if d := p.MatchAddr(netip.MustParseAddr("198.51.100.7"), 22); !d.Allow {
		t.Errorf("198.51.100.7:22 was seen and is not allowed")
	}
	for _, name := range []string{"old.example.com", "other.example.com", "evil.example.com", "api2.example.com", "git.example.com"} {
		if p.MatchName(name).Allow {
			t.Errorf("%s is allowed", name)
		}
	}
	for _, want := range []string{"# Suggested by sluice policy suggest for agent sh from " + path + ",\n# its 24 records from ",
		"\n# 14 refused, 6 allowed, 1 dropped, 1 changed, 2 would_refuse.\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("the header lacks %q", want)
		}
	}
	for _, want := range []string{
		"sluice policy suggest: left out, 2 refusals that no entry changes: address_not_pinned ×1, ech ×1\n",
		"flows a policy cannot open (it opens TCP ports only): udp 192.0.2.66:53\n",
		"git.example.com: left out, its requests were checked by git or http rules",
		"nas.lan: answered with private addresses (10.0.0.1); listed without private: true",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}

	// --allow-private and no wildcards.
	code, out, _ = sluice(t, "policy", "suggest", "--journal", path, "--agent", "sh", "--allow-private", "--wildcard-threshold", "0")
	if code != 0 || !strings.Contains(out, "  - host: nas.lan\n    ports: [80, 443]\n    private: true\n") ||
		!strings.Contains(out, "- host: n5.pkg.example.com\n") || strings.Contains(out, "*.pkg") {
		t.Errorf("--allow-private --wildcard-threshold 0: exit %d:\n%s", code, out)
	}
	// The window: --since takes the old record in.
	code, out, _ = sluice(t, "policy", "suggest", "--journal", path, "--agent", "sh", "--since", "72h")
	if code != 0 || !strings.Contains(out, "- host: old.example.com\n") {
		t.Errorf("--since 72h: exit %d:\n%s", code, out)
	}
	// The same journal, the same file.
	_, again, _ := sluice(t, "policy", "suggest", "--journal", path, "--agent", "sh", "--since", "72h")
	if again != out {
		t.Errorf("a second suggestion differs:\n%s\n---\n%s", out, again)
	}
}

// TestPolicySuggestPages: a journal longer than one page of List is read
// to its oldest record in the window.
func TestPolicySuggestPages(t *testing.T) {
	now := time.Now()
	var evs []journal.Event
	for i := range journal.MaxLimit + 10 {
		name := fmt.Sprintf("n%d.example.com", i%3)
		if i == 0 {
			name = "first.example.org" // the oldest, on the last page
		}
		evs = append(evs, journal.Event{Time: now.Add(time.Duration(i-journal.MaxLimit-10) * time.Millisecond), Agent: "sh",
			Layer: journal.LayerDNS, Kind: journal.Refused, Reason: journal.ReasonNameNotAllowed, Name: name, PolicyHash: "sha256:1"})
	}
	path := writeJournal(t, evs)
	code, out, errOut := sluice(t, "policy", "suggest", "--journal", path, "--agent", "sh")
	if code != 0 || !strings.Contains(out, "- host: first.example.org\n") || !strings.Contains(out, fmt.Sprintf("# its %d records from ", journal.MaxLimit+10)) {
		t.Errorf("exit %d, stderr %s:\n%s", code, errOut, out)
	}
}

// TestPolicySuggestMistakes: a wrong command line is exit status 2 with
// a pointer to the help, a journal without the agent's records 1; help
// is 0 and reads no journal.
func TestPolicySuggestMistakes(t *testing.T) {
	path := writeJournal(t, []journal.Event{{Time: time.Now(), Agent: "sh", Layer: journal.LayerDNS, Kind: journal.Refused,
		Reason: journal.ReasonNameNotAllowed, Name: "x.example.com", PolicyHash: "sha256:1"}})
	missing := filepath.Join(t.TempDir(), "none", "journal.db")
	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"policy"}, 2, "sluice policy: name a command: suggest or import\n"},
		{[]string{"policy", "sugest"}, 2, `unknown command "sugest": suggest or import`},
		{[]string{"policy", "suggest", "--journal", path}, 2, "--agent is required"},
		{[]string{"policy", "suggest", "--journal", path, "--agent", "sh", "x"}, 2, `unexpected argument "x"`},
		{[]string{"policy", "suggest", "--journal", path, "--agent", "sh", "--since", "yesterday"}, 2, "--since \"yesterday\": want a duration"},
		{[]string{"policy", "suggest", "--journal", path, "--agent", "sh", "--wildcard-threshold", "-1"}, 2, "--wildcard-threshold: want 0"},
		{[]string{"policy", "suggest", "--journal", path, "--agent", "nobody"}, 1, `no records of agent "nobody" since`},
		{[]string{"policy", "suggest", "--journal", missing, "--agent", "sh"}, 1, "no such file"},
		{[]string{"policy", "suggest", "--journal", missing, "-h"}, 0, ""},
		{[]string{"policy", "-h"}, 0, ""},
		{[]string{"help", "policy", "suggest"}, 0, ""},
	} {
		code, _, errOut := sluice(t, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.stderr) || tc.stderr == "" && errOut != "" {
			t.Errorf("sluice %s: exit %d, stderr %q; want %d and %q", strings.Join(tc.args, " "), code, errOut, tc.code, tc.stderr)
		}
	}
	if _, err := os.Stat(filepath.Dir(missing)); !os.IsNotExist(err) {
		t.Errorf("help or a missing journal made %s: %v", filepath.Dir(missing), err)
	}
}

// TestPolicyHelpGolden: the help of `sluice policy`, `sluice policy
// suggest` and `sluice policy import`, in testdata/golden.
func TestPolicyHelpGolden(t *testing.T) {
	for name, args := range map[string][]string{"policy-h": {"policy", "-h"}, "policy-suggest-h": {"policy", "suggest", "-h"}, "policy-import-h": {"policy", "import", "-h"}} {
		code, out, errOut := sluice(t, args...)
		golden(t, name, fmt.Sprintf("$ sluice %s\nexit %d\n--- stdout\n%s--- stderr\n%s", strings.Join(args, " "), code, out, errOut))
	}
}

// TestPolicyImport: sluice policy import prints a policy that sluice check
// loads, the warnings on stderr; a refused entry prints no policy and
// exits 1 with the input's line; a wrong command line exits 2.
func TestPolicyImport(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "agent.yaml")
	writeFile(t, in, "security:\n  allowed_network_hosts: [api.github.com:443, internal-repo.corp:8443]\n")
	code, out, errOut := sluice(t, "policy", "import", in)
	if code != 0 || !strings.Contains(out, "- host: api.github.com\n    ports: [443]") {
		t.Fatalf("exit %d, out:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if !strings.Contains(errOut, "warning: "+in+":2: internal-repo.corp is a local name") {
		t.Errorf("stderr:\n%s", errOut)
	}
	policyFile := filepath.Join(dir, "policy.yaml")
	writeFile(t, policyFile, out)
	if code, _, errOut := sluice(t, "check", policyFile); code != 0 {
		t.Errorf("sluice check of the import: exit %d: %s", code, errOut)
	}
	code, out, errOut = sluice(t, "policy", "import", "--allow-private", in)
	if code != 0 || !strings.Contains(out, "private: true") {
		t.Errorf("--allow-private: exit %d, out:\n%s\n%s", code, out, errOut)
	}
	bad := filepath.Join(dir, "bad.txt")
	writeFile(t, bad, "example.com\n*.co.uk\n")
	code, out, errOut = sluice(t, "policy", "import", bad)
	if code != 1 || out != "" || !strings.Contains(errOut, bad+":2: \"*.co.uk\": co.uk is a public suffix") {
		t.Errorf("a public suffix: exit %d, out %q, stderr:\n%s", code, out, errOut)
	}
	for _, args := range [][]string{{"policy", "import"}, {"policy", "import", "--from", "nginx", in}, {"policy", "import", in, in}} {
		if code, _, errOut := sluice(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2: %s", args, code, errOut)
		}
	}
}
