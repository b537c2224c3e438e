package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/sluicegw/sluice/policy"
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
		p, warnings, err := loadPolicy(file, nil)
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

// loadPolicy reads the policy file (if any) and the --allow flags into one
// policy. Errors name file:line; warnings are returned for the caller to show.
func loadPolicy(file string, flags []string) (*policy.Policy, []policy.Warning, error) {
	var entries []policy.Entry
	var errs policy.Errors
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, nil, err
		}
		fe, err := policy.ParseFile(file, data)
		var pe policy.Errors
		switch {
		case errors.As(err, &pe):
			errs = append(errs, pe...)
		case err != nil:
			return nil, nil, err
		}
		entries = append(entries, fe...)
	}
	for _, f := range flags {
		e, err := policy.ParseAllowFlag(f)
		if err != nil {
			var pe policy.Error
			if errors.As(err, &pe) {
				errs = append(errs, pe)
				continue
			}
			return nil, nil, err
		}
		entries = append(entries, e)
	}
	if len(errs) > 0 {
		return nil, nil, errs
	}
	p, err := policy.New(entries)
	if err != nil {
		return nil, nil, err
	}
	return p, policy.Lint(p), nil
}
