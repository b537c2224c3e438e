package tlsinspect

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"syscall"
	"time"

	"github.com/sluicegw/sluice/journal"
	"golang.org/x/sys/unix"
)

// phase is where a connection is in its life on a loop.
type phase uint8

const (
	phaseHello phase = iota // reading the ClientHello
	phaseDial               // connecting upstream and writing the replay
	phaseRelay              // moving bytes both ways
	phaseDrain              // one side failed: the other gets what is held for it, then a reset
	phaseClosed
)

// sockState is what epoll last said of a socket (edge-triggered: a flag
// stays set until a call on the socket finds it false).
type sockState struct {
	readable, writable bool
	// out: the socket's registration asks for EPOLLOUT. A socket is
	// registered without it while it is writable: a writable socket
	// added with it reports so at once, and the loop wakes up once more
	// for a connection, to find nothing to do. A write that would block
	// adds it (see settleWrite).
	out bool
	// hup: the peer's FIN (or an error) has arrived, so a short read does
	// not mean the socket is drained: its end is still to be read.
	hup bool
}

// half is one direction of a relayed connection.
type half struct {
	p      *pipe // holds inPipe bytes on their way; nil when empty
	inPipe int
	bulk   bool // splicing: the last read filled the buffer
	moved  int  // spliced in the current burst
	eof    bool // the source ended
	shut   bool // its end was passed on (or both ends closed)
	paced  bool // the destination socket has notSentLowat
}

func (h *half) finished() bool { return h.eof && h.inPipe == 0 }

// conn is one agent connection on a loop, and its upstream once dialed.
type conn struct {
	l        *loop
	serial   uint32
	cfd, ufd int // agent side; destination side (-1 until dialed, and once closed while draining)
	failed   int // the socket whose error ends the connection, -1 if none
	cs, us   sockState
	phase    phase
	pending  bool // counted as awaiting a decision
	dst      netip.AddrPort
	ev       journal.Event // until relaying; then only the name is kept
	name     string        // relaying: the name it was allowed for, "" for a cidr entry
	hello    []byte        // phaseHello: read so far; phaseDial: still to write
	reader   HelloReader   // phaseHello: what of hello is read
	wrote    bool          // phaseDial: some of the replay was written
	up, down half          // agent→destination, destination→agent
	last     time.Time     // data last moved either way
	since    time.Time     // relaying since
	kept     bool          // the upstream socket has keep-alive (see keepAliveAfter)
	drainEnd time.Time     // phaseDrain: the reset goes out by then at the latest
	deadline time.Time
	slot     int // in the loop's deadline heap, -1 when not
	// reported: report mode let it through, and journaled it as a
	// would-be refusal; no allowed record follows, and no revocation.
	reported bool
}

// sockEvents is what a connection's sockets are registered for, with
// EPOLLOUT added only when needed (see sockState.out).
const sockEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET

// errShortPipe: an empty pipe took less than a read's worth; never on Linux.
var errShortPipe = errors.New("pipe took a partial write")

// open takes a socket accepted from a TLS listener on port.
func (l *loop) open(fd int, port uint16) {
	px := l.px
	ev := journal.Event{Agent: px.cfg.Agent, Layer: journal.LayerTLS, Proto: "tcp"}
	if reason := px.enter(); reason != "" {
		px.record(ev, reason)
		resetFd(fd)
		return
	}
	c := l.newConn(fd, ev, true)
	if c == nil {
		return
	}
	dst, err := px.dstOf(fd, port)
	if err != nil {
		c.refuse(journal.ReasonNoOrigDst)
		return
	}
	c.dst, c.ev.Dst = dst, dst
	pass, reason := px.route(dst, &c.ev)
	switch {
	case reason != "":
		c.refuse(reason)
		return
	case pass:
		c.donePending()
		c.dial(nil)
		return
	}
	l.setDeadline(c, l.now.Add(px.cfg.HelloTimeout))
	// A client sends its hello right behind the last ACK of its
	// handshake, and it has often arrived by the time the loop accepts:
	// read at once rather than wait for the event (as HAProxy does). At
	// one client, p50 about 30 µs lower over four alternating runs.
	c.cs.readable = true
	c.readHello()
}

// adopt takes a connection decided elsewhere (counted in px.conns, not
// pending) and forwards it to dst.
func (l *loop) adopt(fd int, dst netip.AddrPort, replay []byte, ev journal.Event) {
	c := l.newConn(fd, ev, false)
	if c == nil {
		return
	}
	c.dst = dst
	if l.px.changedSince(ev, dst) {
		// Decided on a goroutine, revoked before it got here.
		if !l.px.cfg.Report {
			c.refuse(journal.ReasonRevoked)
			return
		}
		l.px.wouldRefuse(c.ev, journal.ReasonRevoked)
		c.reported = true
	}
	c.dial(replay)
}

// newConn registers the agent's socket fd; on failure it refuses it and
// returns nil.
func (l *loop) newConn(fd int, ev journal.Event, pending bool) *conn {
	l.serial++
	c := &conn{l: l, serial: l.serial, cfd: fd, ufd: -1, failed: -1, ev: ev, pending: pending, slot: -1}
	// Edge-triggered, and writable until a write says otherwise (see
	// sockState.out).
	c.cs.writable = true
	if err := l.add(fd, sockEvents, c.serial); err != nil {
		c.ev.Detail = err.Error() // out of memory or of epoll watches
		c.refuse(journal.ReasonTooManyConns)
		return nil
	}
	l.conns[int32(fd)] = c
	return c
}

func (c *conn) donePending() {
	if c.pending {
		c.pending = false
		c.l.px.pending.Add(-1)
	}
}

// event takes what epoll reported for one of c's sockets.
func (c *conn) event(fd int, events uint32) {
	st := &c.cs
	if fd == c.ufd {
		st = &c.us
	}
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		st.readable = true
	}
	if events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		st.writable = true
	}
	if events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		st.hup = true
	}
	switch c.phase {
	case phaseHello:
		c.readHello()
	case phaseDial:
		c.dialStep()
	case phaseRelay:
		c.relay()
	case phaseDrain:
		c.drain()
	}
}

// expired acts on c's deadline: the hello's, the dial's or the idle one.
func (c *conn) expired() {
	l := c.l
	switch c.phase {
	case phaseHello:
		c.refuse(journal.ReasonHelloTimeout)
	case phaseDial:
		c.ev.Detail = fmt.Sprintf("connect %s: %v", c.dst, syscall.ETIMEDOUT)
		c.refuse(journal.ReasonDialFailed)
	case phaseRelay:
		if !c.kept && !l.now.Before(c.since.Add(keepAliveAfter)) {
			c.kept = true
			_ = setKeepAlive(c.ufd) // best effort: the idle timeout still bounds it
		}
		if idle := l.px.cfg.IdleTimeout; idle > 0 && !l.now.Before(c.last.Add(idle)) {
			c.cut()
			return
		}
		l.setDeadline(c, c.relayDeadline()) // it moved data since: wait again
	case phaseDrain:
		c.drain()
	default:
		l.setDeadline(c, time.Time{})
	}
}

// readHello reads what the agent sent until the hello is decided.
func (c *conn) readHello() {
	px := c.l.px
	for c.cs.readable {
		room := c.l.buf[:min(len(c.l.buf), px.cfg.MaxHello-len(c.hello))]
		n, err := rawRead(c.cfd, room)
		switch {
		case errors.Is(err, unix.EAGAIN):
			c.cs.readable = false
			return
		case err != nil || n == 0: // reset or closed before a whole hello
			c.ev.Detail = "closed before a whole ClientHello"
			if err != nil {
				c.ev.Detail = err.Error()
			}
			c.refuse(journal.ReasonNotTLS)
			return
		case n < len(room) && !c.cs.hup:
			c.cs.readable = false // drained: the next byte brings an event
		}
		c.hello = append(c.hello, room[:n]...)
		hello, err := c.reader.Check(c.hello, px.cfg.MaxHello)
		switch {
		case errors.Is(err, ErrHelloTooBig):
			c.refuse(journal.ReasonHelloTooLarge)
			return
		case err != nil:
			c.ev.Detail = err.Error()
			if px.reportable(journal.ReasonNotTLS, nil) {
				// Report mode: what came is relayed as it came.
				c.pass(journal.ReasonNotTLS)
				c.dial(c.hello)
				return
			}
			c.refuse(journal.ReasonNotTLS)
			return
		case hello != nil:
			c.decide(hello)
			return
		}
	}
}

// decide checks a whole hello and forwards or refuses the connection.
func (c *conn) decide(hello *Hello) {
	px := c.l.px
	c.ev.Name = hello.ServerName
	reason, e := px.decideEntry(hello.ServerName, c.dst, &c.ev)
	if reason == "" && hello.HasECH() {
		reason = journal.ReasonECH
	}
	switch {
	case reason == "":
		c.donePending()
	case px.reportable(reason, e):
		c.pass(reason)
	default:
		c.refuse(reason)
		return
	}
	if e != nil && e.Inspected() && (reason == "" || reason == journal.ReasonNotPinned) {
		c.intercept(hello.Raw)
		return
	}
	c.dial(hello.Raw)
}

// pass journals what report mode lets through, a would-be refusal for
// reason, and ends the connection's wait for a decision.
func (c *conn) pass(reason journal.Reason) {
	c.l.px.wouldRefuse(c.ev, reason)
	c.reported = true
	c.donePending()
}

// dial connects to the destination, after the last check that it is not
// inside the gateway or the agents' networks, whatever led here.
func (c *conn) dial(replay []byte) {
	l := c.l
	if l.px.internal(c.dst.Addr()) {
		c.ev.Detail = "internal address"
		c.refuse(journal.ReasonDialFailed)
		return
	}
	fd, err := connectTo(c.dst)
	if err != nil {
		c.ev.Detail = err.Error()
		c.refuse(journal.ReasonDialFailed)
		return
	}
	c.ufd = fd
	c.phase, c.hello = phaseDial, replay
	// On a veth or loopback the handshake is usually complete when
	// connect returns: write at once rather than wait for the event, and
	// before the socket is registered, so that it asks for EPOLLOUT only
	// when it must wait for the handshake (see sockState.out).
	c.us.writable = true
	done, err := c.writeReplay()
	if err == nil {
		c.us.out = !done
		events := uint32(sockEvents)
		if c.us.out {
			events |= unix.EPOLLOUT
		}
		err = l.add(fd, events, c.serial)
	}
	if err != nil {
		c.ev.Detail = err.Error()
		c.refuse(journal.ReasonDialFailed)
		return
	}
	l.conns[int32(fd)] = c
	if done {
		c.established()
		return
	}
	l.setDeadline(c, l.now.Add(l.px.cfg.DialTimeout))
}

// dialStep writes the replay once the upstream connection allows it.
func (c *conn) dialStep() {
	if !c.us.writable {
		return
	}
	switch done, err := c.writeReplay(); {
	case err != nil:
		c.ev.Detail = err.Error()
		c.refuse(journal.ReasonDialFailed)
	case done:
		c.established()
	}
}

// writeReplay writes what it can of the replay, and reports done once
// all of it is written on an established connection. A write to a
// connection still in its handshake fails with EAGAIN, and epoll reports
// it writable once established; a refused or unreachable destination
// fails it with its error. With nothing to write, the socket's own state
// says whether the handshake is done.
func (c *conn) writeReplay() (done bool, _ error) {
	for {
		var err error
		switch {
		case len(c.hello) > 0:
			var n int
			if n, err = rawWrite(c.ufd, c.hello); err == nil {
				c.hello, c.wrote = c.hello[n:], true
				continue
			}
		case !c.wrote:
			err = connected(c.ufd)
		}
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.ENOTCONN):
			c.us.writable = false
			return false, nil
		default:
			return false, fmt.Errorf("connect %s: %v", c.dst, err)
		}
	}
}

// established records the allowed connection and starts relaying.
func (c *conn) established() {
	l := c.l
	if !c.reported {
		l.px.allowed(c.ev)
	}
	c.name = c.ev.Name // for a policy change (Proxy.SetPolicy); the event's memory goes
	c.ev = journal.Event{}
	c.phase, c.hello, c.last, c.since = phaseRelay, nil, l.now, l.now
	c.reader = HelloReader{} // it holds the hello's bytes too
	l.setDeadline(c, c.relayDeadline())
	c.relay()
}

// keepAliveAfter is how long a relayed connection lives before its
// upstream socket gets keep-alive (the agent's side inherits it from the
// listener). Probes start after keepAlive().Idle of silence either way, so
// setting it this late changes nothing for a connection that outlives
// it, and the short connections, most of them, never pay the two calls.
var keepAliveAfter = keepAlive().Idle / 2

// relayDeadline is the next time c needs looking at: its keep-alive or
// its idle timeout, whichever comes first (zero: never).
func (c *conn) relayDeadline() time.Time {
	var t time.Time
	if idle := c.l.px.cfg.IdleTimeout; idle > 0 {
		t = c.last.Add(idle)
	}
	if ka := c.since.Add(keepAliveAfter); !c.kept && (t.IsZero() || ka.Before(t)) {
		t = ka
	}
	return t
}

// relay moves what it can both ways, passes each side's end to the other
// side, and ends the connection when both are done or either fails.
func (c *conn) relay() {
	err := c.pump(&c.up, c.cfd, c.ufd, &c.cs, &c.us)
	if err == nil {
		err = c.pump(&c.down, c.ufd, c.cfd, &c.us, &c.cs)
	}
	if err == nil {
		err = c.passEnd(&c.up, &c.down, c.ufd)
	}
	if err == nil {
		err = c.passEnd(&c.down, &c.up, c.cfd)
	}
	switch {
	case err != nil:
		c.cut()
	case c.up.shut && c.down.shut:
		c.release() // both ends passed on: a plain close
	}
}

// passEnd sends a half-close to dst once h's source has ended and all
// of it was delivered. When the other direction is over too, the
// connection is closed instead, which sends the same FIN.
func (c *conn) passEnd(h, other *half, dst int) error {
	if h.shut || !h.finished() {
		return nil
	}
	h.shut = true
	if other.finished() {
		return nil
	}
	return rawShutdownWrite(dst)
}

// pump moves h's bytes from src to dst until one of them would block.
// Small exchanges (a handshake, a request, its answer) are one read and
// one write through the loop's buffer; a read that fills the buffer makes
// the flow bulk, which is spliced through a pipe (zero-copy) until a
// burst comes in smaller than the buffer. Bytes dst cannot take yet wait
// in the pipe.
func (c *conn) pump(h *half, src, dst int, ss, ds *sockState) error {
	l := c.l
	for {
		if h.inPipe > 0 {
			if !ds.writable {
				return nil
			}
			n, err := rawSplice(h.p.r, dst, h.inPipe)
			if stop, err := c.settleWrite(err, dst, ds); stop {
				return err
			}
			if n == 0 {
				return errShortPipe
			}
			h.inPipe -= n
			c.last = l.now
			if h.inPipe > 0 {
				continue
			}
			l.putPipe(h.p)
			h.p = nil
		}
		if h.eof || !ss.readable {
			return nil
		}
		if h.bulk {
			if h.p == nil {
				p, err := l.getPipe()
				if err != nil {
					return err
				}
				h.p = p
			}
			n, err := rawSplice(src, h.p.w, spliceChunk)
			stop, err := c.settle(err, src, &ss.readable)
			if stop || n == 0 {
				// The burst is over (drained, ended or failed): the pipe
				// is empty again, and a burst smaller than the buffer
				// ends bulk mode.
				l.putPipe(h.p)
				h.p = nil
				h.eof = !stop
				h.bulk, h.moved = h.moved >= readChunk, 0
				return err
			}
			h.inPipe, h.moved, c.last = n, h.moved+n, l.now
			continue
		}
		n, err := rawRead(src, l.buf)
		if stop, err := c.settle(err, src, &ss.readable); stop {
			return err
		}
		switch {
		case n == 0:
			h.eof = true
			return nil
		case n == len(l.buf):
			h.bulk = true
			if !h.paced {
				// See notSentLowat. Only bulk flows pay the call.
				h.paced = true
				_ = rawSetsockoptInt(dst, unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, notSentLowat)
			}
		case !ss.hup:
			ss.readable = false // drained: the next byte brings an event
		}
		c.last = l.now
		data := l.buf[:n]
		if ds.writable {
			w, err := rawWrite(dst, data)
			stop, err := c.settleWrite(err, dst, ds)
			if err != nil {
				return err
			}
			if !stop {
				data = data[w:]
			}
		}
		if len(data) > 0 { // keep the rest in a pipe until dst takes it
			p, err := l.getPipe()
			if err != nil {
				return err
			}
			w, err := rawWrite(p.w, data)
			if err == nil && w < len(data) {
				err = errShortPipe
			}
			if err != nil {
				p.close()
				return err
			}
			h.p, h.inPipe = p, len(data)
		}
	}
}

// settle sorts the outcome of a call on socket fd: it would block (ready
// is cleared: the next edge sets it), it failed (fd is the socket that
// ends the connection), or it went through (stop is false).
func (c *conn) settle(err error, fd int, ready *bool) (stop bool, _ error) {
	switch {
	case err == nil:
		return false, nil
	case errors.Is(err, unix.EAGAIN):
		*ready = false
		return true, nil
	default:
		c.failed = fd
		return true, err
	}
}

// settleWrite is settle for a write to fd, whose state is st: a write
// that would block also has epoll report the socket writable again, if
// its registration did not ask for that yet.
func (c *conn) settleWrite(err error, fd int, st *sockState) (stop bool, _ error) {
	stop, err = c.settle(err, fd, &st.writable)
	if stop && err == nil && !st.out {
		// Modified, the registration reports the socket at once if it
		// became writable since the write: no edge is missed.
		if err := c.l.ctl(unix.EPOLL_CTL_MOD, fd, sockEvents|unix.EPOLLOUT, c.serial); err != nil {
			c.failed = fd
			return true, err
		}
		st.out = true
	}
	return stop, err
}

// cut ends a connection with a reset on both sides, as a direct
// connection would have seen it: a FIN would tell the peer that the
// stream ended completely, and a truncated upload or download would pass
// for a whole one. When one side failed (a reset, a broken connection),
// its socket is closed as it is, and the other side first gets what the
// proxy still holds for it: the bytes its peer sent before failing, as a
// direct connection would have delivered them before the reset (see
// drain). An idle timeout or the proxy stopping resets both at once.
func (c *conn) cut() {
	if c.failed >= 0 && c.phase == phaseRelay && !c.l.stopping {
		c.startDrain()
		return
	}
	for _, fd := range []int{c.cfd, c.ufd} {
		if fd >= 0 && fd != c.failed {
			_ = setReset(fd)
		}
	}
	c.release()
}

// drainTimeout bounds how long the side that did not fail may take to
// take what is held for it; then it is reset all the same.
const drainTimeout = 5 * time.Second

// drainPoll is how often a draining socket's queue is looked at: the
// kernel signals no event when the last byte is acknowledged.
const drainPoll = 5 * time.Millisecond

// startDrain closes the failed socket and starts draining toward the other.
func (c *conn) startDrain() {
	l := c.l
	failed := c.failed
	delete(l.conns, int32(failed))
	rawClose(failed)
	if failed == c.cfd {
		c.cfd, c.up.eof = -1, true // nothing more comes from the agent
	} else {
		c.ufd, c.down.eof = -1, true
	}
	c.failed = -1
	c.phase, c.drainEnd = phaseDrain, l.now.Add(drainTimeout)
	c.drain()
}

// drain moves what the pipe holds for the remaining side, then resets it
// once the peer has acknowledged every byte (SIOCOUTQ is zero) or at
// drainEnd; if that side fails too, it is closed as it is.
func (c *conn) drain() {
	l := c.l
	h, fd, ss, ds := &c.up, c.ufd, &c.cs, &c.us
	if c.ufd < 0 {
		h, fd, ss, ds = &c.down, c.cfd, &c.us, &c.cs
	}
	if err := c.pump(h, -1, fd, ss, ds); err != nil {
		c.release()
		return
	}
	if h.inPipe == 0 {
		if queued, err := unsent(fd); err != nil || queued == 0 {
			_ = setReset(fd)
			c.release()
			return
		}
	}
	if !l.now.Before(c.drainEnd) {
		_ = setReset(fd)
		c.release()
		return
	}
	next := l.now.Add(drainPoll)
	if c.drainEnd.Before(next) {
		next = c.drainEnd
	}
	l.setDeadline(c, next)
}

// refuse records the refusal and resets the agent's side, so that it
// fails at once instead of waiting.
func (c *conn) refuse(reason journal.Reason) {
	c.l.px.record(c.ev, reason)
	_ = setReset(c.cfd)
	c.release()
}

// release closes c's sockets (which also removes them from epoll) and
// everything c holds.
func (c *conn) release() {
	if c.phase == phaseClosed {
		return
	}
	l := c.l
	c.phase = phaseClosed
	for _, fd := range []int{c.cfd, c.ufd} {
		if fd >= 0 {
			delete(l.conns, int32(fd))
			rawClose(fd)
		}
	}
	for _, h := range []*half{&c.up, &c.down} {
		if h.p != nil { // still holding bytes: not reusable
			h.p.close()
			h.p = nil
		}
	}
	l.setDeadline(c, time.Time{})
	c.donePending()
	l.px.conns.Add(-1)
}

func resetFd(fd int) {
	_ = setReset(fd)
	rawClose(fd)
}

// connectTo starts a connection to dst on a new socket with no Nagle
// delay, set before the SYN leaves (keep-alive comes later, see
// keepAliveAfter).
func connectTo(dst netip.AddrPort) (int, error) {
	family := unix.AF_INET6
	if dst.Addr().Unmap().Is4() {
		family = unix.AF_INET
	}
	fd, err := rawSocket(family)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	if err := rawSetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		rawClose(fd)
		return -1, os.NewSyscallError("setsockopt", err)
	}
	if err := rawConnect(fd, dst); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		rawClose(fd)
		return -1, fmt.Errorf("connect %s: %w", dst, err)
	}
	return fd, nil
}

// connected reports a finished handshake as nil, one still under way as
// ENOTCONN, and a failed one as its error.
func connected(fd int) error {
	soerr, err := rawGetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	switch {
	case err != nil:
		return err
	case soerr != 0:
		return syscall.Errno(soerr)
	}
	return rawGetpeername(fd)
}

// spliceChunk is how much one splice call moves at most, and the capacity
// asked of each pipe (the default is 64 KiB; the kernel allows up to
// fs.pipe-max-size, 1 MiB by default, and falls back silently).
const spliceChunk = 256 << 10

// notSentLowat bounds the bytes a bulk flow's destination socket holds
// unsent (TCP_NOTSENT_LOWAT): the socket reports itself writable, and
// takes more, only below it. Without it, the proxy filled the socket's
// whole send buffer (megabytes, by autotuning), and the kernel sent that
// backlog from wherever the peer's acknowledgements were processed,
// which on a gateway is mostly the receiving side's core; with it, most
// of the sending happens in the proxy's own splice calls. Upload through
// the proxy in bench/tls.sh: 14.3-15.0 Gbit/s against 8.7-10.9 without.
const notSentLowat = 256 << 10

// readChunk is the loop's read buffer: a read that fills it makes the
// flow bulk.
const readChunk = 16 << 10

type pipe struct{ r, w int }

func (p *pipe) close() {
	rawClose(p.r)
	rawClose(p.w)
}

// getPipe takes an empty pipe. A connection holds one only while bytes
// are in flight, so that thousands of idle connections hold none (Go's
// io.Copy holds one per direction for a copy's whole life).
func (l *loop) getPipe() (*pipe, error) {
	if n := len(l.pipes); n > 0 {
		p := l.pipes[n-1]
		l.pipes = l.pipes[:n-1]
		return p, nil
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return nil, os.NewSyscallError("pipe2", err)
	}
	_, _ = unix.FcntlInt(uintptr(fds[1]), unix.F_SETPIPE_SZ, spliceChunk)
	return &pipe{r: fds[0], w: fds[1]}, nil
}

// putPipe keeps an empty pipe for reuse, up to maxFreePipes.
func (l *loop) putPipe(p *pipe) {
	if len(l.pipes) < maxFreePipes {
		l.pipes = append(l.pipes, p)
		return
	}
	p.close()
}
