package firewall

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// ForgetFlows deletes the connection-tracking entries of every flow started
// from an address in prefixes (an agent's subnets), in the namespace
// netnsFd (-1: the calling thread's), and says how many it deleted.
//
// An entry outlives the agent that made it (a closed TCP flow for seconds,
// an established one for days), and a later agent on the same addresses
// that happens to reuse a source port inherits it: a SYN that meets an
// entry closed by the other side's reset is not treated as new, so it
// keeps that entry's verdict and address translation. It would be let
// through as established, past the sets of the new policy, or redirected
// to the port of a proxy that is gone (a connection refused, or a
// connection to whatever listens there now). So the entries of an agent's
// subnets are deleted before its command starts and after it ends.
func ForgetFlows(netnsFd int, prefixes []netip.Prefix) (int, error) {
	cfg := &netlink.Config{}
	if netnsFd >= 0 {
		cfg.NetNS = netnsFd
	}
	c, err := conntrack.Dial(cfg)
	if err != nil {
		return 0, fmt.Errorf("conntrack: %w", err)
	}
	defer c.Close()
	flows, err := c.Dump(nil)
	if err != nil {
		return 0, fmt.Errorf("conntrack dump: %w", err)
	}
	n := 0
	for _, f := range flows {
		if !inAny(prefixes, f.TupleOrig.IP.SourceAddress) {
			continue
		}
		// An entry may end by itself between the dump and the delete.
		if err := c.Delete(f); err != nil && !errors.Is(err, unix.ENOENT) {
			return n, fmt.Errorf("conntrack delete %v: %w", f.TupleOrig, err)
		}
		n++
	}
	return n, nil
}

func inAny(prefixes []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
