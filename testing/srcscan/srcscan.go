// Package srcscan reads a package's own source for tests that keep a list
// and the code it lists in step (every declared reason is in Reasons).
package srcscan

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
)

// StringConsts returns the values of the string constants of type typ
// declared in the non-test Go files of dir, in order. A constant of that
// type that is not a string literal is an error: the list it backs could
// not be checked.
func StringConsts(dir, typ string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, 0)
		if err != nil {
			return nil, err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			vs, ok := n.(*ast.ValueSpec)
			if !ok || err != nil {
				return err == nil
			}
			if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != typ {
				return true
			}
			for _, v := range vs.Values {
				lit, ok := v.(*ast.BasicLit)
				if !ok {
					err = fmt.Errorf("%s: a %s constant that is not a string literal: %T", name, typ, v)
					return false
				}
				s, uerr := strconv.Unquote(lit.Value)
				if uerr != nil {
					err = fmt.Errorf("%s: %w", name, uerr)
					return false
				}
				out = append(out, s)
			}
			return true
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}
