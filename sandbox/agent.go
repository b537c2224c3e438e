package sandbox

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// AgentConfig describes the link between the gateway (the namespace the
// calling process is in) and a new agent namespace.
type AgentConfig struct {
	// Iface names the gateway's end of the veth; the agent's end is eth0.
	Iface string
	// Net4 is the link's IPv4 subnet: the gateway takes its first address,
	// the agent the second.
	Net4 netip.Prefix
	// Net6, when valid, gives the agent IPv6 the same way.
	Net6 netip.Prefix
	// Namespace, when set, names the agent's namespace under NetNSDir:
	// made when absent, adopted (with the processes that run in it) when
	// present. Empty: a new namespace without a name, which lives as
	// long as its processes and the Agent's handle.
	Namespace string
	// Log receives what the agent's supervision has to say.
	Log *slog.Logger
}

// Agent is a network namespace whose only link leads to the gateway; or,
// in router mode (Router, see InterfaceAgent), the clients behind an
// existing interface of the gateway.
type Agent struct {
	// Fd is an open handle of the agent's namespace; -1 in router mode.
	Fd int
	// Iface is the gateway's end of the veth; in router mode, the
	// interface the clients are behind.
	Iface string
	// Router says the agent is every client behind Iface, an interface of
	// the user's that sluice neither made nor changes: it has no
	// namespace, no process of sluice's and no address of its own, and
	// Close leaves the interface as it is.
	Router bool
	// Namespace is the namespace's name under NetNSDir, "" when it has
	// none; Adopted says it was there before NewAgent.
	Namespace string
	Adopted   bool
	// Gateway and Addr are the gateway's and the agent's IPv4 addresses on
	// the link; Gateway6 and Addr6 are invalid when the agent has no IPv6.
	// In router mode Gateway and Gateway6 are the interface's addresses,
	// and Addr and Addr6 are invalid: the clients are many.
	Gateway, Addr, Gateway6, Addr6 netip.Addr
	// Net4 and Net6 are the agent's networks: the link's, or in router
	// mode the interface's (its clients'). Net6 is invalid when the agent
	// has no IPv6.
	Net4, Net6 netip.Prefix

	mu   sync.Mutex  // guards init: Kill may come from another goroutine than Run
	init *os.Process // the first process of the agent's PID namespace
	log  *slog.Logger
	// link is the gateway's end of the veth, as made (its index known):
	// the agent's start looks it up no more (each request queues behind
	// the other agents' for the kernel's routing lock).
	link netlink.Link
}

// hostAddrs returns the first and second host address of p.
func hostAddrs(p netip.Prefix) (gw, agent netip.Addr, err error) {
	p = p.Masked()
	gw = p.Addr().Next()
	agent = gw.Next()
	if !p.Contains(agent) || (p.Addr().Is4() && p.Bits() > 30) {
		return gw, agent, fmt.Errorf("%s is too small for a gateway and an agent address", p)
	}
	return gw, agent, nil
}

// NewAgent creates a network namespace (or, with cfg.Namespace, opens
// the named one, making it when absent) and a veth pair into it, whose
// gateway end is numbered; Connect raises it and makes the gateway the
// agent's default route.
//
// Until Connect the gateway's end is down: a veth delivers nothing to a
// peer that is down, so no packet crosses the link whatever the
// namespace's processes do with their end (an adopted namespace has
// processes, possibly root ones that raise and number links). The
// caller installs the ruleset for cfg.Iface, and then calls Connect.
func NewAgent(cfg AgentConfig) (a *Agent, err error) {
	a = &Agent{Fd: -1, Iface: cfg.Iface, Namespace: cfg.Namespace, log: cmp.Or(cfg.Log, slog.New(slog.DiscardHandler))}
	if a.Gateway, a.Addr, err = hostAddrs(cfg.Net4); err != nil {
		return nil, err
	}
	if cfg.Net6.IsValid() {
		if a.Gateway6, a.Addr6, err = hostAddrs(cfg.Net6); err != nil {
			return nil, err
		}
	}
	if cfg.Namespace != "" {
		a.Fd, a.Adopted, err = openNamedNetNS(cfg.Namespace)
	} else {
		a.Fd, err = newNetNS()
	}
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	h, err := netlink.NewHandleAt(netns.NsHandle(a.Fd))
	if err != nil {
		return nil, fmt.Errorf("netlink handle in agent namespace: %w", err)
	}
	defer h.Close()
	if a.Adopted {
		// The agent's end of a link of an earlier run whose gateway
		// namespace is not this one (a run in this namespace had its link
		// removed before): deleting it deletes its peer too, and the new
		// link takes its name.
		if old, err := h.LinkByName("eth0"); err == nil {
			if err := h.LinkDel(old); err != nil && !errors.Is(err, unix.ENODEV) {
				return nil, fmt.Errorf("remove the link eth0 an earlier run left in %s: %w", cfg.Namespace, err)
			}
		}
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: cfg.Iface},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(a.Fd),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("create veth %s: %w", cfg.Iface, err)
	}
	// The gateway's end takes no router advertisements from the agent.
	_ = writeSysctl("net/ipv6/conf/"+cfg.Iface+"/accept_ra", "0")
	// LinkAdd has looked up the index of the link it made.
	if err := configure(nil, veth, false, cfg.Net4, a.Gateway, cfg.Net6, a.Gateway6, netip.Addr{}, netip.Addr{}); err != nil {
		return nil, fmt.Errorf("gateway side: %w", err)
	}
	// An adopted namespace's loopback is up already: one routing request
	// less, of the dozen an agent's start queues behind its neighbours'.
	lo, err := h.LinkByName("lo")
	if err == nil && lo.Attrs().Flags&net.FlagUp == 0 {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		return nil, fmt.Errorf("agent loopback: %w", err)
	}
	a.Net4, a.Net6, a.link = cfg.Net4, cfg.Net6, veth
	return a, nil
}

// Connect raises the gateway's end of the link, then numbers, raises and
// routes the agent's: from then on the agent's packets reach the
// gateway, and its ruleset must be in place. The agent's end goes up
// last, when the gateway's is up already, so that the kernel sets it
// working at once (a device raised before its peer starts sending only
// once the kernel's link watcher has seen the carrier, a moment later,
// and drops what is sent meanwhile). In router mode it does nothing: the
// interface is the user's, up already.
func (a *Agent) Connect() error {
	if a.Router {
		return nil
	}
	if err := netlink.LinkSetUp(a.link); err != nil {
		return fmt.Errorf("raise %s: %w", a.Iface, err)
	}
	h, err := netlink.NewHandleAt(netns.NsHandle(a.Fd))
	if err != nil {
		return fmt.Errorf("netlink handle in agent namespace: %w", err)
	}
	defer h.Close()
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("find the agent's end eth0: %w", err)
	}
	if err := configure(h, eth0, true, a.Net4, a.Addr, a.Net6, a.Addr6, a.Gateway, a.Gateway6); err != nil {
		return fmt.Errorf("agent side: %w", err)
	}
	return nil
}

// configure numbers one end of the link, and raises it when up; with a
// via address it also adds the default route(s). An address or route
// that is there already (an adopted namespace's root may have made it)
// is replaced. h nil means the current namespace.
func configure(h *netlink.Handle, link netlink.Link, up bool, net4 netip.Prefix, addr4 netip.Addr, net6 netip.Prefix, addr6, via4, via6 netip.Addr) error {
	if h == nil {
		var err error
		if h, err = netlink.NewHandle(); err != nil {
			return err
		}
		defer h.Close()
	}
	name := link.Attrs().Name
	ipnet := func(a netip.Addr, p netip.Prefix) *net.IPNet {
		return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(p.Bits(), a.BitLen())}
	}
	if err := h.AddrReplace(link, &netlink.Addr{IPNet: ipnet(addr4, net4)}); err != nil {
		return fmt.Errorf("address %s on %s: %w", addr4, name, err)
	}
	if addr6.IsValid() {
		// No duplicate address detection: the link has two ends, both ours,
		// and DAD would hold the address back for a second or more.
		if err := h.AddrReplace(link, &netlink.Addr{IPNet: ipnet(addr6, net6), Flags: unix.IFA_F_NODAD}); err != nil {
			return fmt.Errorf("address %s on %s: %w", addr6, name, err)
		}
	}
	if !up {
		return nil
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("raise %s: %w", name, err)
	}
	for _, via := range []netip.Addr{via4, via6} {
		if !via.IsValid() {
			continue
		}
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: via.AsSlice()}
		if err := h.RouteReplace(r); err != nil {
			return fmt.Errorf("default route via %s: %w", via, err)
		}
	}
	return nil
}

// newNetNS creates a network namespace and returns a handle of it, without
// ever moving a thread that other goroutines may use: the thread that
// unshares exits with its goroutine.
func newNetNS() (int, error) {
	type result struct {
		fd  int
		err error
	}
	c := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: this thread is in the new namespace and dies with the goroutine.
		if err := notMainThread(); err != nil {
			c <- result{-1, err}
			return
		}
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			c <- result{-1, fmt.Errorf("create network namespace: %w", err)}
			return
		}
		fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		c <- result{fd, err}
	}()
	r := <-c
	return r.fd, r.err
}

// notMainThread refuses to move the process's main thread into another
// namespace: Go cannot end the main thread, so it would stay there, and
// /proc/PID/ns/net (which tools read for the whole process) would change.
// Programs using this package lock their main goroutine to the main
// thread in an init function, which keeps every other goroutine off it.
func notMainThread() error {
	if unix.Gettid() == unix.Getpid() {
		return errors.New("sandbox: namespace switch attempted on the main thread; call runtime.LockOSThread in main's init")
	}
	return nil
}

// Run runs l in the agent and waits for it to end, relaying the signals
// that arrive on sigs (a second one kills it). started is called with the
// pid of the agent's first process as soon as it runs. Run returns the
// command's exit status the way a shell reports it (128+N when signal N
// ended it). l.NetNS, when set, must be the agent's own Namespace.
func (a *Agent) Run(l Launch, sigs <-chan os.Signal, started func(pid int)) (int, error) {
	if a.Router {
		return 0, ErrRouterMode
	}
	if l.NetNS != "" && l.NetNS != a.Namespace {
		return 0, fmt.Errorf("the command is for network namespace %s, not the agent's", l.NetNS)
	}
	return runIn(a.Fd, l, sigs, a.log, func(p *os.Process) {
		a.mu.Lock()
		a.init = p
		a.mu.Unlock()
		started(p.Pid)
	})
}

// Run runs l in the named network namespace l.NetNS (an agent's that a
// gateway serves, such as sluice-NAME), exactly as Agent.Run runs it in
// an agent it made: the same init, PID and mount namespaces, private
// resolv.conf and CA bundle, hidden side doors and user; signals relayed
// and the exit status returned the same way. started, when not nil, is
// called with the pid of the command's first process.
func (l Launch) Run(sigs <-chan os.Signal, started func(pid int)) (int, error) {
	if l.NetNS == "" {
		return 0, errors.New("no network namespace to run the command in")
	}
	fd, err := openNetNSName(l.NetNS)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	return runIn(fd, l, sigs, cmp.Or(l.Log, slog.New(slog.DiscardHandler)), func(p *os.Process) {
		if started != nil {
			started(p.Pid)
		}
	})
}

// runIn starts l in the network namespace fd and supervises it until it
// ends (see Agent.Run).
func runIn(fd int, l Launch, sigs <-chan os.Signal, log *slog.Logger, started func(*os.Process)) (int, error) {
	cmd := l.cmd()
	if err := startIn(fd, cmd); err != nil {
		return 0, fmt.Errorf("start %s: %w", l.Args[0], err)
	}
	started(cmd.Process)
	interactive := l.Interactive()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	received := 0
	for {
		select {
		case sig := <-sigs:
			received++
			if received > 1 {
				log.Warn("second signal: killing the command", "signal", sig)
				_ = cmd.Process.Kill()
				continue
			}
			if interactive && (sig == syscall.SIGINT || sig == syscall.SIGQUIT) {
				continue // the terminal sent it to the command too
			}
			_ = cmd.Process.Signal(sig)
		case err := <-done:
			return exitStatus(cmd, err)
		}
	}
}

func exitStatus(cmd *exec.Cmd, err error) (int, error) {
	st := cmd.ProcessState
	if st == nil {
		return 0, err
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return st.ExitCode(), nil
}

// startIn starts cmd inside the network namespace fd, as the first
// process of a PID namespace of its own (cmd.SysProcAttr asks for it):
// every process it starts stays in that PID namespace, even one that
// moves to another network namespace, and dies with it (see Kill). Only
// the new process is in the namespace: the thread that forks it is
// discarded afterwards.
func startIn(fd int, cmd *exec.Cmd) error { return inNetNS(fd, cmd.Start) }

// Kill ends every process of the agent. Killing the first process of its
// PID namespace makes the kernel kill all the others; processes that
// entered the network namespace some other way (`ip netns exec`, or
// through /proc/PID/ns/net) are found by scanning /proc, again until a
// scan finds none left (or a bound is reached), so that one forked while
// a scan ran is not missed. It reports how many processes it signalled
// directly.
func (a *Agent) Kill() int {
	n := 0
	a.mu.Lock()
	first := a.init
	a.mu.Unlock()
	if first != nil && first.Kill() == nil {
		n++
	}
	return n + a.killNetNS()
}

// killRounds bounds the scans of Kill: a process that takes longer to
// die after SIGKILL (in an uninterruptible sleep) is left to die later.
const killRounds = 200

// killNetNS sends SIGKILL to every process whose network namespace is the
// agent's, until none is left.
func (a *Agent) killNetNS() int {
	var st unix.Stat_t
	if a.Fd < 0 || unix.Fstat(a.Fd, &st) != nil {
		return 0
	}
	signalled := map[int]bool{}
	for range killRounds {
		found := 0
		// /proc/PID/ns/net is looked at directly: listing /proc/PID/ns,
		// a directory of mode 0511 owned by the process's user, would
		// need CAP_DAC_READ_SEARCH for other users' processes under a
		// unit that has no CAP_DAC_OVERRIDE.
		for _, pid := range procPIDs() {
			var pst unix.Stat_t
			if pid == os.Getpid() || unix.Stat("/proc/"+strconv.Itoa(pid)+"/ns/net", &pst) != nil || pst.Ino != st.Ino || pst.Dev != st.Dev {
				continue
			}
			found++
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				signalled[pid] = true
			}
		}
		if found == 0 {
			break
		}
		// A killed process keeps its namespace until the kernel has
		// ended it: look again once it has had the time to.
		time.Sleep(5 * time.Millisecond)
	}
	return len(signalled)
}

// procPIDs lists the processes in /proc.
func procPIDs() []int {
	entries, _ := os.ReadDir("/proc")
	pids := make([]int, 0, len(entries))
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Close deletes the veth (both ends go) and releases the namespace handle.
// A namespace without a name disappears with its last process; a named
// one stays, with its processes, until RemoveName. In router mode it does
// nothing: the interface is the user's, and stays as it is.
func (a *Agent) Close() error {
	if a.Router {
		return nil
	}
	var errs []error
	if _, err := DeleteLink(a.Iface); err != nil {
		errs = append(errs, fmt.Errorf("delete %s: %w", a.Iface, err))
	}
	if a.Fd >= 0 {
		unix.Close(a.Fd)
		a.Fd = -1
	}
	return errors.Join(errs...)
}

// RemoveName removes the name of a named namespace (unbinds and removes
// NetNSDir/NAME, as `ip netns del` does): nothing can enter it by name
// any more, and it goes once its processes and the Agent's handle do.
// Without a name, it does nothing.
func (a *Agent) RemoveName() error {
	if a.Namespace == "" {
		return nil
	}
	return removeNamedNetNS(a.Namespace)
}

// DeleteLink removes a link left by an earlier run and reports whether
// there was one.
func DeleteLink(name string) (bool, error) {
	link, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return false, nil
		}
		return false, err
	}
	// The kernel deletes a veth with its peer's namespace: a dead agent's
	// link can go between the lookup and the delete (its last process was
	// just killed), and then it is gone as asked.
	if err := netlink.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return true, err
	}
	return true, nil
}

// doomedGroup is the interface group DeleteLinks gathers links in to
// delete them with one request. Only links of dead runs are ever put in
// it, so a link that one DeleteLinks gathered and did not delete (it
// failed, or its process died) goes with the next one's.
const doomedGroup = 0x51ce

// DeleteLinks removes links left by earlier runs, all in one request, and
// returns the names of those that were there; on an error, none is known
// to be gone. The kernel waits for a
// grace period of its own in every request that deletes links (about
// 20 ms on a small VM); a request for a group of links waits once. A
// serve that was killed with 100 agents leaves 100 links.
func DeleteLinks(names []string) ([]string, error) {
	var found []string
	for _, name := range names {
		link, err := netlink.LinkByName(name)
		if err != nil {
			var nf netlink.LinkNotFoundError
			if errors.As(err, &nf) {
				continue
			}
			return nil, err
		}
		if err := netlink.LinkSetGroup(link, doomedGroup); err != nil {
			if errors.Is(err, unix.ENODEV) {
				continue // gone with its peer's namespace meanwhile
			}
			return nil, fmt.Errorf("gather link %s for deletion: %w", name, err)
		}
		found = append(found, name)
	}
	if len(found) == 0 {
		return nil, nil
	}
	req := nl.NewNetlinkRequest(unix.RTM_DELLINK, unix.NLM_F_ACK)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(doomedGroup)))
	// ENODEV: none is left in the group (their peers' namespaces went).
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil && !errors.Is(err, unix.ENODEV) {
		return nil, fmt.Errorf("delete the links %v of earlier runs: %w", found, err)
	}
	return found, nil
}

func writeSysctl(path, value string) error {
	return os.WriteFile("/proc/sys/"+path, []byte(value), 0o644)
}

func readSysctl(path string) (string, error) {
	b, err := os.ReadFile("/proc/sys/" + path)
	if err != nil {
		return "", err
	}
	return string(trimNL(b)), nil
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}
