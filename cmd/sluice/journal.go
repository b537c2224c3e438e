package main

import (
	"context"
	"fmt"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sluicegw/sluice/journal"
)

var journalHelp = help{
	usage: "sluice journal list|verify|export [flags]",
	about: `Reads the decision journal, the SQLite file where sluice run keeps
every decision (default ` + journal.DefaultPath + `): list shows records
newest first, verify checks the hash chain that links them, export
writes them as JSON lines or OCSF for a SIEM.`,
	examples: `  sudo sluice journal list --verdict refused --since 1h
  sudo sluice journal verify
  sudo sluice journal export --follow --format ocsf | vector ...`,
}

var journalHelps = map[string]help{
	"list": {usage: "sluice journal list [flags]", about: "Lists the journal's records, newest first, filtered by the flags.",
		examples: "  sudo sluice journal list --verdict refused --since 1h\n  sudo sluice journal list --host github.com --json"},
	"verify": {usage: "sluice journal verify [--journal FILE]",
		about:    "Checks the hash chain of the journal's records: a record changed or removed\nin the middle breaks it.",
		examples: "  sudo sluice journal verify"},
	"export": {usage: "sluice journal export [--follow] [--format jsonl|ocsf] [--journal FILE]",
		about:    "Writes the journal's records, oldest first, as JSON lines or OCSF events.",
		examples: "  sudo sluice journal export --format ocsf > journal.ocsf.jsonl\n  sudo sluice journal export --follow | jq ."},
}

// journalCmd is `sluice journal list|verify|export`.
func journalCmd(args []string) error {
	if len(args) == 0 {
		return usageError("journal", "name a command: list, verify or export")
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		printHelp(stdout, nil, journalHelp)
		return errHelp
	}
	h, ok := journalHelps[args[0]]
	if !ok {
		return usageError("journal", fmt.Sprintf("unknown command %q: list, verify or export", args[0]))
	}
	fs := newFlags("journal "+args[0], h)
	path := fs.String("journal", journal.DefaultPath, "the journal `file`")
	var f journal.Filter
	var since string
	asJSON, follow, format := false, false, "jsonl"
	switch args[0] {
	case "list":
		fs.BoolVar(&asJSON, "json", false, "print JSON lines")
		fs.StringVar(&f.Verdict, "verdict", "", "only this `verdict` ("+strings.Join(journal.Verdicts(), ", ")+")")
		fs.StringVar(&f.Layer, "layer", "", "only this `layer` (dns, firewall, tls, http, policy, journal)")
		fs.StringVar(&f.Host, "host", "", "only this `host` and its subdomains")
		fs.StringVar(&f.Agent, "agent", "", "only this `agent`")
		fs.StringVar(&f.Reason, "reason", "", "only this `reason`")
		fs.StringVar(&since, "since", "", "only records since `DUR` ago or since an RFC 3339 time")
		fs.IntVar(&f.Limit, "limit", journal.DefaultLimit, "at most `N` records")
	case "export":
		fs.BoolVar(&follow, "follow", false, "keep writing new records as they come")
		fs.StringVar(&format, "format", "jsonl", "`jsonl` or ocsf")
	}
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError(fs.Name(), fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	}
	if since != "" {
		var err error
		if f.Since, err = journal.ParseSince(since, time.Now()); err != nil {
			return usageError(fs.Name(), "--"+err.Error())
		}
	}
	r, err := journal.Open(*path)
	if err != nil {
		return err
	}
	defer r.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGPIPE)
	defer stop()
	switch args[0] {
	case "list":
		recs, _, err := r.List(ctx, f)
		if err != nil {
			return err
		}
		return journal.WriteList(stdout, recs, asJSON)
	case "export":
		return journal.Export(ctx, r, stdout, format, follow)
	}
	n, last, err := r.Verify(ctx)
	if err != nil {
		return fmt.Errorf("%s: %d records verified before this: %w", *path, n, err)
	}
	fmt.Fprintf(stdout, "%s: %d records verified; the last is %d, hash %s\n", *path, n, last.ID, last.Hash)
	return nil
}
