package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"testing"

	"github.com/sluicegw/sluice/policy"
)

var update = flag.Bool("update", false, "rewrite testdata/golden from what the commands print")

// sluice runs the command line args as main does and returns its exit
// status, stdout and stderr.
func sluice(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	stdout, stderr = &out, &errOut
	defer func() { stdout, stderr = os.Stdout, os.Stderr }()
	code := run(args)
	return code, out.String(), errOut.String()
}

// TestGolden compares what sluice prints for help and for mistakes on the
// command line with testdata/golden: a change to any of it shows in the
// diff of a review. -update rewrites the files.
func TestGolden(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, good, "version: 1\nallow:\n  - host: api.example.com\n  - host: github.com\n")
	writeFile(t, bad, "version: 1\nallow:\n  - host: gitlab.com\n  - host: api.example.com\n\t  ports: [443]\n")
	tabs := filepath.Join(dir, "tabs.yaml")
	writeFile(t, tabs, "version: 1\nallow:\n\t- host: a.example.com\n")
	mixed := filepath.Join(dir, "mixed.yaml")
	writeFile(t, mixed, "version: 1\nallow:\n  - host: gitlab.com\n  - host: '*.lan'\n  - host: 'https://x.example.com/'\n")
	serveGood := filepath.Join(dir, "serve.yaml")
	writeFile(t, serveGood, "ui: 127.0.0.1:8099\nagents:\n  - name: alpha\n    policy: good.yaml\n  - name: lab\n    policy: good.yaml\n    interface: br-lab\n    mode: report\n")
	serveBad := filepath.Join(dir, "serve-bad.yaml")
	writeFile(t, serveBad, "agents:\n  - name: alpha\n    policy: good.yaml\n  - name: beta\n    policy: bad.yaml\n    agent_net: 198.19.0.1/30\n  - name: alpha\n    policy: nowhere.yaml\n")
	cases := []struct {
		name string
		args []string
	}{
		{"help", []string{"-h"}},
		{"help-long", []string{"--help"}},
		{"no-args", nil},
		{"help-run", []string{"help", "run"}},
		{"run-h", []string{"run", "-h"}},
		{"check-h", []string{"check", "--help"}},
		{"help-journal-list", []string{"help", "journal", "list"}},
		{"journal-h", []string{"journal", "-h"}},
		{"ca-h", []string{"ca", "-h"}},
		{"completion-h", []string{"completion", "-h"}},
		{"unknown-command", []string{"chek", "x.yaml"}},
		{"unknown-flag", []string{"run", "--alow", "x.example.com", "--", "true"}},
		{"unknown-flag-far", []string{"run", "--colour", "--", "true"}},
		{"bad-duration", []string{"run", "--min-ttl", "5", "--", "true"}},
		{"bad-bool", []string{"run", "--no-ipv6=maybe", "--", "true"}},
		{"missing-value", []string{"run", "--policy"}},
		{"no-command", []string{"run", "--allow", "a.example.com"}},
		{"policy-stdin-run", []string{"run", "--policy", "-", "--", "true"}},
		{"ttl-order", []string{"run", "--min-ttl", "2h", "--max-ttl", "1h", "--", "true"}},
		{"check-none", []string{"check"}},
		{"check-good", []string{"check", good}},
		{"check-errors-and-warnings", []string{"check", bad, mixed}},
		{"check-tab", []string{"check", tabs}},
		{"check-serve", []string{"check", serveGood, serveBad}},
		{"serve-h", []string{"serve", "-h"}},
		{"presets", []string{"presets"}},
		{"presets-one", []string{"presets", "npm"}},
		{"presets-unknown", []string{"presets", "pypy"}},
		{"serve-no-config", []string{"serve"}},
		{"journal-unknown", []string{"journal", "lst"}},
		{"completion-none", []string{"completion"}},
		{"completion-unknown", []string{"completion", "tcsh"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := sluice(t, tc.args...)
			got := fmt.Sprintf("$ sluice %s\nexit %d\n--- stdout\n%s--- stderr\n%s", strings.Join(tc.args, " "), code, out, errOut)
			got = strings.ReplaceAll(got, dir, "DIR")
			golden(t, tc.name, got)
		})
	}
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	file := filepath.Join("testdata", "golden", name+".txt")
	if *update {
		writeFile(t, file, got)
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run go test ./cmd/sluice -update to write it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from %s:\n--- got\n%s\n--- want\n%s", name, file, got, want)
	}
}

func writeFile(t *testing.T, name, data string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestHelpExitsZero: asking for help is not a mistake: status 0, on
// stdout; a mistake is status 2, on stderr, and short.
func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"help"}, {"run", "-h"}, {"run", "--help"}, {"help", "check"}, {"journal", "list", "-h"}, {"version"}} {
		code, out, errOut := sluice(t, args...)
		if code != 0 || out == "" || errOut != "" {
			t.Errorf("sluice %v: exit %d, %d bytes on stdout, stderr %q", args, code, len(out), errOut)
		}
	}
	code, out, errOut := sluice(t, "run", "--alow", "x")
	if code != 2 || out != "" || strings.Count(errOut, "\n") > 2 {
		t.Errorf("a wrong flag: exit %d, stdout %q, stderr %q; want 2 and two lines on stderr", code, out, errOut)
	}
}

func TestCheckStdin(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdin
	os.Stdin = r
	defer func() { os.Stdin = old }()
	fmt.Fprint(w, "version: 1\nallow:\n  - host: a.example.com\n  - host: '*'\n")
	w.Close()
	code, _, errOut := sluice(t, "check", "-")
	if code != 1 || !strings.Contains(errOut, "<stdin>:4: allow[1].host: a bare '*'") {
		t.Errorf("check - : exit %d, stderr %q", code, errOut)
	}
}

func TestMisplacedFlags(t *testing.T) {
	for _, tc := range []struct {
		command []string
		want    []string
	}{
		{[]string{"curl", "--allow", "a.test", "-v", "https://a.test"}, []string{"--allow"}},
		{[]string{"curl", "--policy=p.yaml"}, []string{"--policy=p.yaml"}},
		{[]string{"curl", "-sI", "https://a.test"}, nil},
		{[]string{"sh", "-c", "x", "--", "--allow"}, nil},
	} {
		if got := misplacedFlags(tc.command); !slices.Equal(got, tc.want) {
			t.Errorf("misplacedFlags(%q) = %q, want %q", tc.command, got, tc.want)
		}
	}
}

func TestFormatVersion(t *testing.T) {
	info := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "891926c0123456789abcdef"}, {Key: "vcs.time", Value: "2026-12-01T10:00:00Z"}, {Key: "vcs.modified", Value: "true"},
	}}
	if got, want := formatVersion(info), "sluice devel (891926c01234, modified, 2026-12-01T10:00:00Z) go1.26.8"; got != want {
		t.Errorf("formatVersion = %q, want %q", got, want)
	}
	info = &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.3.0"}}
	if got, want := formatVersion(info), "sluice v0.3.0 go1.26.8"; got != want {
		t.Errorf("formatVersion = %q, want %q", got, want)
	}
}

func TestClosestFlag(t *testing.T) {
	fs := runFlags(&runOptions{})
	for in, want := range map[string]string{
		"alow": "allow", "polcy": "policy", "allow-privat": "allow-private", "upstreams": "upstream",
		"log": "", "colour": "", "x": "", "logfile": "log-file",
	} {
		if got := closestFlag(fs, in); got != want {
			t.Errorf("closestFlag(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestCompletion: bash completes commands, subcommands and flags, leaves
// file arguments and flag values to file completion, and completes the
// command after run's "--"; zsh and fish name every command.
func TestCompletion(t *testing.T) {
	code, script, errOut := sluice(t, "completion", "bash")
	if code != 0 || errOut != "" {
		t.Fatalf("completion bash: exit %d, %s", code, errOut)
	}
	file := filepath.Join(t.TempDir(), "sluice.bash")
	writeFile(t, file, script)
	for _, tc := range []struct {
		words string // COMP_WORDS, the last one being completed
		want  string // COMPREPLY, joined by spaces
	}{
		{"sluice ''", "run serve exec check presets policy journal ui ca status cleanup completion version help"},
		{"sluice ch", "check"},
		{"sluice run --allow-p", "--allow-private"},
		{"sluice run --policy ''", ""}, // a file: bash's default
		{"sluice check ''", ""},        // files
		{"sluice journal ''", "list verify export"},
		{"sluice journal list --verd", "--verdict"},
		{"sluice -v run --no-ipv6 --allow a.test -- shlv", ""},
		{"sluice run --allow a.test -- true ''", ""}, // the command's own arguments
		{"sluice completion ''", "bash zsh fish"},
	} {
		cmd := exec.Command("bash", "-c", fmt.Sprintf(`source %s; COMP_WORDS=(%s); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _sluice; echo "${COMPREPLY[*]}"`, file, tc.words))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", tc.words, err, out)
		}
		got := strings.Fields(string(out))
		want := strings.Fields(tc.want)
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("complete %s = %q, want %q", tc.words, got, want)
		}
	}
	// After run's "--", the command: any command on PATH.
	out, err := exec.Command("bash", "-c", fmt.Sprintf(`source %s; COMP_WORDS=(sluice run -- ba); COMP_CWORD=3; _sluice; echo "${COMPREPLY[*]}"`, file)).CombinedOutput()
	if err != nil || !slices.Contains(strings.Fields(string(out)), "bash") {
		t.Errorf("complete 'sluice run -- ba' = %q (%v), want bash among them", out, err)
	}
	for _, sh := range []string{"zsh", "fish"} {
		code, out, errOut := sluice(t, "completion", sh)
		if code != 0 || errOut != "" {
			t.Fatalf("completion %s: exit %d, %s", sh, code, errOut)
		}
		for _, want := range []string{"journal", "cleanup", "allow-private", "verdict"} {
			if !strings.Contains(out, want) {
				t.Errorf("completion %s: no %q", sh, want)
			}
		}
		if path, err := exec.LookPath(sh); err == nil {
			if out, err := exec.Command(path, "-n", "-c", out).CombinedOutput(); err != nil {
				t.Errorf("%s -n: %v\n%s", sh, err, out)
			}
		}
	}
}

// TestREADMEListsFlagsAndRisks: every flag of sluice run has a row in the
// README's flags table, and every warning an entry can accept is named.
func TestREADMEListsFlagsAndRisks(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	_, table, _ := strings.Cut(readme, "## sluice run flags")
	table, _, _ = strings.Cut(table, "\n## ")
	runFlags(&runOptions{}).VisitAll(func(f *flag.Flag) {
		dash := "--"
		if len(f.Name) == 1 {
			dash = "-"
		}
		if !strings.Contains(table, "`"+dash+f.Name) {
			t.Errorf("README's flags table lacks %s%s", dash, f.Name)
		}
	})
	for _, r := range policy.Risks {
		if !strings.Contains(readme, "| `"+r+"` |") {
			t.Errorf("README does not name the warning %s", r)
		}
	}
}
