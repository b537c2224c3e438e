package gitsmart

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"
)

// FuzzClassify: any request is classified or denied, never both ways:
// a request that passes names a valid repository and is one of the rows.
func FuzzClassify(f *testing.F) {
	f.Add("POST", "/acme/tools.git/git-receive-pack", "", rp)
	f.Add("GET", "/acme/tools/info/refs", "service=git-upload-pack", "")
	f.Add("GET", "/a/b/../c/info/refs", "service=git-upload-pack&service=git-receive-pack", "")
	f.Add("POST", "/%41/%2e/git-upload-pack", "", up)
	f.Fuzz(func(t *testing.T, method, path, query, ct string) {
		r, err := Classify(method, path, query, ct)
		if err != nil {
			return
		}
		if r.Class == Deny || !validName(r.Owner) || !validName(r.Repo) || strings.Contains(path, "/../") || strings.Contains(path, "//") {
			t.Errorf("%q %q %q %q passed as %+v", method, path, query, ct, r)
		}
		if r.Class == Fetch && strings.Contains(strings.ToLower(path+query), "receive") {
			t.Errorf("a fetch that mentions receive-pack: %q?%q", path, query)
		}
	})
}

// FuzzReadPush: any body gives commands with valid refs and ids, or an
// error; what is read is exactly what Raw holds.
func FuzzReadPush(f *testing.F) {
	f.Add([]byte(pkt(a+" "+b+" refs/heads/main\x00report-status\n") + "0000PACK"))
	f.Add([]byte("0000"))
	f.Add([]byte(pkt("shallow "+a+"\n") + pkt(zero+" "+b+" refs/tags/v1\x00push-options\n") + "0000" + pkt("o\n") + "0000"))
	f.Fuzz(func(t *testing.T, body []byte) {
		r := bufio.NewReader(bytes.NewReader(body))
		p, err := ReadPush(r)
		if err != nil {
			return
		}
		for _, c := range p.Commands {
			if !validRef(c.Ref) || !objectID(c.Old) || !objectID(c.New) {
				t.Errorf("command %+v passed", c)
			}
		}
		rest, _ := io.ReadAll(r)
		if !bytes.Equal(append(append([]byte{}, p.Raw...), rest...), body) {
			t.Error("Raw and the rest are not the body")
		}
	})
}
