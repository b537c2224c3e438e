package gateway

import (
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/sluicegw/sluice/dnsfilter"
	"github.com/sluicegw/sluice/firewall"
	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
)

// Config is what a gateway enforces and where; zero values take the
// defaults. Validate checks it (New does).
type Config struct {
	// Name is the agent's stable name, carried by every record: what a
	// reviewer sees. Letters, digits, '.', '_' and '-', at most 32.
	Name string
	// Policy is the policy in force at start (Reload replaces it).
	Policy *policy.Policy
	// PolicySource is where Reload reads the policy from.
	PolicySource PolicySource
	// AgentNet is the IPv4 link to the agent: the gateway takes its first
	// address, the agent the second. When invalid, the first free /30 of
	// AgentPool.
	AgentNet netip.Prefix
	// AgentNet6 gives the agent IPv6 the same way, from AgentPool6 when
	// invalid. The agent gets no IPv6 when NoIPv6 is set or the gateway
	// has no default IPv6 route.
	AgentNet6 netip.Prefix
	NoIPv6    bool
	// Namespace, when set, is the name of the agent's network namespace
	// under /run/netns (sluice serve: NamespaceFor(Name), "sluice-" + the
	// agent's name; the prefix is required, see ValidNamespace), so that
	// `ip netns exec NAME` and `sluice exec` run commands in it: made
	// when absent, adopted when a run before left it (Detach, or a
	// gateway killed), so that the processes inside outlive a restart of
	// the gateway. Its link and table are made anew; until the new table
	// is in, nothing from the namespace crosses its link (see New). Close
	// kills its processes and removes it; Detach keeps both, cut off.
	// Its resolv.conf and CA bundle are written at start and recorded
	// for `sluice exec`. Empty: a fresh namespace of the run's own, gone
	// with it (sluice run).
	Namespace string
	// Interface, when set, is router mode: the agent is every client
	// behind this existing interface or bridge of the gateway's namespace
	// (VMs on a bridge), and everything arriving on it is the agent's
	// traffic, with the treatment an agent namespace gets. No namespace
	// and no link are made: the interface's own addresses are the
	// gateway's, its networks the agent's (its IPv4 network, and its
	// global IPv6 one unless NoIPv6), and addressing and DHCP are the
	// user's setup. It must be up, have an IPv4 address, and not carry
	// the gateway's default route nor be another agent's. sluice never
	// deletes or changes it (Close, Detach and the next start after a
	// crash leave it as it is). RunCommand refuses: there is no namespace
	// to run a command in. Not with Namespace, AgentNet or AgentNet6.
	Interface string
	// Upstreams are the resolvers allowed names are forwarded to.
	Upstreams []netip.AddrPort
	// Global are documentation or benchmarking ranges that answers may
	// point into as if globally reachable (labs and tests).
	Global []netip.Prefix
	// MinTTL and MaxTTL bound how long an answered address stays open;
	// HelloTimeout, IdleTimeout and MaxConns bound the proxy's
	// connections. Zero values take the defaults of dnsfilter and
	// tlsinspect.
	MinTTL, MaxTTL            time.Duration
	HelloTimeout, IdleTimeout time.Duration
	MaxConns                  int64
	// UpstreamRoots verify the certificates of the hosts whose TLS sluice
	// terminates (those with git or http rules); nil: the system's roots
	// (SSL_CERT_FILE works). Verification is never skipped.
	UpstreamRoots *x509.CertPool
	// StateDir holds the crash-safe record of what the gateway changed,
	// and the interception CA (CADir).
	StateDir string
	// Table names the agent's nftables table (TablePrefix+Name when empty)
	// and LogGroup its NFLOG group (the first free from DefaultLogGroup
	// when zero). No two agents of a namespace share either.
	Table    string
	LogGroup uint16
	// Journal stores every decision (a log, later a database). The
	// layers hand their records to it through a bounded, non-blocking
	// journal.Async; a Journal that fails to store ends the gateway.
	Journal journal.Writer
	// Log receives what the gateway has to say about itself.
	Log *slog.Logger
	// Report is report mode (sluice serve's `mode: report`): the agent
	// reaches what it would with no filter, and every decision that
	// would have refused it is journaled as WouldRefuse with its reason
	// (see dnsfilter, firewall and tlsinspect's Config.Report for what
	// each layer still refuses: the gateway's own protection, its
	// limits, and the requests on hosts with git or http rules). A
	// policy change cuts nothing. It is not a sandbox.
	Report bool
	// Flows, when set, deletes tracked flows (of an earlier agent on the
	// same networks at start, of revoked addresses at a reload) in walks
	// shared with the other gateways of the namespace it was made in, the
	// gateway's: sluice serve's agents start and reload side by side.
	Flows *firewall.FlowSweeper
	// FlowsForgotten says the caller has deleted the tracked flows from
	// the agent's networks since the last agent on them ended, so that
	// the start walks no conntrack table for them: sluice serve does it
	// once for all its agents (every network they may get) before it
	// starts any, where a walk each would cost the kernel a pass over
	// the whole table a hundred times. Not for router mode.
	FlowsForgotten bool
	// AnswerTime, when set, is told how long each of the resolver's
	// answers took (sluice serve's latency histogram).
	AnswerTime func(time.Duration)

	// claimed is the slot sluice serve claimed for the agent beside its
	// others' (claimSlots), for New to take instead of claiming one.
	claimed *claimedSlot
	// peerNets are the networks sluice serve's other agents name for
	// their links: no answer may point into them (nor into the pools,
	// AgentPool and AgentPool6, where every other agent's link is).
	peerNets []netip.Prefix
	// upstreamsProbed says the caller probes the upstreams (sluice serve,
	// once for all its agents, which share them), so New does not.
	upstreamsProbed bool
}

// Validate reports every problem of c at once.
func (c *Config) Validate() error {
	var errs []error
	if !ValidName(c.Name) {
		errs = append(errs, fmt.Errorf("agent name %q: want 1 to 32 letters, digits, '.', '_' or '-'", c.Name))
	}
	if c.Policy == nil {
		errs = append(errs, errors.New("no policy"))
	}
	if c.AgentNet.IsValid() && (!c.AgentNet.Addr().Is4() || c.AgentNet.Bits() > 30) {
		errs = append(errs, fmt.Errorf("agent network %s: want an IPv4 prefix of /30 or wider, such as 198.19.255.252/30", c.AgentNet))
	}
	if c.AgentNet6.IsValid() && (!c.AgentNet6.Addr().Is6() || c.AgentNet6.Addr().Is4In6() || c.AgentNet6.Bits() > 126) {
		errs = append(errs, fmt.Errorf("agent network %s: want an IPv6 prefix such as fd5c:1ce0:5c1c::/64", c.AgentNet6))
	}
	if c.Namespace != "" && !ValidNamespace(c.Namespace) {
		errs = append(errs, fmt.Errorf("agent namespace %q: want %q and 1 to 32 letters, digits, '.', '_' or '-'", c.Namespace, NamespacePrefix))
	}
	if c.Interface != "" {
		if !validIfname(c.Interface) {
			errs = append(errs, fmt.Errorf("interface %q: want 1 to 15 letters, digits, '.', '_' or '-'", c.Interface))
		}
		if c.Namespace != "" || c.AgentNet.IsValid() || c.AgentNet6.IsValid() {
			errs = append(errs, errors.New("router mode (an interface) takes the interface's own addresses and has no namespace: no agent namespace or agent networks with it"))
		}
	}
	if c.Table != "" && !ValidName(c.Table) {
		errs = append(errs, fmt.Errorf("table %q: want 1 to 32 letters, digits, '.', '_' or '-'", c.Table))
	}
	if len(c.Upstreams) == 0 {
		errs = append(errs, errors.New("no upstream resolver"))
	}
	for _, u := range c.Upstreams {
		if !u.IsValid() || u.Port() == 0 {
			errs = append(errs, fmt.Errorf("upstream %s: want an address and a port", u))
		}
	}
	for _, g := range c.Global {
		if err := policy.CheckGlobalRange(g); err != nil {
			errs = append(errs, err)
		}
	}
	minTTL, maxTTL := orDefault(c.MinTTL, dnsfilter.DefaultMinTTL), orDefault(c.MaxTTL, dnsfilter.DefaultMaxTTL)
	if minTTL < 0 || maxTTL < 0 || minTTL > maxTTL {
		errs = append(errs, fmt.Errorf("min TTL %s and max TTL %s: want 0 <= min <= max", minTTL, maxTTL))
	}
	if c.HelloTimeout < 0 || c.IdleTimeout < 0 {
		errs = append(errs, errors.New("timeouts must not be negative"))
	}
	if c.MaxConns < 0 {
		errs = append(errs, errors.New("the connection limit must not be negative"))
	}
	if c.Journal == nil {
		errs = append(errs, errors.New("no journal"))
	}
	return errors.Join(errs...)
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// SystemResolvers returns the nameservers of /etc/resolv.conf, on port 53.
func SystemResolvers() ([]netip.AddrPort, error) {
	data, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		return nil, fmt.Errorf("read /etc/resolv.conf: %w", err)
	}
	var out []netip.AddrPort
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" {
			if a, err := netip.ParseAddr(f[1]); err == nil {
				out = append(out, netip.AddrPortFrom(a, 53))
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.New("/etc/resolv.conf names no nameserver")
	}
	return out, nil
}

// ParseUpstream reads ADDR or ADDR:PORT (port 53 by default; an IPv6
// address with a port in brackets).
func ParseUpstream(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap, nil
	}
	if a, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		return netip.AddrPortFrom(a, 53), nil
	}
	return netip.AddrPort{}, fmt.Errorf("upstream %q: want an IP address, optionally with a port", s)
}

// ValidName reports whether name can name an agent.
func ValidName(name string) bool {
	if name == "" || len(name) > 32 {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// NamespaceFor is the name under /run/netns of the namespace of the
// served agent name: sluice-NAME.
func NamespaceFor(name string) string { return NamespacePrefix + name }

// ValidNamespace reports whether name can name an agent's namespace:
// NamespacePrefix and a valid agent name. The prefix keeps a mistyped
// name from adopting a namespace that is not an agent's (a container's,
// the gateway's own): an agent's namespace gets a new link, and its
// processes are killed when the agent is closed.
func ValidNamespace(name string) bool {
	rest, ok := strings.CutPrefix(name, NamespacePrefix)
	return ok && ValidName(rest) && rest != "." && rest != ".."
}

// NameFor makes an agent name from a command: its base name, with what
// ValidName refuses replaced by '-'.
func NameFor(command string) string {
	base := command[strings.LastIndexByte(command, '/')+1:]
	b := []byte(base)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '-'
		}
	}
	name := string(b)
	if len(name) > 32 {
		name = name[:32]
	}
	if name == "" || name == "." || name == ".." {
		name = "agent"
	}
	return name
}
