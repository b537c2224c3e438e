package dnsfilter

import (
	"context"
	"sync"

	"github.com/miekg/dns"
)

// Probe asks each of f's servers one question, all at once, and returns
// the servers that gave no answer within f's timeout, with why. An answer
// of any rcode counts: the server is there. The question (the root's NS
// records, recursion not desired) needs no recursion and names nothing an
// agent asked for, so that a resolver that works answers it at once.
func (f *Forwarder) Probe(ctx context.Context) []ServerFailure {
	timeout := f.timeout()
	failed := make([]*ServerFailure, len(f.Servers))
	var wg sync.WaitGroup
	for i, server := range f.Servers {
		wg.Go(func() {
			q := new(dns.Msg)
			q.SetQuestion(".", dns.TypeNS)
			q.RecursionDesired = false
			c := &dns.Client{Net: "udp", Timeout: timeout}
			r, _, err := c.ExchangeContext(ctx, q, server)
			if err == nil {
				err = matches(q, r)
			}
			if err != nil {
				failed[i] = &ServerFailure{Server: server, Err: err, Timeout: timeout}
			}
		})
	}
	wg.Wait()
	var out []ServerFailure
	for _, sf := range failed {
		if sf != nil {
			out = append(out, *sf)
		}
	}
	return out
}
