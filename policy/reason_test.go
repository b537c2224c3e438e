package policy

import (
	"go/ast"
	goparser "go/parser"
	"go/token"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestReasonsComplete checks that Reasons holds every Reason constant of
// the package, so that the layers' test that each is a journal reason
// sees them all.
func TestReasonsComplete(t *testing.T) {
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	var declared []Reason
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := goparser.ParseFile(token.NewFileSet(), e.Name(), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			vs, ok := n.(*ast.ValueSpec)
			if !ok {
				return true
			}
			if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Reason" {
				return true
			}
			for _, v := range vs.Values {
				lit, ok := v.(*ast.BasicLit)
				if !ok {
					t.Fatalf("a Reason constant that is not a string literal: %T", v)
				}
				s, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				declared = append(declared, Reason(s))
			}
			return true
		})
	}
	if len(declared) == 0 {
		t.Fatal("found no Reason constants; the parse is wrong")
	}
	all := Reasons()
	for _, r := range declared {
		if !slices.Contains(all, r) {
			t.Errorf("%s is declared but missing from Reasons", r)
		}
	}
	if len(all) != len(declared) {
		t.Errorf("Reasons has %d reasons, the package declares %d", len(all), len(declared))
	}
}
