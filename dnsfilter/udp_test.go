package dnsfilter

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// udpFixture serves f's resolver on a loopback socket with at most max
// workers, and returns the socket's workers and a client for it.
func udpFixture(t *testing.T, maxWorkers int32, allow ...string) (*fixture, *udpWorkers, *dns.Client, string) {
	t.Helper()
	f := newFixtureWith(t, func(c *Config) {
		c.Clients = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	}, allow...)
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	w := f.srv.serveUDP(conn, maxWorkers)
	return f, w, &dns.Client{Timeout: 3 * time.Second}, conn.LocalAddr().String()
}

// TestUDPWorkersGrowWithLoad: a resolver starts with a few workers, and
// queries that wait on the upstream do not keep others from an answer:
// a worker that takes a query while no other reads adds one.
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
// maximum of workers start; the rest wait in the socket.
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
			t.Errorf("a query queued in the socket: %v", err)
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
		asked <- struct{}{}
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
