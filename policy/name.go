package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/net/idna"
)

// Limits from RFC 1035 §2.3.4, in the presentation form without the root dot.
const (
	maxNameLen  = 253
	maxLabelLen = 63
)

// CanonicalName returns name in the one form every match is made on: lower
// case ASCII, no trailing dot, labels of letters, digits, '-' and '_' only.
// It refuses IP literals, empty labels and anything longer than DNS allows.
//
// It is used on names that arrive from the agent (DNS questions, SNI, Host
// headers) and so accepts no Unicode: a name on the wire is already punycode.
func CanonicalName(name string) (string, error) {
	name = strings.TrimSuffix(name, ".")
	if name == "" {
		return "", errors.New("empty name")
	}
	if len(name) > maxNameLen {
		return "", fmt.Errorf("name is %d bytes long, more than %d", len(name), maxNameLen)
	}
	if mayBeAddr(name) {
		if _, err := netip.ParseAddr(name); err == nil {
			return "", fmt.Errorf("%q is an IP address, not a host name", name)
		}
	}
	if canonical(name) {
		return name, nil // the common case: no copy
	}
	b := []byte(name)
	labelStart := 0
	for i := 0; i <= len(b); i++ {
		if i == len(b) || b[i] == '.' {
			n := i - labelStart
			if n == 0 {
				return "", errors.New("empty label")
			}
			if n > maxLabelLen {
				return "", fmt.Errorf("label of %d bytes, more than %d", n, maxLabelLen)
			}
			labelStart = i + 1
			continue
		}
		c := b[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		case 'A' <= c && c <= 'Z':
			b[i] = c + 'a' - 'A'
		default:
			return "", fmt.Errorf("byte %q is not allowed in a host name", c)
		}
	}
	return string(b), nil
}

// policyName turns a host written by a person (possibly Unicode, possibly
// mixed case) into its canonical ASCII form.
func policyName(name string) (string, error) {
	for i := 0; i < len(name); i++ {
		if name[i] >= 0x80 {
			ascii, err := idna.Lookup.ToASCII(strings.TrimSuffix(name, "."))
			if err != nil {
				return "", fmt.Errorf("%q is not a valid host name: %v", name, err)
			}
			return CanonicalName(ascii)
		}
	}
	return CanonicalName(name)
}

// canonical reports whether name is already in canonical form: lower-case
// letters, digits, '-' and '_' in labels of 1 to 63 bytes.
func canonical(name string) bool {
	labelStart := 0
	for i := 0; i <= len(name); i++ {
		if i == len(name) || name[i] == '.' {
			if n := i - labelStart; n == 0 || n > maxLabelLen {
				return false
			}
			labelStart = i + 1
			continue
		}
		switch c := name[i]; {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}

// mayBeAddr reports whether netip.ParseAddr could take s: an IPv6 form
// has a colon, and the only IPv4 form it reads is dotted decimal. Asked
// first because a name that ParseAddr refuses costs an error value (two
// allocations), on the path of every question and connection.
func mayBeAddr(s string) bool {
	for i := range len(s) {
		if c := s[i]; c != '.' && (c < '0' || c > '9') {
			return strings.IndexByte(s, ':') >= 0
		}
	}
	return true
}
