// Package mitm terminates TLS for the hosts whose requests sluice checks
// one by one (entries with git or http rules), and only for those. This
// file is its certificate authority: made for the set of hosts that have
// rules, constrained to them by X.509 name constraints, so that its key,
// if it ever leaked, could vouch for nothing else.
package mitm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// Lifetimes: the CA lives as long as a long agent run might; a leaf, a
// day, and is made again before its last hour.
const (
	caLife       = 30 * 24 * time.Hour
	leafLife     = 24 * time.Hour
	leafRenew    = time.Hour
	clockSkewFix = 5 * time.Minute // certificates start a little in the past
)

// CA signs the leaf certificates the agent is shown for the hosts that
// have rules.
type CA struct {
	cert  *x509.Certificate
	key   crypto.Signer
	pem   []byte
	hosts []string

	mu     sync.Mutex
	leaves map[string]*tls.Certificate
	now    func() time.Time
}

// NewCA makes a CA for hosts (exact names, as the policy's entries with
// rules have them). Its name constraints permit those names (and, as
// RFC 5280 has it, names under them) and no IP address.
func NewCA(hosts []string) (*CA, error) {
	if len(hosts) == 0 {
		return nil, errors.New("mitm: a CA for no host")
	}
	hosts = slices.Clone(hosts)
	slices.Sort(hosts)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:                serial(),
		Subject:                     pkix.Name{CommonName: "sluice interception CA", Organization: []string{"sluice"}},
		NotBefore:                   now.Add(-clockSkewFix),
		NotAfter:                    now.Add(caLife),
		KeyUsage:                    x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid:       true,
		IsCA:                        true,
		MaxPathLenZero:              true,
		PermittedDNSDomainsCritical: true,
		PermittedDNSDomains:         hosts,
		ExcludedIPRanges:            []*net.IPNet{{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}, {IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("mitm: make the CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{cert: cert, key: key, hosts: hosts, leaves: map[string]*tls.Certificate{}, now: time.Now,
		pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

// PEM is the CA's certificate, for the agent's trust store.
func (ca *CA) PEM() []byte { return ca.pem }

// Hosts are the names the CA may vouch for.
func (ca *CA) Hosts() []string { return slices.Clone(ca.hosts) }

// Leaf returns a certificate for host, made once and kept until its last
// hour. host must be one of the CA's hosts: nothing else is intercepted.
func (ca *CA) Leaf(host string) (*tls.Certificate, error) {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if !slices.Contains(ca.hosts, host) {
		return nil, fmt.Errorf("mitm: %s is not a host this CA intercepts", host)
	}
	now := ca.now()
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if c, ok := ca.leaves[host]; ok && now.Add(leafRenew).Before(c.Leaf.NotAfter) {
		return c, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: host},
		DNSNames:     []string{host},
		NotBefore:    now.Add(-clockSkewFix),
		NotAfter:     now.Add(leafLife),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, fmt.Errorf("mitm: make a certificate for %s: %w", host, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	c := &tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key, Leaf: leaf}
	ca.leaves[host] = c
	return c, nil
}

// Save writes the CA to dir: its certificate as ca.pem (0644), its key
// as ca-key.pem (0600, root's alone), each through a temporary file and
// a rename.
func (ca *CA) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"ca-key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600},
		{"ca.pem", ca.pem, 0o644},
	} {
		tmp, err := os.CreateTemp(dir, "."+f.name+".*")
		if err != nil {
			return err
		}
		_, err = tmp.Write(f.data)
		if err == nil {
			err = tmp.Chmod(f.mode)
		}
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp.Name(), filepath.Join(dir, f.name))
		}
		if err != nil {
			os.Remove(tmp.Name())
			return fmt.Errorf("mitm: save %s: %w", f.name, err)
		}
	}
	return nil
}

// LoadCA takes again the CA saved in dir, if it was made for exactly
// hosts and has at least minLeft of its life left; otherwise it returns
// an error, and a new one is to be made.
func LoadCA(dir string, hosts []string, minLeft time.Duration) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, "ca-key.pem"))
	if err != nil {
		return nil, err
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, errors.New("mitm: saved CA is not PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, err
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("mitm: saved CA key does not match its certificate")
	}
	want := slices.Clone(hosts)
	slices.Sort(want)
	have := slices.Clone(cert.PermittedDNSDomains)
	slices.Sort(have)
	if !cert.IsCA || !slices.Equal(want, have) {
		return nil, errors.New("mitm: saved CA is for other hosts")
	}
	if time.Now().Add(minLeft).After(cert.NotAfter) {
		return nil, errors.New("mitm: saved CA ends too soon")
	}
	return &CA{cert: cert, key: key, hosts: want, leaves: map[string]*tls.Certificate{}, now: time.Now,
		pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})}, nil
}
