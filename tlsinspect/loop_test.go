package tlsinspect

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
	"golang.org/x/sys/unix"
)

// loopProxy is a proxy whose loops may relay to loopback listeners.
func loopProxy(t *testing.T, cfg Config) (*Proxy, *journal.Memory) {
	t.Helper()
	ev := &journal.Memory{}
	cfg.Pins, cfg.Journal = fakePins{}, ev
	p, err := policy.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	px, err := New(cfg, p)
	if err != nil {
		t.Fatal(err)
	}
	px.loopbackForTests = true
	t.Cleanup(func() {
		px.Close()
		for _, e := range ev.Events() {
			if !e.Reason.Known() {
				t.Errorf("journaled reason %q is not in journal's vocabulary", e.Reason)
			}
		}
	})
	return px, ev
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c := dial(t, ln)
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return c, s.(*net.TCPConn)
}

// dial connects to ln; the connection is closed when the test ends.
func dial(t *testing.T, ln net.Listener) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// relayTo hands the proxy's end of a new agent connection to a loop, as
// a decided connection to dst with replay to send first, and returns the
// agent's end.
func relayTo(t *testing.T, px *Proxy, dst netip.AddrPort, replay []byte) *net.TCPConn {
	t.Helper()
	client, proxyIn := tcpPair(t)
	l, err := px.anyLoop()
	if err != nil {
		t.Fatal(err)
	}
	fd, err := dupFd(proxyIn)
	if err != nil {
		t.Fatal(err)
	}
	proxyIn.Close()
	px.conns.Add(1)
	ev := journal.Event{Layer: journal.LayerTLS, Dst: dst, PolicyHash: px.policy.Load().Hash()} // decided under the policy in force
	if !l.do(func() { l.adopt(fd, dst, replay, ev) }) {
		t.Fatal("loop stopped")
	}
	return client
}

// relayed returns the agent's and the destination's ends of a connection
// relayed by a loop of px.
func relayed(t *testing.T, px *Proxy) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client = relayTo(t, px, ln.Addr().(*net.TCPAddr).AddrPort(), nil)
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	server = s.(*net.TCPConn)
	// A relay that stalls fails the test instead of hanging it until go
	// test's own timeout.
	client.SetDeadline(time.Now().Add(stallBound))
	server.SetDeadline(time.Now().Add(stallBound))
	return client, server
}

// stallBound is how long a test's reads and writes on a relayed
// connection may take in all.
const stallBound = 20 * time.Second

// onLoops runs f on each of px's loops in turn.
func onLoops(px *Proxy, f func(*loop)) {
	for _, l := range px.loops {
		l.call(func() { f(l) })
	}
}

// relayedSockets returns the agent's and the destination's socket of the
// one connection px holds; the test fails if it holds none or several.
func relayedSockets(t *testing.T, px *Proxy) (cfd, ufd int) {
	t.Helper()
	seen := map[*conn]bool{}
	onLoops(px, func(l *loop) {
		for _, c := range l.conns {
			if !seen[c] {
				seen[c] = true
				cfd, ufd = c.cfd, c.ufd
			}
		}
	})
	if len(seen) != 1 || ufd < 0 {
		t.Fatalf("the proxy holds %d connections (upstream %d), want one relayed", len(seen), ufd)
	}
	return cfd, ufd
}

// waitFor polls cond until it holds, and fails the test, saying what it
// waited for, if it does not within the bound.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", within, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitDone waits until px holds no connection.
func waitDone(t *testing.T, px *Proxy, within time.Duration) {
	t.Helper()
	waitFor(t, within, "the proxy to let its connections go", func() bool { return px.conns.Load() == 0 })
}

// held returns the bytes px's loops hold on their way to the destination
// (up) or to the agent.
func held(px *Proxy, up bool) int {
	n := 0
	onLoops(px, func(l *loop) {
		seen := map[*conn]bool{}
		for _, c := range l.conns {
			switch {
			case seen[c]:
			case up:
				n += c.up.inPipe
			default:
				n += c.down.inPipe
			}
			seen[c] = true
		}
	})
	return n
}

// queued returns the bytes in c's receive queue (SIOCINQ, unread) or
// send queue (SIOCOUTQ, not yet acknowledged by the peer).
func queued(t *testing.T, c *net.TCPConn, req uint) int {
	t.Helper()
	var n int
	err := control(c, func(fd int) (err error) {
		n, err = unix.IoctlGetInt(fd, req)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// ping moves one byte from one end to the other and fails the test if it
// does not get through within a few seconds.
func ping(t *testing.T, from, to *net.TCPConn) {
	t.Helper()
	if _, err := from.Write([]byte{'x'}); err != nil {
		t.Fatalf("a byte could not be sent: %v", err)
	}
	to.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer to.SetReadDeadline(time.Now().Add(stallBound))
	if _, err := io.ReadFull(to, make([]byte, 1)); err != nil {
		t.Fatalf("a byte was not relayed: %v", err)
	}
}

// TestRelayBothWays: bytes arrive intact both ways, each direction's end
// reaches the other side as EOF (half-close), and the proxy lets the
// connection go once both are done.
func TestRelayBothWays(t *testing.T) {
	px, _ := loopProxy(t, Config{})
	client, server := relayed(t, px)
	up := make([]byte, 8<<20)
	down := make([]byte, 3<<20)
	rand.Read(up)
	rand.Read(down)
	go func() {
		client.Write(up)
		client.CloseWrite()
	}()
	gotUp, err := io.ReadAll(server) // ends at the client's half-close
	if err != nil || !bytes.Equal(gotUp, up) {
		t.Fatalf("upstream got %d bytes (err %v), want %d intact", len(gotUp), err, len(up))
	}
	server.Write(down)
	server.CloseWrite()
	gotDown, err := io.ReadAll(client)
	if err != nil || !bytes.Equal(gotDown, down) {
		t.Fatalf("client got %d bytes (err %v), want %d intact", len(gotDown), err, len(down))
	}
	waitDone(t, px, 5*time.Second)
}

// TestRelaySmallExchanges: request and answer, many times over, as a
// TLS session goes.
func TestRelaySmallExchanges(t *testing.T) {
	px, _ := loopProxy(t, Config{})
	client, server := relayed(t, px)
	buf := make([]byte, 4096)
	for i := range 200 {
		msg := bytes.Repeat([]byte{byte(i)}, 1+i*17%4000)
		if _, err := client.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(server, buf[:len(msg)]); err != nil || !bytes.Equal(buf[:len(msg)], msg) {
			t.Fatalf("exchange %d up: %v", i, err)
		}
		if _, err := server.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(client, buf[:len(msg)]); err != nil || !bytes.Equal(buf[:len(msg)], msg) {
			t.Fatalf("exchange %d down: %v", i, err)
		}
	}
}

// TestRelayResetTearsDown: a reset on one side reaches the other as a
// reset, not as the end of a complete stream.
func TestRelayResetTearsDown(t *testing.T) {
	px, _ := loopProxy(t, Config{})
	client, server := relayed(t, px)
	client.Write([]byte("partial upload"))
	client.SetLinger(0)
	client.Close()
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(server)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("server read %q then %v, want a reset", got, err)
	}
	waitDone(t, px, 5*time.Second)
}

// TestIdleRelayHoldsNoPipe: after a bulk transfer, a connection waiting
// for data has given its pipes back to the loop.
func TestIdleRelayHoldsNoPipe(t *testing.T) {
	px, _ := loopProxy(t, Config{})
	client, server := relayed(t, px)
	go client.Write(make([]byte, 1<<20)) // fills the read buffer: the loop splices
	if _, err := io.ReadFull(server, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	var held, free int
	onLoops(px, func(l *loop) {
		for _, c := range l.conns {
			for _, h := range []*half{&c.up, &c.down} {
				if h.p != nil {
					held++
				}
			}
		}
		free += len(l.pipes)
	})
	if held != 0 || free == 0 {
		t.Errorf("idle connection holds %d pipes, the loop keeps %d for reuse", held, free)
	}
}

// TestRelayIdleTimeout: traffic in one direction keeps the connection
// open however long the other is silent; silence both ways ends it with
// a reset on both sides.
func TestRelayIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	px, _ := loopProxy(t, Config{IdleTimeout: idle})
	client, server := relayed(t, px)
	start := time.Now()
	waitFor(t, 10*time.Second, "one-way traffic to outlive three idle timeouts", func() bool {
		ping(t, client, server)
		return time.Since(start) > 3*idle
	})
	waitDone(t, px, 5*time.Second)
	buf := make([]byte, 1)
	for name, c := range map[string]*net.TCPConn{"client": client, "server": server} {
		c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(buf); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%s after the idle timeout: %v, want a reset", name, err)
		}
	}
}

// TestRelayStalledReaderLosesNothing: a side that stops reading for
// longer than the idle timeout, while the other direction keeps the
// connection alive, gets every byte once it reads again.
func TestRelayStalledReaderLosesNothing(t *testing.T) {
	// The idle timeout is long beside the keep-alive's period, so that a
	// loaded machine (the race detector, the whole suite at once) that
	// holds a goroutine back does not make the connection look idle.
	const idle = time.Second
	px, _ := loopProxy(t, Config{IdleTimeout: idle})
	client, server := relayed(t, px)
	// The other direction keeps the connection alive the whole time, the
	// server's reads included: once the proxy has handed the last bytes to
	// the server's socket and passed the FIN, the relay moves nothing
	// while the server drains its buffer.
	done := make(chan struct{})
	defer close(done)
	go func() {
		tick := time.NewTicker(idle / 10)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				server.Write([]byte{'x'})
			}
		}
	}()
	go io.Copy(io.Discard, client)
	up := make([]byte, 16<<20) // more than the socket buffers hold: writes stall
	rand.Read(up)
	go func() {
		client.Write(up)
		client.CloseWrite()
	}()
	// The server reads nothing until the upload has stalled (the proxy
	// holds bytes the server's full buffer cannot take) for three idle
	// timeouts.
	var stalled time.Time
	waitFor(t, 20*time.Second, "the upload to stall for three idle timeouts", func() bool {
		switch {
		case held(px, true) == 0 || queued(t, server, unix.SIOCINQ) == 0:
			stalled = time.Time{}
		case stalled.IsZero():
			stalled = time.Now()
		}
		return !stalled.IsZero() && time.Since(stalled) > 3*idle
	})
	got, err := io.ReadAll(server)
	if err != nil || !bytes.Equal(got, up) {
		t.Fatalf("server got %d bytes (err %v), want %d intact", len(got), err, len(up))
	}
}

// TestDialReplay: the replay reaches the destination whole, whatever its
// size and however slowly the destination reads, over IPv4 and IPv6, and
// the destination's socket has no Nagle delay.
func TestDialReplay(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) { testDialReplay(t, addr) })
	}
}

func testDialReplay(t *testing.T, addr string) {
	px, ev := loopProxy(t, Config{})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dst := ln.Addr().(*net.TCPAddr).AddrPort()
	for _, size := range []int{0, 517, 4 << 20} { // nothing, a hello, more than the send buffer
		first := make([]byte, size)
		rand.Read(first)
		client := relayTo(t, px, dst, first)
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		// The destination reads nothing yet: a replay it can take
		// arrives whole, a larger one waits in the loop for room.
		waitFor(t, 5*time.Second, fmt.Sprintf("%d bytes of replay to arrive or wait", size), func() bool {
			return queued(t, s.(*net.TCPConn), unix.SIOCINQ) == size || replayWaiting(px) > 0
		})
		_, ufd := relayedSockets(t, px)
		if v, _ := rawGetsockoptInt(ufd, unix.IPPROTO_TCP, unix.TCP_NODELAY); v != 1 {
			t.Errorf("upstream TCP_NODELAY = %d", v)
		}
		client.CloseWrite()
		b, _ := io.ReadAll(s)
		if !bytes.Equal(b, first) {
			t.Errorf("%d bytes replayed, the destination read %d", size, len(b))
		}
		s.Close()
		client.Close()
		waitDone(t, px, 5*time.Second)
		if e := ev.Last(); e.Kind != journal.Allowed || e.Dst != dst {
			t.Errorf("%d bytes: journal has %+v, want the allowed connection", size, e)
		}
	}
}

// replayWaiting returns the bytes of a replay that px's loops hold until
// the destination's socket takes them.
func replayWaiting(px *Proxy) int {
	n := 0
	onLoops(px, func(l *loop) {
		for fd, c := range l.conns {
			if int(fd) == c.ufd && c.phase == phaseDial && !c.us.writable {
				n += len(c.hello)
			}
		}
	})
	return n
}

// TestDialRefused: a destination that refuses the connection is a
// dial_failed refusal, and the agent gets a reset.
func TestDialRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dst := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close() // nothing listens there now
	for _, first := range [][]byte{nil, []byte("hello")} {
		px, ev := loopProxy(t, Config{})
		client := relayTo(t, px, dst, first)
		client.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := client.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("first=%q: the agent read %v, want a reset", first, err)
		}
		waitDone(t, px, 5*time.Second)
		if e := ev.Last(); e.Reason != journal.ReasonDialFailed || !strings.Contains(e.Detail, "refused") {
			t.Errorf("first=%q: journal has %q (%s), want %s for a refusal", first, e.Reason, e.Detail, journal.ReasonDialFailed)
		}
	}
}

// TestDialTimeout: a destination that never answers the SYN (here a
// listener whose accept queue is full) fails at the dial timeout.
func TestDialTimeout(t *testing.T) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(fd)
	dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port))
	for range 4 { // fill the accept queue
		c, err := net.DialTimeout("tcp", dst.String(), 200*time.Millisecond)
		if err != nil {
			break
		}
		defer c.Close()
	}
	px, ev := loopProxy(t, Config{DialTimeout: 300 * time.Millisecond})
	start := time.Now()
	relayTo(t, px, dst, []byte("hello"))
	waitDone(t, px, 3*time.Second)
	if e := ev.Last(); e.Reason != journal.ReasonDialFailed || !strings.Contains(e.Detail, "timed out") {
		t.Errorf("journal has %q (%s), want %s for a timeout", e.Reason, e.Detail, journal.ReasonDialFailed)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("gave up after %v, before the timeout", d)
	}
}

// TestCloseCutsRelayed: closing the proxy resets both sides of every
// relayed connection and stops its loops.
func TestCloseCutsRelayed(t *testing.T) {
	px, _ := loopProxy(t, Config{})
	client, server := relayed(t, px)
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(server, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	px.Close()
	if n := px.conns.Load(); n != 0 {
		t.Errorf("%d connections counted after Close", n)
	}
	for name, c := range map[string]*net.TCPConn{"client": client, "server": server} {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%s after Close: %v, want a reset", name, err)
		}
	}
	l := px.loops[0]
	if l.do(func() {}) {
		t.Error("a stopped loop took work")
	}
}

// TestBulkFlowIsPaced: the destination socket of a bulk flow gets
// notSentLowat; that of a small exchange keeps the system's default.
func TestBulkFlowIsPaced(t *testing.T) {
	px, _ := loopProxy(t, Config{})
	client, server := relayed(t, px)
	lowat := func() (up, down int) {
		cfd, ufd := relayedSockets(t, px)
		up, _ = rawGetsockoptInt(ufd, unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT)
		down, _ = rawGetsockoptInt(cfd, unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT)
		return up, down
	}
	if _, err := client.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(server, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	if up, _ := lowat(); up == notSentLowat {
		t.Fatal("a small exchange paced the destination socket")
	}
	go client.Write(make([]byte, 1<<20))
	if _, err := io.ReadFull(server, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if up, down := lowat(); up != notSentLowat || down == notSentLowat {
		t.Errorf("after a bulk upload: TCP_NOTSENT_LOWAT %d upstream, %d toward the agent; want %d and the default", up, down, notSentLowat)
	}
}

// TestUpstreamKeepAliveLater: a relayed connection's upstream socket has
// no keep-alive at first and the proxy's once it has lived keepAliveAfter,
// whether or not data moved meanwhile.
func TestUpstreamKeepAliveLater(t *testing.T) {
	// Restored once the proxy's loops, which read it, have stopped
	// (cleanups run in reverse order).
	old := keepAliveAfter
	t.Cleanup(func() { keepAliveAfter = old })
	keepAliveAfter = 300 * time.Millisecond
	px, _ := loopProxy(t, Config{})
	start := time.Now()
	client, server := relayed(t, px)
	_, ufd := relayedSockets(t, px)
	// Traffic all along: the keep-alive comes anyway, not before its time.
	waitFor(t, 5*time.Second, "keep-alive on the upstream socket", func() bool {
		ping(t, client, server)
		v, err := rawGetsockoptInt(ufd, unix.SOL_SOCKET, unix.SO_KEEPALIVE)
		if err != nil {
			t.Fatal(err)
		}
		if v != 0 && time.Since(start) < keepAliveAfter {
			t.Fatalf("keep-alive set after %v, before %v", time.Since(start), keepAliveAfter)
		}
		return v != 0
	})
	checkSockopts(t, ufd)
}

// TestAcceptPausesOutOfDescriptors: with no descriptor left, each
// listener (the TLS loops' and the HTTP goroutine's) leaves new
// connections queued (no spin, no reset, one warning rather than one
// per retry) and takes them once descriptors are free again.
func TestAcceptPausesOutOfDescriptors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		serve func(*Proxy, *net.TCPListener) error
	}{
		{"tls", (*Proxy).ServeTLS},
		{"http", func(px *Proxy, ln *net.TCPListener) error { px.ServeHTTP(ln); return nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logged bytes.Buffer
			px, ev := loopProxy(t, Config{Log: slog.New(slog.NewTextHandler(&lockedWriter{w: &logged}, nil))})
			ln, err := Listen(net.ListenConfig{}, "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.serve(px, ln); err != nil {
				t.Fatal(err)
			}
			out := acceptOutOfDescriptors(t, px, ln.Addr().(*net.TCPAddr).Port)
			if e := ev.Last(); e.Reason != journal.ReasonNoOrigDst {
				t.Errorf("journal has %q, want %s", e.Reason, journal.ReasonNoOrigDst)
			}
			px.Close()
			if n := strings.Count(logged.String(), "proxy accept"); n < 1 || n > 1+int(out/time.Second) {
				t.Errorf("%d accept warnings over %v out of descriptors, want 1 a second:\n%s", n, out, logged.String())
			}
		})
	}
}

// acceptOutOfDescriptors connects three clients to port while the
// process has no descriptor free, waits until px has failed to accept
// and paused three times, checks that none is answered and that px
// paused no more often than it should, frees descriptors and checks that
// each is then reset (a loopback connection was not redirected). It
// returns how long the process was out of descriptors.
func acceptOutOfDescriptors(t *testing.T, px *Proxy, port int) time.Duration {
	t.Helper()
	// The clients' sockets are made now and connected once no descriptor
	// is left: connect needs none.
	clients := make([]int, 3)
	for i := range clients {
		var err error
		if clients[i], err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
			t.Fatal(err)
		}
		defer unix.Close(clients[i])
	}
	var limit unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &limit); err != nil {
		t.Fatal(err)
	}
	free, err := unix.Dup(0) // the lowest free descriptor number
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(free)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: uint64(free), Max: limit.Max}); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &limit); err != nil {
				t.Fatal(err)
			}
		}
	}
	defer restore()
	start := time.Now()
	for _, fd := range clients {
		if err := unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			restore()
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "the proxy to pause accepting three times", func() bool { return px.acceptPauses.Load() >= 3 })
	pauses, window := px.acceptPauses.Load(), time.Since(start)
	for _, fd := range clients {
		if _, _, err := unix.Recvfrom(fd, make([]byte, 1), unix.MSG_DONTWAIT); !errors.Is(err, unix.EAGAIN) {
			restore()
			t.Fatalf("a client queued while no descriptor was free: %v, want nothing yet", err)
		}
	}
	restore()
	out := time.Since(start)
	// Each pause lasts 10 ms: more of them means the accept spins.
	if most := int64(window/(10*time.Millisecond)) + 1; pauses > most {
		t.Errorf("accepting paused %d times in %v, at most %d expected", pauses, window, most)
	}
	for i, fd := range clients {
		waitFor(t, 3*time.Second, fmt.Sprintf("client %d to be taken and reset once descriptors were free", i), func() bool {
			_, _, err := unix.Recvfrom(fd, make([]byte, 1), unix.MSG_DONTWAIT)
			return errors.Is(err, unix.ECONNRESET)
		})
	}
	return out
}

// lockedWriter serialises writes to w, for a log written from several
// goroutines and read by the test.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (lw *lockedWriter) Write(p []byte) (int, error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.w.Write(p)
}

// TestMaxConnsFitTheDescriptorLimit: the default bound on connections
// leaves each its two sockets and a reserve within the limit, so that the
// proxy refuses one too many instead of running out of descriptors.
func TestMaxConnsFitTheDescriptorLimit(t *testing.T) {
	for _, tt := range []struct {
		limit uint64
		want  int64
	}{
		{1024, 448}, {20000, 9488}, {1 << 20, DefaultMaxConns}, {unix.RLIM_INFINITY, DefaultMaxConns}, {16, 1},
	} {
		if got := maxConnsFor(tt.limit); got != tt.want {
			t.Errorf("limit %d: %d connections, want %d", tt.limit, got, tt.want)
		}
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	px, _ := loopProxy(t, Config{})
	if got := px.cfg.MaxConns; got != maxConnsFor(lim.Cur) || uint64(2*got) > lim.Cur {
		t.Errorf("New left MaxConns %d under a limit of %d descriptors", got, lim.Cur)
	}
}

// TestRelayResetMidTransfer: a side that resets in the middle of a bulk
// transfer, while its peer is slow to read (so the proxy holds bytes for
// it), is seen by that peer as a reset after what it sent, never as the
// end of a complete stream; both directions.
func TestRelayResetMidTransfer(t *testing.T) {
	for _, upload := range []bool{true, false} {
		px, _ := loopProxy(t, Config{})
		client, server := relayed(t, px)
		from, to := client, server
		if !upload {
			from, to = server, client
		}
		go from.Write(make([]byte, 8<<20)) // more than the buffers on the way hold
		// The peer reads nothing until its buffer is full and the proxy
		// holds bytes for it.
		waitFor(t, 5*time.Second, "the proxy to hold bytes for a slow reader", func() bool {
			return held(px, upload) > 0 && queued(t, to, unix.SIOCINQ) > 0
		})
		from.SetLinger(0)
		from.Close()
		to.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := io.Copy(io.Discard, to)
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("upload=%v: the peer read %d bytes then %v, want a reset", upload, n, err)
		}
		waitDone(t, px, 5*time.Second)
	}
}
