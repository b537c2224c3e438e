package mitm

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"
)

// BenchmarkInterceptedRequest: one GET after another on a kept-alive
// connection, to the upstream directly and through the interceptor (leaf
// cached, upstream connection kept), on loopback. The difference of the
// two is the latency interception adds per request; p50 and p99 are
// reported per sub-benchmark.
//
//	go test -run '^$' -bench InterceptedRequest -benchtime 5000x ./tlsinspect/mitm
func BenchmarkInterceptedRequest(b *testing.B) {
	rg := newRigB(b)
	direct := func() *tls.Conn {
		roots := x509.NewCertPool()
		roots.AddCert(rg.upstream.Certificate())
		c, err := tls.Dial("tcp", rg.upstream.Listener.Addr().String(), &tls.Config{ServerName: "example.com", RootCAs: roots})
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	intercepted := func() *tls.Conn {
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(rg.ca.PEM())
		c, err := tls.Dial("tcp", rg.addr, &tls.Config{ServerName: "example.com", RootCAs: roots})
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	for _, bc := range []struct {
		name string
		dial func() *tls.Conn
	}{{"direct", direct}, {"intercepted", intercepted}} {
		b.Run(bc.name, func(b *testing.B) {
			c := bc.dial()
			defer c.Close()
			br := bufio.NewReader(c)
			req := []byte("GET /ok/bench HTTP/1.1\r\nHost: example.com\r\n\r\n")
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("status %d", resp.StatusCode)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

// BenchmarkInterceptHandshake: a new connection and one request, with
// the leaf cached (warm) and with a leaf to make first (cold: the cache
// emptied before each connection), against the upstream directly.
//
//	go test -run '^$' -bench InterceptHandshake -benchtime 500x ./tlsinspect/mitm
func BenchmarkInterceptHandshake(b *testing.B) {
	rg := newRigB(b)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rg.ca.PEM())
	upRoots := x509.NewCertPool()
	upRoots.AddCert(rg.upstream.Certificate())
	for _, bc := range []struct {
		name   string
		addr   string
		roots  *x509.CertPool
		before func()
	}{
		{"direct", rg.upstream.Listener.Addr().String(), upRoots, nil},
		{"warm", rg.addr, roots, nil},
		{"cold", rg.addr, roots, func() {
			rg.ca.mu.Lock()
			clear(rg.ca.leaves)
			rg.ca.mu.Unlock()
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			req := []byte("GET /ok/bench HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
			for range b.N {
				if bc.before != nil {
					bc.before()
				}
				c, err := tls.Dial("tcp", bc.addr, &tls.Config{ServerName: "example.com", RootCAs: bc.roots})
				if err != nil {
					b.Fatal(err)
				}
				c.Write(req)
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				c.Close()
			}
		})
	}
}

// BenchmarkLeafCold: making one leaf certificate (key and signature), the
// work a first connection to a ruled host pays once per leaf lifetime.
func BenchmarkLeafCold(b *testing.B) {
	ca, err := NewCA([]string{"example.com"})
	if err != nil {
		b.Fatal(err)
	}
	for range b.N {
		ca.mu.Lock()
		clear(ca.leaves)
		ca.mu.Unlock()
		if _, err := ca.Leaf("example.com"); err != nil {
			b.Fatal(err)
		}
	}
}
