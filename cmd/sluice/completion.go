package main

import (
	"flag"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
)

var completionHelp = help{
	usage: "sluice completion bash|zsh|fish",
	about: `Prints a shell completion script for sluice's commands, subcommands
and flags.`,
	examples: `  # bash: for this shell, or for every new one
  source <(sluice completion bash)
  sluice completion bash | sudo tee /etc/bash_completion.d/sluice
  # zsh (with compinit), fish
  sluice completion zsh > "${fpath[1]}/_sluice"
  sluice completion fish > ~/.config/fish/completions/sluice.fish`,
}

// collected holds the flag sets newFlags made while completionWords
// asked each command for its help: a command parses its flags before it
// does anything, so "-h" makes it define them and return, with no effect.
var collected map[string]*flag.FlagSet

// completionWords are, for each command line prefix ("", "journal",
// "journal list"), the words that may follow: subcommands and flags.
func completionWords() map[string][]string {
	words := map[string][]string{}
	for _, c := range commands {
		words[""] = append(words[""], c.name)
	}
	words["help"] = slices.Clone(words[""])
	words[""] = append(words[""], "help")
	subs := map[string][]string{"journal": {"list", "verify", "export"}, "ca": {"export"}}
	for cmd, s := range subs {
		words[cmd] = s
	}
	words["completion"] = []string{"bash", "zsh", "fish"}
	collected = map[string]*flag.FlagSet{}
	out, errOut := stdout, stderr
	stdout, stderr = io.Discard, io.Discard
	for _, c := range commands {
		_ = c.run([]string{"-h"})
		for _, sub := range subs[c.name] {
			_ = c.run([]string{sub, "-h"})
		}
	}
	stdout, stderr = out, errOut
	for name, fs := range collected {
		var flags []string
		fs.VisitAll(func(f *flag.Flag) {
			if len(f.Name) == 1 {
				flags = append(flags, "-"+f.Name)
			} else {
				flags = append(flags, "--"+f.Name)
			}
		})
		words[name] = append(words[name], append(flags, "--help")...)
	}
	collected = nil
	for k := range words {
		sort.Strings(words[k])
	}
	return words
}

func completionCmd(args []string) error {
	fs := newFlags("completion", completionHelp)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError("completion", "name one shell: bash, zsh or fish")
	}
	words := completionWords()
	var prefixes []string
	for p := range words {
		prefixes = append(prefixes, p)
	}
	sort.Strings(prefixes)
	switch fs.Arg(0) {
	case "bash", "zsh":
		// zsh runs the bash script through bashcompinit: one script to keep
		// true instead of two.
		var b strings.Builder
		if fs.Arg(0) == "zsh" {
			b.WriteString("#compdef sluice\nautoload -U +X bashcompinit && bashcompinit\n")
		}
		b.WriteString("# sluice completion: source <(sluice completion " + fs.Arg(0) + ")\n")
		b.WriteString("_sluice() {\n  local cur=${COMP_WORDS[COMP_CWORD]} key=\"\" w i\n")
		b.WriteString("  for ((i = 1; i < COMP_CWORD; i++)); do\n    w=${COMP_WORDS[i]}\n")
		b.WriteString("    [[ $w == -* ]] && continue\n")
		b.WriteString("    case \"${key:+$key }$w\" in\n")
		for _, p := range prefixes {
			if p != "" {
				fmt.Fprintf(&b, "      %q) key=%q ;;\n", p, p)
			}
		}
		b.WriteString("      *) [[ $key == run ]] && { COMPREPLY=($(compgen -c -- \"$cur\")); return; } ;;\n")
		b.WriteString("    esac\n  done\n  case \"$key\" in\n")
		for _, p := range prefixes {
			fmt.Fprintf(&b, "    %q) COMPREPLY=($(compgen -W %q -- \"$cur\")) ;;\n", p, strings.Join(words[p], " "))
		}
		b.WriteString("  esac\n}\ncomplete -o default -F _sluice sluice\n")
		fmt.Fprint(stdout, b.String())
	case "fish":
		var b strings.Builder
		b.WriteString("# sluice completion: sluice completion fish > ~/.config/fish/completions/sluice.fish\ncomplete -c sluice -f\n")
		for _, p := range prefixes {
			cond := "__fish_use_subcommand"
			if p != "" {
				parts := strings.Fields(p)
				cond = "__fish_seen_subcommand_from " + parts[0]
				if len(parts) == 2 {
					cond += "; and __fish_seen_subcommand_from " + parts[1]
				}
			}
			for _, w := range words[p] {
				if name, ok := strings.CutPrefix(w, "--"); ok {
					fmt.Fprintf(&b, "complete -c sluice -n '%s' -l %s\n", cond, name)
				} else if name, ok := strings.CutPrefix(w, "-"); ok {
					fmt.Fprintf(&b, "complete -c sluice -n '%s' -s %s\n", cond, name)
				} else {
					fmt.Fprintf(&b, "complete -c sluice -n '%s' -a %s\n", cond, w)
				}
			}
		}
		fmt.Fprint(stdout, b.String())
	default:
		return usageError("completion", fmt.Sprintf("unknown shell %q: bash, zsh or fish", fs.Arg(0)))
	}
	return nil
}
