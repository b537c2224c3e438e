package journal

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/sluicegw/sluice/testing/srcscan"
)

// TestReasonsComplete checks that Reasons holds every Reason constant
// declared in the package, each once.
func TestReasonsComplete(t *testing.T) {
	words, err := srcscan.StringConsts(".", "Reason")
	if err != nil {
		t.Fatal(err)
	}
	var declared []Reason
	for _, w := range words {
		declared = append(declared, Reason(w))
	}
	if len(declared) < 10 {
		t.Fatalf("found %d Reason constants in reason.go; the parse is wrong", len(declared))
	}
	all := Reasons()
	for _, r := range declared {
		if !slices.Contains(all, r) || !r.Known() {
			t.Errorf("%s is declared but missing from Reasons", r)
		}
	}
	seen := map[Reason]bool{}
	for _, r := range all {
		if seen[r] {
			t.Errorf("%s is in Reasons twice", r)
		}
		seen[r] = true
		if !slices.Contains(declared, r) {
			t.Errorf("%s is in Reasons but not declared as a constant", r)
		}
	}
	if Reason("closed").Known() || Reason("").Known() {
		t.Errorf("Known accepts an undeclared reason")
	}
}

// readmeReasons returns the reasons the README lists: the backquoted
// words of the bullet list that follows its sentence "Every decision
// carries one reason".
func readmeReasons(t *testing.T, readme string) []string {
	t.Helper()
	_, after, ok := strings.Cut(readme, "Every decision carries one reason")
	if !ok {
		t.Fatal(`README.md has no "Every decision carries one reason" paragraph`)
	}
	lines := strings.Split(after, "\n")
	for len(lines) > 0 && !strings.HasPrefix(lines[0], "- ") { // the rest of the sentence
		lines = lines[1:]
	}
	var list []string
	for _, l := range lines {
		if !strings.HasPrefix(l, "- ") && !strings.HasPrefix(l, "  ") {
			break // a blank line or a paragraph ends the list
		}
		list = append(list, l)
	}
	word := regexp.MustCompile("`([^`]*)`")
	var reasons []string
	for _, m := range word.FindAllStringSubmatch(strings.Join(list, "\n"), -1) {
		if regexp.MustCompile(`^[a-z][a-z0-9_]*$`).MatchString(m[1]) {
			reasons = append(reasons, m[1])
		}
	}
	return reasons
}

// TestReadmeListsReasons checks the README's list of reasons against
// Reasons, both ways: every reason listed, once, and nothing else.
func TestReadmeListsReasons(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	listed := readmeReasons(t, string(b))
	count := map[string]int{}
	for _, r := range listed {
		count[r]++
	}
	for _, r := range Reasons() {
		switch count[string(r)] {
		case 0:
			t.Errorf("README.md does not list the reason %s", r)
		case 1:
		default:
			t.Errorf("README.md lists the reason %s %d times", r, count[string(r)])
		}
	}
	for r := range count {
		if !Reason(r).Known() {
			t.Errorf("README.md lists %s, which is no declared reason", r)
		}
	}
}

// TestAllowable: the refusals a policy entry changes are those of a name,
// a port, or an address and port not in the policy; never one of the
// reasons an attack or a failure has.
func TestAllowable(t *testing.T) {
	want := []Reason{ReasonNameNotAllowed, ReasonSNINotAllowed, ReasonHostNotAllowed, ReasonPortNotAllowed, ReasonNoSetEntry}
	for _, r := range Reasons() {
		if got := r.Allowable(); got != slices.Contains(want, r) {
			t.Errorf("%s.Allowable() = %v", r, got)
		}
	}
}
