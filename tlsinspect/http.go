package tlsinspect

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
)

// keepAliveWait bounds the wait for the next request on a kept-alive
// connection (--idle-timeout bounds each read and write inside one).
const keepAliveWait = 60 * time.Second

// inspectHTTP proxies plain HTTP/1.x: every request on the connection is
// parsed and its Host checked like an SNI (allowed, and the destination
// pinned to it) before it is sent on.
func (px *Proxy) inspectHTTP(c *net.TCPConn, dst netip.AddrPort, ev journal.Event, donePending func()) {
	lc := &limitedConn{c: c, max: px.cfg.MaxHello, idle: px.cfg.IdleTimeout}
	br := bufio.NewReaderSize(lc, 4096)
	var up *net.TCPConn
	var upr *bufio.Reader
	defer func() {
		if up != nil {
			up.Close()
		}
	}()
	timeout := px.cfg.HelloTimeout
	for first := true; ; first = false {
		lc.n, lc.open = br.Buffered(), false
		ev.Kind, ev.Detail = journal.Refused, "" // each request is decided anew
		req, reason, idle, e := px.readRequest(c, br, dst, timeout, &ev)
		lc.open = true // the body is the request's to send
		if reason != "" && req != nil && px.reportable(reason, e) {
			// Report mode: sent on, and journaled as what would have
			// refused it.
			px.wouldRefuse(ev, reason)
			ev.Kind, reason = journal.WouldRefuse, ""
		}
		if !first && idle {
			// The client closed, or kept the connection idle past the
			// keep-alive timeout, between requests: an ending, not a refusal.
			c.Close()
			return
		}
		if reason != "" && !first {
			// The client may still be reading earlier answers: end with a
			// FIN, as a reset could make its kernel drop them.
			px.record(ev, reason)
			_ = c.CloseWrite()
			c.Close()
			return
		}
		if reason != "" {
			px.refuse(c, ev, reason)
			return
		}
		if first {
			donePending()
			conn, err := px.dialer.DialTCP(context.Background(), "tcp", netip.AddrPort{}, dst) // bounded by the dialer's Timeout
			if err != nil {
				ev.Detail = err.Error()
				px.refuse(c, ev, journal.ReasonDialFailed)
				return
			}
			up = conn
			upr = bufio.NewReader(idleConn{up, px.cfg.IdleTimeout})
		}
		ok, reported := px.noteHTTP(c, ev, false)
		if !ok {
			px.refuse(c, ev, journal.ReasonRevoked) // a policy change came between decision and dial
			return
		}
		if !reported {
			px.allowed(ev)
		}
		if !px.exchange(idleConn{c, px.cfg.IdleTimeout}, idleConn{up, px.cfg.IdleTimeout}, br, upr, req) {
			c.Close()
			return
		}
		timeout = keepAliveWait
	}
}

// readRequest reads and checks one request head. reason is "" when the
// request may pass; idle says the client sent no request at all before it
// closed or the timeout (a refusal on a new connection, an ending between
// requests); e is the entry its Host matched (nil: none). req is nil
// when the request cannot be sent on at all.
func (px *Proxy) readRequest(c *net.TCPConn, br *bufio.Reader, dst netip.AddrPort, timeout time.Duration, ev *journal.Event) (req *http.Request, reason journal.Reason, idle bool, e *policy.Entry) {
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	req, err := http.ReadRequest(br)
	_ = c.SetReadDeadline(time.Time{})
	switch {
	case errors.Is(err, io.EOF):
		ev.Detail = "closed before a request"
		return nil, journal.ReasonBadRequest, true, nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, journal.ReasonHelloTimeout, true, nil
	case errors.Is(err, errHeadTooBig):
		return nil, journal.ReasonHelloTooLarge, false, nil
	case err != nil && strings.Contains(err.Error(), "too many Host headers"):
		return nil, journal.ReasonConflictingHost, false, nil
	case err != nil:
		ev.Detail = err.Error()
		return nil, journal.ReasonBadRequest, false, nil
	}
	host, reason := requestHost(req, dst.Port())
	if reason != "" {
		ev.Name = host
		return nil, reason, false, nil
	}
	reason, e = px.decideName(host, dst, ev)
	switch reason {
	case journal.ReasonNoSNI:
		reason = journal.ReasonNoHost
	case journal.ReasonSNINotAllowed, journal.ReasonIPLiteralSNI, journal.ReasonInvalidSNI:
		reason = journal.ReasonHostNotAllowed
	}
	return req, reason, false, e
}

// requestHost returns the one authority a request names, refusing requests
// whose authority is missing, repeated or contradicted, and the methods and
// upgrades that would carry other traffic past the per-request checks.
func requestHost(req *http.Request, port uint16) (string, journal.Reason) {
	if req.ProtoMajor != 1 {
		return "", journal.ReasonBadRequest
	}
	if req.Method == http.MethodConnect {
		return req.Host, journal.ReasonConnect
	}
	if req.Header.Get("HTTP2-Settings") != "" || headerHasToken(req.Header, "Upgrade", "h2c") {
		return req.Host, journal.ReasonH2C
	}
	// http.ReadRequest has already refused repeated Host headers and, for
	// an absolute-form request, taken the URI's authority over the Host
	// header, as RFC 9112 says. Either way req.Host is the one authority,
	// and it is the only one the upstream will see: the request is written
	// anew, in origin form, with that Host.
	host := req.Host
	if host == "" {
		return "", journal.ReasonNoHost
	}
	name, p, err := net.SplitHostPort(host)
	if err != nil {
		return host, ""
	}
	if n, err := strconv.Atoi(p); err != nil || n != int(port) {
		return host, journal.ReasonConflictingHost // names a port other than the one connected to
	}
	return name, ""
}

func headerHasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// exchange sends one request upstream and its response back. It reports
// whether the connection may carry another request.
func (px *Proxy) exchange(c, up idleConn, br, upr *bufio.Reader, req *http.Request) bool {
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header["User-Agent"] = []string{""} // keep req.Write from adding Go's own
	}
	sent, err := send(up, req)
	if err != nil {
		return false
	}
	resp, err := response(c, upr, req)
	if err != nil {
		abandon(c, up, sent)
		return false
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// Not h2c (refused above): a WebSocket or similar. From here on the
		// bytes are opaque, as on a spliced TLS connection.
		if !sent() {
			return false
		}
		if err := resp.Write(c); err != nil {
			return false
		}
		done := make(chan struct{})
		go func() {
			_, _ = io.Copy(up, br)
			_ = up.c.CloseWrite()
			close(done)
		}()
		_, _ = io.Copy(c, upr)
		_ = c.c.CloseWrite()
		<-done
		return false
	}
	if err := resp.Write(c); err != nil {
		abandon(c, up, sent)
		return false
	}
	// A destination may answer before it has read the whole body; the
	// next request starts only after it.
	return sent() && !req.Close && !resp.Close
}

// send writes req upstream and returns a function that waits until it is
// written and reports whether all of it was; err is a failure to write a
// request that has no body. A request with a body is
// written on its own goroutine while the responses are read: a client that
// sent "Expect: 100-continue" waits for the 100 before it sends the body,
// and a destination may answer before reading it.
func send(up idleConn, req *http.Request) (wait func() bool, err error) {
	if req.Body == nil || req.Body == http.NoBody {
		if err := req.Write(up); err != nil {
			return nil, err
		}
		return func() bool { return true }, nil
	}
	body := &bodyReader{r: req.Body}
	req.Body = body
	done := make(chan bool, 1)
	go func() {
		err := req.Write(up)
		if err != nil && body.err != nil && !errors.Is(body.err, io.EOF) {
			// The client broke off its body: no answer can follow.
			// Closing the destination ends the wait for one.
			up.c.Close()
		}
		done <- err == nil
	}()
	return sync.OnceValue(func() bool { return <-done }), nil
}

// abandon ends a failed exchange: the goroutine sending the body, if any,
// waits for neither side any more.
func abandon(c, up idleConn, sent func() bool) {
	up.c.Close()
	_ = c.c.CloseRead()
	sent()
}

// bodyReader remembers why reading a request body from the client failed.
type bodyReader struct {
	r   io.ReadCloser
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil {
		b.err = err
	}
	return n, err
}

func (b *bodyReader) Close() error { return b.r.Close() }

// response reads the destination's answer to req. Interim responses (1xx,
// but 101, which is final) go to the client as they come, and the final
// one is returned. An HTTP/1.0 client, which cannot expect them, is not
// sent any (RFC 9110, section 15.2).
func response(c idleConn, upr *bufio.Reader, req *http.Request) (*http.Response, error) {
	for {
		resp, err := http.ReadResponse(upr, req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode < 100 || resp.StatusCode > 199 || resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, nil
		}
		if req.ProtoAtLeast(1, 1) {
			if err := writeInterim(c, resp); err != nil {
				return nil, err
			}
		}
	}
}

// writeInterim writes an interim response's head, all it has.
func writeInterim(c idleConn, resp *http.Response) error {
	var b bytes.Buffer
	code := strconv.Itoa(resp.StatusCode)
	text := strings.TrimSpace(strings.TrimPrefix(resp.Status, code))
	fmt.Fprintf(&b, "HTTP/1.1 %s %s\r\n", code, text)
	if err := resp.Header.Write(&b); err != nil {
		return err
	}
	b.WriteString("\r\n")
	_, err := c.Write(b.Bytes())
	return err
}

var errHeadTooBig = errors.New("request head too large")

// idleConn gives each read and write a fresh deadline, so that a peer that
// goes silent is dropped after idle while a slow transfer of any length
// goes on.
type idleConn struct {
	c    *net.TCPConn
	idle time.Duration
}

func (i idleConn) Read(p []byte) (int, error) {
	if i.idle > 0 {
		_ = i.c.SetReadDeadline(time.Now().Add(i.idle))
	}
	return i.c.Read(p)
}

func (i idleConn) Write(p []byte) (int, error) {
	if i.idle > 0 {
		_ = i.c.SetWriteDeadline(time.Now().Add(i.idle))
	}
	return i.c.Write(p)
}

// limitedConn bounds how much of a request head may be read before a
// decision; the bound resets once a request passed. While a request body
// is read, each read gets the idle deadline (the head has its own).
type limitedConn struct {
	c    *net.TCPConn
	n    int
	max  int
	open bool
	idle time.Duration
}

func (l *limitedConn) Read(p []byte) (int, error) {
	if !l.open && l.n >= l.max {
		return 0, errHeadTooBig
	}
	if l.open && l.idle > 0 {
		_ = l.c.SetReadDeadline(time.Now().Add(l.idle))
	}
	n, err := l.c.Read(p)
	l.n += n
	return n, err
}
