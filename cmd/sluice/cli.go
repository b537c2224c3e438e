package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// stdout and stderr are where the commands write; tests replace them.
var (
	stdout io.Writer = os.Stdout
	stderr io.Writer = os.Stderr
)

// errHelp ends a command that printed its help because it was asked to:
// exit status 0.
var errHelp = errors.New("help printed")

// help is what `sluice CMD -h` and `sluice help CMD` print: how to call
// the command, what it does, its flags and examples.
type help struct {
	usage    string // "sluice check FILE...|-"
	about    string // a paragraph, wrapped by hand
	examples string // indented lines, one example each, with a comment
}

// newFlags makes the flag set of the command name ("run", "journal list").
// Its errors and help are printed by parseFlags, not by package flag.
func newFlags(name string, h help) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	// Package flag calls Usage on every mistake too; parseFlags prints
	// the help only when it was asked for.
	fs.Usage = func() {}
	helps[fs] = h
	if collected != nil {
		collected[name] = fs
	}
	return fs
}

// helps are the help texts of the flag sets newFlags made.
var helps = map[*flag.FlagSet]help{}

// parseFlags parses args into fs. -h prints the command's help on stdout
// and returns errHelp; a mistake prints one line, a suggestion when a flag
// was misspelt, and where the help is, and returns exit status 2.
func parseFlags(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		printHelp(stdout, fs, helps[fs])
		return errHelp
	}
	return usageError(fs.Name(), flagMistake(fs, err))
}

// usageError prints msg and a pointer to the command's help, and returns
// exit status 2.
func usageError(cmd, msg string) error {
	fmt.Fprintf(stderr, "sluice %s: %s\n", cmd, msg)
	fmt.Fprintf(stderr, "run 'sluice %s -h' for its flags and examples\n", cmd)
	return exitError{2}
}

// flagMistake rewrites package flag's error in words that say what to do.
func flagMistake(fs *flag.FlagSet, err error) string {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		msg = fmt.Sprintf("unknown flag --%s", name)
		if s := closestFlag(fs, name); s != "" {
			msg += fmt.Sprintf("; did you mean --%s?", s)
		}
		return msg
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return fmt.Sprintf("--%s needs a value: --%s VALUE or --%s=VALUE", name, name, name)
	}
	// "invalid boolean value "maybe" for -no-ipv6: parse error"
	if rest, ok := strings.CutPrefix(msg, "invalid boolean value "); ok {
		val, name, _ := strings.Cut(rest, " for -")
		name, _, _ = strings.Cut(name, ":")
		return fmt.Sprintf("--%s=%s: want true or false (or --%s alone for true)", name, strings.Trim(val, `"`), name)
	}
	// "invalid value "5" for flag -min-ttl: parse error"
	if rest, ok := strings.CutPrefix(msg, "invalid value "); ok {
		val, flagPart, _ := strings.Cut(rest, " for flag -")
		name, why, _ := strings.Cut(flagPart, ": ")
		f := fs.Lookup(name)
		if f != nil {
			if isDuration(f) {
				why = "want a duration with a unit, such as 30s, 5m or 1h"
			} else if why == "parse error" {
				why = "want a number"
			}
		}
		return fmt.Sprintf("--%s %s: %s", name, val, why)
	}
	return msg
}

func isDuration(f *flag.Flag) bool {
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return false
	}
	_, ok = g.Get().(interface{ Seconds() float64 })
	return ok
}

func isBool(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// closestFlag is the defined flag nearest to name, if it is near enough
// to be a misspelling: within a third of its length in edits, or the one
// flag that name begins.
func closestFlag(fs *flag.FlagSet, name string) string {
	if len(name) < 2 {
		return ""
	}
	best, bestD, prefixOf := "", 1<<30, []string{}
	fs.VisitAll(func(f *flag.Flag) {
		if strings.HasPrefix(f.Name, name) {
			prefixOf = append(prefixOf, f.Name)
		}
		if d := editDistance(name, f.Name); d < bestD {
			best, bestD = f.Name, d
		}
	})
	if bestD <= max(1, len(best)/3) {
		return best
	}
	if len(prefixOf) == 1 && len(name) >= 3 {
		return prefixOf[0]
	}
	return ""
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// printHelp writes a command's help: usage, about, flags, examples.
func printHelp(w io.Writer, fs *flag.FlagSet, h help) {
	fmt.Fprintf(w, "usage: %s\n", h.usage)
	if h.about != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimRight(h.about, "\n"))
	}
	if fs != nil && hasFlags(fs) {
		fmt.Fprint(w, "\nflags:\n")
		printFlags(w, fs)
	}
	if h.examples != "" {
		fmt.Fprintf(w, "\nexamples:\n%s\n", strings.TrimRight(h.examples, "\n"))
	}
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// printFlags lists the flags in the GNU style the README uses (--name),
// sorted, each with its default when it has one worth saying.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	var all []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) { all = append(all, f) })
	sort.Slice(all, func(i, j int) bool { return all[i].Name < all[j].Name })
	for _, f := range all {
		arg, usage := flag.UnquoteUsage(f)
		dash := "--"
		if len(f.Name) == 1 {
			dash = "-"
		}
		line := "  " + dash + f.Name
		if arg != "" && !isBool(f) {
			line += " " + arg
		}
		def := f.DefValue
		if def != "" && def != "0" && def != "false" && def != "[]" && !strings.Contains(usage, "default") {
			usage += fmt.Sprintf(" (default %s)", def)
		}
		fmt.Fprintf(w, "%s\n      %s\n", line, usage)
	}
}
