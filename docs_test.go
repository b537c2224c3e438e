package sluice_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestBypassCoverageNamesRealTests: every test docs/bypass-coverage.md
// names exists, so the table cannot point at a test that is gone.
func TestBypassCoverageNamesRealTests(t *testing.T) {
	doc, err := os.ReadFile("docs/bypass-coverage.md")
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob("*/*_test.go")
	if err != nil {
		t.Fatal(err)
	}
	more, _ := filepath.Glob("*/*/*_test.go") // testing/e2e, tlsinspect/mitm, ...
	var src strings.Builder
	for _, f := range append(files, more...) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src.Write(b)
	}
	names := regexp.MustCompile("`(Test[A-Za-z0-9]+)`").FindAllStringSubmatch(string(doc), -1)
	if len(names) < 20 {
		t.Fatalf("found %d test names in the document; the scan is wrong", len(names))
	}
	for _, m := range names {
		if !strings.Contains(src.String(), "func "+m[1]+"(") {
			t.Errorf("docs/bypass-coverage.md names %s, which no test file defines", m[1])
		}
	}
}
