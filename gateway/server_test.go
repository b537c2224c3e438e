package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/metrics"
	"github.com/sluicegw/sluice/policy"
)

func testPolicy(t *testing.T, hosts ...string) *policy.Policy {
	t.Helper()
	p, _, err := PolicySource{Allow: hosts}.Load()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func names(specs []ServeAgent) []string {
	var out []string
	for _, s := range specs {
		out = append(out, s.Name)
	}
	return out
}

// TestPlanReload: what a reload does to each agent, from the agents
// running and the config read anew.
func TestPlanReload(t *testing.T) {
	a, b := testPolicy(t, "a.test"), testPolicy(t, "b.test")
	spec := func(name, file string, p *policy.Policy) ServeAgent {
		return ServeAgent{Name: name, PolicyFile: file, Policy: p, Mode: ModeEnforce}
	}
	broken := func(name string) ServeAgent {
		return ServeAgent{Name: name, PolicyFile: name + ".yaml", Mode: ModeEnforce, Err: policy.Errors{{Source: name + ".yaml:3", Msg: "bad"}}}
	}
	running := map[string]ServeAgent{
		"same":     spec("same", "same.yaml", a),
		"changed":  spec("changed", "changed.yaml", a),
		"moved":    spec("moved", "moved.yaml", a),
		"gone":     spec("gone", "gone.yaml", a),
		"kept":     spec("kept", "kept.yaml", a),
		"relinked": spec("relinked", "relinked.yaml", a),
	}
	relinked := spec("relinked", "relinked.yaml", a)
	relinked.AgentNet = netip.MustParsePrefix("198.19.0.0/30")
	relinked.Mode = ModeReport
	next := &ServeConfig{File: "serve.yaml", Agents: []ServeAgent{
		spec("same", "same.yaml", a),                 // nothing to do
		spec("changed", "changed.yaml", b),           // another policy in the same file
		spec("moved", "elsewhere.yaml", a),           // another file, the same allow list
		broken("kept"),                               // running, now broken: keeps its policy
		broken("newbroken"),                          // new and broken: not started
		spec("new", "new.yaml", b),                   // started
		relinked,                                     // needs a restart: noted, nothing done
		spec("failedbefore", "failedbefore.yaml", a), // in the config, not running: tried again
	}}
	p := planReload(running, next)
	if got, want := names(p.reload), []string{"changed", "moved"}; !slices.Equal(got, want) {
		t.Errorf("reload %v, want %v", got, want)
	}
	if got, want := names(p.add), []string{"new", "failedbefore"}; !slices.Equal(got, want) {
		t.Errorf("add %v, want %v", got, want)
	}
	if got, want := p.remove, []string{"gone"}; !slices.Equal(got, want) {
		t.Errorf("remove %v, want %v", got, want)
	}
	if got, want := p.kept, []string{"kept", "newbroken"}; !slices.Equal(got, want) {
		t.Errorf("kept %v, want %v", got, want)
	}
	notes := strings.Join(p.notes, "\n")
	for _, want := range []string{"agent relinked: mode changed", "agent relinked: agent_net changed", "agent kept: its entry or policy has errors", "agent newbroken: its entry or policy has errors (above): not started"} {
		if !strings.Contains(notes, want) {
			t.Errorf("notes lack %q:\n%s", want, notes)
		}
	}

	// An entry without a valid name may be a running agent's: nothing is
	// removed while there is one.
	next.Unnamed = 1
	p = planReload(running, next)
	if len(p.remove) != 0 || !strings.Contains(strings.Join(p.notes, "\n"), "no agent is removed until it is fixed ([gone] stay)") {
		t.Errorf("with an unnamed entry: remove %v, notes %q", p.remove, p.notes)
	}
}

func TestRestartOnly(t *testing.T) {
	was := &ServeConfig{File: "s.yaml", Upstreams: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:53")}, Journal: "/j.db", UI: "127.0.0.1:1"}
	same := *was
	if got := restartOnly(was, &same); len(got) != 0 {
		t.Errorf("nothing changed: %q", got)
	}
	next := &ServeConfig{File: "s.yaml", Journal: "/other.db", UI: "127.0.0.1:1", Global: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15")}}
	got := strings.Join(restartOnly(was, next), "\n")
	for _, want := range []string{"upstream changed", "journal changed", "global_ranges changed"} {
		if !strings.Contains(got, want) {
			t.Errorf("restartOnly lacks %q: %q", want, got)
		}
	}
	if strings.Contains(got, "ui changed") {
		t.Errorf("ui did not change: %q", got)
	}
}

func TestStartOrder(t *testing.T) {
	agents := []ServeAgent{{Name: "pool1"}, {Name: "fixed1", AgentNet: netip.MustParsePrefix("198.19.0.0/30")},
		{Name: "pool2"}, {Name: "fixed2", AgentNet6: netip.MustParsePrefix("fd5c:1ce0:5c1c:1::/64")}}
	if got, want := names(startOrder(agents)), []string{"fixed1", "fixed2", "pool1", "pool2"}; !slices.Equal(got, want) {
		t.Errorf("start order %v, want %v", got, want)
	}
}

// TestSharedStore: the gateways of a Server write one store from their
// own Asyncs at once; every record is stored and the chain holds (run
// with -race: the store's writer state is not guarded by the store).
func TestSharedStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal.db")
	store, err := journal.OpenStore(journal.StoreConfig{Path: path, Coalesce: -1})
	if err != nil {
		t.Fatal(err)
	}
	shared := &sharedStore{s: store}
	const agents, each = 4, 200
	var wg sync.WaitGroup
	for i := range agents {
		a, err := journal.NewAsync(journal.AsyncConfig{Writer: journal.Tee{shared}, Agent: fmt.Sprint("a", i), Batch: 7, Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- a.Run(ctx) }()
			var last journal.Ticket
			for j := range each {
				last = a.Record(journal.Event{Time: time.Now(), Agent: fmt.Sprint("a", i), Layer: journal.LayerDNS,
					Reason: journal.ReasonNameNotAllowed, Name: fmt.Sprintf("n%d.test", j)})
			}
			if err := a.Wait(context.Background(), last); err != nil {
				t.Error(err)
			}
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if err := shared.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := journal.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	n, err := r.Last(context.Background())
	if err != nil || n != agents*each {
		t.Errorf("last record %d (%v), want %d", n, err, agents*each)
	}
	if checked, _, err := r.Verify(context.Background()); err != nil || checked != agents*each {
		t.Errorf("chain: %d records verified, %v", checked, err)
	}
}

// TestAgentHandler: a gateway's own lines name its agent; a line that
// names one itself (a decision) is left as it is.
func TestAgentHandler(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(agentHandler{slog.NewTextHandler(&buf, nil), "alpha"})
	log.Info("policy reloaded", "new", "sha256:x")
	log.With("k", "v").Warn("refused", "agent", "beta")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.HasSuffix(lines[0], "new=sha256:x agent=alpha") ||
		!strings.HasSuffix(lines[1], "k=v agent=beta") || strings.Count(lines[1], "agent=") != 1 {
		t.Errorf("lines: %q", lines)
	}
}

// TestFileStamps: a write, a replacement by rename (an editor's way) and
// a removal each change a file's stamp; reading it does not.
func TestFileStamps(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "p.yaml")
	write := func(name, data string) {
		t.Helper()
		if err := os.WriteFile(name, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(file, "version: 1\n")
	st := stampFiles([]string{file})
	if st.changed() {
		t.Fatal("changed with nothing done")
	}
	if _, err := os.ReadFile(file); err != nil || st.changed() {
		t.Fatalf("a read changed the stamp (%v)", err)
	}
	write(file, "version: 1\nallow: []\n")
	if !st.changed() {
		t.Error("a write went unseen")
	}
	st = stampFiles([]string{file})
	tmp := filepath.Join(dir, "p.yaml.tmp")
	write(tmp, "version: 1\nallow: []\n") // same size
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
	if !st.changed() {
		t.Error("a rename over the file went unseen")
	}
	st = stampFiles([]string{file})
	os.Remove(file)
	if !st.changed() {
		t.Error("a removal went unseen")
	}
	w := st.watch("serve.yaml", []string{file, filepath.Join(dir, "new.yaml")})
	if got := w.paths(); len(got) != 3 || w[file] != st[file] {
		t.Errorf("watch: %v", got)
	}
}

// fakeGateway stands for an agent's gateway in the Server's tests.
type fakeGateway struct {
	cfg      Config
	fail     chan error          // what is sent makes Run fail with it
	closed   chan struct{}       // closed by Close
	detached chan struct{}       // closed by Detach
	policies chan *policy.Policy // each policy reloaded
}

func (f *fakeGateway) Run(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-f.fail:
		return err
	}
}

func (f *fakeGateway) Close() error { close(f.closed); return nil }

func (f *fakeGateway) Counts() metrics.AgentCounts { return metrics.AgentCounts{Pins: 7} }

func (f *fakeGateway) Detach() error { close(f.detached); return nil }

func (f *fakeGateway) reloadPolicy(p *policy.Policy, _ string) error {
	f.policies <- p
	return nil
}

// fakeGateways starts fakeGateways, and refuses to for the names in
// refuse.
type fakeGateways struct {
	started chan *fakeGateway
	refuse  map[string]bool
}

func (fg *fakeGateways) new(cfg Config) (agentGateway, error) {
	if fg.refuse[cfg.Name] {
		return nil, fmt.Errorf("%s refused", cfg.Name)
	}
	f := &fakeGateway{cfg: cfg, fail: make(chan error), closed: make(chan struct{}), detached: make(chan struct{}), policies: make(chan *policy.Policy, 4)}
	fg.started <- f
	return f, nil
}

// startedTwo takes the next two gateways started, in the order of their
// names: agents start side by side.
func (fg *fakeGateways) startedTwo() (*fakeGateway, *fakeGateway) {
	a, b := <-fg.started, <-fg.started
	if a.cfg.Name > b.cfg.Name {
		a, b = b, a
	}
	return a, b
}

// serveFiles writes a serve config naming agents (each with the policy
// NAME.yaml allowing NAME.test) and returns its path.
func serveFiles(t *testing.T, dir string, agents ...string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("upstream: [\"192.0.2.53\"]\njournal: journal.db\nagents:\n")
	for _, a := range agents {
		fmt.Fprintf(&b, "  - name: %s\n    policy: %s.yaml\n", a, a)
		p := filepath.Join(dir, a+".yaml")
		if _, err := os.Stat(p); err != nil {
			writeTestFile(t, p, "version: 1\nallow:\n  - host: "+a+".test\n")
		}
	}
	config := filepath.Join(dir, "serve.yaml")
	writeTestFile(t, config, b.String())
	return config
}

func writeTestFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestServerLifecycle: the Server starts a gateway per agent with the
// shared settings; a reload puts a changed policy in force in its agent
// alone; an agent that fails is detached while the others serve on, and
// a reload starts it again; an agent removed from the config is closed;
// Run returns an error only when a failure leaves no agent serving.
func TestServerLifecycle(t *testing.T) {
	dir := t.TempDir()
	config := serveFiles(t, dir, "alpha", "beta")
	fg := &fakeGateways{started: make(chan *fakeGateway, 8)}
	var log lockedBuffer
	srv, err := NewServer(ServerConfig{File: config, Poll: -1, Log: slog.New(slog.NewTextHandler(&log, nil)), newGateway: fg.new})
	if err != nil {
		t.Fatal(err)
	}
	alpha, beta := fg.startedTwo()
	if alpha.cfg.Name != "alpha" || beta.cfg.Name != "beta" {
		t.Fatalf("started %s, %s", alpha.cfg.Name, beta.cfg.Name)
	}
	if c := alpha.cfg; c.Namespace != "sluice-alpha" || c.PolicySource.File != filepath.Join(dir, "alpha.yaml") ||
		c.Policy.Hash() != testPolicy(t, "alpha.test").Hash() || c.Journal == nil || c.Log == nil ||
		!slices.Equal(c.Upstreams, []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:53")}) {
		t.Errorf("alpha's config: %+v", c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(ctx) }()

	// A changed policy goes to its agent, and to it alone.
	writeTestFile(t, filepath.Join(dir, "alpha.yaml"), "version: 1\nallow:\n  - host: alpha.test\n  - host: more.test\n")
	srv.Reload()
	if got := <-alpha.policies; got.Hash() != testPolicy(t, "alpha.test", "more.test").Hash() {
		t.Errorf("alpha reloaded %s", got.Hash())
	}
	// A failed agent is detached (its processes keep their namespace, cut
	// off); beta serves on; a reload starts alpha again.
	alpha.fail <- errors.New("boom")
	<-alpha.detached
	srv.Reload()
	alpha2 := <-fg.started
	if alpha2.cfg.Name != "alpha" || alpha2.cfg.Policy.Hash() != testPolicy(t, "alpha.test", "more.test").Hash() {
		t.Errorf("restarted %s with %s", alpha2.cfg.Name, alpha2.cfg.Policy.Hash())
	}
	// Removed from the config: closed.
	serveFiles(t, dir, "alpha")
	srv.Reload()
	<-beta.closed
	select {
	case p := <-beta.policies:
		t.Errorf("beta reloaded %s", p.Hash())
	default:
	}
	// The last agent fails: Run ends with an error.
	alpha2.fail <- errors.New("boom again")
	<-alpha2.detached
	if err := <-ran; err != errAllFailed {
		t.Errorf("Run returned %v, want %v", err, errAllFailed)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	out := log.String()
	for _, want := range []string{
		`msg="agent failed: cut off, its namespace kept; a reload tries again" agent=alpha err=boom`,
		`msg="agent removed from the config: tearing it down" agent=beta`,
		`msg="agent added" agent=alpha`,
		`msg="serve stopped: every agent detached, its namespace kept"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

// TestServerStartFailures: an agent whose gateway does not start is left
// out (cut off) and the others start; with none started, NewServer
// fails and leaves nothing running. A router-mode agent's gateway gets
// its interface and no namespace.
func TestServerStartFailures(t *testing.T) {
	dir := t.TempDir()
	config := serveFiles(t, dir, "alpha", "beta")
	fg := &fakeGateways{started: make(chan *fakeGateway, 8), refuse: map[string]bool{"alpha": true}}
	srv, err := NewServer(ServerConfig{File: config, Poll: -1, newGateway: fg.new})
	if err != nil {
		t.Fatal(err)
	}
	if beta := <-fg.started; beta.cfg.Name != "beta" || len(srv.agents) != 1 {
		t.Errorf("started %s; agents %v", beta.cfg.Name, srv.agents)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	fg.refuse["beta"] = true
	if _, err := NewServer(ServerConfig{File: config, Poll: -1, newGateway: fg.new}); err == nil ||
		!strings.Contains(err.Error(), "no agent started") || !strings.Contains(err.Error(), "alpha refused") {
		t.Errorf("NewServer with no agent: %v", err)
	}
	// Router mode: the agent's gateway gets the interface, and no
	// namespace.
	writeTestFile(t, config, "upstream: [\"192.0.2.53\"]\njournal: journal.db\nagents:\n  - name: lab\n    policy: alpha.yaml\n    interface: br-lab\n")
	srv, err = NewServer(ServerConfig{File: config, Poll: -1, newGateway: fg.new})
	if err != nil {
		t.Fatalf("router mode: %v", err)
	}
	if lab := <-fg.started; lab.cfg.Interface != "br-lab" || lab.cfg.Namespace != "" || lab.cfg.Validate() != nil {
		t.Errorf("router mode: the gateway's config %+v (%v)", lab.cfg, lab.cfg.Validate())
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestServerStopDetaches: stopping serve detaches its agents, so that the
// processes in their namespaces outlive a restart; it closes none.
func TestServerStopDetaches(t *testing.T) {
	dir := t.TempDir()
	config := serveFiles(t, dir, "alpha")
	fg := &fakeGateways{started: make(chan *fakeGateway, 8)}
	srv, err := NewServer(ServerConfig{File: config, Poll: -1, Log: slog.New(slog.DiscardHandler), newGateway: fg.new})
	if err != nil {
		t.Fatal(err)
	}
	alpha := <-fg.started
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(ctx) }()
	cancel()
	if err := <-ran; err != nil {
		t.Errorf("Run: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	<-alpha.detached
	select {
	case <-alpha.closed:
		t.Error("stopping serve closed an agent: its namespace and processes went")
	default:
	}
}
