package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// serveInterim serves plain HTTP on allowed.test:8080 in the fake
// internet, with interim responses: POST /up reads its body (so Go's
// server sends 100 Continue to a client that asked for it), then sends a
// 103 Early Hints and answers with the body's length and SHA-256; GET
// /hint sends a 103 and answers "hint"; GET /two answers "two".
func (w *world) serveInterim(t *testing.T) {
	t.Helper()
	mux := http.NewServeMux()
	hint := func(rw http.ResponseWriter) {
		rw.Header().Set("Link", "</style.css>; rel=preload")
		rw.WriteHeader(http.StatusEarlyHints)
		rw.Header().Del("Link")
	}
	mux.HandleFunc("POST /up", func(rw http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(rw, err.Error(), http.StatusBadRequest)
			return
		}
		hint(rw)
		fmt.Fprintf(rw, "%d:%s", n, hex.EncodeToString(h.Sum(nil)))
	})
	mux.HandleFunc("GET /hint", func(rw http.ResponseWriter, r *http.Request) {
		hint(rw)
		io.WriteString(rw, "hint")
	})
	mux.HandleFunc("GET /two", func(rw http.ResponseWriter, r *http.Request) { io.WriteString(rw, "two") })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	err := w.inet.Do(func() error {
		ln, err := net.Listen("tcp", allowedAddr+":8080")
		if err != nil {
			return err
		}
		go func() { _ = srv.Serve(ln) }()
		return nil
	})
	if err != nil {
		t.Fatalf("start the interim-response server: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
}

// TestHTTPInterimResponses: on the HTTP path, an upload with "Expect:
// 100-continue" gets its 100 and goes through (curl is told to wait for
// the 100 far longer than it may take in all), a 103 Early Hints reaches
// the client before the final response, and requests kept alive on one
// connection each get their own answer.
func TestHTTPInterimResponses(t *testing.T) {
	w := newWorld(t)
	w.serveInterim(t)
	pol := policyFile(t, "  - host: allowed.test\n    http_ports: [8080]\n")
	c := "curl -4 -sS --max-time 10"
	r := w.run(t, []string{"--policy", pol, "--log-allowed"}, `
dig +short allowed.test >/dev/null
f=$(mktemp); h=$(mktemp)
head -c 2097152 /dev/urandom >$f
echo sent=2097152:$(sha256sum <$f | cut -d' ' -f1)
out=$(`+c+` -D $h -H 'Expect: 100-continue' --expect100-timeout 60 --data-binary @$f http://allowed.test:8080/up); echo upload_exit=$?
echo upload=$out
echo upload_100=$(grep -c '^HTTP/1.1 100 ' $h)
echo upload_103=$(grep -c '^HTTP/1.1 103 ' $h)
out=$(`+c+` -D $h http://allowed.test:8080/hint http://allowed.test:8080/two http://allowed.test:8080/hint); echo keepalive_exit=$?
echo keepalive=$out
echo keepalive_103=$(grep -c '^HTTP/1.1 103 ' $h)
echo keepalive_200=$(grep -c '^HTTP/1.1 200 ' $h)
rm -f $f $h
`)
	v := r.values()
	expect(t, r, map[string]string{
		"upload_exit": ok, "upload_100": "1", "upload_103": "1",
		"keepalive_exit": ok, "keepalive": "hinttwohint", "keepalive_103": "2", "keepalive_200": "3",
	})
	if v["sent"] == "" || v["upload"] != v["sent"] {
		t.Errorf("the server got %q, the agent sent %q", v["upload"], v["sent"])
	}
	if n := strings.Count(r.stderr, "layer=http reason=allowed"); n != 4 {
		t.Errorf("%d requests allowed on the HTTP path, want the 4 sent (the test must go through the proxy)", n)
	}
}
