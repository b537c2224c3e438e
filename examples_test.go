package sluice_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sluicegw/sluice/gateway"
)

// examplesWithWarnings are the example policies that `sluice check` may
// warn about, each with why the warning is the price of the example.
// Every other example must load without a warning.
var examplesWithWarnings = map[string]string{}

// exampleProblems loads one example policy the way `sluice check` does
// and returns what is wrong with it as an example: an error, a warning it
// has no reason for, or a header that does not say what the policy is
// for, how to run it and what it leaves open.
func exampleProblems(file string) []string {
	var problems []string
	data, err := os.ReadFile(file)
	if err != nil {
		return []string{err.Error()}
	}
	var header []string
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(line, "#") {
			break
		}
		header = append(header, line)
	}
	head := strings.Join(header, "\n")
	switch {
	case len(header) < 3:
		problems = append(problems, "no leading comment: say what the policy is for, how to run it and what it leaves open")
	case !strings.Contains(head, "sluice run"):
		problems = append(problems, "the leading comment does not say how to run it (a `sluice run` line)")
	case !strings.Contains(head, "Leaves open"):
		problems = append(problems, "the leading comment does not say what it leaves open (a \"Leaves open\" part)")
	}
	p, warnings, err := gateway.PolicySource{File: file}.Load()
	if err != nil {
		return append(problems, "sluice check: "+err.Error())
	}
	if len(p.Entries()) == 0 {
		problems = append(problems, "allows nothing")
	}
	if _, ok := examplesWithWarnings[filepath.Base(file)]; !ok {
		for _, w := range warnings {
			problems = append(problems, "warning without a reason in examplesWithWarnings: "+w.String())
		}
	}
	return problems
}

// TestExamplePolicies: every policy in examples/ passes `sluice check`
// (gateway.PolicySource.Load, its code path) and explains itself, and
// examples/README.md names each one.
func TestExamplePolicies(t *testing.T) {
	files, err := filepath.Glob("examples/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 9 {
		t.Fatalf("found %d example policies; the glob is wrong or examples went missing", len(files))
	}
	index, err := os.ReadFile("examples/README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		for _, p := range exampleProblems(f) {
			t.Errorf("%s: %s", f, p)
		}
		if !strings.Contains(string(index), filepath.Base(f)) {
			t.Errorf("examples/README.md does not name %s", filepath.Base(f))
		}
	}
	for name := range examplesWithWarnings {
		if _, err := os.Stat(filepath.Join("examples", name)); err != nil {
			t.Errorf("examplesWithWarnings names %s, which is not in examples/", name)
		}
	}
}

// TestRecipesNameRealExamples: every examples/ file the recipes and the
// examples' index point at exists.
func TestRecipesNameRealExamples(t *testing.T) {
	ref := regexp.MustCompile(`examples/([a-z0-9-]+\.yaml)|\b([a-z0-9-]+\.yaml)\b`)
	for _, doc := range []string{"docs/recipes.md", "examples/README.md"} {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, m := range ref.FindAllStringSubmatch(string(b), -1) {
			name := m[1] + m[2]
			if name == "agent.yaml" || name == "policy.yaml" { // placeholders for the reader's own file
				continue
			}
			n++
			if _, err := os.Stat(filepath.Join("examples", name)); err != nil {
				t.Errorf("%s names %s, which is not in examples/", doc, name)
			}
		}
		if n < 4 {
			t.Errorf("%s names %d example files; the scan is wrong", doc, n)
		}
	}
}

// TestExampleProblemsCatch: the checks above fail an example that is
// broken or does not explain itself.
func TestExampleProblemsCatch(t *testing.T) {
	const header = "# For something.\n#\n# Run:\n#   sudo sluice run --policy x.yaml -- cmd\n#\n# Leaves open: nothing much.\n"
	for _, tc := range []struct {
		name, body, want string
	}{
		{"good", header + "version: 1\nallow:\n  - host: pypi.org\n", ""},
		{"no comment", "version: 1\nallow:\n  - host: pypi.org\n", "no leading comment"},
		{"no run line", "# For something.\n#\n# Leaves open: nothing.\nversion: 1\nallow:\n  - host: pypi.org\n", "how to run it"},
		{"no residual risk", "# For something.\n#\n#   sudo sluice run -- x\nversion: 1\nallow:\n  - host: pypi.org\n", "leaves open"},
		{"unknown key", header + "version: 1\nallow:\n  - host: pypi.org\n    port: 443\n", "sluice check:"},
		{"bad yaml", header + "version: 1\nallow:\n  - host: [pypi.org\n", "sluice check:"},
		{"bad git rule", header + "version: 1\nallow:\n  - host: github.com\n    git:\n      push: []\n", "sluice check:"},
		{"empty", header + "version: 1\nallow: []\n", "allows nothing"},
		{"warning", header + "version: 1\nallow:\n  - host: github.com\n", "warning without a reason"},
	} {
		f := filepath.Join(t.TempDir(), "x.yaml")
		if err := os.WriteFile(f, []byte(tc.body), 0o644); err != nil {
			t.Fatal(err)
		}
		got := strings.Join(exampleProblems(f), "; ")
		if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
			t.Errorf("%s: problems %q, want %s", tc.name, got, fmt.Sprintf("%q", tc.want))
		}
	}
}
