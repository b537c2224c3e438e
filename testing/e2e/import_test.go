package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestImportClaudeSettings: a Claude Code settings file is refused as a
// policy, with the command that converts it; `sluice policy import` turns
// it into a policy under which curl reaches the allowed names (the
// wildcard and the exact one), on the default ports, and is refused what
// the settings did not allow.
func TestImportClaudeSettings(t *testing.T) {
	w := newWorld(t)
	dir := t.TempDir()
	settings := filepath.Join(dir, "settings.json")
	body := func(denied string) []byte {
		return []byte(`{
  "permissions": {"allow": ["Bash(curl:*)"]},
  "sandbox": {
    "enabled": true,
    "network": {
      "allowedDomains": ["allowed.test", "*.allowed.test", "ok.peer.test"],
      "deniedDomains": [` + denied + `]
    }
  }
}
`)
	}
	if err := os.WriteFile(settings, body(`"evil.test", "ok.peer.test"`), 0o600); err != nil {
		t.Fatal(err)
	}
	control := filepath.Join(dir, "control.json")
	if err := os.WriteFile(control, body(`"evil.test"`), 0o600); err != nil {
		t.Fatal(err)
	}
	controlPol := filepath.Join(dir, "control.yaml")
	if err := os.WriteFile(controlPol, sluiceOutput(t, "policy", "import", control), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := checkedEntries(t, controlPol); !slices.Contains(got, "ok.peer.test ports 80,443") {
		t.Errorf("control: without the denial, the import has %q, want ok.peer.test in it", got)
	}
	c := w.curl()
	script := prelude + `
try apex ` + c + ` https://allowed.test/
try sub ` + c + ` https://www.allowed.test/
try plain ` + c + ` http://www.allowed.test/
try other_name ` + c + ` https://evil.test/
try denied_name sh -c '[ -n "$(dig +short ok.peer.test A)" ]'
try allowed_name sh -c '[ -n "$(dig +short allowed.test A)" ]'
try other_port nc -z -w 3 allowed.test 8443
`
	r := w.run(t, []string{"--policy", settings}, script)
	if r.code == 0 || !strings.Contains(r.stderr, "this is Claude Code settings, not a sluice policy; convert it with: sluice policy import "+settings) {
		t.Errorf("sluice run --policy settings.json: exit %d, stderr:\n%s", r.code, r.stderr)
	}

	out := sluiceOutput(t, "policy", "import", settings)
	pol := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(pol, out, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, want := checkedEntries(t, pol), []string{"*.allowed.test ports 80,443", "allowed.test ports 80,443"}; !slices.Equal(got, want) {
		t.Errorf("imported entries %q, want %q", got, want)
	}
	r = w.run(t, []string{"--policy", pol}, script)
	expect(t, r, map[string]string{"apex": ok, "sub": ok, "plain": ok, "other_name": curlNoResolve, "other_port": "1",
		"denied_name": "1", "allowed_name": ok})
}
