// Package metrics is what `sluice serve` tells Prometheus: the decisions
// of each agent by layer, verdict and reason, which agents are up, and
// how reloads went. It is the only package that imports client_golang.
//
// Label values come from bounded sets only: the agents a config names,
// the journal's layers, verdicts and reasons. A host name or an address is
// never a label (each would be a new series): what was refused, by name,
// is the journal's to tell.
package metrics

import (
	"net/http"

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
	}
	m.reg.MustRegister(m.decisions, m.up, m.reloads,
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
}

// Reloaded counts a reload with its result (ReloadOK, ...).
func (m *Metrics) Reloaded(result string) { m.reloads.WithLabelValues(result).Inc() }

// Handler serves the registry in Prometheus's exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
