package dnsfilter

import (
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sluicegw/sluice/testing/nstest"
)

// listenUDP opens a UDP socket on ip, closed when t ends.
func listenUDP(t *testing.T, ip net.IP) *net.UDPConn {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// udpFixture serves f's resolver on a loopback socket with at most max
// workers, and returns the socket's workers and a client for it.
func udpFixture(t *testing.T, maxWorkers int32, allow ...string) (*fixture, *udpWorkers, *dns.Client, string) {
	t.Helper()
	f := newFixtureWith(t, func(c *Config) {
		c.Clients = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	}, allow...)
	conn := listenUDP(t, net.IPv4(127, 0, 0, 1))
	w := f.srv.serveUDP([]*net.UDPConn{conn}, maxWorkers)
	f.srv.mu.Lock()
	f.srv.closers = append(f.srv.closers, conn.Close) // as Serve has it: Shutdown closes it
	f.srv.mu.Unlock()
	return f, w, &dns.Client{Timeout: 3 * time.Second}, conn.LocalAddr().String()
}

// TestUDPWorkersGrowWithLoad: a resolver starts with a few workers, and
// queries that wait on the upstream do not keep others from an answer:
// a query handed over while no worker is free adds one.
func TestUDPWorkersGrowWithLoad(t *testing.T) {
	f, w, c, addr := udpFixture(t, udpMaxWorkers, "*.allowed.test")
	// The control: a refusal is answered at once, on the same socket.
	refused := func() error {
		r, _, err := c.Exchange(new(dns.Msg).SetQuestion("other.test.", dns.TypeA), addr)
		if err != nil {
			return fmt.Errorf("no answer to a refused name: %w", err)
		}
		if r.Rcode != dns.RcodeNameError {
			return fmt.Errorf("refused name got %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
		}
		return nil
	}
	if err := refused(); err != nil {
		t.Fatal(err)
	}
	if n := w.started.Load(); n > udpMinWorkers+1 {
		t.Errorf("%d workers started by one query at a time, want at most %d", n, udpMinWorkers+1)
	}
	release, held := holdUpstream(t, f)
	const waiting = 3 * udpMinWorkers
	done := askNames(addr, waiting)
	// One worker is in the upstream (which holds its lock meanwhile), and
	// the other queries' workers wait for it.
	held()
	time.Sleep(50 * time.Millisecond)
	if err := refused(); err != nil {
		t.Errorf("while %d queries wait on the upstream: %v", waiting, err)
	}
	close(release)
	for range waiting {
		if err := <-done; err != nil {
			t.Errorf("a query that waited on the upstream: %v", err)
		}
	}
	if n := w.started.Load(); n <= udpMinWorkers {
		t.Errorf("%d workers started, want more than the %d at start", n, udpMinWorkers)
	}
}

// TestUDPWorkersBounded: however many queries wait, no more than the
// maximum of workers start; the rest wait in the queue.
func TestUDPWorkersBounded(t *testing.T) {
	const maxWorkers = 4
	f, w, _, addr := udpFixture(t, maxWorkers, "*.allowed.test")
	release, held := holdUpstream(t, f)
	const queries = 16
	done := askNames(addr, queries)
	held() // one worker is in the upstream; the others queue on its lock
	deadline := time.Now().Add(5 * time.Second)
	for w.started.Load() < maxWorkers && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // room for a worker too many to start
	if n := w.started.Load(); n != maxWorkers {
		t.Errorf("%d workers started under %d waiting queries, want the maximum, %d", n, queries, maxWorkers)
	}
	close(release)
	for range queries {
		if err := <-done; err != nil {
			t.Errorf("a query queued for a worker: %v", err)
		}
	}
}

// holdUpstream makes f's upstream hold every question until release is
// closed; held returns once a first question is held, and fails t if none
// comes within 5 s (a hang told apart from a wait).
func holdUpstream(t *testing.T, f *fixture) (release chan struct{}, held func()) {
	t.Helper()
	release = make(chan struct{})
	asked := make(chan struct{}, 64)
	f.up.answerWith(func(q *dns.Msg) *dns.Msg {
		select {
		case asked <- struct{}{}:
		default: // enough told
		}
		<-release
		return new(dns.Msg).SetRcode(q, dns.RcodeNameError)
	})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	return release, func() {
		t.Helper()
		select {
		case <-asked:
		case <-time.After(5 * time.Second):
			t.Fatal("no question reached the upstream")
		}
	}
}

// askNames asks addr for n0.allowed.test … n(n-1).allowed.test at once
// and gives each exchange's error on the channel.
func askNames(addr string, n int) <-chan error {
	done := make(chan error, n)
	for i := range n {
		go func() {
			_, _, err := (&dns.Client{Timeout: 10 * time.Second}).Exchange(new(dns.Msg).SetQuestion(fmt.Sprintf("n%d.allowed.test.", i), dns.TypeA), addr)
			done <- err
		}()
	}
	return done
}

// TestUDPCachedWhileWorkersBusy: cached answers come from the socket's
// reader itself, so they go on while every worker waits on the upstream.
func TestUDPCachedWhileWorkersBusy(t *testing.T) {
	const maxWorkers = 2
	f, w, c, addr := udpFixture(t, maxWorkers, "*.allowed.test")
	cached := func() error {
		q := new(dns.Msg).SetQuestion("www.allowed.test.", dns.TypeA)
		r, _, err := c.Exchange(q, addr)
		if err != nil {
			return err
		}
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
			return fmt.Errorf("got %s with %d answers", dns.RcodeToString[r.Rcode], len(r.Answer))
		}
		return nil
	}
	// The control: asked twice, the second from the fast path.
	for range 2 {
		if err := cached(); err != nil {
			t.Fatalf("cached name while the workers are free: %v", err)
		}
	}
	release, held := holdUpstream(t, f)
	done := askNames(addr, maxWorkers)
	held()
	deadline := time.Now().Add(5 * time.Second)
	for w.busy.Load() < maxWorkers && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := w.busy.Load(); n != maxWorkers {
		t.Fatalf("%d workers busy, want all %d", n, maxWorkers)
	}
	if err := cached(); err != nil {
		t.Errorf("cached name while every worker waits on the upstream: %v", err)
	}
	close(release)
	for range maxWorkers {
		if err := <-done; err != nil {
			t.Errorf("a query that waited on the upstream: %v", err)
		}
	}
}

// TestUDPQueueFullDrops: past the workers and the queue, queries are
// dropped and counted, the resolver stays up, and what was queued is
// answered once the upstream answers.
func TestUDPQueueFullDrops(t *testing.T) {
	const maxWorkers = 1
	f, w, c, addr := udpFixture(t, maxWorkers, "*.allowed.test")
	release, held := holdUpstream(t, f)
	sock, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	const sent = maxWorkers + udpQueued + 40
	for i := range sent {
		q := new(dns.Msg).SetQuestion(fmt.Sprintf("q%d.allowed.test.", i), dns.TypeA)
		b, _ := q.Pack()
		if _, err := sock.Write(b); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			held() // the worker is in the upstream: the rest queue
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for (w.dropped.Load() == 0 || w.busy.Load() < maxWorkers+udpQueued) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if d, b := w.dropped.Load(), w.busy.Load(); d == 0 || b != maxWorkers+udpQueued {
		t.Fatalf("%d dropped, %d queued or answering, of %d sent; want %d queued and the rest dropped", d, b, sent, maxWorkers+udpQueued)
	}
	// Every queued query is answered (NXDOMAIN from the held upstream),
	// read as they come: a client's socket buffer holds fewer.
	answered := make(chan error, 1)
	go func() {
		sock.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 512)
		for i := range maxWorkers + udpQueued {
			if _, err := sock.Read(buf); err != nil {
				answered <- fmt.Errorf("answer %d of the %d queued: %w", i, maxWorkers+udpQueued, err)
				return
			}
		}
		answered <- nil
	}()
	close(release)
	if err := <-answered; err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Exchange(new(dns.Msg).SetQuestion("other.test.", dns.TypeA), addr); err != nil {
		t.Errorf("after the flood: %v", err)
	}
}

// TestUDPSocketsAnswerAll: many clients at once, on two sockets of one
// port, cached, uncached and refused names mixed: every query gets its
// own answer (ID and name), with batches read and written concurrently
// with the workers (run under -race).
func TestUDPSocketsAnswerAll(t *testing.T) {
	f := newFixtureWith(t, func(c *Config) {
		c.Clients = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	}, "*.allowed.test")
	a, b := listenUDP(t, net.IPv4(127, 0, 0, 1)), listenUDP(t, net.IPv4(127, 0, 0, 2))
	f.srv.serveUDP([]*net.UDPConn{a, b}, udpMaxWorkers)
	// name -> rcode: cached after the first, a name with no A record, a
	// name upstream does not know, a name the policy refuses.
	names := []string{"www.allowed.test.", "v6.allowed.test.", "n1.allowed.test.", "other.test."}
	rcodes := map[string]int{"n1.allowed.test.": dns.RcodeNameError, "other.test.": dns.RcodeNameError}
	const clients, each = 32, 40
	errs := make(chan error, clients)
	for i := range clients {
		addr := []string{a.LocalAddr().String(), b.LocalAddr().String()}[i%2]
		go func() {
			c := &dns.Client{Timeout: 5 * time.Second}
			for j := range each {
				name := names[(i+j)%len(names)]
				q := new(dns.Msg).SetQuestion(name, dns.TypeA)
				if j%3 == 0 {
					q.SetEdns0(1232, false)
				}
				r, _, err := c.Exchange(q, addr)
				if err != nil {
					errs <- fmt.Errorf("%s: %w", name, err)
					return
				}
				if r.Id != q.Id || len(r.Question) != 1 || r.Question[0].Name != name {
					errs <- fmt.Errorf("asked %s (ID %d), got %v (ID %d)", name, q.Id, r.Question, r.Id)
					return
				}
				if want := rcodes[name]; r.Rcode != want {
					errs <- fmt.Errorf("%s: got %s, want %s", name, dns.RcodeToString[r.Rcode], dns.RcodeToString[rcodes[name]])
					return
				}
			}
			errs <- nil
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// TestUDPBurstWaitsForWorkers: a burst of uncached queries at a resolver
// that has not grown its workers yet waits for the workers it starts,
// none dropped, up to the maximum of workers and the queue behind them.
// (Past the wildcard's budget of new names, queries are refused at once
// instead of asked upstream: they count as answered.)
func TestUDPBurstWaitsForWorkers(t *testing.T) {
	f, w, _, addr := udpFixture(t, udpMaxWorkers, "*.allowed.test")
	release, _ := holdUpstream(t, f)
	sock, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	const sent = udpMaxWorkers + udpQueued/2
	var answered atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		sock.SetReadDeadline(time.Now().Add(15 * time.Second))
		buf := make([]byte, 512)
		for answered.Load() < sent {
			if _, err := sock.Read(buf); err != nil {
				return
			}
			answered.Add(1)
		}
	}()
	for i := range sent {
		b, _ := new(dns.Msg).SetQuestion(fmt.Sprintf("b%d.allowed.test.", i), dns.TypeA).Pack()
		if _, err := sock.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for w.busy.Load()+answered.Load()+int32(w.dropped.Load()) < sent && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if d := w.dropped.Load(); d != 0 {
		t.Errorf("of a burst of %d: %d dropped, %d waiting or answering, %d answered; want none dropped", sent, d, w.busy.Load(), answered.Load())
	}
	close(release)
	<-done
	if n := answered.Load(); n != sent {
		t.Errorf("%d of %d answered", n, sent)
	}
}

// TestUDPLargeQuery: a query padded (EDNS padding) to 3,000 bytes is
// answered, as one up to the read buffer's size always was.
func TestUDPLargeQuery(t *testing.T) {
	_, _, c, addr := udpFixture(t, udpMaxWorkers, "*.allowed.test")
	q := new(dns.Msg).SetQuestion("www.allowed.test.", dns.TypeA)
	q.SetEdns0(4096, false)
	opt := q.IsEdns0()
	opt.Option = append(opt.Option, &dns.EDNS0_PADDING{Padding: make([]byte, 3000-q.Len()-4)})
	c.UDPSize = 4096
	for range 2 { // the second from the fast path
		r, _, err := c.Exchange(q, addr)
		if err != nil || r.Rcode != dns.RcodeSuccess {
			t.Fatalf("a %d-byte query: %v %v", q.Len(), r, err)
		}
	}
}

// TestUDPDualStack: on a dual-stack socket (the gateway's), the readers
// take queries from IPv4 clients (as IPv4-mapped addresses) and IPv6
// ones, and answer each where it came from, fast and slow; on an IPv4
// socket (the other tests') too.
func TestUDPDualStack(t *testing.T) {
	f := newFixtureWith(t, func(c *Config) {
		c.Clients = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	}, "*.allowed.test")
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv6unspecified})
	if err != nil {
		t.Skipf("no IPv6 socket here: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	f.srv.serveUDP([]*net.UDPConn{conn}, udpMaxWorkers)
	port := conn.LocalAddr().(*net.UDPAddr).Port
	c := &dns.Client{Timeout: 3 * time.Second}
	for _, host := range []string{"127.0.0.1", "::1"} {
		addr := net.JoinHostPort(host, fmt.Sprint(port))
		for i := range 3 { // the first slow, the rest from the fast path
			q := new(dns.Msg).SetQuestion("www.allowed.test.", dns.TypeA)
			r, _, err := c.Exchange(q, addr)
			if err != nil {
				t.Fatalf("from %s, query %d: %v", host, i, err)
			}
			if r.Id != q.Id || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
				t.Fatalf("from %s, query %d: %v", host, i, r)
			}
		}
	}
	// The fast path folds its repeats (TestFastJournalFolds): fewer
	// records than answers show that it answered; all six are counted.
	records, answers := countAnswers(f.log.Events(), "www.allowed.test")
	f.srv.held.flush()
	_, all := countAnswers(f.log.Events(), "www.allowed.test")
	if records >= 6 || all != 6 {
		t.Errorf("%d records counting %d answers, %d after the flush; want fewer than 6, and 6", records, answers, all)
	}
}

// TestUDPLinkLocal: a query from a link-local address on an unbound
// dual-stack socket is decided for its address without the zone (no
// prefix contains a zoned address) and answered out of the interface it
// came in on, from the fast path and the slow one; with Clients that do
// not hold it, it is refused as a foreign client (the control).
func TestUDPLinkLocal(t *testing.T) {
	p := nstest.Prefix()
	srv, cli := nstest.New(t, p+"s"), nstest.New(t, p+"c")
	nstest.Link(t, srv, p+"a", cli, p+"b")
	srv.Run(t, "ip", "addr", "add", "fe80::1/64", "dev", p+"a", "nodad")
	cli.Run(t, "ip", "addr", "add", "fe80::2/64", "dev", p+"b", "nodad")
	for _, tc := range []struct {
		clients string
		rcode   int
	}{{"fe80::/10", dns.RcodeSuccess}, {"198.18.0.0/24", dns.RcodeRefused}} {
		f := newFixtureWith(t, func(c *Config) { c.Clients = []netip.Prefix{netip.MustParsePrefix(tc.clients)} }, "*.allowed.test")
		var conn *net.UDPConn
		if err := srv.Do(func() (err error) {
			conn, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv6unspecified})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		f.srv.serveUDP([]*net.UDPConn{conn}, 8)
		server := fmt.Sprintf("[fe80::1%%%sb]:%d", p, conn.LocalAddr().(*net.UDPAddr).Port)
		err := cli.Do(func() error {
			c := &dns.Client{Timeout: 3 * time.Second}
			for i := range 3 { // slow, then fast
				r, _, err := c.Exchange(new(dns.Msg).SetQuestion("www.allowed.test.", dns.TypeA), server)
				if err != nil {
					return fmt.Errorf("clients %s, query %d: %w", tc.clients, i, err)
				}
				if r.Rcode != tc.rcode {
					return fmt.Errorf("clients %s, query %d: %s, want %s", tc.clients, i, dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
				}
			}
			return nil
		})
		if err != nil {
			t.Error(err)
			continue
		}
		if tc.rcode != dns.RcodeSuccess {
			continue
		}
		// Fewer records than answers: the fast path answered (it folds
		// its repeats, TestFastJournalFolds); all three are counted.
		records, _ := countAnswers(f.log.Events(), "www.allowed.test")
		f.srv.held.flush()
		if _, all := countAnswers(f.log.Events(), "www.allowed.test"); records >= 3 || all != 3 {
			t.Errorf("%d records before the flush, %d answers after it; want fewer than 3, and 3", records, all)
		}
	}
}

// TestServeAfterShutdown: once shut down, a resolver serves nothing more:
// Serve refuses, and starts no reader that no one would stop (the last
// Shutdown would wait for it). The control: a resolver that is not shut
// down serves sockets of the same kind.
func TestServeAfterShutdown(t *testing.T) {
	listen := func() (net.Listener, *net.UDPConn) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		return ln, listenUDP(t, net.IPv4(127, 0, 0, 1))
	}
	live := newFixture(t, "*.allowed.test")
	ln, pc := listen()
	if err := live.srv.Serve(ln, pc); err != nil {
		t.Fatalf("control: %v", err)
	}
	live.srv.Shutdown()
	stopped := newFixture(t, "*.allowed.test")
	stopped.srv.Shutdown()
	ln, pc = listen()
	if err := stopped.srv.Serve(ln, pc); err == nil {
		t.Error("Serve after Shutdown served")
	}
	done := make(chan struct{})
	go func() {
		stopped.srv.Shutdown() // waits for no reader
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second): // the test's cleanup closes the socket, and the reader ends
		t.Fatal("Shutdown waits for a reader that Serve started after Shutdown")
	}
}

// TestUDPShutdownDropsQueued: queries still queued for a worker when the
// resolver shuts down are dropped, not asked upstream (whose sets and
// journal close next); the one a worker holds in the upstream ends. The
// control: the same queue without Shutdown is asked upstream whole.
func TestUDPShutdownDropsQueued(t *testing.T) {
	for _, stop := range []bool{false, true} {
		f, w, _, addr := udpFixture(t, 1, "*.allowed.test")
		release, held := holdUpstream(t, f)
		sock, err := net.Dial("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer sock.Close()
		const sent = 5
		for i := range sent {
			b, _ := new(dns.Msg).SetQuestion(fmt.Sprintf("s%d.allowed.test.", i), dns.TypeA).Pack()
			if _, err := sock.Write(b); err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				held() // the one worker is in the upstream: the rest queue
			}
		}
		waitBusy := func(n int32) {
			for deadline := time.Now().Add(5 * time.Second); w.busy.Load() != n && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
		}
		waitBusy(sent)
		if stop {
			f.srv.Shutdown()
		}
		close(release)
		waitBusy(0)
		want := sent
		if stop {
			want = 1
		}
		if got := f.askedUpstream("allowed.test."); got != want || w.busy.Load() != 0 {
			t.Errorf("shut down %v: %d of %d queries asked upstream (%d still busy), want %d", stop, got, sent, w.busy.Load(), want)
		}
	}
}
