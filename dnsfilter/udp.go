package dnsfilter

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/sluicegw/sluice/policy"
)

// UDP queries are read in batches (recvmmsg) by one reader per socket;
// a resolver may have several sockets on one port (SO_REUSEPORT, one per
// core), among which the kernel spreads the agents' flows. The reader
// answers what the fast path can at once, and writes those answers in a
// batch too (sendmmsg): a cached answer costs no goroutine switch and a
// fraction of a system call. Every other query goes to the resolver's
// workers, which answer it in full, upstream exchange included, while the
// readers go on: a name waiting on the upstream for seconds holds up no
// cached answer.
//
// The workers are shared by a resolver's sockets. A resolver starts with
// a few and adds one whenever a query is handed over while every worker
// has one already, up to udpMaxWorkers: an idle agent (sluice serve runs
// many) holds a few small goroutines, and a busy one grows to what its
// load needs, keeping them after, with their grown stacks (a goroutine
// per packet pays for growing a fresh one every time). The maximum bounds
// the concurrent upstream queries from UDP; beyond it, up to udpQueued
// queries wait for a worker, and a flood of cache misses past that is
// dropped, as a full socket buffer drops it, while cached answers go on.
const (
	udpMinWorkers = 2
	udpMaxWorkers = 128
	udpQueued     = 128
	// udpBatch is the most datagrams one read or write moves. A reader
	// starts with udpFirstBatch buffers and doubles them whenever a read
	// fills them all: an idle resolver holds little.
	udpBatch      = 32
	udpFirstBatch = 2
	// udpReadSize is a reader's buffer per datagram, and a worker's for
	// the answer (a larger one is packed into a buffer of its own). A
	// query is a header, one question of at most 259 bytes and an OPT
	// record; a datagram longer than this is cut short by the read, and
	// is answered as far as it parses, or not at all.
	udpReadSize = 4096
)

// udpQuery is a query handed to a worker: a copy of its bytes, who sent
// it, and the socket to answer on.
type udpQuery struct {
	msg  []byte
	from netip.AddrPort
	conn *net.UDPConn
}

// udpWorkers is a resolver's workers, with the queue that feeds them.
type udpWorkers struct {
	s          *Server
	queue      chan udpQuery
	maxWorkers int32
	total      atomic.Int32 // workers running
	busy       atomic.Int32 // queries handed over and not yet answered
	started    atomic.Int32 // workers ever started
	dropped    atomic.Int64 // queries the full queue turned away
	readers    atomic.Int32 // sockets still read: the last closes queue
}

// serveUDP answers queries on conns (sockets on one address, say with
// SO_REUSEPORT), with at most maxWorkers answering in full at once, until
// every conn is closed.
//
// Replies are sent without a source address of their own choosing: the
// socket is bound to the agent's link, and the kernel gives a reply the
// link's primary address, which is also the address nftables' redirect
// rewrote the query to, so the redirect's reverse translation matches and
// the agent sees the answer come from where it sent the query.
func (s *Server) serveUDP(conns []*net.UDPConn, maxWorkers int32) *udpWorkers {
	// The queue holds every query handed over and not yet answered, so
	// that a burst that comes before the workers started for it have run
	// waits for them instead of being dropped.
	w := &udpWorkers{s: s, queue: make(chan udpQuery, maxWorkers+udpQueued), maxWorkers: maxWorkers}
	for range min(udpMinWorkers, maxWorkers) {
		w.spawn()
	}
	w.readers.Store(int32(len(conns)))
	for _, c := range conns {
		s.readers.Go(func() { w.read(c) })
	}
	return w
}

// spawn starts one more worker unless there are maxWorkers already.
func (w *udpWorkers) spawn() {
	for {
		n := w.total.Load()
		if n >= w.maxWorkers {
			return
		}
		if w.total.CompareAndSwap(n, n+1) {
			w.started.Add(1)
			go w.work()
			return
		}
	}
}

// handOver queues q for a worker, starting one if every worker has a
// query already (counted from the hand-over to the answer, so that a
// query in the queue counts as a worker's). Past maxWorkers answering and
// udpQueued waiting, q is dropped: the client asks again, as after a lost
// datagram.
func (w *udpWorkers) handOver(q udpQuery) {
	busy := w.busy.Add(1)
	if busy > w.maxWorkers+udpQueued {
		w.busy.Add(-1)
		w.dropped.Add(1)
		w.s.cfg.Log.Debug("dns query dropped: every worker busy", "from", q.from)
		return
	}
	if busy > w.total.Load() {
		w.spawn()
	}
	w.queue <- q // never blocks: the queue has room for every busy query
}

// work answers queued queries in full until the queue closes.
func (w *udpWorkers) work() {
	s := w.s
	u := udpScratch{buf: make([]byte, udpReadSize)}
	ctx := context.Background()
	for q := range w.queue {
		if s.stopping.Load() {
			w.busy.Add(-1)
			continue // the server stopped: no upstream, sets or journal for it
		}
		if out := s.answerSlow(ctx, q.msg, policy.BareAddr(q.from.Addr()), &u); out != nil {
			if err := writeTo(q.conn, out, q.from); err != nil {
				s.cfg.Log.Debug("write dns answer", "err", err)
			}
		}
		w.busy.Add(-1)
	}
	w.total.Add(-1)
}

// read answers conn's queries until it is closed: those the fast path
// takes in place, in batches, and the others through the workers.
func (w *udpWorkers) read(conn *net.UDPConn) {
	defer func() {
		if w.readers.Add(-1) == 0 {
			close(w.queue) // every socket closed: no one sends any more
		}
	}()
	s := w.s
	rc, err := conn.SyscallConn()
	var in, out *mmsgBatch
	if err == nil {
		in, err = newMmsgBatch(rc)
	}
	if err == nil {
		out, err = newMmsgBatch(rc)
	}
	if err != nil {
		// Not a socket, or closed already: nothing to read.
		s.cfg.Log.Error("dns socket", "err", err)
		return
	}
	var replies [][]byte // a fast answer's buffer per datagram
	grow := func(n int) {
		for len(in.bufs) < n {
			in.grow(len(in.bufs) + 1)
			in.bufs[len(in.bufs)-1] = make([]byte, udpReadSize)
			replies = append(replies, nil)
		}
		out.grow(n)
	}
	grow(udpFirstBatch)
	for {
		n, err := in.recv(rc, len(in.bufs))
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.cfg.Log.Debug("read dns queries", "err", err)
			continue
		}
		answered := 0
		for i := range n {
			q, from, ok := in.datagram(i)
			if !ok {
				continue
			}
			// Decided for the address without a link-local sender's zone,
			// as the TCP path has it; the reply keeps the zone.
			if reply, ok := s.fastAnswer(q, policy.BareAddr(from.Addr()), replies[i]); ok {
				replies[i] = reply
				if out.setWrite(answered, reply, from) {
					answered++
				}
				continue
			}
			if len(q) < 12 || binary.BigEndian.Uint16(q[2:])&flagQR != 0 {
				continue // not a query (too short, or a response): junk, dropped at once
			}
			w.handOver(udpQuery{msg: append([]byte(nil), q...), from: from, conn: conn})
		}
		writeAll(s, rc, out, answered)
		if n == len(in.bufs) && n < udpBatch {
			grow(min(2*n, udpBatch))
		}
	}
}

// writeTo sends a worker's reply b to to. A link-local client's zone is
// an interface index (mmsgBatch.addr), which WriteToUDPAddrPort would
// look up by name, refreshing the interface table each time: it goes
// into the address's scope instead.
func writeTo(conn *net.UDPConn, b []byte, to netip.AddrPort) error {
	id, ok := zoneIndex(to.Addr())
	switch {
	case !ok:
		return fmt.Errorf("reply to %s: zone not an interface index", to)
	case id == 0:
		_, err := conn.WriteToUDPAddrPort(b, to)
		return err
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	sa := &unix.SockaddrInet6{Port: int(to.Port()), Addr: to.Addr().As16(), ZoneId: uint32(id)}
	var serr error
	if err := rc.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), b, 0, sa)
		return serr != unix.EAGAIN
	}); err != nil {
		return err
	}
	return serr
}

// writeAll sends the first n datagrams of b, skipping one that the
// kernel refuses (its client gets no answer, as after a lost datagram).
func writeAll(s *Server, rc syscall.RawConn, b *mmsgBatch, n int) {
	for done := 0; done < n; {
		sent, err := b.sendFrom(rc, done, n)
		if err != nil {
			s.cfg.Log.Debug("write dns answers", "err", err)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			sent = 1 // the first of them failed
		}
		done += max(sent, 1)
	}
}

// udpScratch is a worker's buffer for the answers it packs.
type udpScratch struct {
	buf []byte
}

// answerSlow unpacks and answers the UDP query b from src, and keeps the
// reply for the fast path (b must not share u.buf). It returns the reply,
// packed into u.buf (or a larger buffer), or nil for none.
func (s *Server) answerSlow(ctx context.Context, b []byte, src netip.Addr, u *udpScratch) []byte {
	req := new(dns.Msg)
	if req.Unpack(b) != nil {
		return nil // not a DNS message: no answer, as a server would
	}
	o := s.answer(ctx, src, req)
	resp := o.msg
	if resp == nil {
		return nil
	}
	resp.Truncate(udpSize(req))
	out, err := resp.PackBuffer(u.buf)
	if err != nil {
		s.cfg.Log.Debug("pack dns answer", "err", err)
		return nil
	}
	s.keepFast(b, out, resp, &o)
	return out
}
