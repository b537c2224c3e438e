package dnsfilter

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/miekg/dns"
)

// UDP queries are answered by workers that each read the socket and
// answer in place, upstream exchange included. A resolver starts with a
// few and adds one whenever a worker takes a query and none is left
// reading, up to udpMaxWorkers: an idle agent (sluice serve runs many)
// holds a few small goroutines, and a busy one grows to what its load
// needs, keeping them after, with their grown stacks (a goroutine per
// packet pays for growing a fresh one every time). The maximum bounds the
// concurrent upstream queries from UDP: beyond it, a flood of cache misses
// queues in the socket instead of spawning goroutines.
const (
	udpMinWorkers = 2
	udpMaxWorkers = 128
	// udpReadSize is a worker's buffer, for the query and, when it fits,
	// the answer (a larger one is packed into a buffer of its own). A
	// query is a header, one question of at most 259 bytes and an OPT
	// record; a datagram longer than this is cut short by the read, and
	// is answered as far as it parses, or not at all.
	udpReadSize = 4096
)

// udpWorkers counts a socket's workers, and those of them waiting in a
// read.
type udpWorkers struct {
	s           *Server
	conn        *net.UDPConn
	maxWorkers  int32
	total, idle atomic.Int32
	started     atomic.Int32 // workers ever started
}

// serveUDP answers queries on conn, with at most maxWorkers at once,
// until conn is closed.
//
// Replies are sent without a source address of their own choosing: the
// socket is bound to the agent's link, and the kernel gives a reply the
// link's primary address, which is also the address nftables' redirect
// rewrote the query to, so the redirect's reverse translation matches and
// the agent sees the answer come from where it sent the query.
func (s *Server) serveUDP(conn *net.UDPConn, maxWorkers int32) *udpWorkers {
	w := &udpWorkers{s: s, conn: conn, maxWorkers: maxWorkers}
	for range udpMinWorkers {
		w.spawn()
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

func (w *udpWorkers) work() {
	s := w.s
	var u udpScratch
	u.buf = make([]byte, udpReadSize)
	ctx := context.Background()
	for {
		w.idle.Add(1)
		n, from, err := w.conn.ReadFromUDPAddrPort(u.buf)
		idle := w.idle.Add(-1)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				w.total.Add(-1)
				return
			}
			continue
		}
		out := s.answerUDP(ctx, n, from.Addr().Unmap(), &u, func() {
			if idle == 0 {
				// This worker may now wait on an upstream for seconds:
				// let another read the socket meanwhile. (Not for junk,
				// which is dropped at once: it must not grow the pool.)
				w.spawn()
			}
		})
		if out == nil {
			continue
		}
		if _, err := w.conn.WriteToUDPAddrPort(out, from); err != nil {
			s.cfg.Log.Debug("write dns answer", "err", err)
		}
	}
}

// udpScratch is a worker's buffers: buf holds the query as read, and
// then the slow path's answer; reply the fast path's; query a copy of the
// query for keepFast.
type udpScratch struct {
	buf, reply, query []byte
}

// answerUDP answers the query u.buf[:n] from src: from the fast path,
// or unpacked and answered (slow is called first, once the query is
// known to be a DNS message), its reply then kept for the fast path. It
// returns the reply, nil for none.
func (s *Server) answerUDP(ctx context.Context, n int, src netip.Addr, u *udpScratch, slow func()) []byte {
	if out, ok := s.fastAnswer(u.buf[:n], src, u.reply); ok {
		u.reply = out
		return out
	}
	req := new(dns.Msg)
	if req.Unpack(u.buf[:n]) != nil {
		return nil // not a DNS message: no answer, as a server would
	}
	u.query = append(u.query[:0], u.buf[:n]...) // buf takes the answer
	slow()
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
	s.keepFast(u.query, out, resp, &o)
	return out
}
