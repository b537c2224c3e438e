// Command snibench measures a TLS pass-through path: connections per
// second and their latency, bulk throughput, and idle connections held.
// It speaks only the first flight of TLS (a real ClientHello made by Go's
// client) to a backend that answers 64 bytes and then swallows whatever
// comes, so what is measured is the path, not TLS.
package main

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicegw/sluice/bench/internal/latency"
)

func main() {
	role := flag.String("role", "cps", "backend, cps, tput or idle")
	listen := flag.String("listen", "", "backend: listen addresses, comma separated")
	target := flag.String("target", "", "host:port to connect to; a host name is resolved once")
	sni := flag.String("sni", "allowed.bench.test", "server name in the ClientHello")
	conc := flag.Int("c", 32, "concurrent connections")
	dur := flag.Duration("d", 5*time.Second, "duration")
	n := flag.Int("n", 10000, "idle: connections to hold")
	procs := flag.Int("procs", 1, "GOMAXPROCS")
	rate := flag.Int("rate", 0, "cps: new connections a second at most, over all workers (0: as many as they can), to compare CPU per connection at one load")
	flag.Parse()
	runtime.GOMAXPROCS(*procs)
	if *role == "backend" {
		backend(*listen)
		return
	}
	addr := resolve(*target)
	hello := captureHello(*sni)
	switch *role {
	case "cps":
		cps(addr, hello, *conc, *dur, *rate)
	case "tput":
		tput(addr, hello, *conc, *dur)
	case "idle":
		idle(addr, hello, *n, *dur)
	default:
		fmt.Fprintln(os.Stderr, "unknown role", *role)
		os.Exit(2)
	}
}

func resolve(target string) string {
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		fail(err)
	}
	addrs, err := net.DefaultResolver.LookupHost(context.Background(), host)
	if err != nil || len(addrs) == 0 {
		fail(fmt.Errorf("resolve %s: %v", host, err))
	}
	return net.JoinHostPort(addrs[0], port)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "snibench:", err)
	os.Exit(1)
}

func captureHello(sni string) []byte {
	c, s := net.Pipe()
	go tls.Client(c, &tls.Config{ServerName: sni, InsecureSkipVerify: true}).Handshake()
	hdr := make([]byte, 5)
	io.ReadFull(s, hdr)
	body := make([]byte, binary.BigEndian.Uint16(hdr[3:]))
	io.ReadFull(s, body)
	c.Close()
	return append(hdr, body...)
}

// backend reads one TLS record, answers 64 bytes, then discards the rest.
func backend(listen string) {
	for _, a := range splitComma(listen) {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			fail(err)
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					continue
				}
				go func() {
					defer c.Close()
					hdr := make([]byte, 5)
					if _, err := io.ReadFull(c, hdr); err != nil {
						return
					}
					if _, err := io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint16(hdr[3:]))); err != nil {
						return
					}
					c.Write(make([]byte, 64))
					io.Copy(io.Discard, c)
				}()
			}
		}()
	}
	select {}
}

func splitComma(s string) []string {
	var out []string
	for len(s) > 0 {
		i := 0
		for i < len(s) && s[i] != ',' {
			i++
		}
		out = append(out, s[:i])
		if i < len(s) {
			i++
		}
		s = s[i:]
	}
	return out
}

// open connects, sends the hello and waits for the 64-byte answer.
func open(addr string, hello []byte) (*net.TCPConn, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	tc := c.(*net.TCPConn)
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := tc.Write(hello); err != nil {
		tc.Close()
		return nil, err
	}
	if _, err := io.ReadFull(tc, make([]byte, 64)); err != nil {
		tc.Close()
		return nil, err
	}
	tc.SetDeadline(time.Time{})
	return tc, nil
}

func cps(addr string, hello []byte, conc int, dur time.Duration, rate int) {
	var ok, errs atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	start := time.Now()
	stop := start.Add(dur)
	// With a rate, the k-th connection starts no earlier than k/rate s
	// from the start, whichever worker takes it.
	var next atomic.Int64
	pace := func() {
		if rate <= 0 {
			return
		}
		at := start.Add(time.Duration(next.Add(1)-1) * time.Second / time.Duration(rate))
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
	}
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []time.Duration
			for time.Now().Before(stop) {
				pace()
				t0 := time.Now()
				c, err := open(addr, hello)
				if err != nil {
					errs.Add(1)
					continue
				}
				c.SetLinger(0) // reset, so no TIME_WAIT piles up
				c.Close()
				local = append(local, time.Since(t0))
				ok.Add(1)
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	fmt.Printf("conns=%d cps=%.0f errors=%d %s\n", ok.Load(), float64(ok.Load())/dur.Seconds(), errs.Load(), latency.Percentiles(lat))
}

func tput(addr string, hello []byte, conc int, dur time.Duration) {
	var total atomic.Int64
	var wg sync.WaitGroup
	buf := make([]byte, 256<<10)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := open(addr, hello)
			if err != nil {
				fail(err)
			}
			defer c.Close()
			c.SetWriteDeadline(time.Now().Add(dur))
			for {
				n, err := c.Write(buf)
				total.Add(int64(n))
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	fmt.Printf("bytes=%d gbit_s=%.2f\n", total.Load(), float64(total.Load())*8/dur.Seconds()/1e9)
}

func idle(addr string, hello []byte, n int, hold time.Duration) {
	var conns []*net.TCPConn
	errs := 0
	for range n {
		c, err := open(addr, hello)
		if err != nil {
			errs++
			continue
		}
		conns = append(conns, c)
	}
	fmt.Printf("held=%d errors=%d\n", len(conns), errs)
	os.Stdout.Sync()
	time.Sleep(hold)
	for _, c := range conns {
		c.Close()
	}
}
