package fakenet

import (
	"crypto/rand"
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

// Fill gives owner/repo.git (made if missing) one commit on main of files
// random files of size bytes each, repacked into one pack so that every
// clone sends the stored pack rather than compressing it again.
func (g *GitServer) Fill(owner, repo string, files, size int) error {
	dir := filepath.Join(g.root, owner, repo+".git")
	if _, err := os.Stat(dir); err != nil {
		if err := g.Init(owner, repo); err != nil {
			return err
		}
	}
	work, err := os.MkdirTemp("", "fill")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	buf := make([]byte, size)
	for i := range files {
		rand.Read(buf)
		if err := os.WriteFile(filepath.Join(work, fmt.Sprintf("blob%03d", i)), buf, 0o644); err != nil {
			return err
		}
	}
	for _, args := range [][]string{
		{"-C", work, "init", "--quiet", "-b", "main"},
		{"-C", work, "add", "."},
		{"-C", work, "-c", "user.name=fill", "-c", "user.email=fill@example.test", "commit", "--quiet", "-m", "fill"},
		{"-C", work, "push", "--quiet", dir, "main"},
		{"-C", dir, "repack", "-a", "-d", "-q"},
	} {
		if out, err := exec.Command("git", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}
