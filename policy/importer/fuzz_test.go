package importer

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzImport: whatever the bytes, Detect and Import return without
// panicking, and a policy Import returns is one sluice loads (Import checks
// it, and fails with a plain error, not *Error, when it would not).
func FuzzImport(f *testing.F) {
	ins, _ := filepath.Glob("testdata/golden/*.in")
	for _, in := range ins {
		data, err := os.ReadFile(in)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, uint8(0), false)
	}
	f.Add([]byte("acl a dstdomain .x.example\n"), uint8(4), true)
	f.Add([]byte("{\"sandbox\":{\"network\":{\"allowedDomains\":[\"a.example\"]}}}"), uint8(1), false)
	f.Fuzz(func(t *testing.T, data []byte, from uint8, private bool) {
		_, _ = Detect(data)
		var format Format // 0: detect
		if i := int(from) % (len(Formats) + 1); i > 0 {
			format = Formats[i-1]
		}
		r, err := Import(data, Options{From: format, Name: "fuzz", AllowPrivate: private})
		var ie *Error
		if err != nil && !errors.As(err, &ie) {
			t.Fatalf("Import: %v", err)
		}
		if err == nil && !strings.Contains(string(r.Policy), "version: 1\n") {
			t.Fatalf("no policy:\n%s", r.Policy)
		}
	})
}
