package gateway

import (
	"errors"
	"os"
	"strings"

	"github.com/sluicegw/sluice/policy"
)

// PolicySource is where a gateway's policy comes from: a file, entries
// given on the command line, or both. Load reads it anew each time, so a
// reload sees the file as it is now.
type PolicySource struct {
	// File is the policy file; empty for none.
	File string
	// Allow are --allow HOST[:PORT] entries added to the file's.
	Allow []string
}

// Load reads the policy. Errors name file:line, all of them at once;
// warnings are returned for the caller to show.
func (s PolicySource) Load() (*policy.Policy, []policy.Warning, error) {
	var entries []policy.Entry
	var errs policy.Errors
	if s.File != "" {
		data, err := os.ReadFile(s.File)
		if err != nil {
			return nil, nil, err
		}
		fe, err := policy.ParseFile(s.File, data)
		var pe policy.Errors
		switch {
		case errors.As(err, &pe):
			errs = append(errs, pe...)
		case err != nil:
			return nil, nil, err
		}
		entries = append(entries, fe...)
	}
	for _, f := range s.Allow {
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

// String names the source for a person: the file and the flags.
func (s PolicySource) String() string {
	var parts []string
	if s.File != "" {
		parts = append(parts, s.File)
	}
	for _, a := range s.Allow {
		parts = append(parts, "--allow "+a)
	}
	return strings.Join(parts, " ")
}
