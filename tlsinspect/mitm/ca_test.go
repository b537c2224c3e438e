package mitm

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func pool(ca *CA) *x509.CertPool {
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(ca.PEM())
	return p
}

// TestLeaf: a leaf verifies for its host, is made once and again before
// it expires, and none is made for a host without rules.
func TestLeaf(t *testing.T) {
	ca, err := NewCA([]string{"github.com", "api.github.com"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.Leaf("GitHub.com.")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: "github.com", Roots: pool(ca)}); err != nil {
		t.Errorf("the leaf does not verify: %v", err)
	}
	if again, _ := ca.Leaf("github.com"); again != c {
		t.Error("the leaf was made again at once")
	}
	ca.now = func() time.Time { return time.Now().Add(leafLife - leafRenew/2) }
	if again, _ := ca.Leaf("github.com"); again == c {
		t.Error("a leaf in its last hour was kept")
	}
	if _, err := ca.Leaf("example.com"); err == nil {
		t.Error("a leaf for a host without rules")
	}
}

// TestNameConstraints: a certificate the CA's key signs for another name
// (as a stolen key would) does not verify.
func TestNameConstraints(t *testing.T) {
	ca, err := NewCA([]string{"github.com"})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, name := range []string{"example.com", "github.com.evil.example"} {
		tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
			NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ := x509.ParseCertificate(der)
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: pool(ca)}); err == nil || !strings.Contains(err.Error(), "constraint") {
			t.Errorf("a forged certificate for %s: %v, want a name constraint violation", name, err)
		}
	}
}

func TestSave(t *testing.T) {
	ca, err := NewCA([]string{"github.com"})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "ca")
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{"ca.pem": 0o644, "ca-key.pem": 0o600, ".": 0o700 | os.ModeDir} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode() != mode {
			t.Errorf("%s: %v, %v; want %v", name, fi.Mode(), err, mode)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "ca.pem")); string(b) != string(ca.PEM()) {
		t.Error("ca.pem is not the CA")
	}
}
