package webui

import (
	"cmp"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
)

var funcs = map[string]any{
	"list": func(xs ...string) []string { return xs },
	"short": func(s string) string {
		if len(s) > 16 {
			return s[:16]
		}
		return s
	},
}

// page is what every page's template gets.
type page struct {
	Base    string // the UI's path prefix, without the final '/'
	Title   string
	CSRF    string
	Control bool
	Error   string
	Filter  journal.Filter
	Query   map[string]string // the filters as given, to refill the form
	Records []journal.Record
	Next    int64
	NextURL string
	Hosts   []hostRow
	Record  *journal.Record
	Allow   string
	Durs    []string
	Prop    *policy.Proposal
	Policy  *policy.View
	Notice  string
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, name string, code int, p *page) {
	p.CSRF, p.Control, p.Durs, p.Base = whoOf(r).csrf, s.cfg.Control != nil, s.cfg.Durations, s.base()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	if err := s.pages.ExecuteTemplate(w, name, p); err != nil {
		s.cfg.Log.Error("web UI: render", "page", name, "err", err)
	}
}

func queryMap(r *http.Request) map[string]string {
	m := map[string]string{}
	for _, k := range []string{"verdict", "layer", "host", "agent", "reason", "since"} {
		m[k] = r.URL.Query().Get(k)
	}
	return m
}

// listPage lists records, refusals unless the filter says otherwise.
func (s *Server) listPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("verdict") == "" {
		q.Set("verdict", "refused")
		r.URL.RawQuery = q.Encode()
	}
	p := &page{Title: "Decisions", Query: queryMap(r)}
	f, err := filterFrom(q)
	if err != nil {
		p.Error = err.Error()
		s.render(w, r, "list.html", http.StatusBadRequest, p)
		return
	}
	p.Filter = f
	if p.Records, p.Next, err = s.cfg.Journal.List(r.Context(), f); err != nil {
		p.Error = err.Error()
	}
	if p.Next > 0 {
		q.Set("before", strconv.FormatInt(p.Next, 10))
		p.NextURL = s.base() + "/?" + q.Encode()
	}
	s.render(w, r, "list.html", http.StatusOK, p)
}

// hostRow is one host of the grouped view.
type hostRow struct {
	Host         string
	Count        int64
	First, Last  string
	Reasons      string
	LatestRecord int64
}

// hostsWindow bounds the records the grouped view adds up.
const hostsWindow = journal.MaxLimit

// hostsPage groups the selected records (refusals by default) by host.
func (s *Server) hostsPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("verdict") == "" {
		q.Set("verdict", "refused")
	}
	p := &page{Title: "Hosts", Query: queryMap(r)}
	f, err := filterFrom(q)
	if err != nil {
		p.Error = err.Error()
		s.render(w, r, "hosts.html", http.StatusBadRequest, p)
		return
	}
	f.Limit = hostsWindow
	recs, _, err := s.cfg.Journal.List(r.Context(), f)
	if err != nil {
		p.Error = err.Error()
	}
	rows := map[string]*hostRow{}
	reasons := map[string]map[string]bool{}
	for _, rec := range recs {
		host := cmp.Or(rec.Name, rec.Dst)
		row, ok := rows[host]
		if !ok {
			row = &hostRow{Host: host, Last: rec.Time, LatestRecord: rec.ID}
			rows[host] = row
			reasons[host] = map[string]bool{}
		}
		row.Count += rec.Count
		row.First = rec.Time // newest first: the last seen here is the oldest
		reasons[host][string(rec.Reason)] = true
	}
	for host, row := range rows {
		rs := make([]string, 0, len(reasons[host]))
		for r := range reasons[host] {
			rs = append(rs, r)
		}
		slices.Sort(rs)
		row.Reasons = strings.Join(rs, ", ")
		p.Hosts = append(p.Hosts, *row)
	}
	slices.SortFunc(p.Hosts, func(a, b hostRow) int { return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Host, b.Host)) })
	if len(recs) == hostsWindow {
		p.Notice = "Added up from the newest " + strconv.Itoa(hostsWindow) + " records only; narrow the filter for more."
	}
	s.render(w, r, "hosts.html", http.StatusOK, p)
}

func (s *Server) eventPage(w http.ResponseWriter, r *http.Request) {
	rec, err := s.record(r)
	if err != nil {
		s.render(w, r, "event.html", http.StatusNotFound, &page{Title: "No such record", Error: err.Error()})
		return
	}
	p := &page{Title: "Record " + strconv.FormatInt(rec.ID, 10), Record: &rec}
	if allow, err := allowFor(&rec); err == nil {
		p.Allow = allow
	}
	s.render(w, r, "event.html", http.StatusOK, p)
}

func (s *Server) policyPage(w http.ResponseWriter, r *http.Request) {
	p := &page{Title: "Policy"}
	if h := r.URL.Query().Get("changed"); policyHash.MatchString(h) {
		p.Notice = "The policy in force is now " + h + "."
	}
	if s.cfg.Control != nil {
		v := s.cfg.Control.PolicyView()
		p.Policy = &v
	} else {
		p.Error = errReadOnly.Error()
	}
	s.render(w, r, "policy.html", http.StatusOK, p)
}

// allowForm shows the change that allowing a refusal would make, to be
// confirmed.
func (s *Server) allowForm(w http.ResponseWriter, r *http.Request) {
	event, _ := strconv.ParseInt(r.PostFormValue("event"), 10, 64)
	req := allowRequest{Event: event, Duration: r.PostFormValue("duration")}
	pr, code, err := s.propose(r, req)
	p := &page{Title: "Confirm the change"}
	if err != nil {
		p.Error = err.Error()
		s.render(w, r, "proposal.html", code, p)
		return
	}
	p.Prop = &pr
	s.render(w, r, "proposal.html", http.StatusOK, p)
}

func (s *Server) confirmForm(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Control == nil {
		s.render(w, r, "proposal.html", http.StatusNotFound, &page{Title: "Read-only", Error: errReadOnly.Error()})
		return
	}
	hash, err := s.cfg.Control.Confirm(r.PathValue("id"), whoOf(r).name)
	if err != nil {
		s.render(w, r, "proposal.html", http.StatusBadRequest, &page{Title: "Not changed", Error: err.Error()})
		return
	}
	http.Redirect(w, r, s.base()+"/policy?changed="+hash, http.StatusSeeOther)
}

var policyHash = regexp.MustCompile(`^sha256:[0-9a-f]{8,64}$`)

// localTime is how the pages show a record's time.
func localTime(s string) string {
	t, err := journal.ParseTime(s)
	if err != nil {
		return s
	}
	return t.Format(time.DateTime + " UTC")
}

func init() { funcs["time"] = localTime }
