package dnsfilter

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// Upstream answers a query that the filter has decided to forward. The
// query it is given is one the filter built itself, never the agent's bytes.
// Exchange returns the answer and the server that gave it ("host:port"),
// which the filter names when the answer is no use to the agent.
type Upstream interface {
	Exchange(ctx context.Context, q *dns.Msg) (r *dns.Msg, server string, err error)
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

// DefaultTimeout bounds one exchange with one server when
// Forwarder.Timeout is zero.
const DefaultTimeout = 2 * time.Second

func (f *Forwarder) timeout() time.Duration {
	if f.Timeout == 0 {
		return DefaultTimeout
	}
	return f.Timeout
}

// Exchange forwards q and returns the first answer that matches it, of
// any rcode, with the server that gave it. When no server gives one, the
// error is an *UpstreamError.
func (f *Forwarder) Exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, string, error) {
	if len(f.Servers) == 0 {
		return nil, "", errors.New("no upstream servers")
	}
	timeout := f.timeout()
	ue := &UpstreamError{}
	for _, server := range f.Servers {
		r, err := f.exchangeOne(ctx, q, server, timeout)
		if err == nil {
			return r, server, nil
		}
		ue.Failures = append(ue.Failures, ServerFailure{Server: server, Err: err, Timeout: timeout})
		if ctx.Err() != nil {
			break
		}
	}
	return nil, "", ue
}

// UpstreamError says why no upstream server gave a usable answer: what
// went wrong with each server tried. It is a failure of the gateway's
// resolution, never a decision of the policy.
type UpstreamError struct {
	Failures []ServerFailure
}

// ServerFailure is one server's part of an UpstreamError.
type ServerFailure struct {
	Server string
	Err    error
	// Timeout is how long the server was given to answer.
	Timeout time.Duration
}

// Error names each server and why it failed (ServerFailure.Why).
func (e *UpstreamError) Error() string {
	parts := make([]string, len(e.Failures))
	for i, f := range e.Failures {
		parts[i] = f.Server + ": " + f.Why()
	}
	return strings.Join(parts, "; ")
}

// Unwrap returns each server's error.
func (e *UpstreamError) Unwrap() []error {
	errs := make([]error, len(e.Failures))
	for i, f := range e.Failures {
		errs[i] = f.Err
	}
	return errs
}

// Servers are the servers tried, in order.
func (e *UpstreamError) Servers() []string {
	s := make([]string, len(e.Failures))
	for i, f := range e.Failures {
		s[i] = f.Server
	}
	return s
}

// Why says in a few words why the server brought no usable answer: it did
// not answer in time, nothing listens on its port, there is no route to
// it, or its answer was not one to the question.
func (f ServerFailure) Why() string { return why(f.Err, f.Timeout) }

func why(err error, timeout time.Duration) string {
	var ne net.Error
	var bad *badAnswerError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused: nothing listens on its port (ICMP port unreachable)"
	case errors.Is(err, syscall.EHOSTUNREACH):
		return "host unreachable"
	case errors.Is(err, syscall.ENETUNREACH):
		return "network unreachable: no route to it"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return fmt.Sprintf("timeout: no answer within %v", timeout)
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.As(err, &bad):
		return "bad answer: " + bad.Error()
	}
	return err.Error()
}

// badAnswerError is an answer that does not answer the query asked.
type badAnswerError struct{ msg string }

func (e *badAnswerError) Error() string { return e.msg }

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
		return &badAnswerError{"upstream sent a query, not a response"}
	}
	if len(r.Question) != 1 {
		return &badAnswerError{fmt.Sprintf("upstream answer has %d questions", len(r.Question))}
	}
	want, got := q.Question[0], r.Question[0]
	if !strings.EqualFold(want.Name, got.Name) || want.Qtype != got.Qtype || want.Qclass != got.Qclass {
		return &badAnswerError{fmt.Sprintf("upstream answered %s %s, not %s %s",
			got.Name, dns.TypeToString[got.Qtype], want.Name, dns.TypeToString[want.Qtype])}
	}
	return nil
}
