package gitsmart

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// Command is one ref update of a push.
type Command struct {
	Old, New string // object ids in hex; all zeros for none
	Ref      string
}

// Create reports whether the command makes a new ref; Delete, whether it
// removes one.
func (c Command) Create() bool { return zeroID(c.Old) }
func (c Command) Delete() bool { return zeroID(c.New) }

func zeroID(id string) bool { return strings.Trim(id, "0") == "" }

// Limits of a push's command list: git sends one line per ref, and no
// legitimate push writes thousands.
const (
	maxPktLen   = 65520
	maxCommands = 1000
	maxListed   = 1 << 20 // bytes of the lists before the pack
)

// PushRequest is what a receive-pack request says before its pack.
type PushRequest struct {
	Commands []Command
	Caps     []string // of the first command
	Options  []string // push options, when the "push-options" capability is asked for
	// Raw is every byte read, to be forwarded as it came.
	Raw []byte
}

// ErrMalformed is wrapped by every error of ReadPush about its input.
var ErrMalformed = errors.New("malformed receive-pack request")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// ReadPush reads the command list of a receive-pack request (v0/v1:
// optional "shallow" lines, commands "old new ref\0caps" up to a flush,
// then push options up to a flush if asked for) and stops before the
// pack, which stays unread in r. A probe (a bare flush, which git sends
// before a large body) gives no commands.
func ReadPush(r *bufio.Reader) (*PushRequest, error) {
	p := &PushRequest{}
	var raw bytes.Buffer
	for {
		line, flush, err := readPkt(r, &raw)
		if err != nil {
			return nil, err
		}
		if flush {
			break
		}
		if strings.HasPrefix(line, "shallow ") && len(p.Commands) == 0 {
			continue
		}
		c, caps, err := parseCommand(line, len(p.Commands) == 0)
		if err != nil {
			return nil, err
		}
		if len(p.Commands) == 0 {
			p.Caps = caps
		}
		p.Commands = append(p.Commands, c)
		if len(p.Commands) > maxCommands {
			return nil, malformed("more than %d commands", maxCommands)
		}
	}
	if hasCap(p.Caps, "push-options") && len(p.Commands) > 0 {
		for {
			line, flush, err := readPkt(r, &raw)
			if err != nil {
				return nil, err
			}
			if flush {
				break
			}
			p.Options = append(p.Options, line)
		}
	}
	p.Raw = raw.Bytes()
	return p, nil
}

// readPkt reads one pkt-line into raw and returns its payload without a
// final LF, or flush for "0000".
func readPkt(r *bufio.Reader, raw *bytes.Buffer) (string, bool, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return "", false, malformed("pkt-line length: %v", err)
	}
	raw.Write(hdr[:])
	n, err := strconv.ParseUint(string(hdr[:]), 16, 16)
	if err != nil {
		return "", false, malformed("pkt-line length %q", hdr[:])
	}
	switch {
	case n == 0:
		return "", true, nil
	case n < 5 || n > maxPktLen:
		return "", false, malformed("pkt-line length %d", n)
	case raw.Len()+int(n) > maxListed:
		return "", false, malformed("command list longer than %d bytes", maxListed)
	}
	buf := make([]byte, n-4)
	if _, err := io.ReadFull(r, buf); err != nil {
		return "", false, malformed("pkt-line of %d bytes: %v", n, err)
	}
	raw.Write(buf)
	return strings.TrimSuffix(string(buf), "\n"), false, nil
}

// parseCommand reads "old SP new SP ref", with "\0caps" on the first.
func parseCommand(line string, first bool) (Command, []string, error) {
	var caps []string
	if i := strings.IndexByte(line, 0); i >= 0 {
		if !first {
			return Command{}, nil, malformed("capabilities after the first command")
		}
		caps = strings.Fields(line[i+1:])
		line = line[:i]
	}
	f := strings.Split(line, " ")
	if len(f) != 3 || !objectID(f[0]) || !objectID(f[1]) || len(f[0]) != len(f[1]) {
		return Command{}, nil, malformed("command %q", line)
	}
	if !validRef(f[2]) {
		return Command{}, nil, malformed("ref name %q", f[2])
	}
	if zeroID(f[0]) && zeroID(f[1]) {
		return Command{}, nil, malformed("command %q neither creates, updates nor deletes", line)
	}
	return Command{Old: f[0], New: f[1], Ref: f[2]}, caps, nil
}

// objectID is a SHA-1 or SHA-256 id in lowercase hex.
func objectID(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// validRef follows git check-ref-format where it matters to a filter: a
// full name under refs/, no control characters, spaces or the characters
// git forbids, no "..", no "//", no component starting with '.' or ending
// with ".lock".
func validRef(s string) bool {
	if !strings.HasPrefix(s, "refs/") || len(s) > 1024 || strings.Contains(s, "..") || strings.Contains(s, "//") ||
		strings.HasSuffix(s, "/") || strings.HasSuffix(s, ".") || strings.Contains(s, "@{") {
		return false
	}
	for _, c := range s {
		if c < 0x20 || c == 0x7f || strings.ContainsRune(" ~^:?*[\\", c) {
			return false
		}
	}
	for _, comp := range strings.Split(s, "/") {
		if strings.HasPrefix(comp, ".") || strings.HasSuffix(comp, ".lock") {
			return false
		}
	}
	return true
}

func hasCap(caps []string, name string) bool {
	for _, c := range caps {
		if c == name || strings.HasPrefix(c, name+"=") {
			return true
		}
	}
	return false
}

// Has reports whether the push asked for capability name (with or without
// a value).
func (p *PushRequest) Has(name string) bool { return hasCap(p.Caps, name) }

// SHA256 reports whether the push names its objects by SHA-256
// (object-format=sha256), not SHA-1.
func (p *PushRequest) SHA256() bool { return slices.Contains(p.Caps, "object-format=sha256") }
