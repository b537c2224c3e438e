package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluicegw/sluice/journal"
)

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	if rec.Code != 200 {
		t.Fatalf("scrape: %d %s", rec.Code, body)
	}
	return string(body)
}

// TestDecisionsAndAgents: events are counted by agent, layer, verdict and
// reason (a record of repeats by its count), never by name; agents up
// and down show; a forgotten agent's series go.
func TestDecisionsAndAgents(t *testing.T) {
	m := New()
	_ = m.WriteEvents([]journal.Event{
		{Agent: "alpha", Layer: journal.LayerDNS, Kind: journal.Refused, Reason: journal.ReasonNameNotAllowed, Name: "evil.test."},
		{Agent: "alpha", Layer: journal.LayerDNS, Kind: journal.Refused, Reason: journal.ReasonNameNotAllowed, Name: "other.test.", Count: 4},
		{Agent: "beta", Layer: journal.LayerTLS, Kind: journal.Allowed, Reason: journal.ReasonAllowed, Name: "ok.test"},
		{Agent: "beta", Layer: journal.LayerPolicy, Kind: journal.Changed, Reason: journal.ReasonReload},
	})
	m.SetUp("alpha", true)
	m.SetUp("beta", false)
	m.Reloaded(ReloadPartial)
	out := scrape(t, m)
	for _, want := range []string{
		`sluice_decisions_total{agent="alpha",layer="dns",reason="name_not_allowed",verdict="refused"} 5`,
		`sluice_decisions_total{agent="beta",layer="tls",reason="allowed",verdict="allowed"} 1`,
		`sluice_decisions_total{agent="beta",layer="policy",reason="policy_reloaded",verdict="changed"} 1`,
		`sluice_agent_up{agent="alpha"} 1`,
		`sluice_agent_up{agent="beta"} 0`,
		`sluice_reloads_total{result="partial"} 1`,
		`go_goroutines `,
	} {
		if !strings.Contains(out, want+"\n") && !strings.Contains(out, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if strings.Contains(out, "evil.test") {
		t.Error("a name became a label value")
	}
	m.Forget("alpha")
	out = scrape(t, m)
	if strings.Contains(out, `agent="alpha"`) {
		t.Errorf("alpha's series outlive Forget:\n%s", out)
	}
	if !strings.Contains(out, `agent="beta"`) {
		t.Error("Forget(alpha) took beta's series")
	}
}

// TestAgentCountsAndAnswerTimes: what a tracked agent's gateway counts
// is read at each scrape, under the conventions' names; the resolver's
// answer times make a histogram per agent; untracked and forgotten
// agents' series go.
func TestAgentCountsAndAnswerTimes(t *testing.T) {
	m := New()
	n := AgentCounts{SetElements: 3, Pins: 5, ProxyOpen: 2, ProxyTotal: 40, JournalWritten: 17, JournalDropped: 1}
	m.Track("alpha", func() AgentCounts { return n })
	m.AnswerTime("alpha")(300 * time.Microsecond)
	m.AnswerTime("alpha")(2 * time.Second)
	out := scrape(t, m)
	for _, want := range []string{
		`sluice_set_elements{agent="alpha"} 3`,
		`sluice_pins{agent="alpha"} 5`,
		`sluice_proxy_connections{agent="alpha"} 2`,
		`sluice_proxy_connections_total{agent="alpha"} 40`,
		`sluice_journal_records_written_total{agent="alpha"} 17`,
		`sluice_journal_records_dropped_total{agent="alpha"} 1`,
		`sluice_dns_answer_duration_seconds_bucket{agent="alpha",le="0.0004"} 1`,
		`sluice_dns_answer_duration_seconds_count{agent="alpha"} 2`,
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("scrape lacks %q", want)
		}
	}
	n.SetElements = 4 // read again at the next scrape
	if out = scrape(t, m); !strings.Contains(out, `sluice_set_elements{agent="alpha"} 4`+"\n") {
		t.Error("the counts were not read again")
	}
	m.Untrack("alpha")
	if out = scrape(t, m); strings.Contains(out, `sluice_pins{`) {
		t.Error("an untracked agent's counts are still read")
	}
	m.Forget("alpha")
	if out = scrape(t, m); strings.Contains(out, `agent="alpha"`) {
		t.Errorf("alpha's series outlive Forget:\n%s", out)
	}
}
