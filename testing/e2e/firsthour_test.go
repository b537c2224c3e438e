package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestAllowPortsMergeWithFile: --allow HOST:P1,P2 allows both ports, and
// --allow for a host the policy file lists adds its port to the file's
// entry instead of failing as a duplicate. A port neither gave stays
// refused.
func TestAllowPortsMergeWithFile(t *testing.T) {
	w := newWorld(t)
	c := w.curl()
	pol := policyFile(t, "  - host: allowed.test\n    ports: [443]\n")
	r := w.run(t, []string{"--policy", pol, "--allow", "allowed.test:8443", "--allow", "www.allowed.test:80,443"}, prelude+`
try file_port `+c+` https://allowed.test/
try flag_port nc -z -w 3 allowed.test 8443
try other_port nc -z -w 3 allowed.test 22
try www_443 `+c+` https://www.allowed.test/
try www_80 `+c+` http://www.allowed.test/
`)
	expect(t, r, map[string]string{"file_port": ok, "flag_port": ok, "other_port": "1", "www_443": ok, "www_80": ok})
	if r.code != 0 {
		t.Errorf("exit %d", r.code)
	}
}

// TestHomelabNames: wildcards over *.home.arpa and *.lan are what a
// homelab allows, with private: true (or --allow-private) and only then.
func TestHomelabNames(t *testing.T) {
	w := newWorld(t)
	pol := policyFile(t, "  - host: '*.lan'\n    private: true\n    ports: [80]\n")
	r := w.run(t, []string{"--policy", pol, "--allow-private", "*.home.arpa:80"}, prelude+`
echo nas=$(dig +short nas.home.arpa)
echo printer=$(dig +short printer.lan)
curl -s --max-time 3 -H 'X-Probe: nas' http://nas.home.arpa/ >/dev/null
curl -s --max-time 3 http://printer.lan/ >/dev/null
try other_port nc -z -w 3 printer.lan 22
`)
	expect(t, r, map[string]string{"nas": "10.0.0.1", "printer": "10.0.0.1", "other_port": "1"})
	// Both requests reached the fake internet's 10.0.0.1:80 through the
	// HTTP proxy; port 22 (not allowed, nothing listens there) did not.
	reached := 0
	for _, c := range w.sinkContacts() {
		if c.Local == "10.0.0.1:80" {
			reached++
		}
	}
	if reached != 2 {
		t.Errorf("%d connections reached 10.0.0.1:80, want 2: %v", reached, w.sinkContacts())
	}
	// Without private, the same wildcard is refused before anything starts,
	// and the error says what to write instead.
	r = w.run(t, []string{"--allow", "*.home.arpa:80"}, "echo started=1")
	if r.code == 0 || strings.Contains(r.stdout, "started") || !strings.Contains(r.stderr, "special-use name for local networks; use --allow-private") {
		t.Errorf("--allow *.home.arpa: exit %d, stdout %q, stderr %q; want a refusal naming --allow-private", r.code, r.stdout, r.stderr)
	}
}

// TestExitSummaryAndLogFile: with --log-file the log goes to the file and
// not to the stderr the command shares; at exit sluice prints on stderr
// one line that groups what was refused, and where the journal is.
func TestExitSummaryAndLogFile(t *testing.T) {
	w := newWorld(t)
	c := w.curl()
	logFile := filepath.Join(t.TempDir(), "sluice.log")
	r := w.run(t, []string{"--allow", "allowed.test", "--log-file", logFile}, prelude+`
try allowed `+c+` https://allowed.test/
try other1 dig +short other.test
try other2 dig +short other.test
for i in 1 2 3; do nc -z -w 2 `+evilAddr+` 22; done
echo agent_stderr >&2
`)
	expect(t, r, map[string]string{"allowed": ok})
	log, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "gateway ready") || !strings.Contains(string(log), "reason=name_not_allowed") {
		t.Errorf("the log file lacks the start or the refusals:\n%s", log)
	}
	if strings.Contains(r.stderr, "gateway ready") || strings.Contains(r.stderr, "msg=refused") {
		t.Errorf("the log went to stderr too:\n%s", r.stderr)
	}
	if !strings.Contains(r.stderr, "agent_stderr") {
		t.Errorf("the command's own stderr is missing")
	}
	summary := regexp.MustCompile(`(?m)^sluice: (\d+) refused — (.*); journal: (.*)$`).FindStringSubmatch(r.stderr)
	if summary == nil {
		t.Fatalf("no exit summary on stderr:\n%s", r.stderr)
	}
	for _, want := range []string{"dns other.test ×", "(name_not_allowed)", "tcp " + evilAddr + ":22 ×3"} {
		if !strings.Contains(summary[2], want) {
			t.Errorf("summary %q lacks %q", summary[0], want)
		}
	}
	if summary[3] != journalPath {
		t.Errorf("summary names journal %q, want %q", summary[3], journalPath)
	}
	// A run with nothing refused says nothing at exit.
	r = w.run(t, []string{"--allow", "allowed.test"}, prelude+"try allowed "+c+" https://allowed.test/\n")
	expect(t, r, map[string]string{"allowed": ok})
	if strings.Contains(r.stderr, " refused — ") {
		t.Errorf("a summary for a run that refused nothing:\n%s", r.stderr)
	}
}

// TestWarningsAfterStart: policy warnings print once the gateway started,
// not before an error that stops it; and an accepted warning stays silent.
func TestWarningsAfterStart(t *testing.T) {
	w := newWorld(t)
	const pushWarning = "accepts git pushes"
	// One start fails before the gateway is made, one after (its UI
	// cannot listen on an address the gateway does not have).
	for _, fail := range [][]string{{"--user", "no-such-user-sluice"}, {"--ui", "198.51.100.1:1"}} {
		r := w.run(t, append([]string{"--allow", "gitlab.com"}, fail...), "echo started=1")
		if r.code == 0 || strings.Contains(r.stdout, "started") || strings.Contains(r.stderr, pushWarning) || strings.Contains(r.stderr, "runs as root") {
			t.Errorf("%v: a failed start printed warnings (exit %d):\n%s", fail, r.code, r.stderr)
		}
	}
	r := w.run(t, []string{"--allow", "gitlab.com"}, "echo started=1")
	if r.values()["started"] != "1" || !strings.Contains(r.stderr, pushWarning) || !strings.Contains(r.stderr, "--accept git-push-risk") {
		t.Errorf("a start that worked: no warning naming --accept:\n%s", r.stderr)
	}
	r = w.run(t, []string{"--allow", "gitlab.com", "--accept", "git-push-risk"}, "echo started=1")
	if r.values()["started"] != "1" || strings.Contains(r.stderr, pushWarning) {
		t.Errorf("an accepted warning printed:\n%s", r.stderr)
	}
}
