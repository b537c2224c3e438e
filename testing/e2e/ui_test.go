package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sluicegw/sluice/testing/nstest"
)

const uiPort = "8099"

var loginURL = regexp.MustCompile(`web UI at (http://[^/\s]+(/\S*)\?token=([0-9a-f]+))`)

// uiLogin is what the login URL sluice printed gives: the UI's path
// prefix and its token.
type uiLogin struct{ url, prefix, token string }

// uiToken waits for the login URL on the run's stderr.
func uiToken(t *testing.T, a *agentRun) uiLogin {
	t.Helper()
	var l uiLogin
	waitFor(t, func() bool {
		if m := loginURL.FindStringSubmatch(a.logged()); m != nil {
			l = uiLogin{m[1], m[2], m[3]}
		}
		return l.token != ""
	})
	return l
}

// uiCall makes an API call from the gateway's namespace (where the UI
// listens) with curl, and decodes the JSON answer into out.
func uiCall(t *testing.T, gw *nstest.NS, l uiLogin, method, path, body string, out any) int {
	t.Helper()
	args := []string{"-sS", "-o", "/dev/stdout", "-w", "\n%{http_code}", "-X", method, "-H", "Authorization: Bearer " + l.token}
	if body != "" {
		args = append(args, "-H", "Content-Type: application/json", "--data", body)
	}
	res := gw.Run(t, "curl", append(args, "http://127.0.0.1:"+uiPort+strings.TrimSuffix(l.prefix, "/")+path)...)
	i := strings.LastIndexByte(res, '\n')
	var code int
	fmt.Sscan(res[i+1:], &code)
	if out != nil && code == 200 {
		if err := json.Unmarshal([]byte(res[:i]), out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, res)
		}
	}
	return code
}

// TestUIAllowsARefusal: a refusal is in the UI's API; allowing it for an
// hour through the API (proposal, then confirmation) lets the agent
// through at once, journaled with the old and new policy hash; the
// allowance is in the policy view. The agent cannot reach the UI on any
// gateway address, while the gateway itself can.
func TestUIAllowsARefusal(t *testing.T) {
	w := newWorld(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "journal.db")
	c := w.curl()
	ready := filepath.Join(dir, "ready")
	goOn, waitGo := fileFlag(dir, "go")
	a := startAgent(t, w, []string{"--journal", path, "--ui", "0.0.0.0:" + uiPort, "--allow", "allowed.test"}, prelude+`
try before `+c+` https://www.allowed.test/
try ui_gw `+c+` --connect-timeout 2 http://`+gwAddr+`:`+uiPort+`/
try ui_up `+c+` --connect-timeout 2 http://198.18.1.1:`+uiPort+`/
touch `+ready+`
`+waitGo+`try after `+c+` https://www.allowed.test/
`)
	tok := uiToken(t, a)
	waitFor(t, func() bool { return fileExists(ready) })
	// The gateway reaches the UI: the control for the agent's refusals.
	if code := uiCall(t, w.gw, uiLogin{prefix: tok.prefix, token: "wrong"}, "GET", "/api/events", "", nil); code != 401 {
		t.Fatalf("the UI from the gateway, wrong token: %d, want 401", code)
	}
	var events struct {
		Events []struct {
			ID     int64
			Reason string
		}
	}
	// The refusal may reach the journal a moment after the agent saw it.
	waitFor(t, func() bool {
		uiCall(t, w.gw, tok, "GET", "/api/events?verdict=refused&host=www.allowed.test&layer=dns", "", &events)
		return len(events.Events) > 0
	})
	if events.Events[0].Reason != "name_not_allowed" {
		t.Fatalf("the refusal: %+v", events.Events)
	}
	var prop struct{ Proposal, Diff, Policy string }
	if code := uiCall(t, w.gw, tok, "POST", "/api/allow", fmt.Sprintf(`{"event": %d, "duration": "1h"}`, events.Events[0].ID), &prop); code != 200 ||
		!strings.Contains(prop.Diff, "host: www.allowed.test") {
		t.Fatalf("allow: %d %+v", code, prop)
	}
	var confirmed struct{ Policy string }
	start := time.Now()
	if code := uiCall(t, w.gw, tok, "POST", "/api/proposals/"+prop.Proposal+"/confirm", "", &confirmed); code != 200 || confirmed.Policy == prop.Policy {
		t.Fatalf("confirm: %d %+v (before: %s)", code, confirmed, prop.Policy)
	}
	touch(t, goOn)
	r := a.wait(t)
	t.Logf("confirmed to the agent's retry: %v", time.Since(start))
	expect(t, r, map[string]string{"before": curlNoResolve, "ui_gw": curlRefused, "ui_up": curlRefused, "after": ok})
	changes := listJournal(t, path, "--verdict", "changed")
	if len(changes) != 1 || changes[0].Reason != "reviewed_allow" || changes[0].Policy != confirmed.Policy ||
		changes[0].PrevPolicy != prop.Policy || !strings.Contains(changes[0].Detail, "+ www.allowed.test ports 80,443") {
		t.Errorf("the journaled change: %+v", changes)
	}
}

// TestAllowanceExpires: an allowance for four seconds lets the agent
// through, then ends by itself: the agent is refused again, and the
// expiry is journaled with the old and new policy hash.
func TestAllowanceExpires(t *testing.T) {
	w := newWorld(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "journal.db")
	c := w.curl()
	ready := filepath.Join(dir, "ready")
	allowed, waitAllowed := fileFlag(dir, "allowed")
	expired, waitExpired := fileFlag(dir, "expired")
	a := startAgent(t, w, []string{"--journal", path, "--ui", "127.0.0.1:" + uiPort, "--allow", "allowed.test"}, prelude+`
try before `+c+` https://www.allowed.test/
touch `+ready+`
`+waitAllowed+`try during `+c+` https://www.allowed.test/
`+waitExpired+`try after `+c+` https://www.allowed.test/
`)
	tok := uiToken(t, a)
	waitFor(t, func() bool { return fileExists(ready) })
	var prop struct{ Proposal, Policy string }
	if code := uiCall(t, w.gw, tok, "POST", "/api/allow", `{"host": "www.allowed.test", "port": 443, "duration": "4s"}`, &prop); code != 200 {
		t.Fatalf("allow: %d", code)
	}
	if code := uiCall(t, w.gw, tok, "POST", "/api/proposals/"+prop.Proposal+"/confirm", "", nil); code != 200 {
		t.Fatalf("confirm: %d", code)
	}
	touch(t, allowed)
	var view struct{ Hash string }
	waitFor(t, func() bool {
		uiCall(t, w.gw, tok, "GET", "/api/policy", "", &view)
		return view.Hash == prop.Policy // back to the policy before the allowance
	})
	touch(t, expired)
	expect(t, a.wait(t), map[string]string{"before": curlNoResolve, "during": ok, "after": curlNoResolve})
	changes := listJournal(t, path, "--verdict", "changed")
	if len(changes) != 2 || changes[0].Reason != "allowance_expired" || changes[0].Policy != prop.Policy || changes[1].Reason != "reviewed_allow" {
		t.Errorf("the journaled changes: %+v", changes)
	}
}

// TestAllowAlwaysWritesPolicy: "always" adds the entry to the policy
// file (the old one kept as .bak, the comments kept) and puts the file
// in force; without a policy file, it is refused.
func TestAllowAlwaysWritesPolicy(t *testing.T) {
	w := newWorld(t)
	dir := t.TempDir()
	pol := policyFile(t, "  # the fake internet\n  - host: allowed.test\n")
	c := w.curl()
	ready := filepath.Join(dir, "ready")
	goOn, waitGo := fileFlag(dir, "go")
	a := startAgent(t, w, []string{"--journal", filepath.Join(dir, "journal.db"), "--ui", "127.0.0.1:" + uiPort, "--policy", pol}, prelude+`
try before `+c+` https://www.allowed.test/
touch `+ready+`
`+waitGo+`try after `+c+` https://www.allowed.test/
`)
	tok := uiToken(t, a)
	waitFor(t, func() bool { return fileExists(ready) })
	var prop struct{ Proposal string }
	if code := uiCall(t, w.gw, tok, "POST", "/api/allow", `{"host": "www.allowed.test", "port": 443, "duration": "always"}`, &prop); code != 200 {
		t.Fatalf("allow: %d", code)
	}
	if code := uiCall(t, w.gw, tok, "POST", "/api/proposals/"+prop.Proposal+"/confirm", "", nil); code != 200 {
		t.Fatalf("confirm: %d", code)
	}
	touch(t, goOn)
	expect(t, a.wait(t), map[string]string{"before": curlNoResolve, "after": ok})
	written, old := readFile(pol), readFile(pol+".bak")
	if !strings.Contains(written, "host: www.allowed.test") || !strings.Contains(written, "# the fake internet") ||
		strings.Contains(old, "www.allowed.test") || !strings.Contains(old, "allowed.test") {
		t.Errorf("the policy file:\n%s\nits backup:\n%s", written, old)
	}
	if out, err := exec.Command(sluiceBin, "check", pol).CombinedOutput(); err != nil {
		t.Errorf("sluice check of the written file: %v: %s", err, out)
	}
}

// TestUITokenNotInAgent: the token given in SLUICE_UI_TOKEN logs in to
// the UI (the control: sluice read it) and is not in the agent's
// environment, which it otherwise inherits from sluice's.
func TestUITokenNotInAgent(t *testing.T) {
	w := newWorld(t)
	const token = "e2e-token-0123456789abcdef"
	args := append(append([]string{"netns", "exec", w.gw.Name, sluiceBin}, sluiceArgs("--ui", "127.0.0.1:"+uiPort)...),
		"--", "sh", "-c", `echo "token=${SLUICE_UI_TOKEN:-none}"; echo "other=${SLUICE_E2E_OTHER:-none}"`)
	cmd := exec.Command("ip", args...)
	cmd.Env = append(os.Environ(), "SLUICE_UI_TOKEN="+token, "SLUICE_E2E_OTHER=kept")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sluice run: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "?token="+token) {
		t.Errorf("the login URL does not carry SLUICE_UI_TOKEN:\n%s", out)
	}
	if !strings.Contains(string(out), "token=none") || !strings.Contains(string(out), "other=kept") {
		t.Errorf("the agent's environment: want no token and the other variable kept:\n%s", out)
	}
	w.assertClean(t)
}
