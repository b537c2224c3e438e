package webui

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
)

// fakeControl records what the UI asked of the policy.
type fakeControl struct {
	proposed, confirmed []string
}

func (c *fakeControl) PolicyView() policy.View {
	return policy.View{Hash: "sha256:now", Entries: []string{"allowed.test ports 443"}}
}

func (c *fakeControl) Propose(allow, duration string) (policy.Proposal, error) {
	if duration == "never" {
		return policy.Proposal{}, errors.New("bad duration")
	}
	c.proposed = append(c.proposed, allow+" "+duration)
	return policy.Proposal{ID: "p1", Allow: allow, Duration: duration, Diff: "+ - host: x\n", Policy: "sha256:now"}, nil
}

func (c *fakeControl) Confirm(id, who string) (string, error) {
	if id != "p1" {
		return "", errors.New("no such proposal")
	}
	c.confirmed = append(c.confirmed, id+" by "+who)
	return "sha256:0123456789abcdef", nil
}

const hostile = `<img src=x onerror=alert(1)>.evil.test`

func testServer(t *testing.T) (*httptest.Server, *Server, *journal.Store, *fakeControl) {
	t.Helper()
	store, err := journal.OpenStore(journal.StoreConfig{Path: filepath.Join(t.TempDir(), "j.db"), Coalesce: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	now := time.Now()
	err = store.WriteEvents([]journal.Event{
		{Time: now, Agent: "a", Layer: journal.LayerDNS, Kind: journal.Refused, Reason: journal.ReasonNameNotAllowed, Name: "evil.test.", Proto: "A", PolicyHash: "sha256:now"},
		{Time: now, Agent: "a", Layer: journal.LayerHTTP, Kind: journal.Refused, Reason: journal.ReasonHostNotAllowed, Name: hostile,
			Dst: netip.MustParseAddrPort("192.0.2.1:80"), Proto: "tcp", PolicyHash: "sha256:now"},
		{Time: now, Agent: "b", Layer: journal.LayerTLS, Kind: journal.Allowed, Reason: journal.ReasonAllowed, Name: "allowed.test",
			Dst: netip.MustParseAddrPort("192.0.2.2:443"), Proto: "tcp", Rule: "allowed.test ports 443", PolicyHash: "sha256:now"},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctl := &fakeControl{}
	s, err := New(Config{Journal: store, Changed: store.Changed, Control: ctl, Durations: []string{"15m", "1h"}, Token: "secret-token", Prefix: "/p/"})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return ts, s, store, ctl
}

func get(t *testing.T, c *http.Client, u string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestAuth: nothing without the token; the login URL sets a session
// cookie and sends the browser to the URL without the token; a Bearer
// token works for the API; every answer carries the CSP.
func TestAuth(t *testing.T) {
	ts, _, _, _ := testServer(t)
	plain := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, u := range []string{"/", "/api/events", "/events/1", "/api/policy", "/hosts", "/?token=wrong"} {
		resp, body := get(t, plain, ts.URL+"/p"+u)
		if resp.StatusCode != http.StatusUnauthorized || strings.Contains(body, "evil") {
			t.Errorf("%s without a valid token: %d %q", u, resp.StatusCode, body)
		}
	}
	if resp, _ := get(t, plain, ts.URL+"/p/api/events", "Authorization", "Bearer wrong"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a wrong Bearer token: %d", resp.StatusCode)
	}
	resp, body := get(t, plain, ts.URL+"/p/api/events", "Authorization", "Bearer secret-token")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "evil.test") {
		t.Errorf("the Bearer token: %d %q", resp.StatusCode, body)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") {
		t.Errorf("CSP %q", csp)
	}
	resp, _ = get(t, plain, ts.URL+"/p/?verdict=all&token=secret-token")
	c := resp.Cookies()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/p/?verdict=all" || len(c) != 1 ||
		!c[0].HttpOnly || c[0].SameSite != http.SameSiteStrictMode {
		t.Fatalf("login: %d, Location %q, cookies %+v", resp.StatusCode, resp.Header.Get("Location"), c)
	}
	resp, body = get(t, plain, ts.URL+"/p/", "Cookie", c[0].Name+"="+c[0].Value)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "evil.test") {
		t.Errorf("with the session: %d", resp.StatusCode)
	}
}

// login returns a client with a session, and the session's CSRF token.
func login(t *testing.T, ts *httptest.Server) (*http.Client, string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	_, body := get(t, c, ts.URL+"/p/?token=secret-token")
	i := strings.Index(body, `name="csrf-token" content="`)
	if i < 0 {
		t.Fatalf("no CSRF token in the page:\n%s", body)
	}
	csrf := body[i+len(`name="csrf-token" content="`):]
	return c, csrf[:strings.IndexByte(csrf, '"')]
}

// TestHostileNames: a name from the agent is text in the page, never
// markup.
func TestHostileNames(t *testing.T) {
	ts, _, _, _ := testServer(t)
	c, _ := login(t, ts)
	for _, u := range []string{"/", "/events/2", "/hosts"} {
		_, body := get(t, c, ts.URL+"/p"+u)
		if strings.Contains(body, "<img") || !strings.Contains(body, "&lt;img src=x onerror=alert(1)&gt;") {
			t.Errorf("%s: the hostile name is not escaped:\n%s", u, body)
		}
	}
}

// TestAllowFlow: the form shows the change, the confirmation applies it;
// without the CSRF token (or from another origin) nothing changes.
func TestAllowFlow(t *testing.T) {
	ts, _, _, ctl := testServer(t)
	c, csrf := login(t, ts)
	post := func(path string, form url.Values, hdr ...string) (int, string) {
		req, _ := http.NewRequest("POST", ts.URL+"/p"+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := post("/allow", url.Values{"event": {"1"}, "duration": {"1h"}}); code != http.StatusForbidden || len(ctl.proposed) != 0 {
		t.Errorf("allow without the CSRF token: %d, proposed %v", code, ctl.proposed)
	}
	if code, _ := post("/allow", url.Values{"event": {"1"}, "duration": {"1h"}, "csrf": {csrf}}, "Origin", "http://evil.example"); code != http.StatusForbidden {
		t.Errorf("allow from another origin: %d", code)
	}
	code, body := post("/allow", url.Values{"event": {"1"}, "duration": {"1h"}, "csrf": {csrf}})
	if code != http.StatusOK || !strings.Contains(body, "&#43; - host: x") || len(ctl.proposed) != 1 || ctl.proposed[0] != "evil.test 1h" {
		t.Fatalf("allow: %d, proposed %v:\n%s", code, ctl.proposed, body)
	}
	code, body = post("/proposals/p1/confirm", url.Values{"csrf": {csrf}})
	if code != http.StatusOK || !strings.Contains(body, "sha256:0123456789abcdef") || len(ctl.confirmed) != 1 || !strings.HasPrefix(ctl.confirmed[0], "p1 by UI session ") {
		t.Errorf("confirm: %d, confirmed %v", code, ctl.confirmed)
	}
	// The API, with the token: the HTTP refusal's "name" is the agent's
	// markup, no host name: nothing to allow.
	req, _ := http.NewRequest("POST", ts.URL+"/p/api/allow", strings.NewReader(`{"event": 2, "duration": "15m"}`))
	req.Header.Set("Authorization", "Bearer secret-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || len(ctl.proposed) != 1 {
		t.Errorf("API allow of a hostile name: %d, proposed %v", resp.StatusCode, ctl.proposed)
	}
	// An allowed record cannot be allowed.
	req, _ = http.NewRequest("POST", ts.URL+"/p/api/allow", strings.NewReader(`{"event": 3, "duration": "15m"}`))
	req.Header.Set("Authorization", "Bearer secret-token")
	resp, _ = http.DefaultClient.Do(req)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("allowing an allowed record: %d", resp.StatusCode)
	}
}

func TestEventsAPI(t *testing.T) {
	ts, _, _, _ := testServer(t)
	c := &http.Client{}
	list := func(q string) (ids []int64, next string) {
		_, body := get(t, c, ts.URL+"/p/api/events?"+q, "Authorization", "Bearer secret-token")
		var out struct {
			Events []journal.Record
			Next   string
		}
		if err := json.Unmarshal([]byte(body), &out); err != nil {
			t.Fatalf("%s: %v: %s", q, err, body)
		}
		for _, r := range out.Events {
			ids = append(ids, r.ID)
		}
		return ids, out.Next
	}
	for q, want := range map[string]string{
		"": "[3 2 1] ", "verdict=refused": "[2 1] ", "agent=b": "[3] ", "layer=http": "[2] ",
		"host=evil.test": "[2 1] ", "limit=1": "[3] 3", "limit=1&before=3": "[2] 2", "reason=allowed": "[3] ",
	} {
		ids, next := list(q)
		if got := strings.TrimSpace(strings.Join([]string{strings.ReplaceAll(strings.Trim(jsonIDs(ids), ""), ",", " "), next}, " ")); got != strings.TrimSpace(want) {
			t.Errorf("?%s: %s, want %s", q, got, want)
		}
	}
	if resp, _ := get(t, c, ts.URL+"/p/api/events?since=yesterday", "Authorization", "Bearer secret-token"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a bad since: %d", resp.StatusCode)
	}
}

func jsonIDs(ids []int64) string {
	b, _ := json.Marshal(ids)
	return strings.ReplaceAll(string(b), ",", " ")
}

// TestStream: new records arrive as events with their ids; a reconnect
// with Last-Event-ID resumes after it, without a gap.
func TestStream(t *testing.T) {
	ts, _, store, _ := testServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	open := func(last string) *bufio.Reader {
		req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/p/api/events/stream?verdict=refused", nil)
		req.Header.Set("Authorization", "Bearer secret-token")
		if last != "" {
			req.Header.Set("Last-Event-ID", last)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return bufio.NewReader(resp.Body)
	}
	next := func(r *bufio.Reader) string {
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("stream: %v", err)
			}
			if strings.HasPrefix(line, "id: ") {
				return strings.TrimSpace(line[4:])
			}
		}
	}
	live := open("")
	// The stream's first comment comes after it has read where the
	// journal ends: only then are the records below new to it.
	if line, err := live.ReadString('\n'); err != nil || !strings.HasPrefix(line, ": sluice journal") {
		t.Fatalf("the stream's first line: %q, %v", line, err)
	}
	if err := store.WriteEvents([]journal.Event{
		{Time: time.Now(), Agent: "a", Layer: journal.LayerDNS, Kind: journal.Allowed, Reason: journal.ReasonAllowed, Name: "x.test"},
		{Time: time.Now(), Agent: "a", Layer: journal.LayerDNS, Kind: journal.Refused, Reason: journal.ReasonNameNotAllowed, Name: "new.test"},
	}); err != nil {
		t.Fatal(err)
	}
	if id := next(live); id != "5" {
		t.Errorf("the live stream sent record %s first, want 5 (4 is allowed, filtered out)", id)
	}
	resumed := open("1")
	for _, want := range []string{"2", "5"} {
		if id := next(resumed); id != want {
			t.Errorf("resumed after 1: record %s, want %s", id, want)
		}
	}
}

// TestAllowFor: allowing a refusal opens its host on its port, or its one
// address; never what an agent wrote where a name goes (a prefix, a
// wildcard, an address), and nothing for a refusal an allowance does not
// change.
func TestAllowFor(t *testing.T) {
	for _, tc := range []struct {
		rec  journal.Record
		want string
	}{
		{journal.Record{Verdict: "refused", Reason: journal.ReasonNameNotAllowed, Name: "api.example.com"}, "api.example.com"},
		{journal.Record{Verdict: "refused", Reason: journal.ReasonSNINotAllowed, Name: "API.example.com", Dst: "192.0.2.1:8443"}, "api.example.com:8443"},
		{journal.Record{Verdict: "refused", Reason: journal.ReasonNoSetEntry, Dst: "192.0.2.1:22"}, "192.0.2.1:22"},
		{journal.Record{Verdict: "refused", Reason: journal.ReasonNoSetEntry, Dst: "[2001:db8::1]:22"}, "[2001:db8::1]:22"},
		{journal.Record{Verdict: "refused", Reason: journal.ReasonSNINotAllowed, Name: "3.0.0.0/8", Dst: "192.0.2.1:443"}, ""},
		{journal.Record{Verdict: "refused", Reason: journal.ReasonHostNotAllowed, Name: "*.attacker.example", Dst: "192.0.2.1:80"}, ""},
		{journal.Record{Verdict: "refused", Reason: journal.ReasonHostNotAllowed, Name: "192.0.2.9", Dst: "192.0.2.1:80"}, ""},
		{journal.Record{Verdict: "refused", Reason: journal.ReasonNameNotAllowed, Name: "2600::/12"}, ""},
		{journal.Record{Verdict: "refused", Reason: journal.ReasonNotPinned, Name: "api.example.com", Dst: "192.0.2.1:443"}, ""},
		{journal.Record{Verdict: "allowed", Reason: journal.ReasonAllowed, Name: "api.example.com"}, ""},
		// Report mode: a would-be refusal is allowed as a refusal is.
		{journal.Record{Verdict: "would_refuse", Reason: journal.ReasonSNINotAllowed, Name: "new.example.com", Dst: "192.0.2.1:443"}, "new.example.com:443"},
		{journal.Record{Verdict: "would_refuse", Reason: journal.ReasonECH, Name: "new.example.com", Dst: "192.0.2.1:443"}, ""},
	} {
		got, err := allowFor(&tc.rec)
		if got != tc.want || (err == nil) != (tc.want != "") {
			t.Errorf("allowFor(%+v) = %q, %v; want %q", tc.rec, got, err, tc.want)
		}
	}
}

// TestLoginRedirectStaysHome: every redirect, the login's among them,
// keeps to this server, whatever the path looks like. ServeMux itself
// redirects a path with "//" or ".." to its clean form before the login
// runs; an encoded "//" reaches the login, which must not make it a
// scheme-relative URL.
func TestLoginRedirectStaysHome(t *testing.T) {
	ts, _, _, _ := testServer(t)
	plain := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	logins := 0
	for _, p := range []string{"/p//evil.example/?token=secret-token", "/p/%2F%2Fevil.example/?token=secret-token", "/p/../x?token=secret-token"} {
		req, _ := http.NewRequest("GET", ts.URL+"/p/", nil)
		req.URL.Opaque = p[:strings.IndexByte(p, '?')]
		req.URL.RawQuery = p[strings.IndexByte(p, '?')+1:]
		resp, err := plain.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc := resp.Header.Get("Location")
		if resp.StatusCode/100 != 3 || !strings.HasPrefix(loc, "/") || strings.HasPrefix(loc, "//") {
			t.Errorf("%s: %d, Location %q; want a redirect to a path of this server", p, resp.StatusCode, loc)
		}
		if resp.StatusCode == http.StatusSeeOther {
			logins++
			if !strings.HasPrefix(loc, "/p/") {
				t.Errorf("%s: the login sent the browser out of the UI: %q", p, loc)
			}
		}
	}
	if logins == 0 {
		t.Error("no case reached the login's redirect: the test tests nothing")
	}
}

// TestPrefix: the UI lives under its prefix alone, and so does its
// session cookie: another server on the same host (any port) that the
// browser visits is not sent it, and nothing answers outside the prefix.
func TestPrefix(t *testing.T) {
	ts, s, _, _ := testServer(t)
	plain := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, _ := get(t, plain, ts.URL+"/p/?token=secret-token")
	if c := resp.Cookies(); len(c) != 1 || c[0].Path != "/p/" {
		t.Errorf("the session cookie: %+v", c)
	}
	for _, u := range []string{"/?token=secret-token", "/api/events", "/static/app.js", "/q/"} {
		if resp, _ := get(t, plain, ts.URL+u, "Authorization", "Bearer secret-token"); resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s outside the prefix: %d", u, resp.StatusCode)
		}
	}
	if u := s.LoginURL("127.0.0.1:8099"); u != "http://127.0.0.1:8099/p/?token=secret-token" {
		t.Errorf("LoginURL = %s", u)
	}
	d, err := New(Config{Journal: s.cfg.Journal})
	if err != nil || !strings.HasPrefix(d.cfg.Prefix, "/ui-") || len(d.cfg.Prefix) < 12 {
		t.Errorf("the default prefix: %q, %v", d.cfg.Prefix, err)
	}
}

// TestSlowSubscriberDropped: a stream whose subscriber stops reading is
// dropped once a write waits past writeTimeout, and the server goes on.
func TestSlowSubscriberDropped(t *testing.T) {
	old := writeTimeout
	writeTimeout = 200 * time.Millisecond
	defer func() { writeTimeout = old }()
	ts, s, store, _ := testServer(t)
	streams := func() int { s.mu.Lock(); defer s.mu.Unlock(); return s.streams }
	c, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(c, "GET /p/api/events/stream?after=0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret-token\r\n\r\n")
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal(what)
			}
		}
	}
	waitUntil("the stream never started", func() bool { return streams() == 1 })
	// Far more than the sockets' buffers hold, and never read.
	detail := strings.Repeat("x", 8000)
	for i := 0; i < 20; i++ {
		var evs []journal.Event
		for j := range 200 {
			evs = append(evs, journal.Event{Time: time.Now(), Agent: "a", Layer: journal.LayerDNS, Kind: journal.Refused,
				Reason: journal.ReasonNameNotAllowed, Name: fmt.Sprintf("n%d-%d.test", i, j), Detail: detail})
		}
		if err := store.WriteEvents(evs); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil("the stalled subscriber was never dropped", func() bool { return streams() == 0 })
	if resp, _ := get(t, http.DefaultClient, ts.URL+"/p/api/events?limit=1", "Authorization", "Bearer secret-token"); resp.StatusCode != http.StatusOK {
		t.Errorf("the server after the drop: %d", resp.StatusCode)
	}
}
