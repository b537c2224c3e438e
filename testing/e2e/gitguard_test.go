package e2e

import (
	"encoding/json"
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

// code prints NAME=HTTP-STATUS of a curl request (000 when none came).
const code = `code() { n=$1; shift; echo "$n=$(curl -s -o /dev/null -w '%{http_code}' "$@")"; }
`

// TestGitGuard: with git rules on git.test, the real git client clones
// and pushes what the rules allow (a new branch, a fast-forward, a tag),
// and every other push is refused with its reason in git's own output
// and in the journal, before the server sees it: another repository (in
// every spelling that could name it), a ref outside push_refs, a
// deletion, a force push, an LFS upload, dumb HTTP and WebDAV. Each
// refusal has an allowed request on the same path beside it. The agent
// trusts sluice's CA with no step of the test's: git and curl run with
// the environment sluice gives them.
func TestGitGuard(t *testing.T) {
	w := newWorld(t)
	g := w.startGit(t)
	for _, r := range [][2]string{{"acme", "tools"}, {"acme", "agent-sandbox"}, {"attacker", "drop"}} {
		if err := g.Init(r[0], r[1]); err != nil {
			t.Fatal(err)
		}
	}
	git := plainGit
	sandbox := "https://git.test/acme/agent-sandbox.git"
	lfs := func(repo, op string) string {
		return `-X POST -H 'Content-Type: application/vnd.git-lfs+json' -d '{"operation":"` + op + `","objects":[]}' https://git.test/` + repo + `.git/info/lfs/objects/batch`
	}
	r := w.run(t, []string{"--name", "gitguard", "--policy", policyFile(t, guardPolicy), "--upstream-ca", w.caFile}, prelude+out+code+`
cd "$(mktemp -d)"
out clone `+git+` clone https://git.test/acme/tools.git tools
cd tools
echo one > f && `+git+` add f && `+git+` commit --quiet -m one
out push_new `+git+` push `+sandbox+` HEAD:refs/heads/agent/one
echo two >> f && `+git+` commit --quiet -am two
out push_ff `+git+` push `+sandbox+` HEAD:refs/heads/agent/one
echo "ff_commit=$(`+git+` rev-parse HEAD)"
`+git+` commit --quiet --amend -m rewritten
out push_force `+git+` push --force `+sandbox+` HEAD:refs/heads/agent/one
out push_delete `+git+` push `+sandbox+` :refs/heads/agent/one
out push_ref `+git+` push `+sandbox+` HEAD:refs/heads/main
`+git+` tag v1 && `+git+` tag x1
out push_tag `+git+` push `+sandbox+` refs/tags/v1
out push_tag_other `+git+` push `+sandbox+` refs/tags/x1
out push_other `+git+` push https://git.test/attacker/drop.git HEAD:refs/heads/main
out push_case `+git+` push https://git.test/ATTACKER/Drop HEAD:refs/heads/main
out push_escaped `+git+` push https://git.test/%61ttacker/drop.git HEAD:refs/heads/main
code discovery https://git.test/acme/agent-sandbox.git/info/refs?service=git-receive-pack
code dotdot --path-as-is "https://git.test/acme/agent-sandbox.git/../../attacker/drop.git/info/refs?service=git-receive-pack"
code slash "https://git.test/acme%2Fagent-sandbox/info/refs?service=git-receive-pack"
code dup_service "https://git.test/acme/agent-sandbox.git/info/refs?service=git-upload-pack&service=git-receive-pack"
code lfs_upload `+lfs("attacker/drop", "upload")+`
code lfs_upload_listed `+lfs("acme/agent-sandbox", "upload")+`
code dumb https://git.test/acme/tools.git/HEAD
code webdav -X PUT -d x https://git.test/acme/tools.git/objects/aa
code host_other -H "Host: evil.test" https://git.test/acme/tools.git/info/refs?service=git-upload-pack
echo "h2=$(curl -s --http2 -o /dev/null -w '%{http_version} %{http_code}' https://git.test/acme/tools.git/info/refs?service=git-upload-pack)"
`)
	expect(t, r, map[string]string{
		"clone": ok, "push_new": ok, "push_ff": ok, "push_tag": ok,
		"push_force": "1", "push_delete": "1", "push_ref": "1", "push_tag_other": "1",
		"push_other": "128", "push_case": "128", "push_escaped": "128",
		"discovery": "200", "dotdot": "400", "slash": "400", "dup_service": "403",
		"lfs_upload": "403", "dumb": "403", "webdav": "403", "host_other": "421", "h2": "1.1 200",
	})
	if v := r.values()["lfs_upload_listed"]; v == "403" || v == "000" {
		t.Errorf("an LFS upload to the push-listed repository got %s from sluice, want it passed to the server", v)
	}
	for _, want := range []string{
		"push_other: remote: sluice: pushing to attacker/drop is not allowed",
		"push_case: remote: sluice: pushing to attacker/drop is not allowed",
		"push_force:  ! [remote rejected] HEAD -> agent/one (sluice: not shown to be a fast-forward",
		"push_delete:  ! [remote rejected] agent/one (sluice: deleting refs is not allowed",
		"push_ref:  ! [remote rejected] HEAD -> main (sluice: ref not allowed by sluice (push_refs))",
		"push_tag_other:  ! [remote rejected] x1 -> x1 (sluice: ref not allowed",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("git's output lacks %q", want)
		}
	}
	refs, err := g.Refs("acme", "agent-sandbox")
	if err != nil || refs["refs/heads/agent/one"] == "" || refs["refs/tags/v1"] == "" || refs["refs/heads/main"] != "" || refs["refs/tags/x1"] != "" {
		t.Errorf("acme/agent-sandbox refs = %v, %v; want agent/one and v1 alone", refs, err)
	}
	if ff := r.values()["ff_commit"]; refs["refs/heads/agent/one"] != ff || ff == "" {
		t.Errorf("agent/one = %s, want the fast-forward %q (the force push must not have landed)", refs["refs/heads/agent/one"], ff)
	}
	if refs, _ := g.Refs("attacker", "drop"); len(refs) != 0 {
		t.Errorf("attacker/drop got refs: %v", refs)
	}
	for _, req := range g.Requests() {
		if strings.Contains(req, "attacker") || strings.Contains(req, "/HEAD") || strings.HasPrefix(req, "PUT") {
			t.Errorf("the git server saw a refused request: %s", req)
		}
	}
	want := map[journal.Reason]string{
		journal.ReasonGitPushNotAllowed:   "attacker/drop",
		journal.ReasonGitRefNotAllowed:    "refs/heads/main",
		journal.ReasonGitDeleteNotAllowed: "refs/heads/agent/one",
		journal.ReasonGitForcePush:        "refs/heads/agent/one",
		journal.ReasonGitNotRecognised:    "service=git-upload-pack&service=git-receive-pack",
		journal.ReasonConflictingHost:     "evil.test",
	}
	for _, rec := range listJournal(t, journalPath, "--agent", "gitguard") {
		if w, ok := want[rec.Reason]; ok && strings.Contains(rec.Detail, w) && rec.Proto != "" {
			delete(want, rec.Reason)
		}
	}
	for reason, detail := range want {
		t.Errorf("no journal record %s with %q and a method", reason, detail)
	}
}

// TestHTTPRules: http rules on a host let through only the methods and
// paths they list (HEAD riding on GET); the rest is refused with a 403
// and never reaches the server. The gateway verifies the host's
// certificate against SSL_CERT_FILE: with the fake internet's CA there
// the requests pass, without it they fail with a 502, checks never
// skipped. A host without rules beside it stays spliced, trusted by the
// agent through the same bundle. Tokens in queries and headers reach no
// record.
func TestHTTPRules(t *testing.T) {
	w := newWorld(t)
	pol := policyFile(t, `  - host: allowed.test
    ports: [443]
    http:
      - methods: [GET]
        paths: ["/ok/*"]
  - host: www.allowed.test
    ports: [443]
`)
	script := prelude + code + `
code get_ok https://allowed.test/ok/x
code head_ok -I https://allowed.test/ok/y
code get_other https://allowed.test/secret
code post_ok -X POST -d leak https://allowed.test/ok/x
code token -H "Authorization: Bearer SECRET456" -H "Cookie: s=SECRET789" "https://allowed.test/ok/t?access_token=SECRET123"
code token_refused "https://allowed.test/nope?private_token=SECRET321"
code spliced https://www.allowed.test/
`
	w.sluiceEnv = []string{"SSL_CERT_FILE=" + w.caFile}
	r := w.run(t, []string{"--name", "httprules", "--policy", pol}, script)
	expect(t, r, map[string]string{"get_ok": "200", "head_ok": "200", "get_other": "403", "post_ok": "403",
		"token": "200", "token_refused": "403", "spliced": "200"})
	var paths []string
	for _, c := range w.web.Contacts() {
		paths = append(paths, c.Path)
	}
	if got := strings.Join(paths, " "); !strings.Contains(got, "/ok/x") || strings.Contains(got, "/secret") || strings.Contains(got, "/nope") || strings.Count(got, "/ok/x") != 1 {
		t.Errorf("the server saw %q; want /ok/x once (the GET), and neither /secret nor /nope", got)
	}
	recs := listJournal(t, journalPath, "--agent", "httprules")
	refused := 0
	for _, rec := range recs {
		b, _ := json.Marshal(rec)
		if strings.Contains(string(b), "SECRET") {
			t.Errorf("a record holds a token: %s", b)
		}
		if rec.Layer == journal.LayerHTTP && rec.Reason == journal.ReasonHTTPNotAllowed {
			refused++
		}
	}
	if refused != 3 {
		t.Errorf("%d http_request_not_allowed records, want 3 (secret, POST, nope)", refused)
	}

	// The same, with the gateway trusting only the machine's roots: the
	// fake internet's certificate does not verify, nothing passes.
	w.sluiceEnv = nil
	r = w.run(t, []string{"--name", "httprules", "--policy", pol}, prelude+code+"code unverified https://allowed.test/ok/z\n")
	expect(t, r, map[string]string{"unverified": "502"})
	if !strings.Contains(r.stderr, "certificate") {
		t.Errorf("sluice did not say why the upstream failed:\n%s", r.stderr)
	}
	for _, c := range w.web.Contacts() {
		if c.Path == "/ok/z" {
			t.Errorf("a request reached a server whose certificate did not verify")
		}
	}
}
