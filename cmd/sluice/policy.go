package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
	"github.com/sluicegw/sluice/policy/importer"
)

var policyHelp = help{
	usage: "sluice policy suggest|import [flags]",
	about: `Works on policy files. suggest reads what one agent did, in the journal,
and prints the smallest policy that would have allowed it. import reads an
allow-list written for another tool and prints the sluice policy that
allows the same.`,
	examples: `  sluice policy suggest --agent openhands --since 8h > openhands.yaml
  sluice policy import .claude/settings.json > agent.yaml`,
}

var policyHelps = map[string]help{
	"import": {
		usage: "sluice policy import [--from FORMAT] [--allow-private] FILE|-",
		about: `Prints, as a policy file, the sluice policy that allows what an allow-list
written for another tool allows. FORMAT, detected from the content when
--from is not given:
  claude         Claude Code settings: sandbox.network.allowedDomains (and
                 deniedDomains), WebFetch(domain:...) in permissions.allow
  allowed-hosts  allowed_network_hosts: [host[:port], ...] at any depth of
                 a YAML, JSON or TOML file
  gh-aw          GitHub Agentic Workflows' network: (a workflow's front
                 matter): domains, and ecosystems as sluice's presets
  squid          a Squid dstdomain list (.example.com is the apex and every
                 name under it: two entries), or a squid.conf whose
                 http_access lines a policy can say exactly (README)
  list           one host, host:port, [IPv6]:port, address or CIDR per
                 line, # comments
Every entry says where in the input it comes from and what was made
explicit (a name without a port gets sluice's default ports, 80 and 443).
Warnings (on stderr, and atop the policy) name what could not be
expressed or was narrowed or widened: denied names inside an allowed
wildcard (sluice has no deny entries; a name a denial covers whole is
left out), ecosystems and their presets, paths, private ranges and
names (given 'private: true' only with --allow-private), and what
sluice check will warn of. An entry sluice refuses (a wildcard over a
public suffix, a bare '*'), or a denial it cannot read, fails the
import, with its line; nothing is printed then. Exit status 0 when a
policy was printed, 1 when the input was refused, 2 for a wrong
command line.`,
		examples: `  sluice policy import .claude/settings.json > agent.yaml && sluice check agent.yaml
  sluice policy import --from squid /etc/squid/allowed.txt > agent.yaml
  sluice policy import --allow-private agent-config.toml > lab.yaml`,
	},
	"suggest": {
		usage: "sluice policy suggest --agent NAME [--journal FILE] [--since DUR] [--wildcard-threshold N] [--allow-private]",
		about: `Prints, as a policy file, the smallest policy that would have allowed what
the agent was seen to do in the journal since --since: what the policy in
force allowed, what it refused for want of an entry (a name, SNI or Host
not allowed, a port not allowed, a packet with no set entry), and what
report mode would have refused for those reasons. Refusals no entry
changes (an address not pinned, ECH, a spoofed source, a name budget
spent, ...) are left out. Names become exact entries with the ports seen
(a name seen only in DNS gets the default ports), addresses reached
without a name cidr entries; a wildcard *.BASE replaces the names under
BASE when more than --wildcard-threshold of them were seen, never over a
public or multi-tenant suffix. Notes on what was left out go to stderr.
Review the file, then check it with sluice check.`,
		examples: `  sudo sluice policy suggest --agent sh --since 1h > agent.yaml && sluice check agent.yaml
  sudo sluice policy suggest --agent lab --wildcard-threshold 0 --allow-private`,
	},
}

// policyCmd is `sluice policy suggest`.
func policyCmd(args []string) error {
	if len(args) == 0 {
		return usageError("policy", "name a command: suggest or import")
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		printHelp(stdout, nil, policyHelp)
		return errHelp
	}
	switch args[0] {
	case "suggest":
		return policySuggestCmd(args[1:])
	case "import":
		return policyImportCmd(args[1:])
	}
	return usageError("policy", fmt.Sprintf("unknown command %q: suggest or import", args[0]))
}

func policyImportCmd(args []string) error {
	fs := newFlags("policy import", policyHelps["import"])
	from := fs.String("from", "", "the input's `FORMAT`: "+importer.FormatList()+" (detected when not given)")
	allowPrivate := fs.Bool("allow-private", false, "give 'private: true' to private ranges and local names")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() == 0:
		return usageError(fs.Name(), "name the file to import ('-' for standard input)")
	case fs.NArg() > 1:
		return usageError(fs.Name(), fmt.Sprintf("one file at a time; unexpected argument %q", fs.Arg(1)))
	case *from != "" && !slices.Contains(importer.Formats, importer.Format(*from)):
		return usageError(fs.Name(), fmt.Sprintf("--from %q: want one of %s", *from, importer.FormatList()))
	}
	file := fs.Arg(0)
	var data []byte
	var err error
	if file == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(file)
	}
	if err != nil {
		return err
	}
	r, err := importer.Import(data, importer.Options{From: importer.Format(*from), Name: displayName(file), AllowPrivate: *allowPrivate})
	var ie *importer.Error
	if errors.As(err, &ie) {
		for _, m := range ie.Msgs {
			fmt.Fprintln(stderr, "sluice policy import:", m)
		}
		return exitError{1}
	}
	if err != nil {
		return err
	}
	if _, err := stdout.Write(r.Policy); err != nil {
		return err
	}
	for _, w := range r.Warnings {
		fmt.Fprintln(stderr, "sluice policy import: warning:", w)
	}
	return nil
}

func policySuggestCmd(args []string) error {
	fs := newFlags("policy suggest", policyHelps["suggest"])
	path := fs.String("journal", journal.DefaultPath, "the journal `file`")
	agent := fs.String("agent", "", "the `NAME` of the agent whose records to read (required)")
	since := fs.String("since", "24h", "records since `DUR` ago or since an RFC 3339 time")
	threshold := fs.Int("wildcard-threshold", 5, "a wildcard *.BASE replaces the names under BASE when more than `N` were seen; 0 for none")
	allowPrivate := fs.Bool("allow-private", false, "give 'private: true' to names and addresses seen with private addresses")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return usageError(fs.Name(), fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	case *agent == "":
		return usageError(fs.Name(), "--agent is required: the agent whose records to read (sluice journal list shows them)")
	case *threshold < 0:
		return usageError(fs.Name(), "--wildcard-threshold: want 0 (no wildcards) or more")
	}
	from, err := journal.ParseSince(*since, time.Now())
	if err != nil {
		return usageError(fs.Name(), "--"+err.Error())
	}
	r, err := journal.Open(*path)
	if err != nil {
		return err
	}
	defer r.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	read, err := readSeen(ctx, r, journal.Filter{Agent: *agent, Since: from})
	if err != nil {
		return err
	}
	if read.records == 0 {
		return fmt.Errorf("%s: no records of agent %q since %s", *path, *agent, journal.FormatTime(from))
	}
	data, notes := policy.Suggest(read.seen, policy.SuggestOptions{
		WildcardThreshold: *threshold, AllowPrivate: *allowPrivate, Header: read.header(*path, *agent),
	})
	if _, err := stdout.Write(data); err != nil {
		return err
	}
	for _, n := range append(read.notes(), notes...) {
		fmt.Fprintln(stderr, "sluice policy suggest:", n)
	}
	return nil
}

// seenRecords is what readSeen found: what Suggest reads, and counts for
// the file's header and the notes.
type seenRecords struct {
	seen        []policy.Seen
	records     int
	first, last string // the times of the oldest and newest record
	verdicts    map[string]int
	leftOut     map[journal.Reason]int // refusals no entry changes
}

// readSeen reads the records f selects, page by page, into what Suggest
// reads, oldest first.
func readSeen(ctx context.Context, r *journal.Reader, f journal.Filter) (seenRecords, error) {
	out := seenRecords{verdicts: map[string]int{}, leftOut: map[journal.Reason]int{}}
	f.Limit = journal.MaxLimit
	for {
		recs, next, err := r.List(ctx, f)
		if err != nil {
			return out, err
		}
		for i := range recs {
			rec := &recs[i]
			if out.records == 0 {
				out.last = rec.Time
			}
			out.records++
			out.first = rec.Time
			out.verdicts[rec.Verdict]++
			if s, ok := seenOf(rec); ok {
				out.seen = append(out.seen, s)
			} else if rec.Verdict == journal.Refused.String() || rec.Verdict == journal.WouldRefuse.String() {
				out.leftOut[rec.Reason]++
			}
		}
		if next == 0 {
			break
		}
		f.Before = next
	}
	slices.Reverse(out.seen)
	return out, nil
}

// seenOf is what a record shows the agent reached, or tried to, that a
// policy entry allows: every decision that let something through
// (allowed, dropped: an answer released without some addresses), and the
// refusals, real or would-be (report mode), for want of an entry
// (journal.Reason.Allowable). Refusals for any other reason are what an
// attack or a failure looks like (ech, ip_literal_sni, spoofed_source,
// address_not_pinned, name_budget_exceeded, ...), and no entry would
// have let them through. A request checked by git or http rules counts
// whatever its verdict, so that its host is never suggested without them.
func seenOf(rec *journal.Record) (policy.Seen, bool) {
	inspected := rec.Layer == journal.LayerGit || rec.Layer == journal.LayerHTTP && rec.Proto != "tcp"
	switch rec.Verdict {
	case journal.Allowed.String(), journal.Dropped.String():
	case journal.Refused.String(), journal.WouldRefuse.String():
		if !rec.Reason.Allowable() && !inspected {
			return policy.Seen{}, false
		}
	default:
		return policy.Seen{}, false
	}
	s := policy.Seen{Name: rec.Name, Rule: rec.Rule, Inspected: inspected}
	if rec.Layer == journal.LayerDNS {
		// Proto is the question's type, and a question names no port.
		for a := range strings.SplitSeq(rec.Addrs, ",") {
			if ip, err := netip.ParseAddr(a); err == nil {
				if rec.Verdict == journal.Dropped.String() {
					s.Dropped = append(s.Dropped, ip)
				} else {
					s.Answer = append(s.Answer, ip)
				}
			}
		}
		return s, true
	}
	if ap, err := netip.ParseAddrPort(rec.Dst); err == nil {
		s.Addr, s.Port, s.Proto = ap.Addr(), ap.Port(), cmp.Or(rec.Proto, "tcp")
	}
	if inspected {
		s.Proto = "tcp" // the request's method
	}
	return s, true
}

// header is the comment on top of the file: what it was made from.
func (s seenRecords) header(path, agent string) []string {
	var counts []string
	for _, v := range journal.Verdicts() {
		if n := s.verdicts[v]; n > 0 {
			counts = append(counts, fmt.Sprintf("%d %s", n, v))
		}
	}
	return []string{
		fmt.Sprintf("Suggested by sluice policy suggest for agent %s from %s,", agent, path),
		fmt.Sprintf("its %d records from %s to %s:", s.records, seconds(s.first), seconds(s.last)),
		strings.Join(counts, ", ") + ".",
	}
}

// seconds writes a record's time to the second.
func seconds(recordTime string) string {
	t, err := journal.ParseTime(recordTime)
	if err != nil {
		return recordTime
	}
	return t.Format(time.RFC3339)
}

// notes says which refusals were left out, by reason.
func (s seenRecords) notes() []string {
	if len(s.leftOut) == 0 {
		return nil
	}
	reasons := slices.Sorted(maps.Keys(s.leftOut))
	var parts []string
	n := 0
	for _, r := range reasons {
		parts = append(parts, fmt.Sprintf("%s ×%d", r, s.leftOut[r]))
		n += s.leftOut[r]
	}
	return []string{fmt.Sprintf("left out, %d refusals that no entry changes: %s", n, strings.Join(parts, ", "))}
}
