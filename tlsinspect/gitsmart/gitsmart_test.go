package gitsmart

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

const (
	up = "application/x-git-upload-pack-request"
	rp = "application/x-git-receive-pack-request"
)

// TestClassify: the catalog's rows (bypass-catalog 5.6), and the variants
// a filter must not read two ways.
func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		method, path, query, ct string
		want                    string // "class owner/repo", or "deny"
	}{
		{"GET", "/acme/tools.git/info/refs", "service=git-upload-pack", "", "fetch acme/tools"},
		{"HEAD", "/acme/tools/info/refs", "service=git-upload-pack", "", "fetch acme/tools"},
		{"POST", "/acme/tools.git/git-upload-pack", "", up, "fetch acme/tools"},
		{"GET", "/acme/tools.git/info/refs", "service=git-receive-pack", "", "push acme/tools"},
		{"POST", "/acme/tools.git/git-receive-pack", "", rp, "push acme/tools"},
		{"POST", "/acme/tools.git/info/lfs/objects/batch", "", "application/vnd.git-lfs+json; charset=utf-8", "lfs-batch acme/tools"},
		{"POST", "/acme/tools.git/info/lfs/locks/verify", "", "application/vnd.git-lfs+json", "lfs-lock-verify acme/tools"},
		// Case and the suffix: one repository.
		{"POST", "/ACME/Tools.GIT/git-receive-pack", "", rp, "push acme/tools"},
		{"POST", "/acme/tools.git.git/git-receive-pack", "", rp, "push acme/tools.git"},
		// One percent-decode: an encoded letter is the letter.
		{"POST", "/acme/%74ools/git-receive-pack", "", rp, "push acme/tools"},
		// Ambiguous paths.
		{"POST", "/acme/tools/..%2fother/git-receive-pack", "", rp, "deny"},
		{"POST", "/acme/tools/%2e%2e/other/git-receive-pack", "", rp, "deny"},
		{"POST", "/acme/tools/../other/git-receive-pack", "", rp, "deny"},
		{"POST", "/acme//tools/git-receive-pack", "", rp, "deny"},
		{"POST", "/acme/tools%252f/git-receive-pack", "", rp, "deny"},
		{"POST", "/acme/tools;x=1/git-receive-pack", "", rp, "deny"},
		{"POST", "/acme\\tools/git-receive-pack", "", rp, "deny"},
		{"POST", "/acme/tools%00/git-receive-pack", "", rp, "deny"},
		{"POST", "acme/tools/git-receive-pack", "", rp, "deny"},
		// Queries: exactly one service for discovery, none otherwise.
		{"GET", "/acme/tools/info/refs", "service=git-upload-pack&service=git-receive-pack", "", "deny"},
		{"GET", "/acme/tools/info/refs", "service=git-receive-pack&service=git-upload-pack", "", "deny"},
		{"GET", "/acme/tools/info/refs", "service=git-upload-pack&x=1", "", "deny"},
		{"GET", "/acme/tools/info/refs", "service=git%2dupload-pack", "", "deny"},
		{"GET", "/acme/tools/info/refs", "", "", "deny"},
		{"POST", "/acme/tools/git-upload-pack", "service=git-upload-pack", up, "deny"},
		// Methods and content types.
		{"POST", "/acme/tools/info/refs", "service=git-upload-pack", "", "deny"},
		{"GET", "/acme/tools/git-receive-pack", "", "", "deny"},
		{"POST", "/acme/tools/git-receive-pack", "", up, "deny"},
		{"POST", "/acme/tools/git-receive-pack", "", rp + "; charset=utf-8", "deny"},
		// Dumb protocol and WebDAV.
		{"GET", "/acme/tools/HEAD", "", "", "deny"},
		{"GET", "/acme/tools/objects/info/packs", "", "", "deny"},
		{"PUT", "/acme/tools/objects/ab/cdef", "", "", "deny"},
		{"PROPFIND", "/acme/tools/", "", "", "deny"},
		{"POST", "/acme/tools/git-upload-archive", "", "", "deny"},
		{"GET", "/acme/info/refs", "service=git-upload-pack", "", "deny"},
	} {
		r, err := Classify(tc.method, tc.path, tc.query, tc.ct)
		got := "deny"
		if err == nil {
			got = r.Class.String() + " " + r.Repository()
		} else if !errors.Is(err, ErrDenied) {
			t.Errorf("%s %s?%s: an error that is not ErrDenied: %v", tc.method, tc.path, tc.query, err)
		}
		if got != tc.want {
			t.Errorf("%s %s?%s (%s) = %s (%v), want %s", tc.method, tc.path, tc.query, tc.ct, got, err, tc.want)
		}
	}
}

func pkt(s string) string { return fmt.Sprintf("%04x%s", len(s)+4, s) }

const (
	zero = "0000000000000000000000000000000000000000"
	a    = "1111111111111111111111111111111111111111"
	b    = "2222222222222222222222222222222222222222"
)

func TestReadPush(t *testing.T) {
	body := pkt("shallow "+a+"\n") + pkt(a+" "+b+" refs/heads/main\x00report-status side-band-64k push-options\n") +
		pkt(zero+" "+b+" refs/heads/agent/new\n") + pkt(a+" "+zero+" refs/tags/v1\n") + "0000" +
		pkt("ci.skip\n") + "0000" + "PACK\x00\x00\x00\x02"
	r := bufio.NewReader(strings.NewReader(body))
	p, err := ReadPush(r)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Commands) != 3 || p.Commands[0].Ref != "refs/heads/main" || !p.Commands[1].Create() || !p.Commands[2].Delete() ||
		p.Commands[0].Create() || p.Commands[0].Delete() || !hasCap(p.Caps, "report-status") || len(p.Options) != 1 || p.Options[0] != "ci.skip" {
		t.Errorf("ReadPush = %+v", p)
	}
	rest, _ := io.ReadAll(r)
	if string(rest) != "PACK\x00\x00\x00\x02" || string(p.Raw)+string(rest) != body {
		t.Errorf("the pack is not left in the reader, or Raw lost bytes: rest %q", rest)
	}
	// A probe is a bare flush.
	if p, err := ReadPush(bufio.NewReader(strings.NewReader("0000"))); err != nil || len(p.Commands) != 0 {
		t.Errorf("the probe: %+v, %v", p, err)
	}
	for name, bad := range map[string]string{
		"short":           pkt(a + " " + b),
		"no flush":        pkt(a + " " + b + " refs/heads/main\n"),
		"length 3":        "0003",
		"not hex":         "00zz",
		"id":              pkt(a+"x "+b+" refs/heads/main\n") + "0000",
		"mixed id sizes":  pkt(a+" "+b+"aaaaaaaaaaaaaaaaaaaaaaaa refs/heads/main\n") + "0000",
		"ref outside":     pkt(a+" "+b+" HEAD\n") + "0000",
		"ref dots":        pkt(a+" "+b+" refs/heads/../x\n") + "0000",
		"ref lock":        pkt(a+" "+b+" refs/heads/x.lock\n") + "0000",
		"caps twice":      pkt(a+" "+b+" refs/heads/a\x00x\n") + pkt(a+" "+b+" refs/heads/b\x00y\n") + "0000",
		"zero to zero":    pkt(zero+" "+zero+" refs/heads/a\n") + "0000",
		"upper-case hex":  pkt(strings.ToUpper("abcdefabcdefabcdefabcdefabcdefabcdefabcd")+" "+b+" refs/heads/a\n") + "0000",
		"space in ref":    pkt(a+" "+b+" refs/heads/a b\n") + "0000",
		"too long a line": fmt.Sprintf("%04x", maxPktLen+1),
	} {
		if _, err := ReadPush(bufio.NewReader(strings.NewReader(bad))); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}
