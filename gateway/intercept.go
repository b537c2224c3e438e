package gateway

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sluicegw/sluice/policy"
	"github.com/sluicegw/sluice/sandbox"
	"github.com/sluicegw/sluice/tlsinspect/mitm"
)

// CADir is where the CA of the agent name is kept, under the state
// directory: its certificate (ca.pem) and its key (ca-key.pem, root's).
func CADir(stateDir, name string) string {
	if stateDir == "" {
		stateDir = sandbox.DefaultStateDir
	}
	return filepath.Join(stateDir, "ca", name)
}

// ruledHosts are the hosts whose TLS sluice terminates: those with git or
// http rules (exact names: the policy refuses rules on wildcards).
func ruledHosts(p *policy.Policy) []string {
	var hosts []string
	for _, e := range p.Entries() {
		if e.Host != "" && e.Inspected() {
			hosts = append(hosts, e.Host)
		}
	}
	slices.Sort(hosts)
	return slices.Compact(hosts)
}

// startInterceptor makes (or takes again) the CA for the policy's hosts
// with rules and the interceptor that uses it; with no such host, none.
func (g *Gateway) startInterceptor() (*mitm.Interceptor, error) {
	hosts := ruledHosts(g.cfg.Policy)
	if len(hosts) == 0 {
		return nil, nil
	}
	dir := CADir(g.cfg.StateDir, g.cfg.Name)
	ca, err := mitm.LoadCA(dir, hosts, 24*time.Hour)
	if err != nil {
		if ca, err = mitm.NewCA(hosts); err != nil {
			return nil, err
		}
		if err := ca.Save(dir); err != nil {
			return nil, err
		}
	}
	g.ca = ca
	return mitm.New(mitm.Config{
		Agent: g.cfg.Name, CA: ca, Roots: g.cfg.UpstreamRoots, Journal: g.journal,
		Policy: g.policy.Load, HandshakeTimeout: g.cfg.HelloTimeout, IdleTimeout: g.cfg.IdleTimeout, Log: g.log,
	})
}

// checkRuledHosts refuses a policy with a host with rules that the CA the
// agent trusts does not cover: the agent's trust was set at its start.
func (g *Gateway) checkRuledHosts(p *policy.Policy) error {
	var have []string
	if g.ca != nil {
		have = g.ca.Hosts()
	}
	var missing []string
	for _, h := range ruledHosts(p) {
		if !slices.Contains(have, h) {
			missing = append(missing, h)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("git or http rules for %s, which had none when sluice started: the agent trusts a CA made for the hosts that had rules then; restart sluice to add hosts with rules", strings.Join(missing, ", "))
	}
	return nil
}

// CAPEM is the CA the agent trusts for the hosts with rules; nil when the
// policy had none at start.
func (g *Gateway) CAPEM() []byte {
	if g.ca == nil {
		return nil
	}
	return g.ca.PEM()
}

// agentBundle writes the bundle the agent trusts: the gateway's own roots
// (SSL_CERT_FILE or the distribution's bundle, as Go reads them) and the
// CA. With no CA it returns "".
func (g *Gateway) agentBundle() (string, error) {
	if g.ca == nil {
		return "", nil
	}
	roots, err := systemRootsPEM()
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	b.Write(roots)
	if len(roots) > 0 && roots[len(roots)-1] != '\n' {
		b.WriteByte('\n')
	}
	b.Write(g.ca.PEM())
	path := fmt.Sprintf("%s/%s.ca-bundle.pem", g.state.Dir(), g.state.Iface)
	if err := g.state.WriteFile(path, b.Bytes()); err != nil {
		return "", err
	}
	return path, nil
}

// systemRootsPEM reads the roots the gateway itself trusts: SSL_CERT_FILE
// when set, else the first distribution bundle there is.
func systemRootsPEM() ([]byte, error) {
	if f := os.Getenv("SSL_CERT_FILE"); f != "" {
		return os.ReadFile(f)
	}
	for _, f := range sandbox.CABundles {
		if data, err := os.ReadFile(f); err == nil {
			return data, nil
		}
	}
	return nil, errors.New("no system CA bundle to give the agent (set SSL_CERT_FILE or install ca-certificates)")
}

// LoadRoots reads a PEM file of CA certificates (--upstream-ca).
func LoadRoots(file string) (*x509.CertPool, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d: %w", file, n+1, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate", file)
	}
	return pool, nil
}
