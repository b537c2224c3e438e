package fakenet

import (
	"fmt"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// GitServer serves bare repositories over git's smart HTTP protocol,
// through the real git http-backend (CGI), with pushes enabled: the
// remote an agent would exfiltrate to, and the one it may push to.
type GitServer struct {
	root    string
	backend *cgi.Handler

	mu       sync.Mutex
	requests []string // "METHOD /path?query" as the server saw them
}

// NewGitServer serves the repositories under root (made if missing).
func NewGitServer(root string) (*GitServer, error) {
	backend, err := exec.LookPath("git")
	if err != nil {
		return nil, err
	}
	out, err := exec.Command(backend, "--exec-path").Output()
	if err != nil {
		return nil, fmt.Errorf("git --exec-path: %w", err)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	return &GitServer{root: root, backend: &cgi.Handler{
		Path: filepath.Join(strings.TrimSpace(string(out)), "git-http-backend"),
		// REMOTE_USER turns receive-pack on, as an authenticated user's
		// push would be on a real host.
		Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1", "REMOTE_USER=agent"},
	}}, nil
}

// Init makes an empty bare repository owner/repo.git.
func (g *GitServer) Init(owner, repo string) error {
	dir := filepath.Join(g.root, owner, repo+".git")
	if out, err := exec.Command("git", "init", "--quiet", "--bare", dir).CombinedOutput(); err != nil {
		return fmt.Errorf("git init %s: %v: %s", dir, err, out)
	}
	return nil
}

// Refs returns the refs of owner/repo and what they point to.
func (g *GitServer) Refs(owner, repo string) (map[string]string, error) {
	dir := filepath.Join(g.root, owner, repo+".git")
	out, err := exec.Command("git", "-C", dir, "for-each-ref", "--format=%(refname) %(objectname)").Output()
	if err != nil {
		return nil, fmt.Errorf("git for-each-ref in %s: %w", dir, err)
	}
	refs := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if name, id, ok := strings.Cut(line, " "); ok {
			refs[name] = id
		}
	}
	return refs, nil
}

// Requests returns what the server was asked, in order.
func (g *GitServer) Requests() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.requests...)
}

// ServeHTTP records the request and hands it to git http-backend.
func (g *GitServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	g.requests = append(g.requests, r.Method+" "+r.URL.RequestURI())
	g.mu.Unlock()
	g.backend.ServeHTTP(w, r)
}
