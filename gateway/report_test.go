package gateway

import (
	"testing"
)

// TestServerReportMode: an agent with `mode: report` starts (report mode
// is no longer refused at start) with a gateway in report mode; the
// agent beside it, without, enforces.
func TestServerReportMode(t *testing.T) {
	dir := t.TempDir()
	config := serveFiles(t, dir, "alpha", "beta")
	writeTestFile(t, config, "upstream: [\"192.0.2.53\"]\njournal: journal.db\nagents:\n"+
		"  - name: alpha\n    policy: alpha.yaml\n    mode: report\n  - name: beta\n    policy: beta.yaml\n")
	fg := &fakeGateways{started: make(chan *fakeGateway, 8)}
	srv, err := NewServer(ServerConfig{File: config, Poll: -1, newGateway: fg.new})
	if err != nil {
		t.Fatalf("a config with an agent in report mode: %v", err)
	}
	alpha, beta := fg.startedTwo()
	if alpha.cfg.Name != "alpha" || !alpha.cfg.Report || alpha.cfg.Validate() != nil {
		t.Errorf("alpha's gateway: %+v (%v), want report mode", alpha.cfg, alpha.cfg.Validate())
	}
	if beta.cfg.Name != "beta" || beta.cfg.Report {
		t.Errorf("beta's gateway: %+v, want enforce mode", beta.cfg)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
}
