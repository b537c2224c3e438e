package mitm

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
	"github.com/sluicegw/sluice/tlsinspect/gitsmart"
)

// Bounds of a push's body handling.
const (
	// MaxProvenPack is the largest pack sluice holds back to read a
	// fast-forward from; a larger push updating an existing ref needs
	// force: true (or smaller pushes). MaxSpool bounds the packs held at
	// once, all connections together, and proofTimeout the time a pack
	// may take to arrive whole.
	MaxProvenPack = 512 << 20
	MaxSpool      = 1 << 30
	proofTimeout  = 15 * time.Minute
	// maxDrain bounds what is read and dropped of a refused push, so that
	// git reads the refusal instead of failing to write its pack.
	maxDrain = 256 << 20
)

// checkPush reads a receive-pack request's commands from the stream,
// before any pack byte is sent on, and decides each ref by the rules. A
// refused push is answered in git's report-status, so that git prints
// each ref's reason. An update of an existing ref without force needs the
// pack to show it a fast-forward: the pack is then held back (in an
// unlinked temporary file) until read.
func (s *session) checkPush(req *http.Request, ev journal.Event, rules *policy.GitRules) (*http.Request, *http.Response) {
	body, err := decodedBody(req)
	if err != nil {
		return req, s.refuse(req, ev, journal.ReasonGitNotRecognised, http.StatusUnsupportedMediaType, "sluice: "+err.Error())
	}
	br := bufio.NewReaderSize(body, 64<<10)
	push, err := gitsmart.ReadPush(br)
	if err != nil {
		return req, s.refuse(req, ev, journal.ReasonGitNotRecognised, http.StatusBadRequest, "sluice: "+err.Error())
	}
	rest := io.Reader(br)
	if len(push.Commands) == 0 { // git's probe before a large body
		setBody(req, io.MultiReader(bytes.NewReader(push.Raw), rest), req.ContentLength)
		s.record(ev, journal.ReasonAllowed, "")
		return req, nil
	}
	var refs []string
	for _, c := range push.Commands {
		refs = append(refs, c.Ref)
	}
	ev.Detail += " refs " + strings.Join(refs, ",")

	var descends func(old, new string) bool
	var spool io.ReadCloser
	if needsProof(rules, push.Commands) {
		s.client.limit.Store(time.Now().Add(proofTimeout).UnixNano())
		f, commits, err := s.i.readPack(br, push.SHA256())
		s.client.limit.Store(0)
		switch {
		case errors.Is(err, errPackTooLarge) || errors.Is(err, gitsmart.ErrPackTooLarge):
			descends = func(string, string) bool { return false }
			ev.Detail += " (pack over the size sluice reads)"
		case err != nil:
			return req, s.refuse(req, ev, journal.ReasonGitNotRecognised, http.StatusBadRequest, "sluice: "+err.Error())
		default:
			descends, spool, rest = commits.Descends, f, f
		}
	}
	all, verdicts := DecidePush(rules, push.Commands, descends)
	if !all {
		if spool != nil { // read whole already: nothing to drain
			spool.Close()
			rest = nil
		}
		return req, s.refusePush(req, ev, push, verdicts, rest)
	}
	setBody(req, io.MultiReader(bytes.NewReader(push.Raw), rest), req.ContentLength)
	if spool != nil {
		req.Body = struct {
			io.Reader
			io.Closer
		}{req.Body, closers{req.Body, spool}}
	}
	s.record(ev, journal.ReasonAllowed, "")
	return req, nil
}

// closers closes each of its members.
type closers []io.Closer

func (cs closers) Close() error {
	var errs []error
	for _, c := range cs {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// needsProof says whether a ref the rules would let through updates an
// existing ref without force, so that the pack must show a fast-forward.
func needsProof(rules *policy.GitRules, cmds []gitsmart.Command) bool {
	if rules.Force {
		return false
	}
	for _, c := range cmds {
		if !c.Create() && !c.Delete() && policy.MatchRef(rules.PushRefs, c.Ref) {
			return true
		}
	}
	return false
}

var errPackTooLarge = errors.New("pack too large to read")

// readPack copies the pack into an unlinked temporary file while reading
// its commits, and returns the file rewound. The file counts against
// MaxSpool until closed.
func (i *Interceptor) readPack(r io.Reader, sha256ids bool) (io.ReadCloser, gitsmart.Commits, error) {
	f, err := os.CreateTemp("", "sluice-push-*")
	if err != nil {
		return nil, nil, fmt.Errorf("holding the pack: %v", err)
	}
	os.Remove(f.Name()) // gone with the last descriptor, whatever happens
	sp := &spool{File: f, i: i}
	commits, perr := gitsmart.ReadPackCommits(io.TeeReader(r, sp), sha256ids)
	if perr == nil {
		// The rest (nothing, from git) goes on too, as it came.
		_, perr = io.Copy(sp, r)
	}
	if sp.over {
		perr = errPackTooLarge
	}
	if perr == nil {
		_, perr = f.Seek(0, io.SeekStart)
	}
	if perr != nil {
		sp.Close()
		return nil, nil, perr
	}
	return sp, commits, nil
}

// spool is a pack held back, counted against the proof's limits.
type spool struct {
	*os.File
	i    *Interceptor
	n    int64
	over bool
}

func (sp *spool) Write(p []byte) (int, error) {
	n := int64(len(p))
	if sp.n+n > MaxProvenPack {
		sp.over = true
		return 0, errPackTooLarge
	}
	if sp.i.spooled.Add(n) > MaxSpool {
		sp.i.spooled.Add(-n)
		sp.over = true
		return 0, errPackTooLarge
	}
	sp.n += n
	return sp.File.Write(p)
}

func (sp *spool) Close() error {
	sp.i.spooled.Add(-sp.n)
	sp.n = 0
	return sp.File.Close()
}

// refusePush answers a push with git's report-status: "unpack ok", then
// "ng REF reason" for every ref (a push passes whole or not at all, so
// refs allowed on their own are refused for the others' sake), in
// side-band when git asked for it. What the agent still sends of its
// pack is read and dropped first (up to maxDrain), so git reads the
// answer instead of failing on a write.
func (s *session) refusePush(req *http.Request, ev journal.Event, push *gitsmart.PushRequest, verdicts []RefVerdict, rest io.Reader) *http.Response {
	var reasons []string
	var first RefVerdict
	for _, v := range verdicts {
		if !v.Allow {
			if first.Reason == "" {
				first = v
			}
			reasons = append(reasons, v.Ref+": "+v.Detail)
		}
	}
	s.record(ev, first.Reason, strings.Join(reasons, "; "))
	if rest != nil {
		_, _ = io.CopyN(io.Discard, rest, maxDrain)
	}
	var status bytes.Buffer
	pkt(&status, "unpack ok\n")
	for _, v := range verdicts {
		why := v.Detail
		if v.Allow {
			why = "sluice: refused with the rest of this push"
		} else {
			why = "sluice: " + why
		}
		pkt(&status, "ng "+v.Ref+" "+strings.ReplaceAll(why, "\n", " ")+"\n")
	}
	status.WriteString("0000")
	out := status.Bytes()
	if push.Has("side-band-64k") || push.Has("side-band") {
		var band bytes.Buffer
		msg := "sluice refused this push: " + strings.Join(reasons, "; ") + "\n"
		pkt(&band, "\x02"+msg)
		for data := out; len(data) > 0; {
			n := min(len(data), 900) // fits side-band's 1000 too
			pkt(&band, "\x01"+string(data[:n]))
			data = data[n:]
		}
		band.WriteString("0000")
		out = band.Bytes()
	}
	resp := plainResponse(req, http.StatusOK, "")
	resp.Header.Set("Content-Type", "application/x-git-receive-pack-result")
	resp.Body, resp.ContentLength = io.NopCloser(bytes.NewReader(out)), int64(len(out))
	resp.Close = true
	return resp
}

// pkt writes one pkt-line.
func pkt(b *bytes.Buffer, payload string) {
	fmt.Fprintf(b, "%04x%s", len(payload)+4, payload)
}
