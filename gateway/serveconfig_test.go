package gateway

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sluicegw/sluice/policy"
)

const serveDir = "testdata/serve/"

func TestLoadServeConfigGood(t *testing.T) {
	c, err := LoadServeConfig(serveDir + "good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	wantUp := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:53"), netip.MustParseAddrPort("[2001:db8::53]:53")}
	if !slices.Equal(c.Upstreams, wantUp) || c.Journal != "/var/lib/sluice/journal.db" || c.UI != "127.0.0.1:8099" ||
		!slices.Equal(c.Global, []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15")}) || c.Unnamed != 0 {
		t.Errorf("settings: %+v", c)
	}
	alpha, _, err := PolicySource{File: serveDir + "policies/alpha.yaml"}.Load()
	if err != nil {
		t.Fatal(err)
	}
	want := []ServeAgent{
		{Name: "alpha", Source: serveDir + "good.yaml:7", PolicyFile: serveDir + "policies/alpha.yaml", Mode: ModeEnforce},
		{Name: "beta", Source: serveDir + "good.yaml:9", PolicyFile: serveDir + "policies/alpha.yaml", Mode: ModeEnforce,
			AgentNet: netip.MustParsePrefix("198.19.0.0/30"), AgentNet6: netip.MustParsePrefix("fd5c:1ce0:5c1c:1::/64")},
		{Name: "lab", Source: serveDir + "good.yaml:13", PolicyFile: serveDir + "policies/lab.yaml", Mode: ModeReport, Interface: "br-lab"},
	}
	if len(c.Agents) != len(want) {
		t.Fatalf("%d agents, want %d: %+v", len(c.Agents), len(want), c.Agents)
	}
	for i, w := range want {
		a := c.Agents[i]
		if a.Name != w.Name || a.Source != w.Source || a.PolicyFile != w.PolicyFile || a.Mode != w.Mode ||
			a.Interface != w.Interface || a.AgentNet != w.AgentNet || a.AgentNet6 != w.AgentNet6 || a.Err != nil || a.Policy == nil {
			t.Errorf("agent %d = %+v, want %+v", i, a, w)
		}
	}
	if c.Agents[0].Policy.Hash() != alpha.Hash() {
		t.Errorf("alpha's policy %s, want the file's %s", c.Agents[0].Policy.Hash(), alpha.Hash())
	}
	if got := c.Agents[0].Namespace(); got != "sluice-alpha" {
		t.Errorf("namespace %q", got)
	}
	if got := c.Agents[2].Namespace(); got != "" {
		t.Errorf("router mode's namespace %q, want none", got)
	}

	m, err := LoadServeConfig(serveDir + "minimal.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Upstreams) != 0 || m.Journal != "/var/lib/sluice/journal.db" || m.UI != "" || len(m.Agents) != 1 {
		t.Errorf("defaults: %+v", m)
	}
}

// TestLoadServeConfigBad: every problem of a config, each with its
// file:line, the policies' own included; the agents each concerns (a
// running one would keep its policy), and those it does not.
func TestLoadServeConfigBad(t *testing.T) {
	for _, tc := range []struct {
		file    string
		errs    []string // prefixes, in order
		nilConf bool     // nothing to trust about the agents
		broken  []string // agents with Err
		fine    []string // agents without
		unnamed int
	}{
		{file: "bad-keys.yaml", errs: []string{
			"bad-keys.yaml:2: colour: unknown key",
			"bad-keys.yaml:6: agents[0].polcy: unknown key",
			`bad-keys.yaml:9: agents[1].mode: "audit": want enforce or report`,
			`bad-keys.yaml:10: agents[1].interface: "br lab" is not an interface name`,
		}, broken: []string{"alpha", "beta"}, fine: []string{"gamma"}},
		{file: "bad-values.yaml", errs: []string{
			`bad-values.yaml:1: upstream[1]: "resolver.example": want an IP address`,
			"bad-values.yaml:2: journal: must name a file",
			`bad-values.yaml:3: ui: "localhost:8099": want an IP address and a port`,
			"bad-values.yaml:4: global_ranges[0]: global range 10.0.0.0/8: only documentation and benchmarking ranges",
			"bad-values.yaml:8: agents[0].agent_net: 198.19.0.1/30 has host bits set; did you mean 198.19.0.0/30?",
			"bad-values.yaml:11: agents[1].agent_net: 198.19.0.8/31: want an IPv4 prefix of /30 or wider",
			"bad-values.yaml:12: agents[1].agent_net6: 198.19.0.12/30: want an IPv6 prefix",
			"bad-values.yaml:13: agents[2]: agent_net and agent_net6 are for a namespace agent",
		}, broken: []string{"alpha", "beta", "lab"}},
		{file: "bad-twice.yaml", errs: []string{
			"bad-twice.yaml:7: agent alpha is named twice; first at " + serveDir + "bad-twice.yaml:2",
			"bad-twice.yaml:9: agents lab and lab2 both take interface br-lab",
		}, broken: []string{"alpha", "lab", "lab2"}, fine: []string{"ok"}},
		{file: "bad-overlap.yaml", errs: []string{
			"bad-overlap.yaml:6: agent beta's agent_net 198.19.0.4/30 overlaps agent alpha's 198.19.0.0/29 (" + serveDir + "bad-overlap.yaml:2)",
			"bad-overlap.yaml:9: agent gamma's agent_net6 fd5c:1ce0:5c1c::/48 overlaps agent alpha's fd5c:1ce0:5c1c:1::/64",
		}, broken: []string{"alpha", "beta", "gamma"}, fine: []string{"delta"}},
		{file: "bad-policy.yaml", errs: []string{
			"bad-policy.yaml:5: agents[1].policy: " + serveDir + "policies/nowhere.yaml: no such file",
			"policies/broken.yaml:4: allow[0].ports[0]: port \"99999\"",
			"policies/broken.yaml:5: allow[1].host: a bare '*'",
			"bad-policy.yaml:8: agents[3]: missing policy",
			`bad-policy.yaml:9: agents[4].name: "two words": want 1 to 32 letters`,
			"bad-policy.yaml:11: agents[5]: missing name",
		}, broken: []string{"missing", "broken", "nopolicy"}, fine: []string{"alpha"}, unnamed: 2},
		{file: "bad-yaml.yaml", errs: []string{"bad-yaml.yaml:2: not valid YAML"}, nilConf: true},
		{file: "bad-no-agents.yaml", errs: []string{
			"bad-no-agents.yaml:2: agnets: unknown key",
			"bad-no-agents.yaml:1: missing 'agents'",
		}, nilConf: true},
	} {
		t.Run(tc.file, func(t *testing.T) {
			c, err := LoadServeConfig(serveDir + tc.file)
			var errs policy.Errors
			if !errors.As(err, &errs) {
				t.Fatalf("got %v, want policy.Errors", err)
			}
			if len(errs) != len(tc.errs) {
				t.Errorf("%d errors, want %d:\n%v", len(errs), len(tc.errs), err)
			}
			for i, w := range tc.errs {
				if i < len(errs) && !strings.HasPrefix(errs[i].Error(), serveDir+w) {
					t.Errorf("error %d = %q, want prefix %q", i, errs[i].Error(), serveDir+w)
				}
			}
			if (c == nil) != tc.nilConf {
				t.Fatalf("config %+v, want nil: %v", c, tc.nilConf)
			}
			if c == nil {
				return
			}
			var broken, fine []string
			for _, a := range c.Agents {
				if a.Err != nil {
					broken = append(broken, a.Name)
					if a.Policy != nil {
						t.Errorf("agent %s has errors and a policy", a.Name)
					}
				} else {
					fine = append(fine, a.Name)
				}
			}
			if !slices.Equal(broken, tc.broken) || !slices.Equal(fine, tc.fine) || c.Unnamed != tc.unnamed {
				t.Errorf("broken %v, fine %v, unnamed %d; want %v, %v, %d", broken, fine, c.Unnamed, tc.broken, tc.fine, tc.unnamed)
			}
		})
	}
	files, _ := filepath.Glob(serveDir + "bad-*.yaml")
	if len(files) != 7 {
		t.Errorf("%d bad files in %s, 7 expectations", len(files), serveDir)
	}
}

func TestIsServeConfig(t *testing.T) {
	for _, tc := range []struct {
		file string
		want bool
	}{
		{serveDir + "good.yaml", true},
		{serveDir + "bad-twice.yaml", true},
		{serveDir + "policies/alpha.yaml", false},
		{serveDir + "bad-no-agents.yaml", false}, // checked as a policy: its errors say what it lacks
		{serveDir + "bad-yaml.yaml", false},
	} {
		data, err := os.ReadFile(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		if got := IsServeConfig(data); got != tc.want {
			t.Errorf("IsServeConfig(%s) = %v, want %v", tc.file, got, tc.want)
		}
	}
}
