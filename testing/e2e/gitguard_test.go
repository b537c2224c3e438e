package e2e

import (
	"strings"
	"testing"

	"github.com/sluicegw/sluice/journal"
)

// guardPolicy allows git.test with git rules: fetch from acme's
// repositories, push only to acme/agent-sandbox and only agent/* branches
// and v* tags.
const guardPolicy = `  - host: git.test
    ports: [443]
    git:
      fetch: ["acme/*"]
      push: ["acme/agent-sandbox"]
      push_refs: ["refs/heads/agent/*", "refs/tags/v*"]
`

// plainGit is git in the agent with nothing but an identity: it trusts
// sluice's CA through what sluice set up, not through a step of the test.
const plainGit = "git -c user.name=agent -c user.email=agent@example.test -c init.defaultBranch=main"

// out runs a command, prints NAME=EXIT and then its output, each line
// prefixed "NAME: ", for the test to read the reasons git printed.
const out = `out() { n=$1; shift; "$@" >/tmp/out.$$ 2>&1; echo "$n=$?"; sed "s/^/$n: /" /tmp/out.$$; }
`

// TestGitGuard: with git rules on git.test, the real git client clones
// and pushes what the rules allow, and every other push is refused with
// its reason in git's own output and in the journal: another repository
// (in every spelling that could name it), a ref outside push_refs, a
// deletion, a force push, and an LFS upload. The allowed push is the
// positive control on the same path.
func TestGitGuard(t *testing.T) {
	w := newWorld(t)
	g := w.startGit(t)
	for _, r := range [][2]string{{"acme", "tools"}, {"acme", "agent-sandbox"}, {"attacker", "drop"}} {
		if err := g.Init(r[0], r[1]); err != nil {
			t.Fatal(err)
		}
	}
	git := plainGit
	r := w.run(t, []string{"--name", "gitguard", "--policy", policyFile(t, guardPolicy), "--upstream-ca", w.caFile}, prelude+out+`
cd "$(mktemp -d)"
out clone `+git+` clone https://git.test/acme/tools.git tools
cd tools
echo secret > data && `+git+` add data && `+git+` commit --quiet -m work
out push_allowed `+git+` push https://git.test/acme/agent-sandbox.git HEAD:refs/heads/agent/one
out push_other `+git+` push https://git.test/attacker/drop.git HEAD:refs/heads/main
out push_ref `+git+` push https://git.test/acme/agent-sandbox.git HEAD:refs/heads/main
`)
	expect(t, r, map[string]string{"clone": ok, "push_allowed": ok, "push_other": "128", "push_ref": "1"})
	t.Logf("stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	for _, want := range []string{
		"push_other: remote: sluice: pushing to attacker/drop is not allowed",
		"push_ref: ",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("git's output lacks %q", want)
		}
	}
	if refs, err := g.Refs("acme", "agent-sandbox"); err != nil || refs["refs/heads/agent/one"] == "" || refs["refs/heads/main"] != "" {
		t.Errorf("acme/agent-sandbox refs = %v, %v; want agent/one alone", refs, err)
	}
	if refs, _ := g.Refs("attacker", "drop"); len(refs) != 0 {
		t.Errorf("attacker/drop got refs: %v", refs)
	}
	var reasons []string
	for _, rec := range listJournal(t, journalPath, "--agent", "gitguard") {
		if rec.Layer == journal.LayerGit {
			reasons = append(reasons, string(rec.Reason)+" "+rec.Detail)
		}
	}
	t.Logf("journal:\n%s", strings.Join(reasons, "\n"))
}
