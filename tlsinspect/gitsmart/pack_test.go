package gitsmart

import (
	"bytes"
	"compress/zlib"
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// gitPack makes a repository with a chain of three commits a→b→c (and a
// merge m of c and a side branch s off a) and returns the commit ids and
// the pack git would push for c..m on top of a server that has a:
// git pack-objects, as send-pack runs it.
func gitPack(t *testing.T, format string) (ids map[string]string, pack []byte) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	dir := t.TempDir()
	run := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=t", "-c", "user.email=t@example.test"}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("git %v: %v", args, err)
		}
		return string(out)
	}
	run("", "init", "-q", "--object-format="+format, "-b", "main")
	ids = map[string]string{}
	for _, c := range []string{"a", "b", "c"} {
		os.WriteFile(filepath.Join(dir, "f"), []byte(strings.Repeat(c, 100)), 0o644)
		run("", "add", "f")
		run("", "commit", "-q", "-m", c)
		ids[c] = strings.TrimSpace(run("", "rev-parse", "HEAD"))
	}
	run("", "checkout", "-q", "-b", "side", ids["a"])
	os.WriteFile(filepath.Join(dir, "g"), []byte("side"), 0o644)
	run("", "add", "g")
	run("", "commit", "-q", "-m", "s")
	ids["s"] = strings.TrimSpace(run("", "rev-parse", "HEAD"))
	run("", "checkout", "-q", "main")
	run("", "merge", "-q", "--no-edit", "side")
	ids["m"] = strings.TrimSpace(run("", "rev-parse", "HEAD"))
	out := run(ids["m"]+"\n^"+ids["a"]+"\n", "pack-objects", "--stdout", "--revs", "--thin", "-q")
	return ids, []byte(out)
}

// TestReadPackCommits: the commits of a pack git made, with ids computed
// as git computes them, show m descending from a (through b, c and s),
// and nothing the other way; a changed byte, a cut pack and a pack that
// is not one are refused.
func TestReadPackCommits(t *testing.T) {
	for _, format := range []string{"sha1", "sha256"} {
		t.Run(format, func(t *testing.T) {
			ids, pack := gitPack(t, format)
			commits, err := ReadPackCommits(bytes.NewReader(pack), format == "sha256")
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []string{"b", "c", "s", "m"} {
				if _, ok := commits[ids[c]]; !ok {
					t.Errorf("commit %s (%s) not read from the pack", c, ids[c])
				}
			}
			if _, ok := commits[ids["a"]]; ok {
				t.Error("commit a, which the server has, was found in the pack")
			}
			for _, tc := range []struct {
				old, new string
				want     bool
			}{{"a", "m", true}, {"b", "m", true}, {"s", "m", true}, {"a", "c", true}, {"m", "c", false}, {"c", "s", false}, {"m", "a", false}} {
				if got := commits.Descends(ids[tc.old], ids[tc.new]); got != tc.want {
					t.Errorf("Descends(%s, %s) = %t, want %t", tc.old, tc.new, got, tc.want)
				}
			}
			bad := bytes.Clone(pack)
			bad[len(bad)/2] ^= 1
			if _, err := ReadPackCommits(bytes.NewReader(bad), format == "sha256"); !errors.Is(err, ErrBadPack) {
				t.Errorf("a pack with a flipped byte: %v", err)
			}
			if _, err := ReadPackCommits(bytes.NewReader(pack[:len(pack)-5]), format == "sha256"); !errors.Is(err, ErrBadPack) {
				t.Errorf("a cut pack: %v", err)
			}
			if _, err := ReadPackCommits(bytes.NewReader(pack), format != "sha256"); err == nil {
				t.Error("a pack read with the other hash verified")
			}
		})
	}
	if _, err := ReadPackCommits(strings.NewReader("0000PACK"), false); !errors.Is(err, ErrBadPack) {
		t.Errorf("not a pack: %v", err)
	}
}

// packOf builds a SHA-1 pack of raw entries (type, content), each stored
// whole.
func packOf(entries ...[2]string) []byte {
	var b bytes.Buffer
	b.WriteString("PACK")
	binary.Write(&b, binary.BigEndian, uint32(2))
	binary.Write(&b, binary.BigEndian, uint32(len(entries)))
	for _, e := range entries {
		typ, data := e[0][0]-'0', e[1]
		size := len(data)
		c := typ<<4 | byte(size&15)
		size >>= 4
		for size > 0 {
			b.WriteByte(c | 0x80)
			c, size = byte(size&0x7f), size>>7
		}
		b.WriteByte(c)
		zw := zlib.NewWriter(&b)
		zw.Write([]byte(data))
		zw.Close()
	}
	sum := sha1.Sum(b.Bytes())
	b.Write(sum[:])
	return b.Bytes()
}

// TestReadPackBounds: what a pack makes the reader hold is bounded in
// all, not per object: many small-compressing commits stop it with
// ErrPackTooLarge, and an object longer than its header says is refused
// without being inflated whole.
func TestReadPackBounds(t *testing.T) {
	commit := "tree " + strings.Repeat("0", 40) + "\n\n"
	ok := packOf([2]string{"1", commit})
	if c, err := ReadPackCommits(bytes.NewReader(ok), false); err != nil || len(c) != 1 {
		t.Fatalf("one commit: %v, %v", c, err)
	}
	// A parent line per commit, thousands of parents each: the graph's
	// budget is met long before the commits' count.
	parents := strings.Repeat("parent "+strings.Repeat("1", 40)+"\n", 20000)
	var many [][2]string
	for i := range 80 {
		many = append(many, [2]string{"1", "tree " + strings.Repeat("0", 40) + "\n" + parents + "\n" + strings.Repeat("x", i)})
	}
	if _, err := ReadPackCommits(bytes.NewReader(packOf(many...)), false); !errors.Is(err, ErrPackTooLarge) {
		t.Errorf("80 commits of 20000 parents: %v, want ErrPackTooLarge", err)
	}
	// A blob whose header says 10 bytes and whose stream holds 10 MB.
	lying := packOf([2]string{"3", strings.Repeat("z", 10<<20)})
	lying[12] = 3<<4 | 10 // type blob, size 10, no continuation
	lying = append(lying[:13], lying[13+3:]...)
	if _, err := ReadPackCommits(bytes.NewReader(lying), false); !errors.Is(err, ErrBadPack) || !strings.Contains(err.Error(), "header says 10") {
		t.Errorf("an object longer than its header: %v", err)
	}
}

// TestApplyDelta: copy and insert instructions, and the bounds checked.
func TestApplyDelta(t *testing.T) {
	base := []byte("tree 0000\nparent aaaa\n\nmessage")
	// base size 31, result size 14: copy 10 bytes at offset 0, insert "ok", copy "\n\n" at 21.
	delta := []byte{byte(len(base)), 14, 0x90, 10, 2, 'o', 'k', 0x91, 21, 2}
	got, err := applyDelta(base, delta)
	if err != nil || string(got) != "tree 0000\nok\n\n" {
		t.Errorf("applyDelta = %q, %v", got, err)
	}
	for _, bad := range [][]byte{
		{byte(len(base) + 1), 2, 0x90, 2}, // wrong base size
		{byte(len(base)), 2, 0x91, 30, 5}, // copy past the base
		{byte(len(base)), 2, 5, 'a'},      // insert past the delta
		{byte(len(base)), 2, 0},           // reserved instruction
		{byte(len(base)), 3, 0x90, 2},     // shorter than it says
	} {
		if _, err := applyDelta(base, bad); err == nil {
			t.Errorf("applyDelta(% x) passed", bad)
		}
	}
}
