package dnsfilter

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Upstream answers a query that the filter has decided to forward. The
// query it is given is one the filter built itself, never the agent's bytes.
type Upstream interface {
	Exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error)
}

// Forwarder sends queries to recursive resolvers over UDP, retrying over TCP
// when an answer is truncated, and trying the next server on failure.
type Forwarder struct {
	// Servers are "host:port" addresses, tried in order.
	Servers []string
	// Timeout bounds one exchange with one server.
	Timeout time.Duration
}

// Exchange forwards q and returns the first answer that matches it.
func (f *Forwarder) Exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	if len(f.Servers) == 0 {
		return nil, errors.New("no upstream servers")
	}
	timeout := f.Timeout
	if timeout == 0 {
		timeout = 2 * time.Second
	}
	var errs []error
	for _, server := range f.Servers {
		r, err := f.exchangeOne(ctx, q, server, timeout)
		if err == nil {
			return r, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", server, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

func (f *Forwarder) exchangeOne(ctx context.Context, q *dns.Msg, server string, timeout time.Duration) (*dns.Msg, error) {
	udp := &dns.Client{Net: "udp", Timeout: timeout, UDPSize: 1232}
	r, _, err := udp.ExchangeContext(ctx, q, server)
	if err == nil && r.Truncated {
		tcp := &dns.Client{Net: "tcp", Timeout: timeout}
		r, _, err = tcp.ExchangeContext(ctx, q, server)
	}
	if err != nil {
		return nil, err
	}
	if err := matches(q, r); err != nil {
		return nil, err
	}
	return r, nil
}

// matches checks that r answers q: the client library already compares
// the ID; the question must be the same too, or a spoofed or confused
// answer could bind addresses to the wrong name.
func matches(q, r *dns.Msg) error {
	if !r.Response {
		return errors.New("upstream sent a query, not a response")
	}
	if len(r.Question) != 1 {
		return fmt.Errorf("upstream answer has %d questions", len(r.Question))
	}
	want, got := q.Question[0], r.Question[0]
	if !strings.EqualFold(want.Name, got.Name) || want.Qtype != got.Qtype || want.Qclass != got.Qclass {
		return fmt.Errorf("upstream answered %s %s, not %s %s",
			got.Name, dns.TypeToString[got.Qtype], want.Name, dns.TypeToString[want.Qtype])
	}
	return nil
}
