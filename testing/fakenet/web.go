package fakenet

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"sync"
	"time"
)

// CA is a throwaway certificate authority for one test run.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// PEM is the CA certificate, for clients to trust.
	PEM []byte
}

// NewCA makes a CA valid for a day.
func NewCA() (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sluice test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{cert: cert, key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// Issue returns a server certificate for names.
func (ca *CA) Issue(names ...string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// Contact is one request or connection a fake server saw.
type Contact struct {
	Local  string // the address and port that was reached
	Remote string
	SNI    string
	Host   string
	Path   string
	// End is how the peer ended a connection a drain listener read to its
	// end: "eof" (a FIN), "reset", or the read error.
	End string
}

// Web serves HTTPS and HTTP for any name the certificate covers, answering
// "hello from HOST", and records every request.
type Web struct {
	mu       sync.Mutex
	contacts []Contact
	cert     tls.Certificate
	servers  []*http.Server
}

// NewWeb returns a server whose certificate (from ca) covers names.
func NewWeb(ca *CA, names ...string) (*Web, error) {
	cert, err := ca.Issue(names...)
	if err != nil {
		return nil, err
	}
	return &Web{cert: cert}, nil
}

// ServeTLS serves HTTPS on ln.
func (w *Web) ServeTLS(ln net.Listener) {
	srv := &http.Server{Handler: w, TLSConfig: &tls.Config{Certificates: []tls.Certificate{w.cert}},
		ReadHeaderTimeout: 5 * time.Second}
	w.track(srv)
	go func() { _ = srv.ServeTLS(ln, "", "") }()
}

// Serve serves plain HTTP on ln.
func (w *Web) Serve(ln net.Listener) {
	srv := &http.Server{Handler: w, ReadHeaderTimeout: 5 * time.Second}
	w.track(srv)
	go func() { _ = srv.Serve(ln) }()
}

func (w *Web) track(s *http.Server) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.servers = append(w.servers, s)
}

// Close stops every server.
func (w *Web) Close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.servers {
		_ = s.Close()
	}
}

// ServeHTTP records the request and answers with the Host it was for.
func (w *Web) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	c := Contact{Remote: r.RemoteAddr, Host: r.Host, Path: r.URL.Path}
	if r.TLS != nil {
		c.SNI = r.TLS.ServerName
	}
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		c.Local = la.String()
	}
	w.mu.Lock()
	w.contacts = append(w.contacts, c)
	w.mu.Unlock()
	fmt.Fprintf(rw, "hello from %s\n", r.Host)
}

// Contacts returns every request so far.
func (w *Web) Contacts() []Contact {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Contact(nil), w.contacts...)
}
