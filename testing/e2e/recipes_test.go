package e2e

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicegw/sluice/gateway"
	"github.com/sluicegw/sluice/policy"
	"github.com/sluicegw/sluice/testing/fakenet"
	"github.com/sluicegw/sluice/testing/nstest"
)

// The tests of docs/recipes.md: what it says about the environment an
// agent gets, about running a container inside the agent's namespace,
// and each policy of examples/ run for real.

// Addresses of the recipe tests' own servers in the fake internet.
const (
	recipeWebAddr = "198.18.2.30" // every plain host of the example policies
	recipeGitAddr = "198.18.2.31" // every host of theirs with git rules
)

// TestRecipeEnvironment: the agent gets sluice's environment, less
// SLUICE_UI_TOKEN, with HOME, USER and LOGNAME of the user it runs as.
// Through `sudo --preserve-env=NAME` only NAME comes along (beside sudo's
// own few), while `sudo -E` hands the agent everything: the SSH agent's
// socket, other tools' tokens.
func TestRecipeEnvironment(t *testing.T) {
	w := newWorld(t)
	const script = `for v in ANTHROPIC_API_KEY OTHER_TOOL_TOKEN SSH_AUTH_SOCK SLUICE_UI_TOKEN HOME USER LOGNAME; do eval "echo $v=\${$v-unset}"; done
`
	env := []string{"ANTHROPIC_API_KEY=sk-ant-recipe", "OTHER_TOOL_TOKEN=ghp_recipe", "SSH_AUTH_SOCK=/tmp/ssh-recipe/agent.1",
		"SLUICE_UI_TOKEN=ui-recipe", "HOME=/nonexistent-recipe", "USER=someone", "LOGNAME=someone"}
	flags := []string{"--user", "root", "--allow", "allowed.test"}
	for _, tc := range []struct {
		name string
		sudo []string // sudo's options; nil: sluice started directly
		want map[string]string
	}{
		{"direct", nil, map[string]string{"ANTHROPIC_API_KEY": "sk-ant-recipe", "OTHER_TOOL_TOKEN": "ghp_recipe",
			"SSH_AUTH_SOCK": "/tmp/ssh-recipe/agent.1", "SLUICE_UI_TOKEN": "unset", "HOME": "/root", "USER": "root", "LOGNAME": "root"}},
		{"sudo --preserve-env", []string{"-n", "--preserve-env=ANTHROPIC_API_KEY"}, map[string]string{"ANTHROPIC_API_KEY": "sk-ant-recipe",
			"OTHER_TOOL_TOKEN": "unset", "SSH_AUTH_SOCK": "unset", "SLUICE_UI_TOKEN": "unset", "HOME": "/root", "USER": "root"}},
		{"sudo -E", []string{"-n", "-E"}, map[string]string{"ANTHROPIC_API_KEY": "sk-ant-recipe", "OTHER_TOOL_TOKEN": "ghp_recipe",
			"SSH_AUTH_SOCK": "/tmp/ssh-recipe/agent.1", "SLUICE_UI_TOKEN": "unset", "HOME": "/root"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var prefix []string
			if tc.sudo != nil {
				sudo := nstest.RequireTool(t, "sudo", "sudo", "this part of docs/recipes.md")
				prefix = append([]string{sudo}, tc.sudo...)
			}
			expect(t, w.runVia(t, prefix, env, flags, script), tc.want)
		})
	}
}

// probeSource is a client with no dependencies, built static for an
// image of its own: it GETs each NAME=URL and prints NAME=STATUS BODY or
// NAME=error ERR.
const probeSource = `package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	c := &http.Client{Timeout: 5 * time.Second}
	for _, arg := range os.Args[1:] {
		name, url, _ := strings.Cut(arg, "=")
		resp, err := c.Get(url)
		if err != nil {
			fmt.Printf("%s=error %v\n", name, err)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("%s=%d %s\n", name, resp.StatusCode, strings.TrimSpace(string(b)))
	}
}
`

// probeImage builds the probe into an image of one file, imported by
// cred's user into podman storage of its own under dir, and returns
// podman's global flags for that storage.
func probeImage(t *testing.T, podman, dir string, cred *syscall.Credential) []string {
	t.Helper()
	src, rootfs := filepath.Join(dir, "src"), filepath.Join(dir, "rootfs")
	for _, d := range []string{src, filepath.Join(rootfs, "etc")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range map[string]string{filepath.Join(src, "main.go"): probeSource,
		filepath.Join(rootfs, "etc", "resolv.conf"): "", filepath.Join(rootfs, "etc", "hosts"): ""} {
		if err := os.WriteFile(name, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	build := exec.Command("go", "build", "-o", filepath.Join(rootfs, "probe"), "main.go")
	build.Dir, build.Env = src, append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=", "GO111MODULE=off")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the probe: %v\n%s", err, b)
	}
	tarball := filepath.Join(dir, "probe.tar")
	if b, err := exec.Command("tar", "-C", rootfs, "-cf", tarball, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, b)
	}
	if err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(cred.Uid), int(cred.Gid))
	}); err != nil {
		t.Fatal(err)
	}
	storage := []string{"--root", filepath.Join(dir, "storage"), "--runroot", filepath.Join(dir, "run"), "--tmpdir", filepath.Join(dir, "tmp"),
		"--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file"}
	// In a PID namespace of its own: rootless podman leaves a pause
	// process behind, which dies with the namespace.
	imp := exec.Command("unshare", append([]string{"--pid", "--fork", "--mount-proc", "--kill-child",
		"setpriv", fmt.Sprintf("--reuid=%d", cred.Uid), fmt.Sprintf("--regid=%d", cred.Gid), "--clear-groups",
		"env", "HOME=" + dir, podman}, append(storage, "import", tarball, "localhost/sluice-recipe-probe")...)...)
	imp.Dir = dir
	if b, err := imp.CombinedOutput(); err != nil {
		t.Fatalf("podman import: %v\n%s", err, b)
	}
	return storage
}

// remountCgroups mounts the cgroup hierarchies in the agent again, for
// runc: the agent's /sys is a fresh sysfs (of its network namespace),
// without the host's /sys/fs/cgroup mounts under it. cgroup v2 has one
// hierarchy; v1 has one per line of /proc/self/cgroup.
const remountCgroups = `if [ "$(grep -vc '^0::' /proc/self/cgroup)" = 0 ]; then
  mount -t cgroup2 cgroup2 /sys/fs/cgroup
else
  mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
  for c in $(cut -d: -f2 /proc/self/cgroup | grep .); do
    mkdir -p "/sys/fs/cgroup/${c#name=}" && mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/${c#name=}"
  done
fi
`

// forgetPause removes the process id rootless podman keeps in the
// store's temporary directory (recorded in its database at first use:
// --tmpdir does not move it). Written in another PID namespace, it names
// another process there, and podman fails to join it ("cannot set user
// namespace") when that process is the user's.
func forgetPause(dir string) string {
	return "rm -f " + filepath.Join(dir, "tmp", "pause.pid") + "\n"
}

// TestRecipePodmanInAgent: a container started with podman inside the
// agent's namespace (`sluice run -- podman run --network host ...`)
// shares the agent's network: it reaches an allowed host, gets NXDOMAIN
// for another name, and a direct connection to an address is refused,
// with nothing reaching the fake internet's sink. runc needs the cgroup
// hierarchies, which the agent's fresh /sys lacks: root mounts them
// again, then runs podman (rootful), or drops to an unprivileged user
// with setpriv first and that user runs podman (rootless, its own image
// store). An agent started unprivileged cannot mount them, and its
// podman fails ("no cgroup mount found"; docs/recipes.md).
func TestRecipePodmanInAgent(t *testing.T) {
	podman := nstest.RequireTool(t, "podman", "podman", "the container recipe of docs/recipes.md")
	w := newWorld(t)
	removeNewCgroups(t, "libpod_parent")
	for _, tc := range []struct {
		name    string
		cred    syscall.Credential // who imports the image and runs podman
		prepare string             // what root does first in the agent
	}{
		{"rootful", syscall.Credential{}, remountCgroups},
		// As docs/recipes.md has it, with sudo's variables naming the
		// user.
		{"rootless", syscall.Credential{Uid: 65534, Gid: 65534}, remountCgroups + `exec setpriv --reuid="$SUDO_UID" --regid="$SUDO_GID" --init-groups `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, err := os.MkdirTemp("", "sluice-recipe-podman-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			if err := os.Chmod(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			storage := probeImage(t, podman, dir, &tc.cred)
			run := append(append([]string{"HOME=" + dir, "USER=$SUDO_USER", "LOGNAME=$SUDO_USER", podman}, storage...), "run", "--rm", "--network", "host",
				"localhost/sluice-recipe-probe", "/probe",
				"allowed=http://allowed.test/", "other=http://evil.test/", "direct=http://"+evilAddr+":4444/")
			w.sluiceEnv = []string{"SUDO_USER=nobody", fmt.Sprintf("SUDO_UID=%d", tc.cred.Uid), fmt.Sprintf("SUDO_GID=%d", tc.cred.Gid)}
			r := w.run(t, []string{"--user", "root", "--allow", "allowed.test"}, forgetPause(dir)+tc.prepare+"sh -c 'echo uid=$(id -u); "+strings.Join(run, " ")+"; echo exit=$?'\n")
			v := r.values()
			if v["uid"] != fmt.Sprint(tc.cred.Uid) || v["exit"] != "0" {
				t.Fatalf("podman run as uid %s exited %s", v["uid"], v["exit"])
			}
			if v["allowed"] != "200 hello from allowed.test" {
				t.Errorf("allowed = %q, want the allowed host's answer", v["allowed"])
			}
			if !strings.Contains(v["other"], "no such host") {
				t.Errorf("other = %q, want NXDOMAIN (no such host)", v["other"])
			}
			if !strings.HasPrefix(v["direct"], "error") || strings.Contains(v["direct"], "timeout") {
				t.Errorf("direct = %q, want a connection refused at once", v["direct"])
			}
			noContacts(t, "the sink", w.sinkContacts())
			if !strings.Contains(r.stderr, "reason=name_not_allowed") || !strings.Contains(r.stderr, "reason=no_set_entry") {
				t.Errorf("the container's refusals were not logged with their reasons")
			}
		})
	}
}

// TestRecipeRootAgentNotContained: what docs/recipes.md says --user root
// costs. A root agent can take away the covers sluice puts over the side
// doors (here /run/netns) and find the gateway's namespace there, its way
// out; an unprivileged agent cannot.
func TestRecipeRootAgentNotContained(t *testing.T) {
	w := newWorld(t)
	script := `umount /run/netns 2>/dev/null; echo uncovered=$(ls /run/netns 2>/dev/null | grep -cx '` + w.gw.Name + `')
`
	r := w.run(t, []string{"--user", "root", "--allow", "allowed.test"}, script)
	expect(t, r, map[string]string{"uncovered": "1"})
	r = w.run(t, []string{"--user", "nobody", "--allow", "allowed.test"}, script)
	expect(t, r, map[string]string{"uncovered": "0"})
}

// removeNewCgroups removes, when the test ends, the cgroups named name
// (and those under them) that rootful podman makes in the host's
// hierarchies, unless they were there before.
func removeNewCgroups(t *testing.T, name string) {
	find := func() []string {
		v1, _ := filepath.Glob("/sys/fs/cgroup/*/" + name)
		v2, _ := filepath.Glob("/sys/fs/cgroup/" + name)
		return append(v1, v2...)
	}
	before := map[string]bool{}
	for _, d := range find() {
		before[d] = true
	}
	var remove func(dir string)
	remove = func(dir string) {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if e.IsDir() {
				remove(filepath.Join(dir, e.Name()))
			}
		}
		if err := os.Remove(dir); err != nil {
			t.Logf("cgroup %s stays: %v", dir, err)
		}
	}
	t.Cleanup(func() {
		for _, d := range find() {
			if !before[d] {
				remove(d)
			}
		}
	})
}

// examplePolicy is what an examples/ policy allows, sorted into hosts the
// test reaches by name (plain: TLS spliced by SNI) and hosts with git
// rules (their TLS terminated by sluice).
type examplePolicy struct {
	file       string
	policy     *policy.Policy
	plain, git []*policy.Entry
}

// loadExamples loads every examples/ policy as `sluice check` does.
func loadExamples(t *testing.T) []examplePolicy {
	t.Helper()
	files, err := filepath.Glob("../../examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example policies: %v", err)
	}
	var out []examplePolicy
	for _, f := range files {
		p, _, err := gateway.PolicySource{File: f}.Load()
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		ex := examplePolicy{file: f, policy: p}
		for _, e := range p.Entries() {
			switch {
			case e.Host == "":
				continue
			case e.Git != nil:
				ex.git = append(ex.git, e)
			case !e.Inspected():
				ex.plain = append(ex.plain, e)
			}
		}
		out = append(out, ex)
	}
	return out
}

// probeName is the name the test asks for under an entry: the host
// itself, or one name under a wildcard.
func probeName(e *policy.Entry) string {
	if e.Wildcard() {
		return "probe" + strings.TrimPrefix(e.Host, "*")
	}
	return e.Host
}

// refusedName is a real-looking name that no example allows; the fake
// DNS answers it, so only sluice stands between the agent and it.
const refusedName = "exfil.example.net"

// serveExampleHosts puts every host of the examples into the fake
// internet: plain hosts on a web server whose certificate covers them
// all, git hosts on a git server, refusedName on the attacker's address,
// all in the gateway's upstream DNS. It returns the two servers.
func (w *world) serveExampleHosts(t *testing.T, examples []examplePolicy) (*fakenet.Web, *fakenet.GitServer) {
	t.Helper()
	web, git := map[string]bool{}, map[string]bool{}
	for _, ex := range examples {
		for _, e := range ex.plain {
			web[e.Host] = true
		}
		for _, e := range ex.git {
			git[e.Host] = true
		}
	}
	records := []string{refusedName + ". 300 IN A " + evilAddr}
	for h := range web {
		records = append(records, strings.Replace(h, "*", "probe", 1)+". 300 IN A "+recipeWebAddr)
	}
	for h := range git {
		records = append(records, h+". 300 IN A "+recipeGitAddr)
	}
	w.replaceZone(t, records...)

	for _, a := range []string{recipeWebAddr, recipeGitAddr} {
		w.inet.Run(t, "ip", "addr", "add", a+"/32", "dev", "lo")
	}
	webSrv, err := fakenet.NewWeb(w.ca, sortedKeys(web)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(webSrv.Close)
	if err := w.inet.Do(func() error {
		for _, port := range []string{"443", "80"} {
			ln, err := net.Listen("tcp", recipeWebAddr+":"+port)
			if err != nil {
				return err
			}
			if port == "443" {
				webSrv.ServeTLS(ln)
			} else {
				webSrv.Serve(ln)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return webSrv, w.serveGit(t, recipeGitAddr, sortedKeys(git)...)
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// replaceZone makes the gateway's upstream answer the world's zone and
// records besides (its questions recorded afresh).
func (w *world) replaceZone(t *testing.T, records ...string) {
	t.Helper()
	w.auth.Close()
	w.auth = fakenet.NewDNS(append(append([]string(nil), zone...), records...)...)
	if err := w.inet.Do(func() error {
		// The old server's socket may take a moment to go: bind again
		// until it has (a bounded wait, not a sleep).
		pc, err := net.ListenPacket("udp", authAddr+":53")
		for deadline := time.Now().Add(5 * time.Second); errors.Is(err, syscall.EADDRINUSE) && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
			pc, err = net.ListenPacket("udp", authAddr+":53")
		}
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", authAddr+":53")
		if err != nil {
			pc.Close()
			return err
		}
		w.auth.Serve(pc, ln)
		return nil
	}); err != nil {
		t.Fatalf("serve the new zone: %v", err)
	}
}

// serveGit serves a git http-backend over HTTPS on addr for names (a
// certificate of the fake internet's CA).
func (w *world) serveGit(t *testing.T, addr string, names ...string) *fakenet.GitServer {
	t.Helper()
	g, err := fakenet.NewGitServer(filepath.Join(t.TempDir(), "repos"))
	if err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		return g
	}
	cert, err := w.ca.Issue(names...)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: g, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}, ReadHeaderTimeout: 5 * time.Second}
	if err := w.inet.Do(func() error {
		ln, err := net.Listen("tcp", addr+":443")
		if err != nil {
			return err
		}
		go func() { _ = srv.ServeTLS(ln, "", "") }()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return g
}

// TestRecipeExamplePolicies: each policy of examples/, loaded by a real
// `sluice run`, lets the agent reach every host it allows (plain hosts
// with curl, git hosts with git: a clone, and the pushes the rules allow)
// and refuses a name it does not allow, and the pushes its rules refuse.
// The examples' real host names are answered by the fake internet's DNS
// with the test's addresses: nothing leaves the test's namespaces.
func TestRecipeExamplePolicies(t *testing.T) {
	w := newWorld(t)
	examples := loadExamples(t)
	for _, ex := range examples {
		if ex.policy.MatchName(refusedName).Allow {
			t.Fatalf("%s allows %s, the name the test expects refused", ex.file, refusedName)
		}
	}
	web, g := w.serveExampleHosts(t, examples)
	for _, ex := range examples {
		t.Run(filepath.Base(ex.file), func(t *testing.T) {
			w.runExample(t, g, ex)
		})
	}
	for _, c := range web.Contacts() {
		if c.SNI == refusedName || strings.HasPrefix(c.Host, refusedName) {
			t.Errorf("the refused name reached a server: %+v", c)
		}
	}
	noContacts(t, "the sink", w.sinkContacts())
}

// runExample runs one example policy with a script that tries each of its
// hosts and the refused name, and checks the git server's repositories.
func (w *world) runExample(t *testing.T, g *fakenet.GitServer, ex examplePolicy) {
	var script strings.Builder
	script.WriteString(prelude + out)
	want := map[string]string{}
	for _, e := range ex.plain {
		key := "reach_" + strings.NewReplacer(".", "_", "-", "_").Replace(probeName(e))
		fmt.Fprintf(&script, "try %s %s https://%s/\n", key, w.curl(), probeName(e))
		want[key] = ok
	}
	type repoRefs struct {
		repo string
		want map[string]bool // ref -> present after the run
	}
	var checks []repoRefs
	work := t.TempDir()
	for i, e := range ex.git {
		fetch := "acme/tools"
		if !policy.MatchRepo(e.Git.Fetch, fetch) {
			fetch = strings.ReplaceAll(e.Git.Fetch[0], "*", "x")
		}
		initRepo(t, g, fetch)
		fmt.Fprintf(&script, `cd %[5]s
out git%[1]d_clone %[2]s clone https://%[3]s/%[4]s.git work%[1]d
cd work%[1]d && echo recipe > f && %[2]s add f && %[2]s commit --quiet -m recipe
`, i, plainGit, e.Host, fetch, work)
		want[fmt.Sprintf("git%d_clone", i)] = ok
		attacker := "attacker/drop"
		initRepo(t, g, attacker)
		fmt.Fprintf(&script, "out git%d_push_other %s push https://%s/%s.git HEAD:refs/heads/main\n", i, plainGit, e.Host, attacker)
		want[fmt.Sprintf("git%d_push_other", i)] = "128"
		checks = append(checks, repoRefs{attacker, map[string]bool{"refs/heads/main": false}})
		if len(e.Git.Push) == 0 {
			fmt.Fprintf(&script, "out git%d_push_fetched %s push https://%s/%s.git HEAD:refs/heads/agent/recipe\n", i, plainGit, e.Host, fetch)
			want[fmt.Sprintf("git%d_push_fetched", i)] = "128"
			checks = append(checks, repoRefs{fetch, map[string]bool{"refs/heads/agent/recipe": false}})
			continue
		}
		push := e.Git.Push[0]
		if strings.Contains(push, "*") {
			t.Fatalf("%s: the test pushes to the first push repository, which must be one name, not %s", ex.file, push)
		}
		initRepo(t, g, push)
		ref := "refs/heads/agent/recipe"
		if len(e.Git.PushRefs) > 0 {
			ref = strings.ReplaceAll(e.Git.PushRefs[0], "*", "recipe")
		}
		refs := map[string]bool{ref: true}
		fmt.Fprintf(&script, "out git%d_push %s push https://%s/%s.git HEAD:%s\n", i, plainGit, e.Host, push, ref)
		want[fmt.Sprintf("git%d_push", i)] = ok
		if !policy.MatchRef(e.Git.PushRefs, "refs/heads/main") {
			fmt.Fprintf(&script, "out git%d_push_main %s push https://%s/%s.git HEAD:refs/heads/main\n", i, plainGit, e.Host, push)
			want[fmt.Sprintf("git%d_push_main", i)] = "1"
			refs["refs/heads/main"] = false
		}
		checks = append(checks, repoRefs{push, refs})
	}
	fmt.Fprintf(&script, "try refused %s https://%s/\n", w.curl(), refusedName)
	want["refused"] = curlNoResolve

	r := w.run(t, []string{"--policy", ex.file, "--upstream-ca", w.caFile}, script.String())
	expect(t, r, want)
	if !strings.Contains(r.stderr, "reason=name_not_allowed name="+refusedName) {
		t.Errorf("the refusal of %s was not logged", refusedName)
	}
	for _, c := range checks {
		owner, repo, _ := strings.Cut(c.repo, "/")
		refs, err := g.Refs(owner, repo)
		if err != nil {
			t.Fatal(err)
		}
		for ref, present := range c.want {
			if (refs[ref] != "") != present {
				t.Errorf("%s %s present = %v, want %v (refs %v)", c.repo, ref, !present, present, refs)
			}
		}
	}
}

// initRepo makes owner/repo on the git server, once.
func initRepo(t *testing.T, g *fakenet.GitServer, ownerRepo string) {
	t.Helper()
	owner, repo, _ := strings.Cut(ownerRepo, "/")
	if _, err := g.Refs(owner, repo); err == nil {
		return
	}
	if err := g.Init(owner, repo); err != nil {
		t.Fatal(err)
	}
}
