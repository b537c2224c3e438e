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
  # zsh: in ~/.zshrc; fish: once
  source <(sluice completion zsh)
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
	subs := map[string][]string{"journal": {"list", "verify", "export"}, "ca": {"export"}, "policy": {"suggest", "import"}}
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
	// Each prefix's words split into what may follow as an argument (a
	// subcommand) and its flags: flags are offered only for a word that
	// starts with '-', so that file arguments and flag values complete
	// as files.
	subs, flags := map[string][]string{}, map[string][]string{}
	for _, p := range prefixes {
		for _, w := range words[p] {
			if strings.HasPrefix(w, "-") {
				flags[p] = append(flags[p], w)
			} else {
				subs[p] = append(subs[p], w)
			}
		}
	}
	switch fs.Arg(0) {
	case "bash", "zsh":
		fmt.Fprint(stdout, bashCompletion(fs.Arg(0), prefixes, subs, flags))
	case "fish":
		fmt.Fprint(stdout, fishCompletion(prefixes, subs, flags))
	default:
		return usageError("completion", fmt.Sprintf("unknown shell %q: bash, zsh or fish", fs.Arg(0)))
	}
	return nil
}

// bashCompletion is the bash script; zsh runs the same one through
// bashcompinit, one script to keep true instead of two.
func bashCompletion(shell string, prefixes []string, subs, flags map[string][]string) string {
	var b strings.Builder
	if shell == "zsh" {
		b.WriteString("# sluice completion for zsh: add to ~/.zshrc: source <(sluice completion zsh)\n")
		b.WriteString("autoload -U +X compinit && compinit\nautoload -U +X bashcompinit && bashcompinit\n")
	} else {
		b.WriteString("# sluice completion for bash: source <(sluice completion bash)\n")
	}
	b.WriteString(`_sluice() {
  local cur=${COMP_WORDS[COMP_CWORD]} key="" w i
  COMPREPLY=()
  for ((i = 1; i < COMP_CWORD; i++)); do
    w=${COMP_WORDS[i]}
    if [[ $key == run && $w == -- ]]; then
      # COMMAND, then its own arguments (files, by default)
      ((i == COMP_CWORD - 1)) && COMPREPLY=($(compgen -c -- "$cur"))
      return
    fi
    [[ $w == -* ]] && continue
    case "${key:+$key }$w" in
`)
	for _, p := range prefixes {
		if p != "" && !strings.HasPrefix(p, "help") {
			fmt.Fprintf(&b, "      %q) key=%q ;;\n", p, p)
		}
	}
	b.WriteString("    esac\n  done\n  if [[ $cur == -* ]]; then\n    case \"$key\" in\n")
	for _, p := range prefixes {
		if len(flags[p]) > 0 {
			fmt.Fprintf(&b, "      %q) COMPREPLY=($(compgen -W %q -- \"$cur\")) ;;\n", p, strings.Join(flags[p], " "))
		}
	}
	b.WriteString("    esac\n  else\n    case \"$key\" in\n")
	for _, p := range prefixes {
		if len(subs[p]) > 0 {
			fmt.Fprintf(&b, "      %q) COMPREPLY=($(compgen -W %q -- \"$cur\")) ;;\n", p, strings.Join(subs[p], " "))
		}
	}
	b.WriteString("    esac\n  fi\n}\ncomplete -o default -F _sluice sluice\n")
	return b.String()
}

// fishCompletion is the fish script. Files stay on offer wherever no
// subcommand is expected (file arguments, flag values).
func fishCompletion(prefixes []string, subs, flags map[string][]string) string {
	var b strings.Builder
	b.WriteString("# sluice completion for fish: sluice completion fish > ~/.config/fish/completions/sluice.fish\n")
	cond := func(p string) string {
		if p == "" {
			return "__fish_use_subcommand"
		}
		parts := strings.Fields(p)
		c := "__fish_seen_subcommand_from " + parts[0]
		if len(parts) == 2 {
			c += "; and __fish_seen_subcommand_from " + parts[1]
		}
		return c
	}
	for _, p := range prefixes {
		if len(subs[p]) > 0 {
			c := cond(p)
			if p != "" {
				c += "; and not __fish_seen_subcommand_from " + strings.Join(subs[p], " ")
			}
			fmt.Fprintf(&b, "complete -c sluice -n '%s' -f -a '%s'\n", c, strings.Join(subs[p], " "))
		}
		for _, w := range flags[p] {
			if name, ok := strings.CutPrefix(w, "--"); ok {
				fmt.Fprintf(&b, "complete -c sluice -n '%s' -l %s\n", cond(p), name)
			} else {
				fmt.Fprintf(&b, "complete -c sluice -n '%s' -o %s\n", cond(p), strings.TrimPrefix(w, "-"))
			}
		}
	}
	return b.String()
}
