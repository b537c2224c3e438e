package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicegw/sluice/sandbox"
)

// capture points stdout and stderr at buffers until the test ends.
func capture(t *testing.T) (out, errOut *bytes.Buffer) {
	t.Helper()
	out, errOut = &bytes.Buffer{}, &bytes.Buffer{}
	oldOut, oldErr := stdout, stderr
	stdout, stderr = out, errOut
	t.Cleanup(func() { stdout, stderr = oldOut, oldErr })
	return out, errOut
}

func TestQuoteCommand(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"curl", "-sI", "https://api.github.com/x?y=1"}, `curl -sI 'https://api.github.com/x?y=1'`},
		{[]string{"sh", "-c", "sleep 60"}, `sh -c 'sleep 60'`},
		{[]string{"echo", "it's"}, `echo 'it'\''s'`},
		{[]string{"sh", "-c", "a\nb"}, `sh -c "a\nb"`},
		{[]string{"x", ""}, `x ''`},
		{nil, ""},
	} {
		if got := quoteCommand(tc.args); got != tc.want {
			t.Errorf("quoteCommand(%q) = %s, want %s", tc.args, got, tc.want)
		}
	}
}

func TestClip(t *testing.T) {
	for _, tc := range []struct {
		s    string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"a bit too long", 10, "a bit too…"},
		{"ééééé", 3, "éé…"},
	} {
		if got := clip(tc.s, tc.n); got != tc.want {
			t.Errorf("clip(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.want)
		}
	}
}

// testRuns are a live run, a dead one, and a dead one from a record of a
// version before status (no command, policy or namespace).
func testRuns(now time.Time) []sandbox.Run {
	return []sandbox.Run{
		{Name: "claude", PID: 4242, Alive: true, Started: now.Add(-(time.Hour + 2*time.Minute + 3*time.Second + 400*time.Millisecond)),
			Command: []string{"claude", "--print", "fix the tests"}, PolicyHash: "sha256:3f2a9c1b7d0e5566", NetNS: "gw", Cookie: 4097,
			Table: "sluice-claude", Iface: "sl4242", AgentPID: 4250, Record: "/run/sluice/netns-4097-agent-claude.json"},
		{Name: "sh", PID: 977, Alive: false, Started: now.Add(-26 * time.Hour),
			Command: []string{"sh", "-c", strings.Repeat("x", 80)}, PolicyHash: "sha256:ab12ab12ab12ab12ffff", Cookie: 1,
			Record: "/run/sluice/netns-1-agent-sh.json"},
		{Name: "old", PID: 12, Record: "/run/sluice/netns-2-agent-old.json", Cookie: 2},
	}
}

func TestWriteRunsTable(t *testing.T) {
	now := time.Date(2025, 6, 1, 14, 3, 5, 0, time.Local)
	for _, tc := range []struct {
		name string
		runs []sandbox.Run
		want string
	}{
		{"none", nil, "no sluice runs (no records in /run/sluice)\n"},
		{"alive and dead", testRuns(now), `AGENT   STATE  PID   STARTED              UPTIME  POLICY                   NETNS  COMMAND
claude  ALIVE  4242  2025-06-01 13:01:01  1h2m3s  sha256:3f2a9c1b7d0e5566  gw     claude --print 'fix the tests'
sh      DEAD   977   2025-05-31 12:03:05  -       sha256:ab12ab12ab12ab12  -      sh -c xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…
old     DEAD   12    -                    -       -                        -      -
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			writeRunsTable(&b, tc.runs, now, "/run/sluice")
			if b.String() != tc.want {
				t.Errorf("got\n%s\nwant\n%s", b.String(), tc.want)
			}
		})
	}
}

func TestWriteRunsJSON(t *testing.T) {
	now := time.Date(2025, 6, 1, 14, 3, 5, 0, time.UTC)
	var b bytes.Buffer
	writeRunsJSON(&b, testRuns(now), now)
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	want := []string{
		`{"agent":"claude","state":"alive","pid":4242,"started":"2025-06-01T13:01:01.6Z","uptime_seconds":3723,"policy_hash":"sha256:3f2a9c1b7d0e5566","command":["claude","--print","fix the tests"],"netns":"gw","netns_cookie":4097,"table":"sluice-claude","iface":"sl4242","agent_pid":4250,"record":"/run/sluice/netns-4097-agent-claude.json"}`,
		`{"agent":"sh","state":"dead","pid":977,"started":"2025-05-31T12:03:05Z","policy_hash":"sha256:ab12ab12ab12ab12ffff","command":["sh","-c","` + strings.Repeat("x", 80) + `"],"netns_cookie":1,"record":"/run/sluice/netns-1-agent-sh.json"}`,
		`{"agent":"old","state":"dead","pid":12,"netns_cookie":2,"record":"/run/sluice/netns-2-agent-old.json"}`,
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), b.String())
	}
	for i := range want {
		if lines[i] != want[i] {
			t.Errorf("line %d:\ngot  %s\nwant %s", i, lines[i], want[i])
		}
		if !json.Valid([]byte(lines[i])) {
			t.Errorf("line %d is not JSON", i)
		}
	}
}

func TestReadError(t *testing.T) {
	for _, tc := range []struct {
		err      error
		needRoot bool
	}{
		{&fs.PathError{Op: "open", Path: "/run/sluice", Err: fs.ErrPermission}, true},
		{fmt.Errorf("read the records in /run/sluice: %w", os.ErrPermission), true},
		{errors.New("the record x does not read: corrupt state file"), false},
	} {
		got := readError("status", tc.err)
		if !strings.HasPrefix(got, "sluice status: "+tc.err.Error()) || strings.Contains(got, "needs root") != tc.needRoot {
			t.Errorf("readError(%v) = %q; want a needs-root hint: %v", tc.err, got, tc.needRoot)
		}
	}
}

// selfStart is this process's start time as /proc/PID/stat gives it, what
// a record holds to tell its process from a later one with its pid.
func selfStart(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))[19]
}

// TestStatusCmd runs `sluice status` on a state directory of its own:
// the runs of its records, alive and dead, as a table and as JSON; no
// runs; wrong arguments.
func TestStatusCmd(t *testing.T) {
	dir := t.TempDir()
	records := map[string]string{
		"netns-7-agent-live.json": fmt.Sprintf(`{"pid":%d,"start":%q,"name":"live","command":["sleep","60"],"policy_hash":"sha256:0123456789abcdef","started":"%s"}`,
			os.Getpid(), selfStart(t), time.Now().Add(-time.Minute).Format(time.RFC3339)),
		"netns-7-agent-dead.json": `{"pid":1073741824,"start":"5","name":"dead","table":"sluice-dead","iface":"sl1"}`,
		"netns-7-forwarding.json": `{"sysctls":[]}`,
	}
	for name, data := range records {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name       string
		args       []string
		err        error
		want       []string // in stdout
		wantStderr string
	}{
		{"table", []string{"--state-dir", dir}, nil, []string{"AGENT STATE PID STARTED UPTIME POLICY NETNS COMMAND", "dead DEAD 1073741824", "live ALIVE " + fmt.Sprint(os.Getpid()), "sha256:0123456789abcdef - sleep 60"}, ""},
		{"json", []string{"--json", "--state-dir", dir}, nil, []string{`"agent":"live","state":"alive"`, `"agent":"dead","state":"dead"`}, ""},
		{"no runs", []string{"--state-dir", filepath.Join(dir, "none")}, nil, []string{"no sluice runs"}, ""},
		{"argument", []string{"--state-dir", dir, "extra"}, exitError{2}, nil, `unexpected argument "extra"`},
		{"flag", []string{"--jsn"}, exitError{2}, nil, "did you mean --json?"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut := capture(t)
			err := statusCmd(tc.args)
			if err != tc.err {
				t.Errorf("status %v: %v, want %v", tc.args, err, tc.err)
			}
			words := strings.Join(strings.Fields(out.String()), " ") // columns' widths aside
			for _, w := range tc.want {
				if !strings.Contains(words, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
			if !strings.Contains(errOut.String(), tc.wantStderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.wantStderr, errOut)
			}
		})
	}
}

// TestStatusUnreadable: a record that does not read is reported, exit
// status 1, after the runs that do.
func TestStatusUnreadable(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "netns-7-agent-bad.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut := capture(t)
	if err := statusCmd([]string{"--state-dir", dir}); err != (exitError{1}) {
		t.Errorf("status: %v, want exit status 1", err)
	}
	if out.Len() > 0 || !strings.Contains(errOut.String(), "netns-7-agent-bad.json does not read") {
		t.Errorf("stdout %q, stderr %q", out, errOut)
	}
}

func TestCleanupCmdArgs(t *testing.T) {
	for _, args := range [][]string{{"extra"}, {"--dry"}} {
		_, errOut := capture(t)
		if err := cleanupCmd(args); err != (exitError{2}) {
			t.Errorf("cleanup %v: %v, want exit status 2", args, err)
		}
		if !strings.Contains(errOut.String(), "sluice cleanup:") {
			t.Errorf("cleanup %v: stderr %q", args, errOut)
		}
	}
}
