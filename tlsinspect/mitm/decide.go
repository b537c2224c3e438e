package mitm

import (
	"fmt"
	"path"
	"slices"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
	"github.com/sluicegw/sluice/tlsinspect/gitsmart"
)

// Verdict is the decision on one request of an intercepted host.
type Verdict struct {
	Allow  bool
	Reason journal.Reason
	// Detail says why, for the person who reads the refusal (git prints
	// a 403's body; the journal keeps it).
	Detail string
}

func allow() Verdict { return Verdict{Allow: true, Reason: journal.ReasonAllowed} }

func refuse(r journal.Reason, format string, args ...any) Verdict {
	return Verdict{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// DecideGit decides a classified request on a host with git rules (an
// LFS batch needs its operation too: DecideLFS). A fetch needs the
// repository in the fetch list, a push (ref discovery for receive-pack
// included: it is refused before any pack is sent) in the push list.
func DecideGit(rules *policy.GitRules, req gitsmart.Request) Verdict {
	repo := req.Repository()
	switch req.Class {
	case gitsmart.Fetch:
		if policy.MatchRepo(rules.Fetch, repo) {
			return allow()
		}
		return refuse(journal.ReasonGitFetchNotAllowed, "sluice: fetching %s is not allowed (git fetch list)", repo)
	case gitsmart.Push, gitsmart.LFSLockVerify:
		if policy.MatchRepo(rules.Push, repo) {
			return allow()
		}
		return refuse(journal.ReasonGitPushNotAllowed, "sluice: pushing to %s is not allowed (git push list)", repo)
	}
	return refuse(journal.ReasonGitNotRecognised, "sluice: not a git request this host allows")
}

// DecideLFS decides an LFS batch request by its operation: download
// follows the fetch list, upload the push list, anything else is refused.
func DecideLFS(rules *policy.GitRules, req gitsmart.Request, operation string) Verdict {
	switch operation {
	case "download":
		return DecideGit(rules, gitsmart.Request{Class: gitsmart.Fetch, Owner: req.Owner, Repo: req.Repo})
	case "upload":
		return DecideGit(rules, gitsmart.Request{Class: gitsmart.Push, Owner: req.Owner, Repo: req.Repo})
	}
	return refuse(journal.ReasonGitNotRecognised, "sluice: LFS operation %q is not allowed", operation)
}

// RefVerdict is the decision on one ref of a push.
type RefVerdict struct {
	Ref string
	Verdict
}

// DecidePush decides each command of a push to a push-listed repository:
// the ref must be in push_refs (none: any), a deletion needs delete_refs,
// and an update of an existing ref needs force unless descends (nil: not
// known) shows the new commit descending from the old one. A push is let
// through only when every ref is.
func DecidePush(rules *policy.GitRules, cmds []gitsmart.Command, descends func(old, new string) bool) (all bool, refs []RefVerdict) {
	all = len(cmds) > 0
	for _, c := range cmds {
		v := allow()
		switch {
		case !policy.MatchRef(rules.PushRefs, c.Ref):
			v = refuse(journal.ReasonGitRefNotAllowed, "ref not allowed by sluice (push_refs)")
		case c.Delete() && !rules.DeleteRefs:
			v = refuse(journal.ReasonGitDeleteNotAllowed, "deleting refs is not allowed by sluice (delete_refs)")
		case !c.Create() && !c.Delete() && !rules.Force && (descends == nil || !descends(c.Old, c.New)):
			v = refuse(journal.ReasonGitForcePush, "not shown to be a fast-forward; sluice allows no force push (force)")
		}
		if !v.Allow {
			all = false
		}
		refs = append(refs, RefVerdict{Ref: c.Ref, Verdict: v})
	}
	return all, refs
}

// DecideHTTP decides a request on a host with http rules: a rule must
// list its method and a path pattern that matches its (canonical) path.
func DecideHTTP(rules []policy.HTTPRule, method, canonicalPath string) Verdict {
	for _, r := range rules {
		// A HEAD asks no more than the GET it stands for; not the reverse.
		if !slices.Contains(r.Methods, method) && !(method == "HEAD" && slices.Contains(r.Methods, "GET")) {
			continue
		}
		for _, p := range r.Paths {
			if ok, _ := path.Match(p, canonicalPath); ok {
				return allow()
			}
		}
	}
	return refuse(journal.ReasonHTTPNotAllowed, "sluice: %s %s is not allowed on this host (http rules)", method, canonicalPath)
}
