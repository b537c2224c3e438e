package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/testing/fakenet"
	"github.com/sluicegw/sluice/testing/nstest"
)

// TestServeReportMode: an agent of `sluice serve` in `mode: report`,
// under a narrow policy, reaches everything a script tries (an allowed
// name, names the policy does not allow over TLS and plain HTTP, another
// port of an allowed name, an address without a name, DNS over TLS):
// the fake internet sees each, and the journal holds each would-be
// refusal with its reason and no refusal. `sluice policy suggest` turns
// the journal into a policy under which an agent in enforce mode runs
// the same script with nothing more, while what the script did not
// touch (another name, another port of a name it used, another port of
// the address it used) is refused.
func TestServeReportMode(t *testing.T) {
	w := newServeWorld(t)
	st := newPrivateState(t)
	dir := t.TempDir()
	id := nstest.Prefix()[2:]
	rep, enf := id+"-rep", id+"-enf"
	jpath := filepath.Join(dir, "journal.db")
	writeAtomic(t, filepath.Join(dir, rep+".yaml"), "version: 1\nallow:\n  - host: allowed.test\n    ports: [443]\n")
	config := filepath.Join(dir, "serve.yaml")
	header := serveHeader(jpath) + "agents:\n"
	repAgent := serveAgent(rep, "198.18.0.0/30", "2001:db8:a::/64") + "    mode: report\n"
	writeAtomic(t, config, header+repAgent)
	s := startServe(t, w, st, config)
	s.waitLogged(t, "serve ready", "agents=1")
	if !s.logged("gateway ready", "agent="+rep, "mode=report") {
		t.Error("the agent's gateway did not say it is in report mode")
	}

	// The script: the allowed name first, and the other port of its
	// address right after it, so that the flow follows that name's
	// answer (the other names resolve to the same address).
	c := w.curl()
	script := prelude + `
try allowed ` + c + ` -4 https://allowed.test/
try name_port nc -4 -z -w 2 allowed.test 22
try name_https ` + c + ` -4 https://www.allowed.test/
try name_http ` + c + ` -4 http://cust-evil.cdn.test/
try addr_port nc -z -w 2 ` + evilAddr + ` 4444
`
	first := s.agentShell(t, rep, "198.18.0.1", script+`
try dot nc -z -w 2 `+evilAddr+` 853
`)
	expect(t, first, map[string]string{"allowed": ok, "name_port": ok, "name_https": ok, "name_http": ok, "addr_port": ok, "dot": ok})
	// They reached the fake internet, not a gateway that answered for it.
	for _, want := range []string{allowedAddr + ":22", evilAddr + ":4444", evilAddr + ":853"} {
		if !slices.ContainsFunc(w.sinkContacts(), func(c fakenet.Contact) bool { return c.Local == want }) {
			t.Errorf("%s was not reached", want)
		}
	}
	web := w.web.Contacts()
	for _, want := range []string{"www.allowed.test", "cust-evil.cdn.test"} {
		if !slices.ContainsFunc(web, func(c fakenet.Contact) bool { return c.SNI == want || c.Host == want }) {
			t.Errorf("%s was not reached: %+v", want, web)
		}
	}

	// Each would-be refusal is journaled, with the layer and reason
	// that would have refused it.
	wantWould := []string{
		"dns name_not_allowed www.allowed.test",
		"tls sni_not_allowed www.allowed.test " + allowedAddr + ":443",
		"dns name_not_allowed cust-evil.cdn.test",
		"http host_not_allowed cust-evil.cdn.test " + allowedAddr + ":80",
		"firewall no_set_entry " + allowedAddr + ":22",
		"firewall no_set_entry " + evilAddr + ":4444",
		"firewall dot " + evilAddr + ":853",
	}
	key := func(r journal.Record) string {
		return strings.Join(strings.Fields(strings.Join([]string{string(r.Layer), string(r.Reason), r.Name, r.Dst}, " ")), " ")
	}
	var would []journal.Record
	waitFor(t, func() bool {
		would = listJournal(t, jpath, "--agent", rep, "--verdict", "would_refuse")
		for _, want := range wantWould {
			if !slices.ContainsFunc(would, func(r journal.Record) bool { return key(r) == want }) {
				return false
			}
		}
		return true
	})
	for _, r := range would {
		if r.Layer == journal.LayerDNS && r.Name == "www.allowed.test" && r.Addrs != allowedAddr {
			t.Errorf("the would-be refusal of www.allowed.test's answer has addresses %q, want %s", r.Addrs, allowedAddr)
		}
	}
	for _, r := range listJournal(t, jpath, "--agent", rep, "--verdict", "refused") {
		t.Errorf("report mode refused: %s", key(r))
	}

	// The suggestion, from the journal.
	out, notes := sluiceOutputs(t, "policy", "suggest", "--journal", jpath, "--agent", rep)
	writeAtomic(t, filepath.Join(dir, enf+".yaml"), string(out))
	entries := checkedEntries(t, filepath.Join(dir, enf+".yaml"))
	wantEntries := []string{"allowed.test ports 22,443", "cust-evil.cdn.test ports 80", "www.allowed.test ports 443", evilAddr + "/32 ports 4444"}
	if !slices.Equal(entries, wantEntries) {
		t.Errorf("suggested entries %q, want %q", entries, wantEntries)
	}
	if !strings.Contains(notes, "left out, 1 refusals that no entry changes: dot ×1") {
		t.Errorf("policy suggest did not say it left DNS over TLS out:\n%s", notes)
	}

	// An agent in enforce mode under the suggestion, added to the
	// running serve: the same script passes with nothing more, and what
	// it did not touch is refused.
	writeAtomic(t, config, header+repAgent+serveAgent(enf, "198.18.0.4/30", "2001:db8:b::/64"))
	s.waitLogged(t, "agent added", "agent="+enf)
	before := len(w.sinkContacts())
	second := s.agentShell(t, enf, "198.18.0.5", script+`
try other_name `+c+` -4 https://evil.test/
try other_port nc -4 -z -w 2 allowed.test 8443
try other_addr_port nc -z -w 2 `+evilAddr+` 22
`)
	expect(t, second, map[string]string{"allowed": ok, "name_port": ok, "name_https": ok, "name_http": ok, "addr_port": ok,
		"other_name": curlNoResolve, "other_port": "1", "other_addr_port": "1"})
	for _, c := range w.sinkContacts()[before:] {
		if c.Local == allowedAddr+":8443" || c.Local == evilAddr+":22" {
			t.Errorf("the enforcing agent reached %s", c.Local)
		}
	}
	wantRefused := []string{"dns name_not_allowed evil.test", "firewall no_set_entry " + allowedAddr + ":8443", "firewall no_set_entry " + evilAddr + ":22"}
	var refused []string
	waitFor(t, func() bool {
		refused = refused[:0]
		for _, r := range listJournal(t, jpath, "--agent", enf, "--verdict", "refused") {
			refused = append(refused, key(r))
		}
		for _, want := range wantRefused {
			if !slices.Contains(refused, want) {
				return false
			}
		}
		return true
	})
	if len(refused) != len(wantRefused) {
		t.Errorf("the enforcing agent's refusals %q, want %q", refused, wantRefused)
	}
	if n := len(listJournal(t, jpath, "--agent", enf, "--verdict", "would_refuse")); n != 0 {
		t.Errorf("the enforcing agent has %d would-be refusals", n)
	}

	if code := s.stop(t); code != 0 {
		t.Errorf("serve exited %d after SIGTERM", code)
	}
	w.assertClean(t)
	if _, err := os.Stat(jpath); err != nil {
		t.Error(err)
	}
}
