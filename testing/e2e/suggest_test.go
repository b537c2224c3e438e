package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sluicegw/sluice/gateway"
	"github.com/sluicegw/sluice/journal"
)

// TestPolicySuggestRoundTrip: a run under a narrow policy refuses a
// script's names, ports and an address; `sluice policy suggest` turns
// its journal into a policy under which the same script passes, but for
// the refusal no entry changes (a hello without a name), and nothing it
// did not touch does: not another name, not another port of a name it
// used, not another port of an address it used.
func TestPolicySuggestRoundTrip(t *testing.T) {
	w := newWorld(t)
	c := w.curl()
	jpath := filepath.Join(t.TempDir(), "journal.db")
	script := prelude + `
try allowed ` + c + ` -4 https://allowed.test/
try name_port nc -4 -z -w 2 allowed.test 22
try name_https ` + c + ` -4 https://www.allowed.test/
try name_http ` + c + ` -4 http://cust-evil.cdn.test/
try addr_port nc -z -w 2 ` + evilAddr + ` 4444
try no_sni ` + c + ` -k https://` + evilAddr + `/
`
	narrow := policyFile(t, "  - host: allowed.test\n    ports: [443]\n")
	first := w.run(t, []string{"--journal", jpath, "--policy", narrow}, script)
	// The positive control: the narrow policy refuses all but the first.
	expect(t, first, map[string]string{"allowed": ok, "name_port": "1", "name_https": curlNoResolve, "name_http": curlNoResolve, "addr_port": "1",
		"no_sni": curlRefused})
	refusals := listJournal(t, jpath, "--agent", "sh", "--verdict", "refused")
	for _, want := range []string{"name_not_allowed www.allowed.test", "name_not_allowed cust-evil.cdn.test",
		"no_set_entry " + allowedAddr + ":22", "no_set_entry " + evilAddr + ":4444", "no_sni " + evilAddr + ":443"} {
		if !slices.ContainsFunc(refusals, func(r journal.Record) bool { return string(r.Reason)+" "+r.Name+r.Dst == want }) {
			t.Errorf("the first run did not journal the refusal %q: %+v", want, refusals)
		}
	}

	out, notes := sluiceOutputs(t, "policy", "suggest", "--journal", jpath, "--agent", "sh")
	suggested := filepath.Join(t.TempDir(), "suggested.yaml")
	if err := os.WriteFile(suggested, out, 0o644); err != nil {
		t.Fatal(err)
	}
	entries := checkedEntries(t, suggested)
	want := []string{"allowed.test ports 22,443", "cust-evil.cdn.test ports 80,443", "www.allowed.test ports 80,443", evilAddr + "/32 ports 4444"}
	if !slices.Equal(entries, want) {
		t.Errorf("suggested entries %q, want %q", entries, want)
	}

	second := w.run(t, []string{"--journal", jpath, "--policy", suggested}, script+`
try other_name `+c+` -4 https://evil.test/
try other_port nc -4 -z -w 2 allowed.test 8443
try other_addr_port nc -z -w 2 `+evilAddr+` 22
`)
	// A refusal no entry changes (a hello without a name, to an address)
	// stays one: it was seen, and left out.
	expect(t, second, map[string]string{"allowed": ok, "name_port": ok, "name_https": ok, "name_http": ok, "addr_port": ok,
		"no_sni": curlRefused, "other_name": curlNoResolve, "other_port": "1", "other_addr_port": "1"})
	for _, c := range w.sinkContacts() {
		if c.Local == evilAddr+":443" {
			t.Errorf("the hello without a name reached %s", c.Local)
		}
	}
	if !strings.Contains(notes, "left out, 1 refusals that no entry changes: no_sni ×1") {
		t.Errorf("policy suggest did not say it left the hello without a name out:\n%s", notes)
	}
}

// checkedEntries runs `sluice check` on the policy file, fails t unless it
// passes, and returns its entries as they print.
func checkedEntries(t *testing.T, file string) []string {
	t.Helper()
	if out, err := exec.Command(sluiceBin, "check", file).CombinedOutput(); err != nil {
		t.Fatalf("sluice check of %s: %v\n%s", file, err, out)
	}
	p, _, err := gateway.PolicySource{File: file}.Load()
	if err != nil {
		t.Fatal(err)
	}
	var entries []string
	for _, e := range p.Entries() {
		entries = append(entries, e.String())
	}
	return entries
}

// sluiceOutputs runs the sluice binary with args, outside any namespace,
// and returns its standard output and error; it fails t if sluice fails.
func sluiceOutputs(t *testing.T, args ...string) (out []byte, stderr string) {
	t.Helper()
	cmd := exec.Command(sluiceBin, args...)
	var errOut strings.Builder
	cmd.Stderr = &errOut
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sluice %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
	}
	t.Logf("sluice %s:\n%s\nstderr:\n%s", strings.Join(args, " "), out, errOut.String())
	return out, errOut.String()
}

// sluiceOutput is sluiceOutputs' standard output.
func sluiceOutput(t *testing.T, args ...string) []byte {
	t.Helper()
	out, _ := sluiceOutputs(t, args...)
	return out
}
