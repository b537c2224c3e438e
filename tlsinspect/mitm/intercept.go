package mitm

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/elazarl/goproxy"
	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
)

// Defaults for Config fields left zero.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultIdleTimeout      = time.Hour
)

// Config configures an Interceptor.
type Config struct {
	// Agent names the agent in records.
	Agent string
	// CA signs what the agent is shown; it must hold every host with rules.
	CA *CA
	// Roots verify the destinations' certificates: nil for the system's
	// (which honours SSL_CERT_FILE and SSL_CERT_DIR). Never skipped.
	Roots *x509.CertPool
	// Journal receives a record per request.
	Journal journal.Sink
	// Policy returns the policy in force: every request is decided under
	// the one in force when it comes.
	Policy func() *policy.Policy
	// HandshakeTimeout bounds the agent's TLS handshake; IdleTimeout each
	// read and write after it.
	HandshakeTimeout, IdleTimeout time.Duration
	// Log reports what is not a decision.
	Log *slog.Logger
}

// Conn is a connection handed over for interception: its SNI names a
// host with rules, and the proxy has already checked the name and that
// the destination is pinned to it.
type Conn struct {
	// Client is the agent's TCP connection.
	Client net.Conn
	// Replay is what was read from Client already (the ClientHello).
	Replay []byte
	// Name is the canonical SNI.
	Name string
	// Dst is the original destination, the only address dialed.
	Dst netip.AddrPort
	// Dial connects to Dst (the proxy's dialer, which refuses internal
	// addresses whatever led to them).
	Dial func(ctx context.Context) (net.Conn, error)
	// Event is the connection's record so far (agent, destination, rule).
	Event journal.Event
}

// Interceptor terminates TLS toward the agent with a certificate from
// its CA, decides every request against the rules of the host in the
// policy in force, and sends the ones allowed on over TLS verified
// against Roots, to the connection's original destination only.
//
// The HTTP/1.1 loop is goproxy's (its MITM mode, driven as a CONNECT
// that never was). Each of its defaults that is wrong for a firewall is
// replaced here: its transport, which skips certificate checks and
// follows HTTP(S)_PROXY, is never used (each connection has its own, see
// session); the certificate comes from the CA's cache, not one signed per
// connection; the handshake has a deadline; and nothing resolves the name
// again: the upstream is the pinned destination the agent connected to.
type Interceptor struct {
	cfg     Config
	gp      *goproxy.ProxyHttpServer
	spooled atomic.Int64 // bytes of packs held back (see MaxSpool)
}

// New returns an Interceptor.
func New(cfg Config) (*Interceptor, error) {
	if cfg.CA == nil || cfg.Journal == nil || cfg.Policy == nil {
		return nil, errors.New("mitm: CA, Journal and Policy are required")
	}
	cfg.HandshakeTimeout = cmp.Or(cfg.HandshakeTimeout, DefaultHandshakeTimeout)
	cfg.IdleTimeout = cmp.Or(cfg.IdleTimeout, DefaultIdleTimeout)
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	i := &Interceptor{cfg: cfg}
	gp := goproxy.NewProxyHttpServer()
	gp.Logger = discardLogger{}
	gp.KeepAcceptEncoding = true // pass the agent's request as it came
	// Never used (every request goes through its session), and made
	// unable to connect anywhere should that ever change.
	gp.Tr = &http.Transport{Proxy: nil, DialContext: refuseDial, DialTLSContext: refuseDial}
	gp.ConnectDial = func(string, string) (net.Conn, error) { return nil, errNoDial }
	gp.ConnectionErrHandler = func(w io.Writer, _ *goproxy.ProxyCtx, _ error) {
		if c, ok := w.(io.Closer); ok {
			c.Close()
		}
	}
	gp.OnRequest().HandleConnectFunc(func(host string, ctx *goproxy.ProxyCtx) (*goproxy.ConnectAction, string) {
		s, _ := ctx.Req.Context().Value(sessionKey{}).(*session)
		if s == nil {
			return goproxy.RejectConnect, host
		}
		ctx.UserData, ctx.RoundTripper = s, s
		return &goproxy.ConnectAction{Action: goproxy.ConnectMitm, TLSConfig: s.tlsConfig}, host
	})
	gp.OnRequest().DoFunc(func(req *http.Request, ctx *goproxy.ProxyCtx) (_ *http.Request, resp *http.Response) {
		s, _ := ctx.UserData.(*session)
		if s == nil {
			return req, plainResponse(req, http.StatusForbidden, "sluice: no session\n")
		}
		// goproxy's connection goroutine has no recover: a panic here
		// would end the gateway. It ends the connection instead.
		defer func() {
			if v := recover(); v != nil {
				i.cfg.Log.Error("intercepted request: panic", "agent", cfg.Agent, "host", s.Name, "panic", v)
				resp = plainResponse(req, http.StatusInternalServerError, "sluice: internal error")
				resp.Close = true
			}
		}()
		s.client.inBody.Store(true) // what follows the head is the request's body
		req, resp = s.decide(req)
		if resp == nil {
			s.watchBody(req)
		}
		return req, resp
	})
	// A protocol switch would leave a raw tunnel behind the request that
	// was checked: refused whatever the request said (see decide).
	gp.OnResponse().DoFunc(func(resp *http.Response, ctx *goproxy.ProxyCtx) *http.Response {
		if resp == nil || resp.StatusCode != http.StatusSwitchingProtocols {
			return resp
		}
		resp.Body.Close()
		refusal := plainResponse(ctx.Req, http.StatusBadGateway, "sluice: the server switched protocols, which sluice does not pass")
		refusal.Close = true
		return refusal
	})
	i.gp = gp
	return i, nil
}

var errNoDial = errors.New("mitm: no destination outside a session")

func refuseDial(context.Context, string, string) (net.Conn, error) { return nil, errNoDial }

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}

type sessionKey struct{}

// Serve intercepts c until it ends: the agent closes, a read or write
// idles past IdleTimeout, or Client is closed from outside (a revocation
// or the proxy's Close).
func (i *Interceptor) Serve(c Conn) {
	s := &session{i: i, Conn: c, done: make(chan struct{})}
	s.client = &clientConn{Conn: c.Client, s: s}
	s.client.limit.Store(time.Now().Add(i.cfg.HandshakeTimeout).UnixNano())
	s.tr = &http.Transport{
		Proxy:              nil,
		DialTLSContext:     s.dialUpstream,
		DisableCompression: true, // the agent's encodings pass as they came
		MaxIdleConns:       4,
		IdleConnTimeout:    90 * time.Second,
		// HTTP/1.1 upstream too: bodies stream as they came, chunked or
		// not, and a refusal can stop one before the server saw it.
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	defer s.tr.CloseIdleConnections()
	ctx := context.WithValue(context.Background(), sessionKey{}, s)
	connect, _ := http.NewRequestWithContext(ctx, http.MethodConnect, "", nil)
	connect.URL.Host = net.JoinHostPort(c.Name, fmt.Sprint(c.Dst.Port()))
	connect.Host, connect.RemoteAddr = connect.URL.Host, c.Client.RemoteAddr().String()
	connect.Proto, connect.ProtoMajor, connect.ProtoMinor = "HTTP/1.1", 1, 1
	i.gp.ServeHTTP(&hijacker{s: s}, connect)
	<-s.done
}

// session is one intercepted connection.
type session struct {
	i *Interceptor
	Conn
	client *clientConn
	tr     *http.Transport
	done   chan struct{}
	once   sync.Once
}

// tlsConfig is what the agent's handshake is served with: the host's
// leaf, HTTP/1.1 only, and the end of the handshake deadline once done.
func (s *session) tlsConfig(string, *goproxy.ProxyCtx) (*tls.Config, error) {
	leaf, err := s.i.cfg.CA.Leaf(s.Name)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{*leaf},
		NextProtos:   []string{"http/1.1"},
		MinVersion:   tls.VersionTLS12,
		VerifyConnection: func(tls.ConnectionState) error {
			s.client.limit.Store(0) // handshake done: only the idle timeout from now on
			s.client.head.Store(0)
			return nil
		},
	}, nil
}

// dialUpstream connects to the pinned destination, whatever address the
// request names, and verifies its certificate for the SNI's name.
func (s *session) dialUpstream(ctx context.Context, _, _ string) (net.Conn, error) {
	raw, err := s.Dial(ctx)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(idleConn{Conn: raw, idle: s.i.cfg.IdleTimeout}, &tls.Config{
		ServerName: s.Name,
		RootCAs:    s.i.cfg.Roots,
		NextProtos: []string{"http/1.1"},
		MinVersion: tls.VersionTLS12,
	})
	hctx, cancel := context.WithTimeout(ctx, s.i.cfg.HandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("TLS to %s (%s): %w", s.Name, s.Dst, err)
	}
	return tc, nil
}

// RoundTrip sends an allowed request on (goproxy's RoundTripper).
func (s *session) RoundTrip(req *http.Request, _ *goproxy.ProxyCtx) (*http.Response, error) {
	resp, err := s.tr.RoundTrip(req)
	if err != nil {
		s.i.cfg.Log.Warn("intercepted request", "agent", s.i.cfg.Agent, "host", s.Name, "err", err)
		return plainResponse(req, http.StatusBadGateway, fmt.Sprintf("sluice: %s: %v\n", s.Name, err)), nil
	}
	return resp, nil
}

func (s *session) end() { s.once.Do(func() { close(s.done) }) }

// hijacker is the ResponseWriter of the CONNECT that never was: goproxy
// takes the agent's connection from it, with the ClientHello already read
// waiting in its buffer.
type hijacker struct {
	s      *session
	header http.Header
}

func (h *hijacker) Header() http.Header {
	if h.header == nil {
		h.header = http.Header{}
	}
	return h.header
}
func (h *hijacker) Write(p []byte) (int, error) { return len(p), nil }
func (h *hijacker) WriteHeader(int)             {}

func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	replay := h.s.Replay
	br := bufio.NewReaderSize(bytes.NewReader(replay), max(len(replay), 16))
	if _, err := br.Peek(len(replay)); err != nil {
		return nil, nil, err
	}
	return h.s.client, bufio.NewReadWriter(br, bufio.NewWriter(h.s.client)), nil
}

// maxHead bounds the bytes read (TLS records included) for one request
// head: goproxy's reader has no bound of its own.
const maxHead = 256 << 10

var errHeadTooLarge = errors.New("mitm: request head too large")

// clientConn is the agent's side: it swallows goproxy's reply to the
// CONNECT (the agent sent none), bounds each read and write by the
// handshake deadline (or a pack's, see checkPush) and then the idle
// timeout, bounds each request head by maxHead, and ends the session when
// closed.
type clientConn struct {
	net.Conn
	s       *session
	replied atomic.Bool
	limit   atomic.Int64 // a deadline (UnixNano) nearer than the idle one; 0: none
	inBody  atomic.Bool  // reading a request body, not a head
	head    atomic.Int64 // bytes read since the last head began
}

func (c *clientConn) deadline() time.Time {
	d := time.Now().Add(c.s.i.cfg.IdleTimeout)
	if l := c.limit.Load(); l != 0 && l < d.UnixNano() {
		return time.Unix(0, l)
	}
	return d
}

func (c *clientConn) Read(p []byte) (int, error) {
	_ = c.Conn.SetReadDeadline(c.deadline())
	n, err := c.Conn.Read(p)
	if !c.inBody.Load() && c.head.Add(int64(n)) > maxHead {
		return 0, errHeadTooLarge
	}
	return n, err
}

// endBody: the request's body has been read (or dropped); the next bytes
// are a head.
func (c *clientConn) endBody() {
	c.head.Store(0)
	c.inBody.Store(false)
}

// watchBody arranges for the end of req's body to start the next head's
// bound.
func (s *session) watchBody(req *http.Request) {
	if req.Body == nil || req.Body == http.NoBody {
		s.client.endBody()
		return
	}
	req.Body = &bodyEnd{ReadCloser: req.Body, end: s.client.endBody}
}

type bodyEnd struct {
	io.ReadCloser
	end func()
}

func (b *bodyEnd) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.end()
	}
	return n, err
}

func (b *bodyEnd) Close() error {
	b.end()
	return b.ReadCloser.Close()
}

func (c *clientConn) Write(p []byte) (int, error) {
	if !c.replied.Load() {
		// The first write is goproxy's "200 OK" to the CONNECT, before
		// any TLS: it is not the agent's to see.
		if c.replied.CompareAndSwap(false, true) && bytes.HasPrefix(p, []byte("HTTP/1.1 200 ")) && bytes.HasSuffix(p, []byte("\r\n\r\n")) {
			return len(p), nil
		}
	}
	_ = c.Conn.SetWriteDeadline(c.deadline())
	return c.Conn.Write(p)
}

func (c *clientConn) Close() error {
	err := c.Conn.Close()
	c.s.end()
	return err
}

// idleConn bounds each read and write of the upstream connection.
type idleConn struct {
	net.Conn
	idle time.Duration
}

func (c idleConn) Read(p []byte) (int, error) {
	_ = c.Conn.SetReadDeadline(time.Now().Add(c.idle))
	return c.Conn.Read(p)
}

func (c idleConn) Write(p []byte) (int, error) {
	_ = c.Conn.SetWriteDeadline(time.Now().Add(c.idle))
	return c.Conn.Write(p)
}

// plainResponse is a refusal or an error in the form git and curl show a
// person: a status and a line of text/plain, which git prints as
// "remote: ...".
func plainResponse(req *http.Request, status int, body string) *http.Response {
	if !strings.HasSuffix(body, "\n") {
		body += "\n"
	}
	return &http.Response{
		StatusCode: status, Status: fmt.Sprintf("%d %s", status, http.StatusText(status)),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"text/plain; charset=utf-8"}, "Cache-Control": {"no-store"}},
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}
