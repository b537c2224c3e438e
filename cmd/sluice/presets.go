package main

import (
	"fmt"

	"github.com/sluicegw/sluice/policy"
)

// presetsCmd lists the policy fragments a policy may include by name, or
// prints one.
func presetsCmd(args []string) error {
	fs := newFlags("presets", help{
		usage: "sluice presets [NAME]",
		about: `Lists the presets: policy fragments built into sluice that a policy
includes by name (include: [pypi, npm]), each with the hosts it allows.
With a NAME, prints that preset as a policy file, with the comments that
name the sources of its hosts and what it leaves open: a start for a
policy of your own when a preset is not quite what you need (a host a
preset lists may not be listed again beside its include).`,
		examples: "  sluice presets\n  sluice presets github-read > github.yaml",
	})
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch fs.NArg() {
	case 0:
		for _, p := range policy.Presets() {
			entries, err := policy.ParseFile(p.Name, p.Data)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%-14s %s\n", p.Name, p.Summary)
			for _, e := range entries {
				fmt.Fprintf(stdout, "%-14s   %s\n", "", e.String())
			}
		}
		return nil
	case 1:
		p, ok := policy.LookupPreset(fs.Arg(0))
		if !ok {
			return usageError("presets", fmt.Sprintf("no preset %q (sluice presets lists them)", fs.Arg(0)))
		}
		_, err := stdout.Write(p.Data)
		return err
	default:
		return usageError("presets", fmt.Sprintf("unexpected argument %q", fs.Arg(1)))
	}
}
