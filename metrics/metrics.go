// Package metrics is what `sluice serve` tells Prometheus: the decisions
// of each agent by layer, verdict and reason, which agents are up, how
// reloads went, how long the resolvers take to answer, and what each
// agent's gateway counts of itself (set elements, pins, proxied
// connections, journal records). It is the only package that imports
// client_golang.
//
// Label values come from bounded sets only: the agents a config names,
// the journal's layers, verdicts and reasons. A host name or an address is
// never a label (each would be a new series): what was refused, by name,
// is the journal's to tell.
package metrics

import (
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluicegw/sluice/journal"
)

// Reload results, the values of sluice_reloads_total's result label.
const (
	// ReloadOK: the config and every policy it names were read and put in force.
	ReloadOK = "ok"
	// ReloadPartial: some agents kept what was in force, their entry or
	// policy having errors; the others reloaded.
	ReloadPartial = "partial"
	// ReloadFailed: the config could not be read; nothing changed.
	ReloadFailed = "failed"
)

// Metrics is one registry and the series sluice keeps in it. Its methods
// are safe for concurrent use.
type Metrics struct {
	reg       *prometheus.Registry
	decisions *prometheus.CounterVec
	up        *prometheus.GaugeVec
	reloads   *prometheus.CounterVec
	answers   *prometheus.HistogramVec
	agents    *agentCollector
}

// AgentCounts is what an agent's gateway counts of itself, read at every
// scrape: sluice's own counts, never a dump of the kernel's sets.
type AgentCounts struct {
	// SetElements are the addresses and ports sluice put in the agent's
	// sets, Pins the name-to-address pins it holds (both with expired
	// ones until they are swept).
	SetElements, Pins int
	// ProxyOpen are the proxy's connections now, ProxyTotal all it took.
	ProxyOpen  int64
	ProxyTotal uint64
	// JournalWritten are the records stored, JournalDropped those lost
	// because the store fell behind.
	JournalWritten, JournalDropped uint64
}

// agentCollector reads the tracked agents' counts at each scrape.
type agentCollector struct {
	mu     sync.Mutex
	counts map[string]func() AgentCounts

	elements, pins, open, total, written, dropped *prometheus.Desc
}

func newAgentCollector() *agentCollector {
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, []string{"agent"}, nil)
	}
	return &agentCollector{
		counts:   map[string]func() AgentCounts{},
		elements: desc("sluice_set_elements", "Addresses and ports sluice put in the agent's sets (expired ones until swept), as sluice counts them."),
		pins:     desc("sluice_pins", "Name-to-address pins the agent's resolver holds (expired ones until swept)."),
		open:     desc("sluice_proxy_connections", "Connections the agent's proxy holds now, pending a decision or relayed."),
		total:    desc("sluice_proxy_connections_total", "Connections the agent's proxy has taken."),
		written:  desc("sluice_journal_records_written_total", "Records of the agent stored in the journal."),
		dropped:  desc("sluice_journal_records_dropped_total", "Records of the agent lost because the journal fell behind."),
	}
}

func (c *agentCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.elements, c.pins, c.open, c.total, c.written, c.dropped} {
		ch <- d
	}
}

func (c *agentCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	counts := maps.Clone(c.counts)
	c.mu.Unlock()
	for _, agent := range slices.Sorted(maps.Keys(counts)) {
		n := counts[agent]()
		for _, m := range []struct {
			d *prometheus.Desc
			t prometheus.ValueType
			v float64
		}{
			{c.elements, prometheus.GaugeValue, float64(n.SetElements)},
			{c.pins, prometheus.GaugeValue, float64(n.Pins)},
			{c.open, prometheus.GaugeValue, float64(n.ProxyOpen)},
			{c.total, prometheus.CounterValue, float64(n.ProxyTotal)},
			{c.written, prometheus.CounterValue, float64(n.JournalWritten)},
			{c.dropped, prometheus.CounterValue, float64(n.JournalDropped)},
		} {
			ch <- prometheus.MustNewConstMetric(m.d, m.t, m.v, agent)
		}
	}
}

// New makes the registry, with the Go runtime's and the process's own
// metrics beside sluice's.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_decisions_total",
			Help: "Decisions recorded, by agent, layer, verdict and reason (a record standing for repeats counts each).",
		}, []string{"agent", "layer", "verdict", "reason"}),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_agent_up",
			Help: "1 while the agent's gateway serves; 0 when it failed or could not start (the agent is cut off).",
		}, []string{"agent"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_reloads_total",
			Help: "Reloads of the serve config, by result: ok, partial (some agents kept their policy) or failed.",
		}, []string{"result"}),
		answers: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sluice_dns_answer_duration_seconds",
			Help: "Time the agent's resolver took to answer, from the question read to the answer built (the upstream and the set updates included).",
			// 100 µs (a cached answer) to 6.6 s (an upstream's timeouts).
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9),
		}, []string{"agent"}),
		agents: newAgentCollector(),
	}
	m.reg.MustRegister(m.decisions, m.up, m.reloads, m.answers, m.agents,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// WriteEvents counts evs; it never fails. As a journal.Writer it goes
// first in a gateway's Tee, so that a failing store does not hide what
// it counts.
func (m *Metrics) WriteEvents(evs []journal.Event) error {
	for _, ev := range evs {
		m.decisions.WithLabelValues(ev.Agent, string(ev.Layer), ev.Kind.String(), string(ev.Reason)).Add(float64(max(ev.Count, 1)))
	}
	return nil
}

// SetUp says whether agent's gateway serves.
func (m *Metrics) SetUp(agent string, up bool) {
	v := 0.0
	if up {
		v = 1
	}
	m.up.WithLabelValues(agent).Set(v)
}

// Forget removes every series of agent: it is no longer in the config.
func (m *Metrics) Forget(agent string) {
	m.decisions.DeletePartialMatch(prometheus.Labels{"agent": agent})
	m.up.DeleteLabelValues(agent)
	m.answers.DeleteLabelValues(agent)
	m.Untrack(agent)
}

// Track reads counts for agent at every scrape, until Untrack.
func (m *Metrics) Track(agent string, counts func() AgentCounts) {
	m.agents.mu.Lock()
	defer m.agents.mu.Unlock()
	m.agents.counts[agent] = counts
}

// Untrack stops reading agent's counts: its gateway stopped.
func (m *Metrics) Untrack(agent string) {
	m.agents.mu.Lock()
	defer m.agents.mu.Unlock()
	delete(m.agents.counts, agent)
}

// AnswerTime returns what agent's resolver tells how long an answer took.
func (m *Metrics) AnswerTime(agent string) func(time.Duration) {
	h := m.answers.WithLabelValues(agent)
	return func(d time.Duration) { h.Observe(d.Seconds()) }
}

// Reloaded counts a reload with its result (ReloadOK, ...).
func (m *Metrics) Reloaded(result string) { m.reloads.WithLabelValues(result).Inc() }

// Handler serves the registry in Prometheus's exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
