package gateway

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestForeignPolicyFile: another tool's allow-list given as a policy is
// refused with what it is and the command that converts it; a malformed
// sluice policy keeps its own errors (the control).
func TestForeignPolicyFile(t *testing.T) {
	dir := t.TempDir()
	for name, c := range map[string]struct{ data, want string }{
		"settings.json": {`{"sandbox": {"network": {"allowedDomains": ["example.com"]}}}`, "this is Claude Code settings, not a sluice policy; convert it with: sluice policy import "},
		"hosts.txt":     {"example.com\napi.example.org:443\n", "this is a list of hosts, not a sluice policy; convert it with: sluice policy import "},
		"agent.toml":    {"[security]\nallowed_network_hosts = [\"example.com\"]\n", "this is an allowed_network_hosts list"},
		"bad.yaml":      {"version: 1\nallw: []\n", "allw: unknown key"},
		"my hosts.txt":  {"example.com\n", "convert it with: sluice policy import '"},
	} {
		file := filepath.Join(dir, name)
		if err := os.WriteFile(file, []byte(c.data), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := PolicySource{File: file}.Load()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
		if name == "bad.yaml" && strings.Contains(err.Error(), "policy import") {
			t.Errorf("a sluice policy with a mistake was taken for a foreign file: %v", err)
		}
	}
}
