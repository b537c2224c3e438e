package gateway

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/sluicegw/sluice/policy"
	"github.com/sluicegw/sluice/policy/importer"
)

// PolicySource is where a gateway's policy comes from: a file, entries
// given on the command line, or both. Load reads it anew each time, so a
// reload sees the file as it is now.
type PolicySource struct {
	// File is the policy file; empty for none; "-" for standard input
	// (read once: a reload reads nothing new).
	File string
	// Allow and AllowPrivate are --allow and --allow-private
	// HOST[:PORTS] entries added to the file's. An entry for a host or
	// range the file has adds its ports to the file's entry.
	Allow, AllowPrivate []string
	// Accept are the warnings (policy.Risks) accepted for the flags'
	// entries, as `accept:` does in a file.
	Accept []string
}

// Load reads the policy. Errors name file:line, all of them at once;
// warnings are returned for the caller to show, with the errors too (the
// warnings of the entries that had none), so that a person sees both in
// one round.
func (s PolicySource) Load() (*policy.Policy, []policy.Warning, error) {
	var entries []policy.Entry
	var errs policy.Errors
	if s.File != "" {
		data, err := s.read()
		if err != nil {
			return nil, nil, err
		}
		name := s.File
		if name == "-" {
			name = "<stdin>"
		}
		fe, err := policy.ParsePartial(name, data)
		var pe policy.Errors
		switch {
		case errors.As(err, &pe):
			if f, derr := importer.Detect(data); derr == nil {
				// Another tool's allow-list: say what it is and how to
				// convert it. A list of hosts is also what a broken
				// policy can look like, so its errors stay.
				hint := policy.Error{Source: name, Msg: fmt.Sprintf(
					"this is %s, not a sluice policy; convert it with: sluice policy import %s > policy.yaml", importer.Describe(f), shellQuote(s.File))}
				if f != importer.List {
					return nil, nil, policy.Errors{hint}
				}
				errs = append(errs, hint)
			}
			errs = append(errs, pe...)
		case err != nil:
			return nil, nil, err
		}
		entries = append(entries, fe...)
	}
	for _, a := range s.Accept {
		if !slices.Contains(policy.Risks, a) {
			errs = append(errs, policy.Error{Source: "--accept " + a,
				Msg: "unknown warning; one of " + strings.Join(policy.Risks, ", ")})
		}
	}
	flags := func(values []string, private bool) {
		for _, f := range values {
			e, err := policy.ParseAllow(f, private)
			if err != nil {
				var pe policy.Error
				if errors.As(err, &pe) {
					errs = append(errs, pe)
					continue
				}
				errs = append(errs, policy.Error{Source: "--allow " + f, Msg: err.Error()})
				continue
			}
			e.Accept = slices.Clone(s.Accept)
			merged, err := mergeFlag(entries, e)
			var pe policy.Error
			if errors.As(err, &pe) {
				errs = append(errs, pe)
				continue
			}
			entries = merged
		}
	}
	flags(s.Allow, false)
	flags(s.AllowPrivate, true)
	p, err := policy.New(entries)
	var warnings []policy.Warning
	if err == nil {
		warnings = policy.Lint(p)
	}
	if len(errs) > 0 {
		if err != nil {
			var pe policy.Errors
			if errors.As(err, &pe) {
				errs = append(errs, pe...)
			}
		}
		return nil, warnings, errs
	}
	if err != nil {
		return nil, nil, err
	}
	return p, warnings, nil
}

// mergeFlag adds a command-line entry to entries: to the entry for the
// same host or range if there is one (its ports added, private if the
// flag was --allow-private), as a new entry otherwise. A person who runs
// --allow api.github.com:8443 beside a file that lists api.github.com
// means one more port, not a conflict.
func mergeFlag(entries []policy.Entry, e policy.Entry) ([]policy.Entry, error) {
	for i := range entries {
		old := &entries[i]
		if old.Host != e.Host || old.Prefix != e.Prefix {
			continue
		}
		if old.Inspected() {
			for _, port := range e.Ports {
				if !slices.Contains(old.Ports, port) {
					return entries, policy.Error{Source: e.Source, Msg: fmt.Sprintf(
						"%s has git or http rules at %s, which are not checked on port %d; add %d to that entry's tls_ports (or http_ports) instead",
						old.Host, old.Source, port, port)}
				}
			}
		}
		ports := slices.Concat(old.Ports, e.Ports)
		slices.Sort(ports)
		old.Ports = slices.Compact(ports)
		old.Private = old.Private || e.Private
		for _, a := range e.Accept {
			if !slices.Contains(old.Accept, a) && strings.HasPrefix(old.Source, "--allow") {
				old.Accept = append(old.Accept, a)
			}
		}
		if !strings.Contains(old.Source, e.Source) {
			old.Source += ", " + e.Source
		}
		return entries, nil
	}
	return append(entries, e), nil
}

// stdinPolicy holds standard input once read: a policy given as "-" is
// read once, and a reload finds the same bytes.
var stdinPolicy struct {
	data []byte
	err  error
	read bool
}

func (s PolicySource) read() ([]byte, error) {
	if s.File != "-" {
		return os.ReadFile(s.File)
	}
	if !stdinPolicy.read {
		stdinPolicy.data, stdinPolicy.err = io.ReadAll(os.Stdin)
		stdinPolicy.read = true
	}
	return stdinPolicy.data, stdinPolicy.err
}

// String names the source for a person: the file and the flags.
func (s PolicySource) String() string {
	var parts []string
	if s.File != "" {
		parts = append(parts, s.File)
	}
	for _, a := range s.Allow {
		parts = append(parts, "--allow "+a)
	}
	for _, a := range s.AllowPrivate {
		parts = append(parts, "--allow-private "+a)
	}
	return strings.Join(parts, " ")
}

// shellQuote quotes a file name for a command line a person copies, when
// it holds anything but letters, digits and ./_-.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789./_-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
