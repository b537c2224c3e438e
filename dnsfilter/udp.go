package dnsfilter

import (
	"context"
	"errors"
	"net"

	"github.com/miekg/dns"
)

// udpWorkers bounds how many UDP queries are answered at once. Each worker
// reads the socket and answers in place, upstream exchange included, so
// this is also the bound on concurrent upstream queries from UDP, and a
// flood of cache misses queues in the socket instead of spawning
// goroutines. Fixed workers keep their grown stacks, where a goroutine per
// packet pays for growing a fresh one every time.
const udpWorkers = 128

// serveUDP answers queries on conn with a fixed set of workers until conn
// is closed.
//
// Replies are sent without a source address of their own choosing: the
// socket is bound to the agent's link, and the kernel gives a reply the
// link's primary address, which is also the address nftables' redirect
// rewrote the query to, so the redirect's reverse translation matches and
// the agent sees the answer come from where it sent the query.
func (s *Server) serveUDP(conn *net.UDPConn) {
	for range udpWorkers {
		go s.udpWorker(conn)
	}
}

func (s *Server) udpWorker(conn *net.UDPConn) {
	buf := make([]byte, dns.MaxMsgSize)
	ctx := context.Background()
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		req := new(dns.Msg)
		if req.Unpack(buf[:n]) != nil {
			continue // not a DNS message: no answer, as a server would
		}
		resp := s.Answer(ctx, from.Addr().Unmap(), req)
		if resp == nil {
			continue
		}
		resp.Truncate(udpSize(req))
		out, err := resp.PackBuffer(buf)
		if err != nil {
			s.cfg.Log.Debug("pack dns answer", "err", err)
			continue
		}
		if _, err := conn.WriteToUDPAddrPort(out, from); err != nil {
			s.cfg.Log.Debug("write dns answer", "err", err)
		}
	}
}
