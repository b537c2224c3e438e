package webui

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
)

// filterFrom reads the filters of a page or an API call.
func filterFrom(q url.Values) (journal.Filter, error) {
	f := journal.Filter{Verdict: q.Get("verdict"), Layer: q.Get("layer"), Host: q.Get("host"), Agent: q.Get("agent"), Reason: q.Get("reason")}
	if f.Verdict == "all" {
		f.Verdict = ""
	}
	if s := q.Get("since"); s != "" {
		t, err := journal.ParseSince(s, time.Now())
		if err != nil {
			return f, err
		}
		f.Since = t
	}
	for _, p := range []struct {
		name string
		to   *int64
	}{{"before", &f.Before}} {
		if s := q.Get(p.name); s != "" {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n < 0 {
				return f, fmt.Errorf("%s %q: want a record id", p.name, s)
			}
			*p.to = n
		}
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 || n > journal.MaxLimit {
			return f, fmt.Errorf("limit %q: want 1 to %d", s, journal.MaxLimit)
		}
		f.Limit = n
	}
	return f, nil
}

// matches says whether rec passes f's filters on fields (the live view
// applies them to new records).
func matches(rec *journal.Record, f *journal.Filter) bool {
	host := strings.ToLower(strings.TrimSuffix(f.Host, "."))
	name := strings.ToLower(rec.Name)
	return (f.Verdict == "" || rec.Verdict == f.Verdict) && (f.Layer == "" || string(rec.Layer) == f.Layer) &&
		(f.Agent == "" || rec.Agent == f.Agent) && (f.Reason == "" || string(rec.Reason) == f.Reason) &&
		(host == "" || name == host || strings.HasSuffix(name, "."+host))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func apiError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

func (s *Server) apiEvents(w http.ResponseWriter, r *http.Request) {
	f, err := filterFrom(r.URL.Query())
	if err != nil {
		apiError(w, http.StatusBadRequest, err)
		return
	}
	recs, next, err := s.cfg.Journal.List(r.Context(), f)
	if err != nil {
		apiError(w, http.StatusInternalServerError, err)
		return
	}
	out := struct {
		Events []journal.Record `json:"events"`
		Next   string           `json:"next"`
	}{Events: recs}
	if recs == nil {
		out.Events = []journal.Record{}
	}
	if next > 0 {
		out.Next = strconv.FormatInt(next, 10)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) apiEvent(w http.ResponseWriter, r *http.Request) {
	rec, err := s.record(r)
	if err != nil {
		apiError(w, http.StatusNotFound, err)
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

func (s *Server) record(r *http.Request) (journal.Record, error) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		return journal.Record{}, journal.ErrNoRecord
	}
	return s.cfg.Journal.Get(r.Context(), id)
}

func (s *Server) apiPolicy(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Control == nil {
		apiError(w, http.StatusNotFound, errReadOnly)
		return
	}
	writeJSON(w, http.StatusOK, s.cfg.Control.PolicyView())
}

var errReadOnly = errors.New("this UI serves a journal alone: there is no running gateway to change")

// allowRequest is the body of POST /api/allow: a refusal's record, or a
// host (or address) and port.
type allowRequest struct {
	Event    int64  `json:"event"`
	Host     string `json:"host"`
	Port     uint16 `json:"port"`
	Duration string `json:"duration"`
}

func (s *Server) apiAllow(w http.ResponseWriter, r *http.Request) {
	var req allowRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil {
		apiError(w, http.StatusBadRequest, fmt.Errorf("want {\"event\": ID, \"duration\": \"1h\"}: %w", err))
		return
	}
	pr, code, err := s.propose(r, req)
	if err != nil {
		apiError(w, code, err)
		return
	}
	writeJSON(w, http.StatusOK, pr)
}

// propose turns an allow request into a proposal.
func (s *Server) propose(r *http.Request, req allowRequest) (policy.Proposal, int, error) {
	if s.cfg.Control == nil {
		return policy.Proposal{}, http.StatusNotFound, errReadOnly
	}
	allow := ""
	switch {
	case req.Event > 0:
		rec, err := s.cfg.Journal.Get(r.Context(), req.Event)
		if err != nil {
			return policy.Proposal{}, http.StatusNotFound, err
		}
		if allow, err = allowFor(&rec); err != nil {
			return policy.Proposal{}, http.StatusBadRequest, err
		}
	case req.Host != "":
		allow = hostPort(req.Host, req.Port)
	default:
		return policy.Proposal{}, http.StatusBadRequest, errors.New("want an event or a host")
	}
	pr, err := s.cfg.Control.Propose(allow, req.Duration)
	if err != nil {
		return pr, http.StatusBadRequest, err
	}
	return pr, http.StatusOK, nil
}

// allowFor is what allowing a refusal means: its name on its port (a DNS
// refusal has no port: the policy's default ports), or, for a packet
// without a name, its one address on its port. The name is the agent's
// own text: it must be one canonical host name, never a wildcard, an
// address or a prefix, or a click on "allow" would open what the agent
// chose to write there.
func allowFor(rec *journal.Record) (string, error) {
	// A would-be refusal (report mode) names what the policy lacks as a
	// refusal does.
	if rec.Verdict != journal.Refused.String() && rec.Verdict != journal.WouldRefuse.String() {
		return "", fmt.Errorf("record %d is not a refusal", rec.ID)
	}
	// Allowing any other refusal (a name not pinned, an ECH hello, an
	// upstream failure) would let nothing more through.
	if !rec.Reason.Allowable() {
		return "", fmt.Errorf("record %d was refused for %s, which an allowance does not change", rec.ID, rec.Reason)
	}
	var port uint16
	var addr netip.Addr
	if ap, err := netip.ParseAddrPort(rec.Dst); err == nil {
		addr, port = ap.Addr().Unmap(), ap.Port()
	}
	if rec.Name != "" {
		name, err := policy.CanonicalName(rec.Name)
		if err != nil || strings.ContainsAny(name, "*/") {
			return "", fmt.Errorf("record %d names no host that can be allowed", rec.ID)
		}
		if _, err := netip.ParseAddr(name); err == nil {
			return "", fmt.Errorf("record %d names an address, not a host", rec.ID)
		}
		return hostPort(name, port), nil
	}
	if addr.IsValid() && port != 0 {
		return hostPort(addr.String(), port), nil
	}
	return "", fmt.Errorf("record %d names neither a host nor an address and port", rec.ID)
}

// hostPort is host:port as --allow takes it; a host alone for port 0.
func hostPort(host string, port uint16) string {
	if port == 0 {
		return host
	}
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}

func (s *Server) apiConfirm(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Control == nil {
		apiError(w, http.StatusNotFound, errReadOnly)
		return
	}
	hash, err := s.cfg.Control.Confirm(r.PathValue("id"), whoOf(r).name)
	if err != nil {
		apiError(w, http.StatusBadRequest, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"policy": hash})
}

// writeTimeout is how long a live stream waits for its subscriber to
// take a write before dropping it (a variable for the test of that).
var writeTimeout = 5 * time.Second

// Live updates.
const (
	heartbeatEvery = 15 * time.Second
	pollEvery      = 500 * time.Millisecond
	streamBatch    = 100
)

// apiStream sends each new record that passes the request's filters as a
// server-sent event whose id is the record's, from the one after
// Last-Event-ID (or ?after=ID) when given, so that a reconnect misses
// nothing, else from now. A subscriber that does not take a write
// within writeTimeout is dropped, never waited for.
func (s *Server) apiStream(w http.ResponseWriter, r *http.Request) {
	f, err := filterFrom(r.URL.Query())
	if err != nil {
		apiError(w, http.StatusBadRequest, err)
		return
	}
	s.mu.Lock()
	if s.streams >= maxStreams {
		s.mu.Unlock()
		apiError(w, http.StatusServiceUnavailable, errors.New("too many live streams"))
		return
	}
	s.streams++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.streams--
		s.mu.Unlock()
	}()
	ctx := r.Context()
	last := int64(-1)
	for _, v := range []string{r.Header.Get("Last-Event-ID"), r.URL.Query().Get("after")} {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			last = n
			break
		}
	}
	if last < 0 {
		if last, err = s.cfg.Journal.Last(ctx); err != nil {
			apiError(w, http.StatusInternalServerError, err)
			return
		}
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	send := func(b []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !send([]byte(": sluice journal\n\n")) {
		return
	}
	heartbeat := time.NewTicker(heartbeatEvery)
	defer heartbeat.Stop()
	poll := time.NewTicker(pollEvery)
	defer poll.Stop()
	for {
		var changed <-chan struct{}
		if s.cfg.Changed != nil {
			changed = s.cfg.Changed()
		}
		recs, err := s.cfg.Journal.After(ctx, last, streamBatch)
		if err != nil {
			return
		}
		var buf []byte
		for i := range recs {
			rec := &recs[i]
			last = rec.ID
			if !matches(rec, &f) {
				continue
			}
			data, _ := json.Marshal(rec)
			buf = fmt.Appendf(buf, "id: %d\ndata: %s\n\n", rec.ID, data)
		}
		if len(buf) > 0 && !send(buf) {
			return
		}
		if len(recs) == streamBatch {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-poll.C:
		case <-heartbeat.C:
			if !send([]byte(": heartbeat\n\n")) {
				return
			}
		}
	}
}
