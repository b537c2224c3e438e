package e2e

// Benchmarks of `sluice serve` with many agents (issue 13): reload time
// with 100 agents of 200 hosts each, the resolvers during that reload,
// start and restart after kill -9, resolver answers/s across 50 agents
// against one, and memory per idle agent. Each is a Benchmark, so `go
// test ./...` never runs them; they need root. bench/serve.sh runs them
// all and says how; the figures are in bench/README.md ("Issue 13:
// serve"). Every figure is reported, none asserted.
//
// Environment (all optional):
//
//	SLUICE_BENCH_AGENTS   agents of the reload benchmarks (100)
//	SLUICE_BENCH_HOSTS    hosts per policy (200)
//	SLUICE_BENCH_LOADED   agents under resolver load during the reload (10)
//	SLUICE_BENCH_SPREAD   agents of the resolver benchmark (50)
//	SLUICE_BENCH_DURATION a resolver phase (3s)
//	SLUICE_BENCH_SETTLE   idle time before memory is read (5s)
//	SLUICE_BENCH_AFTER    BenchmarkServeMemory reads memory again this long
//	                      after its load (0: not)
//	SLUICE_BENCH_HEAP     directory: BenchmarkServeMemory also runs serve
//	                      in this test binary and writes heap profiles there
//	SLUICE_BENCH_HEAP_AGAIN  and a second one this long after the first
//	SLUICE_BENCH_CPUPROFILE  path: every serve writes a CPU profile to
//	                      path.N when it stops (SLUICE_CPUPROFILE)
//	SLUICE_BENCH_KEEPLOGS directory: serve's logs are copied there
//	SLUICE_BENCH_PHASES   BenchmarkServeResolver's phases ("spread one few")
//	SLUICE_BENCH_PIN      0: BenchmarkServeResolver's serve is not pinned
//	SLUICE_BENCH_TMPFS    1: serve's /run/sluice is a tmpfs, as /run is on a
//	                      systemd host (default: a directory of the test's
//	                      temporary directory, on whatever file system it is)

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/sluicegw/sluice/gateway"
	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/testing/nstest"
)

// The test binary doubles as `sluice serve` (gateway.NewServer in this
// process) when SLUICE_BENCH_SERVE names a config, so that a heap profile
// can be taken of it (SIGUSR1 writes one, after a GC, to
// SLUICE_BENCH_HEAPPROFILE); the sluice binary has no such hook.
func init() {
	if cfg := os.Getenv("SLUICE_BENCH_SERVE"); cfg != "" {
		os.Exit(serveInProcess(cfg, os.Getenv("SLUICE_BENCH_HEAPPROFILE")))
	}
}

func serveInProcess(config, heap string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	gateway.RaiseFileLimit(log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGHUP, syscall.SIGUSR1)
	srv, err := gateway.NewServer(gateway.ServerConfig{File: config, Log: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 1
	}
	go func() {
		n := 0
		for s := range sig {
			if s == syscall.SIGHUP {
				srv.Reload()
				continue
			}
			runtime.GC()
			n++
			path := fmt.Sprintf("%s.%d", heap, n)
			f, err := os.Create(path)
			if err == nil {
				err = pprof.Lookup("heap").WriteTo(f, 0)
				f.Close()
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			// What stays resident once the garbage is collected and
			// returned to the kernel: the live part of the RSS.
			rssGC := procStatus(os.Getpid(), "VmRSS")
			debug.FreeOSMemory()
			log.Info("heap profile written", "path", path, "err", err, "heap_inuse", ms.HeapInuse, "stack_inuse", ms.StackInuse,
				"sys", ms.Sys, "goroutines", runtime.NumGoroutine(), "rss_kb_after_gc", rssGC, "rss_kb_after_free", procStatus(os.Getpid(), "VmRSS"))
		}
	}()
	err = srv.Run(ctx)
	if cerr := srv.Close(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 1
	}
	return 0
}

// benchLog prints a line of a benchmark's details to standard output:
// the testing package keeps only the first ten lines of a benchmark's
// log.
func benchLog(b *testing.B, format string, args ...any) {
	fmt.Printf("    %s: %s\n", b.Name(), fmt.Sprintf(format, args...))
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// benchAgent is one agent of a benchmark's serve config.
type benchAgent struct {
	name       string
	net4, net6 netip.Prefix
	gw         string // the gateway's address on the agent's link
	// ns is the agent's namespace as this process reaches it: its file
	// in the mount namespace serve runs in (benchServe.holder).
	ns string
}

// benchAgents names n agents after a fresh id and gives them /30s of
// 198.19.0.0/16 and /64s of 2001:db8:100::/48 (the test network, clear of
// the world's own links and of the default pools).
func benchAgents(n int) []benchAgent {
	id := nstest.Prefix()[2:]
	out := make([]benchAgent, n)
	for i := range out {
		v4 := netip.AddrFrom4([4]byte{198, 19, byte(i * 4 / 256), byte(i * 4 % 256)})
		v6 := netip.MustParseAddr("2001:db8:100::").As16()
		v6[6], v6[7] = byte(i>>8), byte(i)
		out[i] = benchAgent{name: fmt.Sprintf("%s-a%03d", id, i), net4: netip.PrefixFrom(v4, 30),
			net6: netip.PrefixFrom(netip.AddrFrom16(v6), 64), gw: v4.Next().String()}
	}
	return out
}

// hostNames are the policy's hosts of variant v: hosts names, of which
// the last quarter differ between variants 0 and 1 (h0150-h0199 against
// h0200-h0249 with 200 hosts). Every one of them is a name the fake
// internet answers (synth.test: a distinct address each, TTL 300).
func hostNames(hosts, v int) []string {
	keep := hosts - hosts/4
	out := make([]string, 0, hosts)
	for i := range keep {
		out = append(out, fmt.Sprintf("h%04d.synth.test", i))
	}
	for i := range hosts - keep {
		out = append(out, fmt.Sprintf("h%04d.synth.test", keep+v*(hosts-keep)+i))
	}
	return out
}

func policyText(names []string, extra string) string {
	var sb strings.Builder
	sb.WriteString("version: 1\nallow:\n")
	for _, n := range names {
		sb.WriteString("  - host: " + n + "\n    ports: [443]\n")
	}
	sb.WriteString(extra)
	return sb.String()
}

// benchServe is one `sluice serve` of a benchmark, in the world's gateway
// namespace. It runs in a mount namespace of its own, which a holder
// process keeps from before the first start to the end: there /run/sluice
// is a private directory (as privateState's), and there serve binds its
// agents' namespaces in /run/netns (sluice binds them in PID 1's mount
// namespace when it may look at it, and this machine does not let it), so
// that they outlive a kill -9 of serve, as on a host, and the next start
// adopts them.
type benchServe struct {
	w        *world
	dir      string
	state    string
	holder   *exec.Cmd
	config   string
	journal  string
	agents   []benchAgent
	prefix   []string // before `ip netns exec`: taskset, say
	env      []string
	inProc   bool // the test binary as serve (serveInProcess)
	cmd      *exec.Cmd
	log      string
	starts   int
	closed   bool
	lastCPU  time.Duration // serve's CPU time during the last reloadAll
	startCPU time.Duration // serve's CPU time until "serve ready"
}

func newBenchWorld(b *testing.B) *world {
	w := newWorldB(b)
	// As newServeWorld: forwarding off, as the clean-up checks find it.
	w.gw.Run(b, "sysctl", "-qw", "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0")
	return w
}

// newBenchServe writes the policies (variant 0, and variant 1 beside it)
// and the config of agents; it starts nothing.
func newBenchServe(b *testing.B, w *world, agents []benchAgent, hosts int, extra func(i int) string, ui bool) *benchServe {
	b.Helper()
	dir := b.TempDir()
	s := &benchServe{w: w, dir: dir, state: b.TempDir(), config: filepath.Join(dir, "serve.yaml"),
		journal: filepath.Join(dir, "journal.db"), agents: agents}
	mountState := `mkdir -p /run/sluice && mount --bind "$0" /run/sluice && exec sleep 86400`
	if os.Getenv("SLUICE_BENCH_TMPFS") == "1" {
		// /run is a tmpfs on a systemd host; here it is the root's ext4.
		mountState = `mkdir -p /run/sluice && mount -t tmpfs -o mode=0700 sluice-bench /run/sluice && exec sleep 86400`
	}
	s.holder = exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", mountState, s.state)
	if err := s.holder.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.close(b) })
	for deadline := time.Now().Add(10 * time.Second); ; {
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", s.holder.Process.Pid)); string(comm) == "sleep\n" {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("the mount namespace holder did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for i := range agents {
		agents[i].ns = fmt.Sprintf("/proc/%d/root/run/netns/%s", s.holder.Process.Pid, gateway.NamespaceFor(agents[i].name))
	}
	for v := range 2 {
		if err := os.MkdirAll(filepath.Join(dir, fmt.Sprint("v", v)), 0o755); err != nil {
			b.Fatal(err)
		}
		for i, a := range agents {
			x := ""
			if extra != nil {
				x = extra(i)
			}
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprint("v", v), a.name+".yaml"), []byte(policyText(hostNames(hosts, v), x)), 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	s.writeConfig(b, func(int) int { return 0 }, ui)
	return s
}

// writeConfig points agent i at the policy of variant v(i) and replaces
// the config at once (a rename).
func (s *benchServe) writeConfig(b *testing.B, v func(i int) int, ui bool) {
	b.Helper()
	var sb strings.Builder
	sb.WriteString(serveHeader(s.journal))
	if ui {
		sb.WriteString("ui: 127.0.0.1:8099\n")
	}
	sb.WriteString("agents:\n")
	for i, a := range s.agents {
		p := fmt.Sprintf("v%d/%s.yaml", v(i), a.name)
		fmt.Fprintf(&sb, "  - name: %s\n    policy: %s\n    agent_net: %s\n    agent_net6: %s\n", a.name, p, a.net4, a.net6)
	}
	tmp := s.config + ".tmp"
	if err := os.WriteFile(tmp, []byte(sb.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.Rename(tmp, s.config); err != nil {
		b.Fatal(err)
	}
}

// benchStarts counts the serves this process started.
var benchStarts int

// start starts serve and waits for "serve ready"; it returns the time
// from the start of the process to that line, and the log's offset there.
func (s *benchServe) start(b *testing.B) (time.Duration, int64) {
	b.Helper()
	s.starts++
	s.log = filepath.Join(s.dir, fmt.Sprintf("serve-%d.log", s.starts))
	f, err := os.Create(s.log)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	bin, args := sluiceBin, []string{"serve", "--config", s.config}
	env := slices.Clone(s.env)
	if p := os.Getenv("SLUICE_BENCH_CPUPROFILE"); p != "" && !s.inProc {
		benchStarts++ // the profile is written when serve stops (not after a kill)
		env = append(env, fmt.Sprintf("SLUICE_CPUPROFILE=%s.%d", p, benchStarts))
	}
	if s.inProc {
		bin, _ = os.Executable()
		args = []string{"-test.run=^$"}
		env = append(env, "SLUICE_BENCH_SERVE="+s.config)
	}
	s.cmd = s.inMounts(append(append(append(append(slices.Clone(s.prefix), "env"), env...), bin), args...)...)
	s.cmd.Stdout, s.cmd.Stderr = f, f
	t0 := time.Now()
	if err := s.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	_, off := s.waitLine(b, 0, regexp.MustCompile(`msg="serve ready"`), 5*time.Minute)
	d := time.Since(t0)
	s.startCPU = time.Duration(cpuTicks(s.cmd.Process.Pid)) * 10 * time.Millisecond
	return d, off
}

// waitLine waits for a line of the log after offset from that matches
// re, and returns it and the offset after it.
func (s *benchServe) waitLine(b *testing.B, from int64, re *regexp.Regexp, timeout time.Duration) (string, int64) {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if line, off, ok := s.findLine(from, re); ok {
			return line, off
		}
		if s.cmd.ProcessState != nil || time.Now().After(deadline) {
			b.Fatalf("serve logged no %q within %v:\n%s", re, timeout, tail(readFile(s.log), 4000))
		}
		time.Sleep(time.Millisecond)
	}
}

func (s *benchServe) findLine(from int64, re *regexp.Regexp) (string, int64, bool) {
	f, err := os.Open(s.log)
	if err != nil {
		return "", 0, false
	}
	defer f.Close()
	if _, err := f.Seek(from, 0); err != nil {
		return "", 0, false
	}
	r := bufio.NewReaderSize(f, 1<<16)
	off := from
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return "", 0, false // a line not yet whole is looked at again next time
		}
		off += int64(len(line))
		if re.MatchString(line) {
			return line, off, true
		}
	}
}

func (s *benchServe) logSize() int64 {
	fi, err := os.Stat(s.log)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func (s *benchServe) signal(b *testing.B, sig syscall.Signal) {
	b.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		b.Fatal(err)
	}
}

// stop ends serve with SIGTERM (its agents detached, their namespaces
// kept) and waits for it.
func (s *benchServe) stop(b *testing.B) {
	b.Helper()
	if s.cmd == nil || s.cmd.ProcessState != nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		_ = s.cmd.Process.Kill()
		<-done
		b.Errorf("serve did not stop within 2 minutes of SIGTERM")
	}
}

// kill ends serve with SIGKILL: its agents' tables and links stay, and
// refuse everything once the heartbeat lapses.
func (s *benchServe) kill(b *testing.B) {
	b.Helper()
	if err := s.cmd.Process.Kill(); err != nil {
		b.Fatal(err)
	}
	_ = s.cmd.Wait()
}

// inMounts is a command run in serve's mount namespace (the holder's)
// and the world's gateway namespace.
func (s *benchServe) inMounts(args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"-t", strconv.Itoa(s.holder.Process.Pid), "-m",
		"--net=/run/netns/" + s.w.gw.Name, "--"}, args...)...)
}

// close stops serve and removes all it made: what `sluice cleanup` finds
// in its private state (after a kill), the agents' namespaces (their
// binds go with the holder's mount namespace; their files are left in
// /run/netns).
func (s *benchServe) close(b *testing.B) {
	if s.closed {
		return
	}
	s.closed = true
	s.stop(b)
	if s.starts > 0 {
		if out, err := s.inMounts(sluiceBin, "cleanup").CombinedOutput(); err != nil {
			b.Errorf("final sluice cleanup: %v\n%s", err, out)
		}
		for _, a := range s.agents {
			// No process runs there (none is started), but a failed
			// benchmark's dnsload may still.
			_ = s.inMounts("sh", "-c", "ip netns pids "+gateway.NamespaceFor(a.name)+" 2>/dev/null | xargs -r kill -9").Run()
		}
	}
	_ = s.holder.Process.Kill()
	_ = s.holder.Wait()
	for _, a := range s.agents {
		ns := filepath.Join("/run/netns", gateway.NamespaceFor(a.name))
		if err := os.Remove(ns); err != nil && !errors.Is(err, os.ErrNotExist) {
			b.Errorf("remove %s: %v", ns, err)
		}
	}
	if b.Failed() && s.log != "" {
		b.Logf("serve's log:\n%s", tail(readFile(s.log), 20000))
	}
	if keep := os.Getenv("SLUICE_BENCH_KEEPLOGS"); keep != "" {
		for i := 1; i <= s.starts; i++ {
			log := filepath.Join(s.dir, fmt.Sprintf("serve-%d.log", i))
			_ = exec.Command("cp", log, filepath.Join(keep, fmt.Sprintf("%s-%s", filepath.Base(s.dir), filepath.Base(log)))).Run()
		}
	}
}

// inNetNS runs fn on a thread of its own inside the network namespace at
// path; sockets fn opens stay there. The thread is never given back.
func inNetNS(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", path, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// dialAgent opens a UDP socket in the agent's namespace towards its
// gateway's resolver.
func dialAgent(a benchAgent) (*dns.Conn, error) {
	var c net.Conn
	err := inNetNS(a.ns, func() error {
		var err error
		c, err = net.Dial("udp", a.gw+":53")
		return err
	})
	if err != nil {
		return nil, err
	}
	return &dns.Conn{Conn: c}, nil
}

// query asks name's A record; it returns the rcode and whether there was
// an address.
func query(c *dns.Conn, name string, timeout time.Duration) (int, bool, error) {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeA)
	_ = c.SetDeadline(time.Now().Add(timeout))
	if err := c.WriteMsg(q); err != nil {
		return 0, false, err
	}
	for {
		r, err := c.ReadMsg()
		if err != nil {
			return 0, false, err
		}
		if r.Id != q.Id {
			continue // a late answer to an earlier query
		}
		return r.Rcode, len(r.Answer) > 0, nil
	}
}

// resolveAll resolves names(i) in every agent i (so that the sets hold
// their addresses and the pin tables their names), 8 agents at a time.
func resolveAll(b *testing.B, agents []benchAgent, names func(i int) []string) {
	b.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	errs := make(chan error, len(agents))
	for i, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			c, err := dialAgent(a)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			for _, n := range names(i) {
				var err error
				for try := 0; try < 5; try++ {
					var rcode int
					var ok bool
					if rcode, ok, err = query(c, n, time.Second); err == nil && (rcode != dns.RcodeSuccess || !ok) {
						err = fmt.Errorf("%s in %s: rcode %s, %v", n, a.name, dns.RcodeToString[rcode], ok)
						break
					}
					if err == nil {
						break
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// reloadLine is a gateway's "policy reloaded" line.
var reloadLine = regexp.MustCompile(`msg="policy reloaded".* revoked_addresses=([0-9]+).* took=([0-9.]+[µmn]?s).* agent=(\S+)`)

type agentReload struct {
	agent   string
	took    time.Duration
	revoked int
}

// reloadsSince parses the "policy reloaded" lines after offset from.
func (s *benchServe) reloadsSince(b *testing.B, from int64) []agentReload {
	b.Helper()
	data := readFile(s.log)
	if int64(len(data)) < from {
		return nil
	}
	var out []agentReload
	for line := range strings.Lines(data[from:]) {
		m := reloadLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		d, err := time.ParseDuration(m[2])
		if err != nil {
			b.Fatal(err)
		}
		n, _ := strconv.Atoi(m[1])
		out = append(out, agentReload{agent: m[3], took: d, revoked: n})
	}
	return out
}

// policyRecords counts the journal's policy_reloaded records since t0.
func policyRecords(r *journal.Reader, t0 time.Time) (int, error) {
	recs, _, err := r.List(context.Background(), journal.Filter{Layer: string(journal.LayerPolicy),
		Reason: string(journal.ReasonReload), Since: t0, Limit: journal.MaxLimit})
	return len(recs), err
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// reloadAll swaps every agent's policy to variant v (one rename of the
// config) and sends SIGHUP; it returns the time from just before the
// rename to serve's "serve config reloaded" and to the last of the
// journal's records of the change, and each agent's own reload. The CPU
// time serve took meanwhile is in s.lastCPU.
func (s *benchServe) reloadAll(b *testing.B, jr *journal.Reader, v func(i int) int, want int) (toLog, toJournal time.Duration, reloads []agentReload) {
	b.Helper()
	from := s.logSize()
	c0 := cpuTicks(s.cmd.Process.Pid)
	defer func() { s.lastCPU = time.Duration(cpuTicks(s.cmd.Process.Pid)-c0) * 10 * time.Millisecond }()
	t0 := time.Now()
	s.writeConfig(b, v, false)
	s.signal(b, syscall.SIGHUP)
	done := regexp.MustCompile(`msg="serve config reloaded" trigger=SIGHUP`)
	var logged, stored time.Time
	deadline := t0.Add(5 * time.Minute)
	for logged.IsZero() || stored.IsZero() {
		if logged.IsZero() {
			if _, _, ok := s.findLine(from, done); ok {
				logged = time.Now()
			}
		}
		if stored.IsZero() {
			if n, err := policyRecords(jr, t0); err != nil {
				b.Fatal(err)
			} else if n >= want {
				stored = time.Now()
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("the reload was not logged and stored within 5 minutes:\n%s", tail(readFile(s.log), 4000))
		}
		time.Sleep(2 * time.Millisecond)
	}
	reloads = s.reloadsSince(b, from)
	if len(reloads) != want {
		b.Fatalf("%d agents logged a reload, want %d", len(reloads), want)
	}
	return logged.Sub(t0), stored.Sub(t0), reloads
}

// BenchmarkServeReload: serve with 100 agents of 200 hosts each, every
// host resolved in every agent (the sets hold 20,000 elements); an
// iteration points every agent at a policy with a quarter of its hosts
// replaced (one rename of the config, then SIGHUP), so each agent revokes
// 50 addresses. Reported: the time to serve's "serve config reloaded"
// and to the last of the 100 policy_reloaded records in the journal, the
// gateways' own time per agent (their "took"), and the start of serve.
//
//	go test -run '^$' -bench ServeReload$ -benchtime 5x -count 3 -timeout 60m ./testing/e2e
func BenchmarkServeReload(b *testing.B) {
	nstest.RequireRoot(b)
	n, hosts := envInt("SLUICE_BENCH_AGENTS", 100), envInt("SLUICE_BENCH_HOSTS", 200)
	w := newBenchWorld(b)
	s := newBenchServe(b, w, benchAgents(n), hosts, nil, false)
	started, _ := s.start(b)
	jr, err := journal.Open(s.journal)
	if err != nil {
		b.Fatal(err)
	}
	defer jr.Close()
	cur := 0
	var toLog, toJournal, took, maxTook, cpu []float64
	for b.Loop() {
		b.StopTimer()
		resolveAll(b, s.agents, func(int) []string { return hostNames(hosts, cur) })
		next := 1 - cur
		b.StartTimer()
		l, j, reloads := s.reloadAll(b, jr, func(int) int { return next }, n)
		b.StopTimer()
		cur = next
		toLog, toJournal, cpu = append(toLog, ms(l)), append(toJournal, ms(j)), append(cpu, ms(s.lastCPU))
		var tooks []float64
		revoked := 0
		for _, r := range reloads {
			tooks = append(tooks, ms(r.took))
			revoked += r.revoked
		}
		took = append(took, median(tooks))
		maxTook = append(maxTook, slices.Max(tooks))
		benchLog(b, "reload of %d agents: logged after %.0f ms, stored after %.0f ms; per agent took median %.1f ms, max %.1f ms, sum %.0f ms; %d addresses revoked; serve's CPU %.0f ms",
			n, ms(l), ms(j), median(tooks), slices.Max(tooks), sum(tooks), revoked, ms(s.lastCPU))
		b.StartTimer()
	}
	b.ReportMetric(median(toLog), "ms-to-log")
	b.ReportMetric(median(toJournal), "ms-to-journal")
	b.ReportMetric(median(took), "ms/agent-reload")
	b.ReportMetric(median(maxTook), "max-ms/agent-reload")
	b.ReportMetric(median(cpu), "cpu-ms-reload")
	b.ReportMetric(ms(started), "ms-start")
	b.ReportMetric(ms(s.startCPU), "cpu-ms-start")
}

func sum(xs []float64) float64 {
	t := 0.0
	for _, x := range xs {
		t += x
	}
	return t
}

// BenchmarkServeRestart: serve with 1 and with 100 agents of 200 hosts;
// an iteration kills it (SIGKILL) and starts it again, and measures the
// time from the new process to "serve ready" and to every agent
// answering a DNS question for an allowed name through its gateway
// again (each agent probed every 10 ms from the moment serve starts).
// The first start (namespaces made) is reported as ms-cold-start.
//
//	go test -run '^$' -bench ServeRestart -benchtime 5x -count 3 -timeout 60m ./testing/e2e
func BenchmarkServeRestart(b *testing.B) {
	nstest.RequireRoot(b)
	hosts := envInt("SLUICE_BENCH_HOSTS", 200)
	for _, n := range []int{1, envInt("SLUICE_BENCH_AGENTS", 100)} {
		b.Run(fmt.Sprintf("agents=%d", n), func(b *testing.B) {
			w := newBenchWorld(b)
			s := newBenchServe(b, w, benchAgents(n), hosts, nil, false)
			cold, _ := s.start(b)
			coldCPU := s.startCPU
			var ready, serving, cpu []float64
			for b.Loop() {
				b.StopTimer()
				s.kill(b)
				time.Sleep(500 * time.Millisecond)
				b.StartTimer()
				t0 := time.Now()
				probes := probeAll(s.agents, 2*time.Minute)
				r, _ := s.start(b)
				last, err := probes()
				if err != nil {
					b.Fatal(err)
				}
				ready, serving, cpu = append(ready, ms(r)), append(serving, ms(last.Sub(t0))), append(cpu, ms(s.startCPU))
			}
			b.ReportMetric(median(ready), "ms-to-ready")
			b.ReportMetric(median(serving), "ms-to-all-serving")
			b.ReportMetric(median(cpu), "cpu-ms-to-ready")
			b.ReportMetric(ms(cold), "ms-cold-start")
			b.ReportMetric(ms(coldCPU), "cpu-ms-cold-start")
		})
	}
}

// probeAll asks every agent's gateway for h0000.synth.test every 10 ms,
// from now on, until each answers; the returned function waits and
// returns when the last one first answered. Each agent has a thread of
// its own in its namespace (opened again until it exists), which makes a
// socket for each question.
func probeAll(agents []benchAgent, timeout time.Duration) func() (time.Time, error) {
	type result struct {
		at  time.Time
		err error
	}
	results := make(chan result, len(agents))
	deadline := time.Now().Add(timeout)
	for _, a := range agents {
		go func() {
			runtime.LockOSThread() // for good: the thread ends with the goroutine
			for {
				fd, err := unix.Open(a.ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
				if err == nil {
					err = unix.Setns(fd, unix.CLONE_NEWNET)
					unix.Close(fd)
					if err == nil {
						break
					}
				}
				if time.Now().After(deadline) {
					results <- result{err: fmt.Errorf("agent %s: %w", a.name, err)}
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
			for time.Now().Before(deadline) {
				nc, err := net.Dial("udp", a.gw+":53")
				if err == nil {
					c := &dns.Conn{Conn: nc}
					rcode, ok, err := query(c, "h0000.synth.test", 10*time.Millisecond)
					c.Close()
					if err == nil && rcode == dns.RcodeSuccess && ok {
						results <- result{at: time.Now()}
						return
					}
				}
				time.Sleep(10 * time.Millisecond)
			}
			results <- result{err: fmt.Errorf("agent %s: no answer within %v", a.name, timeout)}
		}()
	}
	return func() (time.Time, error) {
		var last time.Time
		var errs []error
		for range agents {
			r := <-results
			errs = append(errs, r.err)
			if r.at.After(last) {
				last = r.at
			}
		}
		return last, errors.Join(errs...)
	}
}

// traceLoad is a closed loop of uncached questions in one agent: every
// question a new name under u.synth.test, whose entry (port 81) puts each
// answer's address in the sets. It records when each answer came and how
// long it took.
type traceLoad struct {
	agent benchAgent
	conns []*dns.Conn
	mu    sync.Mutex
	at    []time.Time
	lat   []time.Duration
	sent  []time.Time
	fails int
}

func startTraceLoad(b *testing.B, a benchAgent, workers int, tag string, stop <-chan struct{}, wg *sync.WaitGroup) *traceLoad {
	b.Helper()
	l := &traceLoad{agent: a}
	for range workers {
		c, err := dialAgent(a)
		if err != nil {
			b.Fatal(err)
		}
		l.conns = append(l.conns, c)
	}
	for wi, c := range l.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				t0 := time.Now()
				rcode, ok, err := query(c, fmt.Sprintf("q%d-%d-%s.u.synth.test", i, wi, tag), 5*time.Second)
				t1 := time.Now()
				l.mu.Lock()
				if err != nil || rcode != dns.RcodeSuccess || !ok {
					l.fails++
				} else {
					l.at, l.lat, l.sent = append(l.at, t1), append(l.lat, t1.Sub(t0)), append(l.sent, t0)
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

// between counts the answers that came in [from, to).
func (l *traceLoad) between(from, to time.Time) int {
	n := 0
	for _, t := range l.at {
		if !t.Before(from) && t.Before(to) {
			n++
		}
	}
	return n
}

// maxLatency is the longest question sent in [from, to).
func (l *traceLoad) maxLatency(from, to time.Time) time.Duration {
	var m time.Duration
	for i, t := range l.sent {
		if !t.Before(from) && t.Before(to) && l.lat[i] > m {
			m = l.lat[i]
		}
	}
	return m
}

// BenchmarkServeReloadUnderLoad: serve with 100 agents of 200 hosts (all
// resolved), the first 10 of which also allow *.u.synth.test on port 81
// and ask new names under it in a closed loop (4 questions in flight
// each): every answer a new set element. An iteration reloads all 100
// agents as BenchmarkServeReload does, then only agent 0, and reports the
// loaded agents' answers/s (= set elements added/s) in the second before
// and during the reload, and the longest wait for an answer during it
// (the stall of an agent's resolver while its gateway's SetPolicy holds
// its gate) against that agent's own reload time.
//
//	go test -run '^$' -bench ServeReloadUnderLoad -benchtime 3x -count 3 -timeout 60m ./testing/e2e
func BenchmarkServeReloadUnderLoad(b *testing.B) {
	nstest.RequireRoot(b)
	n, hosts, loaded := envInt("SLUICE_BENCH_AGENTS", 100), envInt("SLUICE_BENCH_HOSTS", 200), envInt("SLUICE_BENCH_LOADED", 10)
	w := newBenchWorld(b)
	wild := "  - host: \"*.u.synth.test\"\n    ports: [81]\n    max_new_names: 0\n"
	s := newBenchServe(b, w, benchAgents(n), hosts, func(i int) string {
		if i < loaded {
			return wild
		}
		return ""
	}, false)
	s.start(b)
	jr, err := journal.Open(s.journal)
	if err != nil {
		b.Fatal(err)
	}
	defer jr.Close()
	variant := make([]int, n)
	var baseRate, allRate, oneRate, allStall, oneStall, allTook, oneTook, allWall []float64
	iter := 0
	for b.Loop() {
		b.StopTimer()
		iter++
		resolveAll(b, s.agents, func(i int) []string { return hostNames(hosts, variant[i]) })
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var loads []*traceLoad
		for i := range loaded {
			loads = append(loads, startTraceLoad(b, s.agents[i], 4, fmt.Sprint(iter), stop, &wg))
		}
		time.Sleep(1500 * time.Millisecond) // warm: the first second is the baseline
		// Every agent.
		for i := range variant {
			variant[i] = 1 - variant[i]
		}
		t0 := time.Now()
		l, _, reloads := s.reloadAll(b, jr, func(i int) int { return variant[i] }, n)
		t1 := t0.Add(l)
		time.Sleep(300 * time.Millisecond)
		// Agent 0 alone.
		variant[0] = 1 - variant[0]
		u0 := time.Now()
		l1, _, one := s.reloadAll(b, jr, func(i int) int { return variant[i] }, 1)
		u1 := u0.Add(l1)
		time.Sleep(300 * time.Millisecond)
		close(stop)
		wg.Wait()
		// Answers/s of all the loaded agents: the second before, during
		// the reload of all, during the reload of one.
		cnt := func(from, to time.Time) float64 {
			t := 0
			for _, ld := range loads {
				t += ld.between(from, to)
			}
			return float64(t) / to.Sub(from).Seconds()
		}
		base, during := cnt(t0.Add(-time.Second), t0), cnt(t0, t1)
		baseRate, allRate = append(baseRate, base), append(allRate, during)
		oneRate = append(oneRate, float64(loads[0].between(u0, u1))/u1.Sub(u0).Seconds())
		tookOf := map[string]time.Duration{}
		for _, r := range reloads {
			tookOf[r.agent] = r.took
		}
		var stalls, tooks []float64
		for _, ld := range loads {
			stalls = append(stalls, ms(ld.maxLatency(t0, t1)))
			tooks = append(tooks, ms(tookOf[ld.agent.name]))
		}
		var basePeak []float64
		for _, ld := range loads {
			basePeak = append(basePeak, ms(ld.maxLatency(t0.Add(-time.Second), t0)))
		}
		allStall, allTook, allWall = append(allStall, median(stalls)), append(allTook, median(tooks)), append(allWall, ms(l))
		oneStall, oneTook = append(oneStall, ms(loads[0].maxLatency(u0, u1))), append(oneTook, ms(one[0].took))
		fails := 0
		for _, ld := range loads {
			fails += ld.fails
		}
		benchLog(b, "loaded agents: %.0f answers/s before, %.0f/s during the reload of all %d (%.0f ms); longest wait per loaded agent during it: %v ms (before: %v), their took %v ms; "+
			"agent 0 alone: %.0f answers/s of its own during its reload (%.0f ms to the log), longest wait %.1f ms, took %.1f ms; %d questions failed",
			base, during, n, ms(l), stalls, basePeak, tooks, oneRate[len(oneRate)-1], ms(l1), oneStall[len(oneStall)-1], oneTook[len(oneTook)-1], fails)
		b.StartTimer()
	}
	b.ReportMetric(median(baseRate), "answers/s-before")
	b.ReportMetric(median(allRate), "answers/s-during-all")
	b.ReportMetric(median(allWall), "ms-reload-all")
	b.ReportMetric(median(allStall), "ms-longest-wait-all")
	b.ReportMetric(median(allTook), "ms-took-loaded")
	b.ReportMetric(median(oneStall), "ms-longest-wait-one")
	b.ReportMetric(median(oneTook), "ms-took-one")
}

// cpuTicks is a process's user+system time in clock ticks (100 a second).
func cpuTicks(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

var answersRe = regexp.MustCompile(`^answers=([0-9]+) qps=([0-9]+)`)

// dnsloadIn runs one dnsload per entry of where (an agent each), all at
// once, pinned to CPU0, and returns their summed answers/s and answers.
func dnsloadIn(b *testing.B, where []benchAgent, names string, count int, d time.Duration) (float64, int) {
	b.Helper()
	var cmds []*exec.Cmd
	outs := make([]*strings.Builder, len(where))
	for i, a := range where {
		outs[i] = &strings.Builder{}
		cmd := exec.Command("nsenter", "--net="+a.ns, "taskset", "-c", "0", dnsloadBin, "-server", a.gw+":53",
			"-names", names, "-count", fmt.Sprint(count), "-c", "1", "-d", d.String())
		cmd.Stdout, cmd.Stderr = outs[i], outs[i]
		cmds = append(cmds, cmd)
	}
	for _, c := range cmds {
		if err := c.Start(); err != nil {
			b.Fatal(err)
		}
	}
	total, answers := 0.0, 0
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			b.Fatalf("dnsload in %s: %v\n%s", where[i].name, err, outs[i])
		}
		out := outs[i].String()
		m := answersRe.FindStringSubmatch(out)
		if m == nil {
			b.Fatalf("dnsload printed %q", out)
		}
		if !strings.Contains(out, "timeouts=0 errors=0") || strings.Contains(out, "NXDOMAIN") || strings.Contains(out, "SERVFAIL") {
			b.Errorf("dnsload in %s: %s", where[i].name, out)
		}
		a, _ := strconv.Atoi(m[1])
		q, _ := strconv.ParseFloat(m[2], 64)
		total += q
		answers += a
	}
	return total, answers
}

// BenchmarkServeResolver: serve with 50 agents of 200 hosts (all resolved
// first, so every answer is cached), sluice pinned to CPU1 with
// GOMAXPROCS=1 as in bench/dns.sh; 50 dnsload clients (one question in
// flight each, pinned to CPU0) ask cached names in three phases, in
// turn in each iteration, in the same serve:
//   - spread: one client in each agent, each asking its agent's 200 names
//     (10,000 distinct agent and name pairs);
//   - one: all 50 clients in agent 0, each asking the 200 names;
//   - few: one client in each agent, each asking 4 names (200 pairs, as
//     many as in one: the journal coalesces repeats of a decision per
//     agent and name, so the pairs set how many records it writes).
//
// Reported: the summed answers/s of each, their ratios to one, sluice's
// CPU per answer, and the journal's records per answer.
//
//	go test -run '^$' -bench ServeResolver -benchtime 5x -count 3 -timeout 60m ./testing/e2e
func BenchmarkServeResolver(b *testing.B) {
	nstest.RequireRoot(b)
	n, hosts, d := envInt("SLUICE_BENCH_SPREAD", 50), envInt("SLUICE_BENCH_HOSTS", 200), envDuration("SLUICE_BENCH_DURATION", 3*time.Second)
	w := newBenchWorld(b)
	s := newBenchServe(b, w, benchAgents(n), hosts, nil, false)
	if os.Getenv("SLUICE_BENCH_PIN") != "0" {
		s.prefix = []string{"taskset", "-c", "1"}
		s.env = []string{"GOMAXPROCS=1"}
	}
	s.start(b)
	resolveAll(b, s.agents, func(int) []string { return hostNames(hosts, 0) })
	pid := s.cmd.Process.Pid
	oneWhere := make([]benchAgent, n)
	for i := range oneWhere {
		oneWhere[i] = s.agents[0]
	}
	phases := []string{"spread", "one", "few"}
	if only := os.Getenv("SLUICE_BENCH_PHASES"); only != "" {
		phases = strings.Fields(only)
	}
	jr, err := journal.Open(s.journal)
	if err != nil {
		b.Fatal(err)
	}
	defer jr.Close()
	lastID := func() int64 {
		time.Sleep(1500 * time.Millisecond) // the repeats' interval (1 s) ends, and is stored
		id, err := jr.Last(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		return id
	}
	qps, cpu, recs := map[string][]float64{}, map[string][]float64{}, map[string][]float64{}
	var ratio, fewRatio []float64
	iter := 0
	for b.Loop() {
		got := map[string]float64{}
		for k := range phases {
			ph := phases[(k+iter)%len(phases)] // each iteration starts with the next phase
			where, count := s.agents, hosts
			switch ph {
			case "spread":
			case "one":
				where = oneWhere
			case "few":
				count = max(1, hosts/n)
			default: // none: a baseline profile without load
				continue
			}
			id0 := lastID()
			c0 := cpuTicks(pid)
			q, answers := dnsloadIn(b, where, "h%04d.synth.test.", count, d)
			c1 := cpuTicks(pid)
			us := float64(c1-c0) * 10000 / float64(max(answers, 1)) // µs per answer
			perAnswer := float64(lastID()-id0) / float64(max(answers, 1))
			got[ph] = q
			qps[ph], cpu[ph], recs[ph] = append(qps[ph], q), append(cpu[ph], us), append(recs[ph], perAnswer)
			benchLog(b, "%s: %.0f answers/s from %d clients, sluice %.1f µs CPU per answer, %.3f journal records per answer", ph, q, len(where), us, perAnswer)
		}
		iter++
		if got["one"] > 0 {
			if got["spread"] > 0 {
				ratio = append(ratio, got["spread"]/got["one"])
			}
			if got["few"] > 0 {
				fewRatio = append(fewRatio, got["few"]/got["one"])
			}
		}
	}
	for _, ph := range phases {
		if len(qps[ph]) > 0 {
			b.ReportMetric(median(qps[ph]), "answers/s-"+ph)
			b.ReportMetric(median(cpu[ph]), "µs-cpu/answer-"+ph)
			b.ReportMetric(median(recs[ph]), "records/answer-"+ph)
		}
	}
	if len(ratio) > 0 {
		b.ReportMetric(median(ratio), "spread/one")
	}
	if len(fewRatio) > 0 {
		b.ReportMetric(median(fewRatio), "few/one")
	}
}

// procStatus reads a field of /proc/PID/status in kB.
func procStatus(pid int, field string) int64 {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			v, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return v
		}
	}
	return 0
}

func meminfo(field string) int64 {
	data, _ := os.ReadFile("/proc/meminfo")
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			v, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return v
		}
	}
	return 0
}

// scrape reads the Go runtime's gauges from serve's /metrics.
func (s *benchServe) scrape(b *testing.B) map[string]float64 {
	b.Helper()
	out := map[string]float64{}
	text := s.w.gw.Run(b, "curl", "-sS", "--max-time", "5", "http://127.0.0.1:8099/metrics")
	for line := range strings.Lines(text) {
		f := strings.Fields(line)
		if len(f) != 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if strings.HasPrefix(f[0], "go_") || strings.HasPrefix(f[0], "process_") {
			v, err := strconv.ParseFloat(f[1], 64)
			if err == nil {
				out[f[0]] = v
			}
		}
	}
	return out
}

type memReading struct {
	rss, anon, slab                                   float64 // MB
	heapInuse, stackInuse, goSys, goroutines, threads float64
	busyRSS, busyHeap                                 float64 // MB, after load
	laterRSS                                          float64 // MB, SLUICE_BENCH_AFTER later
	allocTotal                                        float64 // MB allocated since start
	idleAlloc                                         float64 // MB/s allocated while idle
}

func (s *benchServe) readMem(b *testing.B) memReading {
	b.Helper()
	pid := s.cmd.Process.Pid
	m := s.scrape(b)
	return memReading{rss: float64(procStatus(pid, "VmRSS")) / 1024, anon: float64(procStatus(pid, "RssAnon")) / 1024,
		slab: float64(meminfo("Slab")) / 1024, heapInuse: m["go_memstats_heap_inuse_bytes"] / (1 << 20),
		stackInuse: m["go_memstats_stack_inuse_bytes"] / (1 << 20), goSys: m["go_memstats_sys_bytes"] / (1 << 20),
		goroutines: m["go_goroutines"], threads: float64(procStatus(pid, "Threads")),
		allocTotal: m["go_memstats_alloc_bytes_total"] / (1 << 20)}
}

// BenchmarkServeMemory: serve with 1, 50 and 100 idle agents of 200
// hosts each (none resolved), one after the other in the same world; each
// is read once it has been idle for 5 s: VmRSS and RssAnon of the
// process, the Go runtime's gauges from /metrics, and the kernel's slab
// (the agents' namespaces, links, tables and sockets live there, not in
// serve's RSS; other processes move it too), and over the next 10 s what
// the idle serve allocates. Then every host is resolved in every agent
// and every agent answers cached questions for 2 s ("busy"), and memory
// is read again (and SLUICE_BENCH_AFTER later). Reported: (RSS(100) -
// RSS(1)) / 99 and the same for the other figures. The target is under 2
// MB per idle agent. With SLUICE_BENCH_HEAP=DIR each is also run as
// serveInProcess, which writes a heap profile (DIR/heap-N.1) to
// compare with go tool pprof -diff_base.
//
//	go test -run '^$' -bench ServeMemory -benchtime 1x -count 3 -timeout 60m ./testing/e2e
func BenchmarkServeMemory(b *testing.B) {
	nstest.RequireRoot(b)
	hosts, settle := envInt("SLUICE_BENCH_HOSTS", 200), envDuration("SLUICE_BENCH_SETTLE", 5*time.Second)
	after := envDuration("SLUICE_BENCH_AFTER", 0)
	counts := []int{1, 50, envInt("SLUICE_BENCH_AGENTS", 100)}
	heapDir := os.Getenv("SLUICE_BENCH_HEAP")
	w := newBenchWorld(b)
	per := map[string][]float64{}
	for b.Loop() {
		readings := map[int]memReading{}
		for _, n := range counts {
			s := newBenchServe(b, w, benchAgents(n), hosts, nil, true)
			s.start(b)
			time.Sleep(settle)
			r := s.readMem(b)
			// What an idle serve allocates (timers, heartbeats, the
			// journal's ticks): garbage the collector leaves resident
			// until its heap goal, or its 2-minute timer, comes.
			time.Sleep(10 * time.Second)
			r.idleAlloc = (s.readMem(b).allocTotal - r.allocTotal) / 10
			benchLog(b, "%d idle agents: VmRSS %.1f MB, RssAnon %.1f MB, heap in use %.1f MB, stacks %.1f MB, Go sys %.1f MB, %0.f goroutines, %.0f threads, kernel slab %.1f MB; allocating %.2f MB/s while idle",
				n, r.rss, r.anon, r.heapInuse, r.stackInuse, r.goSys, r.goroutines, r.threads, r.slab, r.idleAlloc)
			// Then busy: every host resolved once in every agent, and
			// 2 s of cached answers in every agent at once.
			resolveAll(b, s.agents, func(int) []string { return hostNames(hosts, 0) })
			qps, _ := dnsloadIn(b, s.agents, "h%04d.synth.test.", hosts, 2*time.Second)
			busy := s.readMem(b)
			r.busyRSS, r.busyHeap = busy.rss, busy.heapInuse
			benchLog(b, "%d agents after load (%.0f answers/s): VmRSS %.1f MB, heap in use %.1f MB", n, qps, busy.rss, busy.heapInuse)
			if after > 0 { // idle again, past the runtime's periodic GC (2 min)
				time.Sleep(after)
				later := s.readMem(b)
				r.laterRSS = later.rss
				benchLog(b, "%d agents %v after the load: VmRSS %.1f MB, heap in use %.1f MB", n, after, later.rss, later.heapInuse)
			}
			readings[n] = r
			s.close(b)
			if heapDir != "" {
				h := newBenchServe(b, w, benchAgents(n), hosts, nil, false)
				h.inProc = true
				h.env = []string{"SLUICE_BENCH_HEAPPROFILE=" + filepath.Join(heapDir, fmt.Sprintf("heap-%d", n))}
				h.start(b)
				time.Sleep(settle)
				from := h.logSize()
				h.signal(b, syscall.SIGUSR1)
				line, off := h.waitLine(b, from, regexp.MustCompile(`msg="heap profile written"`), time.Minute)
				benchLog(b, "%d idle agents, in process: VmRSS %.1f MB; %s", n, float64(procStatus(h.cmd.Process.Pid, "VmRSS"))/1024, strings.TrimSpace(line))
				if again := envDuration("SLUICE_BENCH_HEAP_AGAIN", 0); again > 0 {
					// A second profile, idle all along: -diff_base the
					// first for what an idle serve allocates.
					time.Sleep(again)
					h.signal(b, syscall.SIGUSR1)
					line, _ := h.waitLine(b, off, regexp.MustCompile(`msg="heap profile written"`), time.Minute)
					benchLog(b, "%d idle agents, in process, %v later: %s", n, again, strings.TrimSpace(line))
				}
				h.close(b)
			}
		}
		lo, hi := readings[counts[0]], readings[counts[len(counts)-1]]
		d := float64(counts[len(counts)-1] - counts[0])
		per["rss"] = append(per["rss"], (hi.rss-lo.rss)/d)
		per["anon"] = append(per["anon"], (hi.anon-lo.anon)/d)
		per["heap"] = append(per["heap"], (hi.heapInuse-lo.heapInuse)/d)
		per["stack"] = append(per["stack"], (hi.stackInuse-lo.stackInuse)/d)
		per["goroutines"] = append(per["goroutines"], (hi.goroutines-lo.goroutines)/d)
		per["idlealloc"] = append(per["idlealloc"], (hi.idleAlloc-lo.idleAlloc)/d*1024)
		per["slab"] = append(per["slab"], (hi.slab-lo.slab)/d)
		per["busy"] = append(per["busy"], (hi.busyRSS-lo.busyRSS)/d)
		per["busy1"] = append(per["busy1"], lo.busyRSS)
		if after > 0 {
			per["later"] = append(per["later"], (hi.laterRSS-lo.laterRSS)/d)
		}
		per["busy100"] = append(per["busy100"], hi.busyRSS)
		per["rss1"] = append(per["rss1"], lo.rss)
		per["rss50"] = append(per["rss50"], readings[50].rss)
		per["rss100"] = append(per["rss100"], hi.rss)
	}
	b.ReportMetric(median(per["rss"]), "MB-rss/agent")
	b.ReportMetric(median(per["anon"]), "MB-anon/agent")
	b.ReportMetric(median(per["heap"]), "MB-heap/agent")
	b.ReportMetric(median(per["stack"]), "MB-stack/agent")
	b.ReportMetric(median(per["goroutines"]), "goroutines/agent")
	b.ReportMetric(median(per["idlealloc"]), "KB/s-idle-alloc/agent")
	b.ReportMetric(median(per["slab"]), "MB-slab/agent")
	b.ReportMetric(median(per["busy"]), "MB-rss-busy/agent")
	b.ReportMetric(median(per["busy1"]), "MB-rss-busy-1")
	if after > 0 {
		b.ReportMetric(median(per["later"]), "MB-rss-later/agent")
	}
	b.ReportMetric(median(per["busy100"]), "MB-rss-busy-100")
	b.ReportMetric(median(per["rss1"]), "MB-rss-1")
	b.ReportMetric(median(per["rss50"]), "MB-rss-50")
	b.ReportMetric(median(per["rss100"]), "MB-rss-100")
}
