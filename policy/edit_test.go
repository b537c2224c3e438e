package policy

import (
	"strings"
	"testing"
)

func TestAddEntry(t *testing.T) {
	file := "version: 1\n# our hosts\nallow:\n  - host: api.github.com # the API\n    ports: [443]\n  - host: pypi.org\n"
	for _, tc := range []struct {
		allow string
		want  []string
	}{
		{"example.com:443", []string{"# our hosts", "# the API", "- host: example.com\n    ports: [443]"}},
		{"api.github.com:8443", []string{"host: api.github.com # the API\n    ports: [443, 8443]"}},
		{"pypi.org:8080", []string{"host: pypi.org\n    ports: [80, 443, 8080]"}},
		{"198.51.100.7:22", []string{"- cidr: 198.51.100.7/32\n    ports: [22]"}},
	} {
		e, err := ParseAllowFlag(tc.allow)
		if err != nil {
			t.Fatal(err)
		}
		out, err := AddEntry("p.yaml", []byte(file), &e)
		if err != nil {
			t.Errorf("%s: %v", tc.allow, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(string(out), w) {
				t.Errorf("%s: the file lacks %q:\n%s", tc.allow, w, out)
			}
		}
		entries, err := ParseFile("p.yaml", out)
		if err != nil || len(entries) < 2 {
			t.Errorf("%s: the result does not parse: %v\n%s", tc.allow, err, out)
		}
	}
	e, _ := ParseAllowFlag("example.com:443")
	if _, err := AddEntry("p.yaml", []byte("allow: 3\nversion: 1\n"), &e); err == nil {
		t.Error("a file whose allow is not a list was changed")
	}
	if got := EntryYAML(&e); got != "  - host: example.com\n    ports: [443]\n" {
		t.Errorf("EntryYAML = %q", got)
	}
}
