package importer

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sluicegw/sluice/policy"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// TestGolden: each input in testdata/golden (NAME.in; with .private. in
// its name imported with AllowPrivate) gives the policy, or the errors, in
// NAME.golden, and every policy loads as sluice check loads it.
func TestGolden(t *testing.T) {
	ins, err := filepath.Glob("testdata/golden/*.in")
	if err != nil || len(ins) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, in := range ins {
		name := strings.TrimSuffix(filepath.Base(in), ".in")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			r, err := Import(data, Options{Name: name, AllowPrivate: strings.Contains(name, ".private.")})
			var got string
			var ie *Error
			switch {
			case errors.As(err, &ie):
				got = "error:\n" + ie.Error() + "\n"
			case err != nil:
				t.Fatalf("Import: %v", err)
			default:
				got = string(r.Policy)
				entries, err := policy.ParseFile(name, r.Policy)
				if err != nil {
					t.Fatalf("the policy does not parse: %v\n%s", err, r.Policy)
				}
				if _, err := policy.New(entries); err != nil {
					t.Fatalf("the policy does not load: %v", err)
				}
				for _, w := range r.Warnings {
					if !strings.Contains(got, w) {
						t.Errorf("warning %q is not atop the policy", w)
					}
				}
			}
			out := strings.TrimSuffix(in, ".in") + ".golden"
			if *update {
				if err := os.WriteFile(out, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(out)
			if err != nil {
				t.Fatalf("%v (go test -run TestGolden -update writes it)", err)
			}
			if got != string(want) {
				t.Errorf("import of %s:\n%s\nwant (%s):\n%s", in, got, out, want)
			}
		})
	}
}

// TestDetect: each format is told from its content, and what is none of
// them is refused with a reason.
func TestDetect(t *testing.T) {
	for in, want := range map[string]Format{
		"claude.json.in":          Claude,
		"seed.yaml.in":            AllowedHosts,
		"seed.toml.in":            AllowedHosts,
		"gh-aw.md.in":             GHAW,
		"squid.txt.in":            Squid,
		"list.txt.in":             List,
		"public-suffix.txt.in":    List,
		"list.private.txt.in":     List,
		"seed.private.yaml.in":    AllowedHosts,
		"sluice-policy.yaml.in":   "",
		"squid.conf.in":           Squid,
		"claude-deny.json.in":     Claude,
		"gh-aw-blocked.md.in":     GHAW,
		"list.yaml.in":            List,
		"squid-whitelist.conf.in": Squid,
		"squid-default.conf.in":   Squid,
	} {
		data, err := os.ReadFile("testdata/golden/" + in)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Detect(data)
		if got != want {
			t.Errorf("Detect(%s) = %q, %v; want %q", in, got, err, want)
		}
		if want == "" && !errors.Is(err, ErrSluicePolicy) {
			t.Errorf("Detect(%s): %v, want ErrSluicePolicy", in, err)
		}
	}
	for _, in := range []string{"", "{\"model\": \"x\"}", "key: value\n", "name = \"x\"\n", "hello world!\n", "---\ntitle: x\n---\n# doc\n",
		// A GitHub Actions workflow (permissions, but not Claude's), a
		// netplan file (network, but not gh-aw's), a YAML map of hosts.
		"on: push\npermissions:\n  contents: read\njobs: {}\n",
		"network:\n  version: 2\n  ethernets:\n    eth0:\n      dhcp4: true\n",
		"http_port 3128\ncache_mem 64 MB\n",
		// Two YAML documents: which one is meant is not known.
		"allowed_network_hosts: [a.example]\n---\nallowed_network_hosts: [b.example]\n"} {
		if f, err := Detect([]byte(in)); err == nil {
			t.Errorf("Detect(%q) = %q, want an error", in, f)
		}
	}
}

// TestFromOverrides: --from reads the input as the format given, and an
// unknown one is an error.
func TestFromOverrides(t *testing.T) {
	r, err := Import([]byte("example.com\n"), Options{From: Squid})
	if err != nil || r.Format != Squid || !strings.Contains(string(r.Policy), "- host: example.com") {
		t.Errorf("Import --from squid: %v\n%s", err, r.Policy)
	}
	if _, err := Import([]byte("example.com\n"), Options{From: "nginx"}); err == nil {
		t.Error("Import --from nginx: no error")
	}
	if _, err := Import([]byte("example.com\n"), Options{From: Claude}); err == nil {
		t.Error("a host list read as Claude settings: no error")
	}
}

// TestClaudeFirst: a Claude Code settings file with an
// allowed_network_hosts list in it is read as Claude's, and the list is
// named, not dropped unsaid.
func TestClaudeFirst(t *testing.T) {
	in := `{"sandbox": {"network": {"allowedDomains": ["a.example.com"]}}, "x": {"allowed_network_hosts": ["b.example.com"]}}`
	r, err := Import([]byte(in), Options{})
	if err != nil || r.Format != Claude {
		t.Fatalf("Import: %v, %s", err, r.Format)
	}
	if !strings.Contains(string(r.Policy), "host: a.example.com") || strings.Contains(string(r.Policy), "host: b.example.com") {
		t.Errorf("policy:\n%s", r.Policy)
	}
	if !slices.ContainsFunc(r.Warnings, func(w string) bool { return strings.Contains(w, "also has allowed_network_hosts") }) {
		t.Errorf("no warning of the list left out: %q", r.Warnings)
	}
}

// TestSchemes: a URL's scheme gives its port; one with no known port is
// refused.
func TestSchemes(t *testing.T) {
	for in, want := range map[string]string{
		"https://a.example.com\n": "ports: [443]", "http://a.example.com\n": "ports: [80]",
		"ssh://a.example.com\n": "ports: [22]", "wss://a.example.com/x\n": "ports: [443]",
		"https://a.example.com:8443/\n": "ports: [8443]",
	} {
		r, err := Import([]byte(in), Options{From: List})
		if err != nil || !strings.Contains(string(r.Policy), want) {
			t.Errorf("%q: %v\n%s", in, err, r.Policy)
		}
	}
	if _, err := Import([]byte("gopher://a.example.com\n"), Options{From: List}); err == nil {
		t.Error("an unknown scheme was imported")
	}
}

// TestDenialRead: a denial is read as an allowed name is (port and URL
// stripped), and one that cannot be read fails the import rather than
// leave what it denied allowed.
func TestDenialRead(t *testing.T) {
	in := func(denied string) []byte {
		return []byte(`{"sandbox": {"network": {"allowedDomains": ["a.example.com"], "deniedDomains": [` + denied + `]}}}`)
	}
	r, err := Import(in(`"https://a.example.com:443/x"`), Options{})
	if err != nil || strings.Contains(string(r.Policy), "\n  - host: a.example.com") {
		t.Errorf("a denial as a URL did not take a.example.com out: %v\n%s", err, r.Policy)
	}
	_, err = Import(in(`"203.0.113.5"`), Options{})
	if err == nil || !strings.Contains(err.Error(), `the denial "203.0.113.5" cannot be applied`) {
		t.Errorf("an address as a denial: %v", err)
	}
}

// TestEcosystemPresets: every ecosystem gh-aw's network: may name maps
// to a preset sluice has, with hosts (a blocked ecosystem keeps them out).
func TestEcosystemPresets(t *testing.T) {
	for eco, preset := range ecosystems {
		if len(presetHostsOf(preset)) == 0 {
			t.Errorf("ecosystem %s: preset %s has no hosts", eco, preset)
		}
	}
}
