// Command dnsload measures a resolver: queries per second with -c workers
// in a closed loop, or latency percentiles at a fixed rate (-qps). With
// -connect PORT it opens a TCP connection to each answered address the
// instant the answer arrives, and counts the connections the firewall
// refused: the proof that answers are released only after the sets are
// programmed.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/sluicegw/sluice/bench/internal/latency"
)

func main() {
	server := flag.String("server", "198.19.255.253:53", "resolver address")
	pattern := flag.String("names", "h%07d.bench.test.", "name pattern with one %d")
	count := flag.Int("count", 100, "number of distinct names; with -unique, the first index")
	unique := flag.Bool("unique", false, "never repeat a name (every query a cache miss)")
	workers := flag.Int("c", 8, "concurrent workers")
	dur := flag.Duration("d", 5*time.Second, "duration")
	qps := flag.Int("qps", 0, "fixed total rate for a latency run (0: as fast as possible)")
	connect := flag.Int("connect", 0, "connect to each answered address on this TCP port")
	procs := flag.Int("procs", 1, "GOMAXPROCS of the load generator")
	flag.Parse()
	runtime.GOMAXPROCS(*procs)

	var next atomic.Int64
	next.Store(int64(*count))
	name := func(i int64) string {
		if *unique {
			return fmt.Sprintf(*pattern, next.Add(1))
		}
		return fmt.Sprintf(*pattern, i%int64(*count))
	}
	var (
		mu                       sync.Mutex
		lat                      []time.Duration
		sent, ok, fail, timeouts atomic.Int64
		conns, refused           atomic.Int64
		rcodes                   sync.Map
	)
	stop := time.Now().Add(*dur)
	var interval time.Duration
	if *qps > 0 {
		interval = time.Duration(int64(time.Second) * int64(*workers) / int64(*qps))
	}
	var wg sync.WaitGroup
	for w := range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("udp", *server)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			defer c.Close()
			conn := &dns.Conn{Conn: c}
			var local []time.Duration
			tick := time.Now()
			for i := int64(w); time.Now().Before(stop); i += int64(*workers) {
				if interval > 0 {
					tick = tick.Add(interval)
					time.Sleep(time.Until(tick))
				}
				q := new(dns.Msg)
				q.SetQuestion(name(i), dns.TypeA)
				t0 := time.Now()
				sent.Add(1)
				c.SetDeadline(t0.Add(2 * time.Second))
				if err := conn.WriteMsg(q); err != nil {
					fail.Add(1)
					continue
				}
				r, err := conn.ReadMsg()
				if err != nil {
					timeouts.Add(1)
					continue
				}
				local = append(local, time.Since(t0))
				v, _ := rcodes.LoadOrStore(dns.RcodeToString[r.Rcode], new(atomic.Int64))
				v.(*atomic.Int64).Add(1)
				if r.Rcode == dns.RcodeSuccess {
					ok.Add(1)
				}
				if *connect > 0 {
					for _, rr := range r.Answer {
						if a, isA := rr.(*dns.A); isA {
							conns.Add(1)
							tc, err := net.DialTimeout("tcp", net.JoinHostPort(a.A.String(), fmt.Sprint(*connect)), 2*time.Second)
							if err != nil {
								refused.Add(1)
								continue
							}
							tc.Close()
						}
					}
				}
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	fmt.Printf("answers=%d qps=%.0f ok=%d timeouts=%d errors=%d %s",
		len(lat), float64(len(lat))/dur.Seconds(), ok.Load(), timeouts.Load(), fail.Load(), latency.Percentiles(lat))
	rcodes.Range(func(k, v any) bool { fmt.Printf(" %s=%d", k, v.(*atomic.Int64).Load()); return true })
	if *connect > 0 {
		fmt.Printf(" connects=%d refused=%d", conns.Load(), refused.Load())
	}
	fmt.Println()
}
