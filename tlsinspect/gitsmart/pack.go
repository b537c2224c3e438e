package gitsmart

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"
	"strings"
)

// Limits of ReadPackCommits: a commit object is a few hundred bytes; one
// of a megabyte is not one a push needs sluice to read. maxGraph bounds
// what a pack may make it hold in all (ids, parents, and the commits kept
// as possible delta bases), whatever the pack's own size: compressed, a
// megabyte commit is a kilobyte.
const (
	maxCommitSize = 1 << 20
	maxGraph      = 64 << 20
	maxBases      = 16 << 20
)

// ErrPackTooLarge is wrapped by the error of ReadPackCommits for a pack
// whose commits are more than it holds: not malformed, not read either.
var ErrPackTooLarge = errors.New("pack's commits exceed what sluice reads")

// Object types of a pack entry.
const (
	objCommit   = 1
	objOfsDelta = 6
	objRefDelta = 7
)

// Commits is the commit graph a pack carries: each commit's id and its
// parents' (lowercase hex).
type Commits map[string][]string

// Descends reports whether old is new or one of its ancestors through
// the commits of the pack. An ancestry that leaves the pack (through a
// commit the server already had) is not followed: false means not shown,
// not disproved.
func (c Commits) Descends(old, new string) bool {
	seen := map[string]bool{new: true}
	todo := []string{new}
	for len(todo) > 0 {
		id := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if id == old {
			return true
		}
		for _, p := range c[id] {
			if !seen[p] {
				seen[p] = true
				todo = append(todo, p)
			}
		}
	}
	return false
}

// ReadPackCommits reads a pack (version 2 or 3) from r, as it streams,
// and returns its commits, with their ids computed from their bytes (by
// SHA-256 when sha256, else SHA-1), as the server will compute them.
// Every object is inflated to find where the next begins; only commits
// are kept, and a delta is resolved only when its base is a commit
// (a delta's result has its base's type). A delta against an object not
// in the pack (a thin pack's base) is skipped: if it was a commit, its
// ancestry is not shown. It reads up to the pack's trailing checksum,
// which it checks, and, when r is an io.ByteReader (a *bufio.Reader), no
// further; any other r is read through a buffer of its own.
func ReadPackCommits(r io.Reader, sha256ids bool) (Commits, error) {
	newHash, idLen := sha1.New, sha1.Size
	if sha256ids {
		newHash, idLen = sha256.New, sha256.Size
	}
	br, ok := r.(byteReader)
	if !ok {
		br = bufio.NewReaderSize(r, 64<<10)
	}
	pr := &packReader{r: br, sum: newHash()}
	var hdr [12]byte
	if _, err := io.ReadFull(pr, hdr[:]); err != nil {
		return nil, packErr("header: %v", err)
	}
	if string(hdr[:4]) != "PACK" {
		return nil, packErr("no PACK signature")
	}
	if v := binary.BigEndian.Uint32(hdr[4:8]); v != 2 && v != 3 {
		return nil, packErr("version %d", v)
	}
	count := binary.BigEndian.Uint32(hdr[8:12])

	commits := Commits{}
	byOffset := map[int64][]byte{} // a commit's content, by its entry's offset
	byID := map[string][]byte{}
	var graph, bases int // bytes held: see maxGraph, maxBases
	var zr io.ReadCloser
	for range count {
		offset := pr.n
		typ, size, err := pr.entryHeader()
		if err != nil {
			return nil, err
		}
		var base []byte
		switch typ {
		case objOfsDelta:
			back, err := pr.ofsDeltaOffset()
			if err != nil {
				return nil, err
			}
			if back <= 0 || back > offset {
				return nil, packErr("delta base offset %d at %d", back, offset)
			}
			base = byOffset[offset-back]
		case objRefDelta:
			id := make([]byte, idLen)
			if _, err := io.ReadFull(pr, id); err != nil {
				return nil, packErr("delta base id: %v", err)
			}
			base = byID[hex.EncodeToString(id)]
		case 1, 2, 3, 4:
		default:
			return nil, packErr("object type %d at %d", typ, offset)
		}
		if zr == nil {
			if zr, err = zlib.NewReader(pr); err != nil {
				return nil, packErr("object at %d: %v", offset, err)
			}
		} else if err := zr.(zlib.Resetter).Reset(pr, nil); err != nil {
			return nil, packErr("object at %d: %v", offset, err)
		}
		keep := typ == objCommit || base != nil
		if keep && size > maxCommitSize {
			return nil, packErr("commit or delta at %d of %d bytes", offset, size)
		}
		var out bytes.Buffer
		var sink io.Writer = io.Discard
		if keep {
			out.Grow(int(size))
			sink = &out
		}
		// Inflated to its stream's end (where the next entry begins), and
		// not a byte past its declared size: no bomb is inflated whole.
		if n, err := io.CopyN(sink, zr, int64(size)+1); err != io.EOF || uint64(n) != size {
			return nil, packErr("object at %d: %d bytes, header says %d (%v)", offset, n, size, err)
		}
		if !keep {
			continue
		}
		data := out.Bytes()
		if base != nil {
			if data, err = applyDelta(base, data); err != nil {
				return nil, packErr("delta at %d: %v", offset, err)
			}
		}
		id, parents, err := commitOf(newHash(), data)
		if err != nil {
			return nil, packErr("commit at %d: %v", offset, err)
		}
		graph += len(id) + 48
		for _, p := range parents {
			graph += len(p) + 16
		}
		if graph > maxGraph {
			return nil, fmt.Errorf("%w: more than %d MiB of commits", ErrPackTooLarge, maxGraph>>20)
		}
		commits[id] = parents
		if bases+len(data) <= maxBases { // beyond: deltas on it go unresolved (not shown)
			bases += len(data)
			byOffset[offset] = data
			byID[id] = data
		}
	}
	want := pr.sum.Sum(nil)
	got := make([]byte, len(want))
	if _, err := io.ReadFull(pr.r, got); err != nil {
		return nil, packErr("trailer: %v", err)
	}
	if !bytes.Equal(got, want) {
		return nil, packErr("checksum mismatch")
	}
	return commits, nil
}

// ErrBadPack is wrapped by every error of ReadPackCommits about its input.
var ErrBadPack = errors.New("malformed pack")

func packErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBadPack}, args...)...)
}

// packReader counts and hashes what it reads. It is an io.ByteReader,
// so that the inflater reads no byte past its stream's end.
type byteReader interface {
	io.Reader
	io.ByteReader
}

type packReader struct {
	r   byteReader
	n   int64
	sum hash.Hash
}

func (p *packReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	p.sum.Write(b[:n])
	return n, err
}

func (p *packReader) ReadByte() (byte, error) {
	c, err := p.r.ReadByte()
	if err == nil {
		p.n++
		p.sum.Write([]byte{c})
	}
	return c, err
}

// entryHeader reads an entry's type and inflated size.
func (p *packReader) entryHeader() (typ int, size uint64, err error) {
	c, err := p.ReadByte()
	if err != nil {
		return 0, 0, packErr("entry header: %v", err)
	}
	typ, size = int(c>>4)&7, uint64(c&15)
	for shift := 4; c&0x80 != 0; shift += 7 {
		if shift > 57 {
			return 0, 0, packErr("entry size overflows")
		}
		if c, err = p.ReadByte(); err != nil {
			return 0, 0, packErr("entry header: %v", err)
		}
		size |= uint64(c&0x7f) << shift
	}
	return typ, size, nil
}

// ofsDeltaOffset reads an OFS_DELTA's distance back to its base.
func (p *packReader) ofsDeltaOffset() (int64, error) {
	c, err := p.ReadByte()
	if err != nil {
		return 0, packErr("delta offset: %v", err)
	}
	off := int64(c & 0x7f)
	for c&0x80 != 0 {
		if off > 1<<55 {
			return 0, packErr("delta offset overflows")
		}
		if c, err = p.ReadByte(); err != nil {
			return 0, packErr("delta offset: %v", err)
		}
		off = (off+1)<<7 | int64(c&0x7f)
	}
	return off, nil
}

// applyDelta applies a git delta (base size, result size, then copy and
// insert instructions) to base.
func applyDelta(base, delta []byte) ([]byte, error) {
	d := bytes.NewReader(delta)
	baseSize, err := binary.ReadUvarint(d)
	if err != nil || baseSize != uint64(len(base)) {
		return nil, fmt.Errorf("base size %d, have %d", baseSize, len(base))
	}
	size, err := binary.ReadUvarint(d)
	if err != nil || size > maxCommitSize {
		return nil, fmt.Errorf("result size %d", size)
	}
	out := make([]byte, 0, size)
	for d.Len() > 0 {
		op, _ := d.ReadByte()
		switch {
		case op&0x80 != 0: // copy from base
			var off, n uint32
			for i := range 4 {
				if op&(1<<i) != 0 {
					b, err := d.ReadByte()
					if err != nil {
						return nil, errors.New("short copy")
					}
					off |= uint32(b) << (8 * i)
				}
			}
			for i := range 3 {
				if op&(0x10<<i) != 0 {
					b, err := d.ReadByte()
					if err != nil {
						return nil, errors.New("short copy")
					}
					n |= uint32(b) << (8 * i)
				}
			}
			if n == 0 {
				n = 0x10000
			}
			if uint64(off)+uint64(n) > uint64(len(base)) || uint64(len(out))+uint64(n) > size {
				return nil, errors.New("copy out of range")
			}
			out = append(out, base[off:off+n]...)
		case op != 0: // insert op bytes
			if int(op) > d.Len() || uint64(len(out))+uint64(op) > size {
				return nil, errors.New("insert out of range")
			}
			buf := make([]byte, op)
			_, _ = d.Read(buf)
			out = append(out, buf...)
		default:
			return nil, errors.New("reserved instruction 0")
		}
	}
	if uint64(len(out)) != size {
		return nil, fmt.Errorf("result of %d bytes, want %d", len(out), size)
	}
	return out, nil
}

// commitOf computes a commit's id and reads its parents from its header.
func commitOf(h hash.Hash, data []byte) (string, []string, error) {
	h.Write([]byte("commit " + strconv.Itoa(len(data)) + "\x00"))
	h.Write(data)
	id := hex.EncodeToString(h.Sum(nil))
	head, _, _ := strings.Cut(string(data), "\n\n")
	lines := strings.Split(head, "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "tree ") {
		return "", nil, errors.New("no tree line")
	}
	var parents []string
	for _, l := range lines[1:] {
		p, ok := strings.CutPrefix(l, "parent ")
		if !ok {
			break // parents come right after the tree
		}
		if !objectID(p) {
			return "", nil, fmt.Errorf("parent %q", p)
		}
		parents = append(parents, p)
	}
	return id, parents, nil
}
