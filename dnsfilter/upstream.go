package dnsfilter

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
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
//
// UDP sockets are kept and reused (a socket per query costs more than the
// query). The answer must still carry the query's random ID and question;
// a socket that saw an error is closed, never reused. The agent cannot see
// or spoof this traffic: it leaves from the gateway, outside its namespace.
type Forwarder struct {
	// Servers are "host:port" addresses, tried in order.
	Servers []string
	// Timeout bounds one exchange with one server.
	Timeout time.Duration

	mu   sync.Mutex
	idle map[string][]*dns.Conn
}

// maxIdleConns bounds the sockets kept per server.
const maxIdleConns = 64

func (f *Forwarder) conn(server string, timeout time.Duration) (*dns.Conn, error) {
	f.mu.Lock()
	if n := len(f.idle[server]); n > 0 {
		c := f.idle[server][n-1]
		f.idle[server] = f.idle[server][:n-1]
		f.mu.Unlock()
		return c, nil
	}
	f.mu.Unlock()
	c, err := net.DialTimeout("udp", server, timeout)
	if err != nil {
		return nil, err
	}
	return &dns.Conn{Conn: c, UDPSize: 1232}, nil
}

func (f *Forwarder) release(server string, c *dns.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.idle == nil {
		f.idle = map[string][]*dns.Conn{}
	}
	if len(f.idle[server]) >= maxIdleConns {
		c.Close()
		return
	}
	f.idle[server] = append(f.idle[server], c)
}

// Close closes the idle sockets.
func (f *Forwarder) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, cs := range f.idle {
		for _, c := range cs {
			c.Close()
		}
	}
	f.idle = nil
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
	c, err := f.conn(server, timeout)
	if err != nil {
		return nil, err
	}
	udp := &dns.Client{Net: "udp", Timeout: timeout, UDPSize: 1232}
	r, _, err := udp.ExchangeWithConnContext(ctx, q, c)
	if err != nil {
		c.Close()
	} else {
		f.release(server, c)
	}
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
