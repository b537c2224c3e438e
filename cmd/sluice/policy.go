package main

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net/netip"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
)

var policyHelp = help{
	usage: "sluice policy suggest [flags]",
	about: `Works on policy files. suggest reads what one agent did, in the journal,
and prints the smallest policy that would have allowed it.`,
	examples: `  sluice policy suggest --agent openhands --since 8h > openhands.yaml`,
}

var policyHelps = map[string]help{
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
		return usageError("policy", "name a command: suggest")
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		printHelp(stdout, nil, policyHelp)
		return errHelp
	}
	switch args[0] {
	case "suggest":
		return policySuggestCmd(args[1:])
	}
	return usageError("policy", fmt.Sprintf("unknown command %q: suggest", args[0]))
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
