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

// FuzzReadPackCommits: any bytes give a graph whose every id and parent
// is an object id, or an error; never a panic, and the reader reads no
// byte past the pack's checksum.
func FuzzReadPackCommits(f *testing.F) {
	commit := "tree " + strings.Repeat("0", 40) + "\nparent " + strings.Repeat("1", 40) + "\n\nm"
	f.Add(packOf([2]string{"1", commit}), false)
	f.Add(packOf([2]string{"1", commit}, [2]string{"3", "blob"}, [2]string{"2", ""}), false)
	f.Add([]byte("PACK\x00\x00\x00\x02\x00\x00\x00\x01\x60\x05"), false)
	f.Fuzz(func(t *testing.T, data []byte, sha256ids bool) {
		r := bufio.NewReader(bytes.NewReader(append(bytes.Clone(data), "TAIL"...)))
		c, err := ReadPackCommits(r, sha256ids)
		if err != nil {
			return
		}
		for id, parents := range c {
			for _, p := range append([]string{id}, parents...) {
				if !objectID(p) {
					t.Errorf("id %q passed", p)
				}
			}
		}
		if rest, _ := io.ReadAll(r); len(rest) < 4 {
			t.Errorf("read past the checksum: %q left", rest)
		}
	})
}
