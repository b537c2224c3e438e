package gateway

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/sluicegw/sluice/testing/nstest"
)

// TestListenDNSSpreads: the resolver's UDP sockets share one port with
// its TCP listener, and the kernel spreads clients among them, every
// datagram reaching exactly one.
func TestListenDNSSpreads(t *testing.T) {
	ns := nstest.New(t, nstest.Prefix()+"dns")
	const sockets, clients = 4, 64
	err := ns.Do(func() error {
		pcs, ln, port, err := listenDNS("lo", sockets)
		if err != nil {
			return err
		}
		defer ln.Close()
		for _, pc := range pcs {
			defer pc.Close()
		}
		if len(pcs) != sockets {
			// Not t.Fatalf: Do runs this on a goroutine of its own.
			return fmt.Errorf("%d UDP sockets, want %d", len(pcs), sockets)
		}
		if p := ln.Addr().(*net.TCPAddr).Port; p != int(port) {
			t.Errorf("TCP on %d, UDP on %d", p, port)
		}
		got := make([]int, len(pcs))
		var wg sync.WaitGroup
		for i, pc := range pcs {
			if p := pc.LocalAddr().(*net.UDPAddr).Port; p != int(port) {
				t.Errorf("UDP socket %d on %d, want %d", i, p, port)
			}
			wg.Go(func() {
				buf := make([]byte, 64)
				for {
					pc.SetReadDeadline(time.Now().Add(time.Second))
					if _, _, err := pc.ReadFrom(buf); err != nil {
						return
					}
					got[i]++
				}
			})
		}
		to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(port)}
		for range clients {
			c, err := net.DialUDP("udp", nil, to)
			if err != nil {
				return err
			}
			if _, err := c.Write([]byte("q")); err != nil {
				return err
			}
			c.Close()
		}
		wg.Wait()
		total, used := 0, 0
		for _, n := range got {
			total += n
			if n > 0 {
				used++
			}
		}
		if total != clients || used < 2 {
			t.Errorf("datagrams per socket %v: want all %d received, on more than one socket", got, clients)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
