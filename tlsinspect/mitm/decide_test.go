package mitm

import (
	"strings"
	"testing"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
	"github.com/sluicegw/sluice/tlsinspect/gitsmart"
)

var rules = &policy.GitRules{Fetch: []string{"*"}, Push: []string{"acme/agent-sandbox"}, PushRefs: []string{"refs/heads/agent/*"}}

func TestDecideGit(t *testing.T) {
	for _, tc := range []struct {
		class       gitsmart.Class
		owner, repo string
		want        journal.Reason
	}{
		{gitsmart.Fetch, "any", "thing", journal.ReasonAllowed},
		{gitsmart.Push, "acme", "agent-sandbox", journal.ReasonAllowed},
		{gitsmart.Push, "acme", "other", journal.ReasonGitPushNotAllowed},
		{gitsmart.Push, "attacker", "agent-sandbox", journal.ReasonGitPushNotAllowed},
		{gitsmart.LFSLockVerify, "acme", "other", journal.ReasonGitPushNotAllowed},
		{gitsmart.Deny, "acme", "agent-sandbox", journal.ReasonGitNotRecognised},
	} {
		v := DecideGit(rules, gitsmart.Request{Class: tc.class, Owner: tc.owner, Repo: tc.repo})
		if v.Reason != tc.want || v.Allow != (tc.want == journal.ReasonAllowed) {
			t.Errorf("%v %s/%s: %+v, want %s", tc.class, tc.owner, tc.repo, v, tc.want)
		}
	}
	onlyRead := &policy.GitRules{Fetch: []string{"acme/*"}}
	if v := DecideGit(onlyRead, gitsmart.Request{Class: gitsmart.Fetch, Owner: "other", Repo: "x"}); v.Allow {
		t.Error("a fetch outside the fetch list")
	}
	if v := DecideGit(onlyRead, gitsmart.Request{Class: gitsmart.Push, Owner: "acme", Repo: "x"}); v.Allow {
		t.Error("a push with no push list")
	}
	for op, want := range map[string]bool{"download": true, "upload": false, "verify": false} {
		if v := DecideLFS(rules, gitsmart.Request{Class: gitsmart.LFSBatch, Owner: "acme", Repo: "other"}, op); v.Allow != want {
			t.Errorf("LFS %s to acme/other: %+v", op, v)
		}
	}
}

func TestDecidePush(t *testing.T) {
	const zero, a, b = "0000000000000000000000000000000000000000", "1111111111111111111111111111111111111111", "2222222222222222222222222222222222222222"
	ff := func(old, new string) bool { return old == a && new == b }
	cmd := func(old, new, ref string) gitsmart.Command { return gitsmart.Command{Old: old, New: new, Ref: ref} }
	for _, tc := range []struct {
		name  string
		rules *policy.GitRules
		cmds  []gitsmart.Command
		want  string // each ref's reason, space separated
	}{
		{"create", rules, []gitsmart.Command{cmd(zero, b, "refs/heads/agent/x")}, "allowed"},
		{"fast-forward", rules, []gitsmart.Command{cmd(a, b, "refs/heads/agent/x")}, "allowed"},
		{"not shown to descend", rules, []gitsmart.Command{cmd(b, a, "refs/heads/agent/x")}, "git_force_push"},
		{"force allowed", &policy.GitRules{Push: []string{"*"}, Force: true}, []gitsmart.Command{cmd(b, a, "refs/heads/main")}, "allowed"},
		{"outside push_refs", rules, []gitsmart.Command{cmd(zero, b, "refs/heads/main"), cmd(zero, b, "refs/tags/v1")}, "git_ref_not_allowed git_ref_not_allowed"},
		{"delete", rules, []gitsmart.Command{cmd(a, zero, "refs/heads/agent/x")}, "git_delete_not_allowed"},
		{"delete allowed", &policy.GitRules{Push: []string{"*"}, DeleteRefs: true}, []gitsmart.Command{cmd(a, zero, "refs/heads/x")}, "allowed"},
		{"one bad of two", rules, []gitsmart.Command{cmd(zero, b, "refs/heads/agent/x"), cmd(zero, b, "refs/heads/main")}, "allowed git_ref_not_allowed"},
	} {
		all, refs := DecidePush(tc.rules, tc.cmds, ff)
		var got []string
		for _, r := range refs {
			got = append(got, string(r.Reason))
		}
		if strings.Join(got, " ") != tc.want || all != !strings.Contains(tc.want, "git_") {
			t.Errorf("%s: all %v, refs %v; want %s", tc.name, all, got, tc.want)
		}
	}
	if all, _ := DecidePush(rules, nil, nil); all {
		t.Error("a push of nothing is let through")
	}
}

func TestDecideHTTP(t *testing.T) {
	r := []policy.HTTPRule{{Methods: []string{"GET"}, Paths: []string{"/repos/acme/*"}}, {Methods: []string{"HEAD"}, Paths: []string{"/meta"}}}
	for _, tc := range []struct {
		method, path string
		want         bool
	}{
		{"GET", "/repos/acme/tools", true},
		{"HEAD", "/repos/acme/tools", true},
		{"POST", "/repos/acme/tools", false},
		{"GET", "/repos/acme/tools/issues", false},
		{"GET", "/repos/other/tools", false},
		{"HEAD", "/meta", true},
		{"GET", "/meta", false},
	} {
		if v := DecideHTTP(r, tc.method, tc.path); v.Allow != tc.want {
			t.Errorf("%s %s: %+v, want allow %v", tc.method, tc.path, v, tc.want)
		}
	}
}
