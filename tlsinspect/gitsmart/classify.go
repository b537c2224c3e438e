// Package gitsmart reads git's smart-HTTP protocol as a firewall must:
// it classifies a request on a git host (fetch, push, LFS) by a positive
// list of known shapes, after canonicalising its path, and reads the
// command list of a push (the refs it writes) from the stream before any
// pack byte. Anything it does not recognise is refused. It is pure: no
// I/O but the reader it is handed.
package gitsmart

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Class is what a request on a git host does.
type Class int

// Classes of requests. Deny is the zero Class.
const (
	Deny Class = iota
	// Fetch: ref discovery for, or a request to, git-upload-pack.
	Fetch
	// Push: ref discovery for, or a request to, git-receive-pack.
	Push
	// LFSBatch: an LFS batch request; its JSON body says download (a
	// fetch) or upload (a push).
	LFSBatch
	// LFSLockVerify: an LFS lock check, which only a push makes.
	LFSLockVerify
)

func (c Class) String() string {
	switch c {
	case Fetch:
		return "fetch"
	case Push:
		return "push"
	case LFSBatch:
		return "lfs-batch"
	case LFSLockVerify:
		return "lfs-lock-verify"
	}
	return "deny"
}

// Request is a classified request.
type Request struct {
	Class Class
	// Owner and Repo name the repository: lowercase, Repo without a
	// ".git" suffix.
	Owner, Repo string
	// Discovery is set for ref discovery (GET info/refs).
	Discovery bool
}

// Repository is "owner/repo".
func (r Request) Repository() string { return r.Owner + "/" + r.Repo }

// Content types the smart protocol's POSTs carry, compared exactly (as
// git http-backend does).
const (
	uploadPackRequest  = "application/x-git-upload-pack-request"
	receivePackRequest = "application/x-git-receive-pack-request"
	lfsMediaType       = "application/vnd.git-lfs+json"
)

// ErrDenied is wrapped by every refusal of Classify.
var ErrDenied = errors.New("not a request git's smart HTTP protocol makes")

func deny(format string, args ...any) (Request, error) {
	return Request{}, fmt.Errorf("%w: "+format, append([]any{ErrDenied}, args...)...)
}

// suffixes are the paths after /owner/repo(.git) that a fetch or push
// uses, with the method and query they must come with.
var suffixes = []struct {
	path, method, query, contentType string
	class                            Class
	discovery                        bool
}{
	{"info/refs", "GET", "service=git-upload-pack", "", Fetch, true},
	{"info/refs", "GET", "service=git-receive-pack", "", Push, true},
	{"git-upload-pack", "POST", "", uploadPackRequest, Fetch, false},
	{"git-receive-pack", "POST", "", receivePackRequest, Push, false},
	{"info/lfs/objects/batch", "POST", "", lfsMediaType, LFSBatch, false},
	{"info/lfs/locks/verify", "POST", "", lfsMediaType, LFSLockVerify, false},
}

// Classify says what a request does: method, the path and query as they
// came on the wire (still percent-encoded), and the Content-Type. The
// path is decoded once, and refused if it is ambiguous: an encoded slash
// or backslash, a ';', a NUL, a '%' left after decoding, an empty, "."
// or ".." segment. The query must be exactly one service parameter for
// ref discovery, and empty otherwise. HEAD counts as GET.
func Classify(method, rawPath, rawQuery, contentType string) (Request, error) {
	if method == "HEAD" {
		method = "GET"
	}
	p, err := CanonicalPath(rawPath)
	if err != nil {
		return deny("%v", err)
	}
	segs := strings.Split(strings.TrimPrefix(p, "/"), "/")
	if len(segs) < 3 {
		return deny("path %q names no repository and endpoint", p)
	}
	owner, repo := strings.ToLower(segs[0]), strings.ToLower(segs[1])
	repo = strings.TrimSuffix(repo, ".git") // one suffix, any case
	if !validName(owner) || !validName(repo) {
		return deny("repository %q/%q is not a name a git host uses", segs[0], segs[1])
	}
	rest := strings.Join(segs[2:], "/")
	for _, s := range suffixes {
		if rest != s.path || method != s.method || rawQuery != s.query {
			continue
		}
		if s.contentType != "" && !contentTypeIs(contentType, s.contentType, s.class == LFSBatch || s.class == LFSLockVerify) {
			return deny("%s %s with Content-Type %q, want %q", method, rest, contentType, s.contentType)
		}
		return Request{Class: s.class, Owner: owner, Repo: repo, Discovery: s.discovery}, nil
	}
	return deny("%s /%s with query parameters %q is none of the smart protocol's requests", method, rest, queryKeys(rawQuery))
}

// queryKeys are the names of a query's parameters, not their values
// (where tokens ride), for messages.
func queryKeys(rawQuery string) string {
	if rawQuery == "" {
		return ""
	}
	var keys []string
	for _, kv := range strings.Split(rawQuery, "&") {
		k, _, hasValue := strings.Cut(kv, "=")
		if !hasValue {
			k = "(a bare value)" // which may be the token itself
		}
		keys = append(keys, k)
	}
	return strings.Join(keys, "&")
}

// gitEndpoints are the path endings of git's smart and LFS requests.
var gitEndpoints = []string{"/info/refs", "/git-upload-pack", "/git-receive-pack", "/git-upload-archive"}

// AtGitEndpoint reports whether a canonical path ends at one of git's
// endpoints or lies under an LFS one, whatever its method or query: on a
// host with git rules, such a request is decided by them alone.
func AtGitEndpoint(canonicalPath string) bool {
	p := strings.ToLower(canonicalPath)
	for _, e := range gitEndpoints {
		if strings.HasSuffix(p, e) {
			return true
		}
	}
	return strings.Contains(p+"/", "/info/lfs/")
}

// CanonicalPath decodes an escaped path once, refusing what servers and
// proxies could read two ways.
func CanonicalPath(raw string) (string, error) {
	if !strings.HasPrefix(raw, "/") {
		return "", fmt.Errorf("path %q is not absolute", raw)
	}
	lower := strings.ToLower(raw)
	for _, bad := range []string{"%2f", "%5c", "%00", "%25", ";", "\\", "\x00"} {
		if strings.Contains(lower, bad) {
			return "", fmt.Errorf("path %q holds %q", raw, bad)
		}
	}
	p, err := url.PathUnescape(raw)
	if err != nil {
		return "", fmt.Errorf("path %q: %v", raw, err)
	}
	if strings.ContainsAny(p, "%;\\\x00?#") {
		return "", fmt.Errorf("path %q decodes to %q", raw, p)
	}
	for _, seg := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
		if seg == "" || seg == "." || seg == ".." {
			return "", fmt.Errorf("path %q has an empty, '.' or '..' segment", raw)
		}
	}
	return p, nil
}

// validName is what GitHub and most hosts allow in owner and repository
// names: letters, digits, '-', '_' and '.', not "." or "..".
func validName(s string) bool {
	if s == "" || s == "." || s == ".." || len(s) > 100 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// contentTypeIs compares exactly, or, with params, the media type before
// any parameters (LFS clients add a charset).
func contentTypeIs(got, want string, params bool) bool {
	if params {
		if i := strings.IndexByte(got, ';'); i >= 0 {
			got = got[:i]
		}
		got = strings.TrimSpace(got)
	}
	return strings.EqualFold(got, want)
}
