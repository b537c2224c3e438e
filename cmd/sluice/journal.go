package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sluicegw/sluice/journal"
)

// journalCmd is `sluice journal list|verify|export`.
func journalCmd(args []string) error {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: sluice journal list|verify|export [flags]")
		return exitError{2}
	}
	fs := flag.NewFlagSet("journal "+args[0], flag.ContinueOnError)
	path := fs.String("journal", journal.DefaultPath, "the journal `file`")
	var f journal.Filter
	var since string
	asJSON, follow, format := false, false, "jsonl"
	switch args[0] {
	case "list":
		fs.BoolVar(&asJSON, "json", false, "print JSON lines")
		fs.StringVar(&f.Verdict, "verdict", "", "only this `verdict` (refused, allowed, dropped, changed, lost, pruned)")
		fs.StringVar(&f.Layer, "layer", "", "only this `layer` (dns, firewall, tls, http, policy, journal)")
		fs.StringVar(&f.Host, "host", "", "only this `host` and its subdomains")
		fs.StringVar(&f.Agent, "agent", "", "only this `agent`")
		fs.StringVar(&f.Reason, "reason", "", "only this `reason`")
		fs.StringVar(&since, "since", "", "only records since `DUR` ago or since an RFC 3339 time")
		fs.IntVar(&f.Limit, "limit", journal.DefaultLimit, "at most `N` records")
	case "export":
		fs.BoolVar(&follow, "follow", false, "keep writing new records as they come")
		fs.StringVar(&format, "format", "jsonl", "`jsonl` or ocsf")
	case "verify":
	default:
		fmt.Fprintf(os.Stderr, "sluice journal: unknown command %q (list, verify, export)\n", args[0])
		return exitError{2}
	}
	if err := fs.Parse(args[1:]); err != nil {
		return exitError{2}
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "sluice journal %s: unexpected argument %q\n", args[0], fs.Arg(0))
		return exitError{2}
	}
	if since != "" {
		var err error
		if f.Since, err = journal.ParseSince(since, time.Now()); err != nil {
			fmt.Fprintln(os.Stderr, "sluice journal list: --"+err.Error())
			return exitError{2}
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
		return journal.WriteList(os.Stdout, recs, asJSON)
	case "export":
		return journal.Export(ctx, r, os.Stdout, format, follow)
	}
	n, last, err := r.Verify(ctx)
	if err != nil {
		return fmt.Errorf("%s: %d records verified before this: %w", *path, n, err)
	}
	fmt.Printf("%s: %d records verified; the last is %d, hash %s\n", *path, n, last.ID, last.Hash)
	return nil
}
