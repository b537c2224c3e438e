package policy

import (
	"strings"
	"testing"
)

// TestPresets: every preset is a valid policy whose comment says what it
// is, where its hosts come from and what it leaves open; all of them can
// be included together; none draws a warning but those it accepts.
func TestPresets(t *testing.T) {
	want := []string{"anthropic-api", "debian-apt", "github-read", "go-modules", "npm", "openai-api", "pypi"}
	var all []string
	for _, p := range Presets() {
		all = append(all, p.Name)
		text := string(p.Data)
		if !strings.HasPrefix(text, "# "+p.Name+": ") || p.Summary == "" || strings.HasPrefix(p.Summary, p.Name) {
			t.Errorf("preset %s: first line %q, summary %q; want '# NAME: what it is'", p.Name, strings.SplitN(text, "\n", 2)[0], p.Summary)
		}
		for _, part := range []string{"Sources:", "Leaves open:"} {
			if !strings.Contains(text, "# "+part) {
				t.Errorf("preset %s has no %q in its comment", p.Name, part)
			}
		}
		entries, err := ParseFile(p.Name+".yaml", p.Data)
		if err != nil || len(entries) == 0 {
			t.Errorf("preset %s: %v (%d entries)", p.Name, err, len(entries))
		}
	}
	if strings.Join(all, " ") != strings.Join(want, " ") {
		t.Errorf("presets %v, want %v", all, want)
	}
	data := "version: 1\ninclude: [" + strings.Join(all, ", ") + "]\n"
	entries, err := ParseFile("all.yaml", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(entries)
	if err != nil {
		t.Fatalf("all presets together: %v", err)
	}
	for _, w := range Lint(p) {
		t.Errorf("all presets together: %s", w)
	}
}

// TestInclude: an include brings the preset's entries, each saying where
// it was included; mistakes are errors with file:line, a host listed by
// the file and a preset among them.
func TestInclude(t *testing.T) {
	entries, err := ParseFile("agent.yaml", []byte("version: 1\ninclude:\n  - pypi\nallow:\n  - host: example.com\n    ports: [443]\n"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Host+" "+e.Source)
	}
	if strings.Join(got, "; ") != "pypi.org preset pypi (included at agent.yaml:3); files.pythonhosted.org preset pypi (included at agent.yaml:3); example.com agent.yaml:5" {
		t.Errorf("entries: %q", got)
	}
	for _, tc := range []struct{ data, want string }{
		{"version: 1\ninclude: [pypy]\n", `agent.yaml:2: include[0]: unknown preset "pypy"; the presets are anthropic-api, debian-apt, github-read, go-modules, npm, openai-api, pypi (sluice presets lists them)`},
		{"version: 1\ninclude: pypi\n", "agent.yaml:2: include: want a list of preset names"},
		{"version: 1\ninclude: [npm, npm]\n", "agent.yaml:2: include[1]: preset npm is included twice"},
		{"version: 1\ninclude: [{name: npm}]\n", "agent.yaml:2: include[0]: want a preset name"},
		{"version: 1\ninclude: [../x]\n", `unknown preset "../x"`},
	} {
		_, err := ParseFile("agent.yaml", []byte(tc.data))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.data, err, tc.want)
		}
	}
	entries, err = ParseFile("agent.yaml", []byte("version: 1\ninclude: [npm]\nallow:\n  - host: registry.npmjs.org\n    ports: [443, 8443]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(entries); err == nil || !strings.Contains(err.Error(), "agent.yaml:4: registry.npmjs.org is already listed at preset npm (included at agent.yaml:2)") {
		t.Errorf("a host of a preset listed again: %v", err)
	}
}
