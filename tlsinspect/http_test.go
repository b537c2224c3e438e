package tlsinspect

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
)

// httpProxied runs inspectHTTP on a new connection to a loopback listener
// that up.test resolved to, and returns the client's end and the
// destination's listener. The destination's side is the test's to play.
func httpProxied(t *testing.T) (client *net.TCPConn, ln net.Listener, host string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	dst := ln.Addr().(*net.TCPAddr).AddrPort()
	host = fmt.Sprintf("up.test:%d", dst.Port())
	e, err := policy.ParseAllowFlag(host)
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.New([]policy.Entry{e})
	if err != nil {
		t.Fatal(err)
	}
	px, err := New(Config{Pins: fakePins{"up.test": {dst.Addr()}}, Journal: journal.Discard{}, HelloTimeout: 5 * time.Second, IdleTimeout: 5 * time.Second}, p)
	if err != nil {
		t.Fatal(err)
	}
	px.loopbackForTests = true
	client, in := tcpPair(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		px.inspectHTTP(in, dst, journal.Event{Layer: journal.LayerHTTP, Dst: dst}, func() {})
	}()
	t.Cleanup(func() {
		client.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("the HTTP handler did not end after the client closed")
		}
	})
	client.SetDeadline(time.Now().Add(5 * time.Second))
	return client, ln, host
}

// upstream plays the destination on the one connection it accepts from
// ln: it answers each request head with the responses respond gives.
// respond also gets the request's reader, to read a body. When the test
// ends, the client closes and the destination must have seen no error.
func upstream(t *testing.T, client *net.TCPConn, ln net.Listener, respond func(req *http.Request, r *bufio.Reader, w io.Writer) error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		r := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(r)
			if err == io.EOF {
				errc <- nil
				return
			}
			if err == nil {
				err = respond(req, r, c)
			}
			if err != nil {
				errc <- err
				return
			}
		}
	}()
	t.Cleanup(func() {
		client.Close()
		if err := <-errc; err != nil {
			t.Errorf("destination: %v", err)
		}
	})
}

// readResponse reads one response head (and body) the client gets, and
// returns its status code and body.
func readResponse(t *testing.T, r *bufio.Reader, method string) (int, string) {
	t.Helper()
	resp, err := http.ReadResponse(r, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("client: reading a response: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("client: reading a %d's body: %v", resp.StatusCode, err)
	}
	return resp.StatusCode, string(b)
}

// TestHTTPInterimResponses: a 100 Continue reaches a client that waits
// for it before sending its body, a 103 Early Hints reaches it too, and
// the final response follows each; the next request on the connection
// gets its own answer, not the one before.
func TestHTTPInterimResponses(t *testing.T) {
	client, ln, host := httpProxied(t)
	upstream(t, client, ln, func(req *http.Request, r *bufio.Reader, w io.Writer) error {
		if req.URL.Path == "/two" {
			_, err := io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo")
			return err
		}
		if _, err := io.WriteString(w, "HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
			return err
		}
		body, err := io.ReadAll(req.Body)
		if err != nil || string(body) != "hello" {
			return fmt.Errorf("body %q (%v), want hello", body, err)
		}
		_, err = io.WriteString(w, "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"+
			"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return err
	})
	r := bufio.NewReader(client)
	fmt.Fprintf(client, "POST /one HTTP/1.1\r\nHost: %s\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n", host)
	// The body waits for the 100, as curl's would (for a while).
	line, err := r.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("client waiting for 100 Continue got %q (%v)", line, err)
	}
	if line, err := r.ReadString('\n'); err != nil || line != "\r\n" {
		t.Fatalf("100 Continue's head ends with %q (%v)", line, err)
	}
	io.WriteString(client, "hello")
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != http.StatusEarlyHints || resp.Header.Get("Link") != "</style.css>; rel=preload" {
		t.Fatalf("client got %v (%v), want the 103 with its Link", resp, err)
	}
	if code, body := readResponse(t, r, "POST"); code != 200 || body != "ok" {
		t.Fatalf("final response %d %q, want 200 ok", code, body)
	}
	fmt.Fprintf(client, "GET /two HTTP/1.1\r\nHost: %s\r\n\r\n", host)
	if code, body := readResponse(t, r, "GET"); code != 200 || body != "two" {
		t.Fatalf("the next request got %d %q, want its own 200 two", code, body)
	}
}

// TestHTTPEarlyHintsKeepStep: with no body to wait for, each request on a
// kept-alive connection still gets its own final response after the
// hints.
func TestHTTPEarlyHintsKeepStep(t *testing.T) {
	client, ln, host := httpProxied(t)
	upstream(t, client, ln, func(req *http.Request, r *bufio.Reader, w io.Writer) error {
		_, err := fmt.Fprintf(w, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"+
			"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(req.URL.Path), req.URL.Path)
		return err
	})
	r := bufio.NewReader(client)
	for _, path := range []string{"/a", "/bb", "/ccc"} {
		fmt.Fprintf(client, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host)
		if code, _ := readResponse(t, r, "GET"); code != http.StatusEarlyHints {
			t.Fatalf("%s: first response %d, want the 103", path, code)
		}
		if code, body := readResponse(t, r, "GET"); code != 200 || body != path {
			t.Fatalf("%s: final response %d %q, want 200 %q", path, code, body, path)
		}
	}
}

// TestHTTPInterimToHTTP10: an HTTP/1.0 client, which cannot expect an
// interim response, gets only the final one.
func TestHTTPInterimToHTTP10(t *testing.T) {
	client, ln, host := httpProxied(t)
	upstream(t, client, ln, func(req *http.Request, r *bufio.Reader, w io.Writer) error {
		_, err := io.WriteString(w, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"+
			"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
		return err
	})
	fmt.Fprintf(client, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", host)
	got, err := io.ReadAll(client)
	if err != nil || !strings.HasPrefix(string(got), "HTTP/1.1 200 OK\r\n") || strings.Contains(string(got), "103") {
		t.Fatalf("HTTP/1.0 client got %q (%v), want only the final response", got, err)
	}
}

// TestHTTPFinalBeforeBody: a destination that refuses a request before
// its body (417 to an Expect: 100-continue) has its answer relayed at
// once, and the connection ends when the client, which will not send the
// body now, closes.
func TestHTTPFinalBeforeBody(t *testing.T) {
	client, ln, host := httpProxied(t)
	upstream(t, client, ln, func(req *http.Request, r *bufio.Reader, w io.Writer) error {
		_, err := io.WriteString(w, "HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n")
		return err
	})
	r := bufio.NewReader(client)
	fmt.Fprintf(client, "PUT /big HTTP/1.1\r\nHost: %s\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n", host)
	if code, _ := readResponse(t, r, "PUT"); code != http.StatusExpectationFailed {
		t.Fatalf("client got %d, want the 417", code)
	}
	client.CloseWrite()
	if b, err := io.ReadAll(r); err != nil || len(b) != 0 {
		t.Fatalf("after its close the client read %q (%v), want the end", b, err)
	}
}
