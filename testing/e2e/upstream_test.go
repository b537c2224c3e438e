package e2e

import (
	"strconv"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// logLines returns the lines of a text log (slog's TextHandler) whose
// message is msg, each as its keys and values.
func logLines(log, msg string) []map[string]string {
	var out []map[string]string
	for _, line := range strings.Split(log, "\n") {
		if kv := parseLogLine(line); kv["msg"] == msg {
			out = append(out, kv)
		}
	}
	return out
}

// parseLogLine reads key=value pairs, values bare or quoted as Go quotes them.
func parseLogLine(line string) map[string]string {
	kv := map[string]string{}
	for line != "" {
		line = strings.TrimLeft(line, " ")
		k, rest, ok := strings.Cut(line, "=")
		if !ok || strings.Contains(k, " ") {
			return kv
		}
		var v string
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				return kv
			}
			v, _ = strconv.Unquote(q)
			rest = rest[len(q):]
		} else {
			v, rest, _ = strings.Cut(rest, " ")
		}
		kv[k] = v
		line = rest
	}
	return kv
}

const (
	msgUnresolved     = "allowed name does not resolve"
	msgUpstreamFailed = "upstream failed"
	msgNoUpstream     = "no upstream resolver answers: allowed names will not resolve; check --upstream"
	msgProbeFailed    = "upstream resolver does not answer"
)

// TestAllowedNameThatDoesNotResolve: names the policy allows but the
// upstream answers with NXDOMAIN, SERVFAIL or no address are a warning on
// sluice's stderr that names the name, the policy entry (file:line) and
// the upstream's answer, once per name however often the agent asks; a
// name that resolves is no warning, and the agent connects to it. None of
// it is a refusal, and the start-up probe found the upstream answering.
func TestAllowedNameThatDoesNotResolve(t *testing.T) {
	w := newWorld(t)
	w.auth.SetRcode("broken.allowed.test.", dns.RcodeServerFailure)
	pol := policyFile(t, "  - host: allowed.test\n  - host: nx.allowed.test\n  - host: broken.allowed.test\n  - host: v6only.allowed.test\n")
	c := w.curl()
	r := w.run(t, []string{"--policy", pol}, prelude+`
try good `+c+` https://allowed.test/
try nx `+c+` https://nx.allowed.test/
try nx_again `+c+` https://nx.allowed.test/
echo nx_status=$(dig +time=2 +tries=1 nx.allowed.test | grep -o 'status: [A-Z]*')
echo broken=$(dig +time=2 +tries=1 broken.allowed.test | grep -o 'status: [A-Z]*')
echo broken_again=$(dig +time=2 +tries=1 broken.allowed.test | grep -o 'status: [A-Z]*')
echo noaddr=$(dig +time=2 +tries=1 A v6only.allowed.test | grep -o 'status: [A-Z]*')
echo noaddr_n=$(dig +short +time=2 +tries=1 A v6only.allowed.test | wc -l)
`)
	expect(t, r, map[string]string{"good": ok, "nx": curlNoResolve, "nx_again": curlNoResolve, "nx_status": "status: NXDOMAIN",
		"broken": "status: SERVFAIL", "broken_again": "status: SERVFAIL", "noaddr": "status: NOERROR", "noaddr_n": "0"})
	warned := map[string]map[string]string{}
	for _, l := range logLines(r.stderr, msgUnresolved) {
		if warned[l["name"]] != nil {
			t.Errorf("%s warned about twice: %v", l["name"], l)
		}
		warned[l["name"]] = l
	}
	for _, want := range []struct{ name, line, answer string }{
		{"nx.allowed.test", "4", "NXDOMAIN"},
		{"broken.allowed.test", "5", "SERVFAIL"},
		{"v6only.allowed.test", "6", "no A records"},
	} {
		l := warned[want.name]
		if l == nil {
			t.Errorf("no warning about %s", want.name)
			continue
		}
		rule := pol + ":" + want.line + " " + want.name + " ports 80,443"
		if l["level"] != "WARN" || l["rule"] != rule || l["answer"] != want.answer || l["upstream"] != authAddr+":53" {
			t.Errorf("warning about %s: %v; want level WARN, rule %q, answer %q, upstream %s:53", want.name, l, rule, want.answer, authAddr)
		}
	}
	if l := warned["allowed.test"]; l != nil {
		t.Errorf("a name that resolves was warned about: %v", l)
	}
	if len(warned) != 3 {
		t.Errorf("warned about %d names, want 3", len(warned))
	}
	for _, msg := range []string{msgUpstreamFailed, msgProbeFailed, msgNoUpstream, "refused"} {
		if l := logLines(r.stderr, msg); len(l) > 0 {
			t.Errorf("logged %q although the upstream answers: %v", msg, l)
		}
	}
}

// TestUnreachableUpstream: when no upstream resolver answers (nothing
// listens on one, the other never answers), sluice says so at start, one
// warning per upstream and an error that none answers, and still starts;
// a query for an allowed name is then an error naming the name, the
// upstreams and why, never a refusal, and the agent gets SERVFAIL.
func TestUnreachableUpstream(t *testing.T) {
	w := newWorld(t)
	w.auth.Close()        // nothing listens on its port 53 any more
	silent := allowedAddr // a UDP sink listens on its port 53 and never answers
	r := w.run(t, []string{"--upstream", silent, "--allow", "allowed.test"}, prelude+`
echo status=$(dig +time=8 +tries=1 allowed.test | grep -o 'status: [A-Z]*')
`)
	expect(t, r, map[string]string{"status": "status: SERVFAIL"})
	closedUp, silentUp := authAddr+":53", silent+":53"
	probes := map[string]string{}
	for _, l := range logLines(r.stderr, msgProbeFailed) {
		if l["level"] != "WARN" {
			t.Errorf("probe failure at level %s, want WARN: %v", l["level"], l)
		}
		probes[l["upstream"]] = l["err"]
	}
	if !strings.HasPrefix(probes[closedUp], "refused") || !strings.HasPrefix(probes[silentUp], "timeout") || len(probes) != 2 {
		t.Errorf("probe warnings %v; want %s refused and %s timeout", probes, closedUp, silentUp)
	}
	none := logLines(r.stderr, msgNoUpstream)
	if len(none) != 1 || none[0]["level"] != "ERROR" {
		t.Errorf("start-up error that no upstream answers: %v, want one at ERROR", none)
	}
	if ready := strings.Index(r.stderr, "msg=\"gateway ready\""); ready < 0 || ready < strings.Index(r.stderr, msgNoUpstream) {
		t.Errorf("want the gateway to start, after saying that no upstream answers")
	}
	failed := logLines(r.stderr, msgUpstreamFailed)
	if len(failed) != 1 {
		t.Fatalf("upstream failures logged: %v, want one", failed)
	}
	l := failed[0]
	if l["level"] != "ERROR" || l["name"] != "allowed.test" || l["rule"] != "--allow allowed.test allowed.test ports 80,443" ||
		l["upstream"] != closedUp+","+silentUp ||
		!strings.Contains(l["err"], closedUp+": refused") || !strings.Contains(l["err"], silentUp+": timeout") {
		t.Errorf("upstream failure logged as %v; want an ERROR naming allowed.test, its rule, both upstreams and why", l)
	}
	if l := logLines(r.stderr, "refused"); len(l) > 0 {
		t.Errorf("an upstream failure logged as a refusal: %v", l)
	}
}
