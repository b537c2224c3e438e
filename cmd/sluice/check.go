package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/sluicegw/sluice/gateway"
)

func checkCmd(args []string) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprintln(os.Stderr, "usage: sluice check FILE...") }
	if err := fs.Parse(args); err != nil {
		return exitError{2}
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitError{2}
	}
	failed := false
	for _, file := range fs.Args() {
		p, warnings, err := gateway.PolicySource{File: file}.Load()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			failed = true
			continue
		}
		for _, w := range warnings {
			fmt.Fprintln(os.Stderr, w)
		}
		fmt.Printf("%s: ok, %d entries, policy %s\n", file, len(p.Entries()), p.Hash())
	}
	if failed {
		return exitError{1}
	}
	return nil
}
