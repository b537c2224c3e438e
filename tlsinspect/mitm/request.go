package mitm

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
	"github.com/sluicegw/sluice/tlsinspect/gitsmart"
)

// maxSmallBody bounds the request bodies read whole to be decided on (an
// LFS batch request's JSON).
const maxSmallBody = 1 << 20

// decide checks one request of the session. It returns the request to
// send on (its path rewritten to the canonical form that was checked,
// so the server reads what sluice read), or the response that refuses it.
func (s *session) decide(req *http.Request) (*http.Request, *http.Response) {
	ev := s.Event
	ev.Layer, ev.Proto, ev.Name = journal.LayerHTTP, req.Method, s.Name
	rawPath, rawQuery, _ := strings.Cut(req.RequestURI, "?")
	ev.Detail = redactedTarget(rawPath, rawQuery)

	if reason, detail := s.checkHost(req, rawPath); reason != "" {
		return req, s.refuse(req, ev, reason, http.StatusMisdirectedRequest, detail)
	}
	p := s.i.cfg.Policy()
	d := p.MatchNamePort(s.Name, s.Dst.Port())
	ev.Rule, ev.PolicyHash = d.Rule(), p.Hash()
	if !d.Allow {
		return req, s.refuse(req, ev, journal.ReasonRevoked, http.StatusForbidden, "sluice: "+s.Name+" is no longer allowed")
	}
	e := d.Entry
	if !e.Inspected() { // the rules went in a reload: allowed as a spliced host would be
		s.record(ev, journal.ReasonAllowed, "")
		return req, nil
	}
	if len(req.Header.Values("Upgrade")) > 0 || hasToken(req.Header.Values("Connection"), "upgrade") {
		return req, s.refuse(req, ev, journal.ReasonHTTPNotAllowed, http.StatusForbidden,
			"sluice: protocol upgrades are not allowed on "+s.Name+": what follows could not be checked")
	}
	canon, err := gitsmart.CanonicalPath(rawPath)
	if err != nil {
		return req, s.refuse(req, ev, journal.ReasonBadRequest, http.StatusBadRequest, "sluice: "+err.Error())
	}
	// What goes on is what was checked: the decoded path, re-escaped the
	// one standard way, and the query as it came.
	req.URL.Path, req.URL.RawPath, req.URL.RawQuery = canon, "", rawQuery

	if e.Git != nil {
		gr, gerr := gitsmart.Classify(req.Method, rawPath, rawQuery, req.Header.Get("Content-Type"))
		if gerr == nil {
			ev.Layer = journal.LayerGit
			ev.Detail += " repo " + gr.Repository()
			return s.decideGit(req, ev, e.Git, gr)
		}
		// A request at a git endpoint that is not one git makes is
		// refused, whatever the http rules say.
		if len(e.HTTP) == 0 || gitsmart.AtGitEndpoint(canon) {
			return req, s.refuse(req, ev, journal.ReasonGitNotRecognised, http.StatusForbidden,
				"sluice: "+req.Method+" "+canon+" is not a git request "+s.Name+" allows ("+gerr.Error()+")")
		}
	}
	if v := DecideHTTP(e.HTTP, req.Method, canon); !v.Allow {
		return req, s.refuse(req, ev, v.Reason, http.StatusForbidden, v.Detail)
	}
	s.record(ev, journal.ReasonAllowed, "")
	return req, nil
}

// checkHost refuses a request whose Host (or absolute target) names
// anything but the SNI, on the port connected to: no domain fronting,
// no connection coalescing onto another name.
func (s *session) checkHost(req *http.Request, rawPath string) (journal.Reason, string) {
	if !strings.HasPrefix(rawPath, "/") {
		return journal.ReasonConflictingHost, "sluice: only origin-form requests (a path) are allowed on " + s.Name
	}
	host, port := req.Host, ""
	if h, p, err := net.SplitHostPort(req.Host); err == nil {
		host, port = h, p
	}
	name, err := policy.CanonicalName(host)
	switch {
	case req.Host == "":
		return journal.ReasonNoHost, "sluice: a request without Host"
	case err != nil || name != s.Name:
		return journal.ReasonConflictingHost, fmt.Sprintf("sluice: Host %q on a connection to %s", req.Host, s.Name)
	case port != "" && port != strconv.Itoa(int(s.Dst.Port())):
		return journal.ReasonConflictingHost, fmt.Sprintf("sluice: Host %q names another port than %d", req.Host, s.Dst.Port())
	}
	return "", ""
}

// decideGit decides a smart-HTTP request by the host's git rules.
func (s *session) decideGit(req *http.Request, ev journal.Event, rules *policy.GitRules, gr gitsmart.Request) (*http.Request, *http.Response) {
	switch {
	case gr.Class == gitsmart.LFSBatch:
		op, err := s.lfsOperation(req)
		if err != nil {
			return req, s.refuse(req, ev, journal.ReasonGitNotRecognised, http.StatusBadRequest, "sluice: LFS batch request: "+err.Error())
		}
		ev.Detail += " lfs " + op
		if v := DecideLFS(rules, gr, op); !v.Allow {
			return req, s.refuse(req, ev, v.Reason, http.StatusForbidden, v.Detail)
		}
	case gr.Class == gitsmart.Push && !gr.Discovery:
		if v := DecideGit(rules, gr); !v.Allow {
			return req, s.refuse(req, ev, v.Reason, http.StatusForbidden, v.Detail)
		}
		return s.checkPush(req, ev, rules)
	default:
		if v := DecideGit(rules, gr); !v.Allow {
			return req, s.refuse(req, ev, v.Reason, http.StatusForbidden, v.Detail)
		}
	}
	s.record(ev, journal.ReasonAllowed, "")
	return req, nil
}

// lfsOperation reads an LFS batch request's operation from its JSON body
// (bounded, then given back to the request). The key must be there once,
// spelled exactly: encoding/json would match "Operation" too, and take
// the last of two, where a server might take the first.
func (s *session) lfsOperation(req *http.Request) (string, error) {
	body, err := decodedBody(req)
	if err != nil {
		return "", err
	}
	data, err := io.ReadAll(io.LimitReader(body, maxSmallBody+1))
	if err != nil {
		return "", err
	}
	if len(data) > maxSmallBody {
		return "", fmt.Errorf("body over %d bytes", maxSmallBody)
	}
	setBody(req, bytes.NewReader(data), int64(len(data)))
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return "", err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil { // '{'
		return "", err
	}
	var op string
	seen := 0
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return "", err
		}
		key, _ := k.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return "", err
		}
		switch {
		case key == "operation":
			seen++
			if err := json.Unmarshal(v, &op); err != nil {
				return "", fmt.Errorf("operation: %v", err)
			}
		case strings.EqualFold(key, "operation"):
			return "", fmt.Errorf("key %q", key)
		}
	}
	if seen != 1 {
		return "", fmt.Errorf("%d operation keys, want 1", seen)
	}
	return op, nil
}

// decodedBody is the request's body as the server will read it: as it
// came, or inflated when gzip (git and LFS clients compress large
// requests). The request is changed to carry it unencoded. Any other
// encoding is refused: what sluice cannot read it does not pass on.
func decodedBody(req *http.Request) (io.Reader, error) {
	switch enc := strings.ToLower(strings.TrimSpace(req.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
		return req.Body, nil
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			return nil, fmt.Errorf("gzip body: %v", err)
		}
		req.Header.Del("Content-Encoding")
		setBody(req, zr, -1)
		return zr, nil
	default:
		return nil, fmt.Errorf("Content-Encoding %q", enc)
	}
}

// setBody replaces the body the request is sent on with r, of length n
// (-1: unknown, sent chunked), keeping the original's Close.
func setBody(req *http.Request, r io.Reader, n int64) {
	orig := req.Body
	req.Body = struct {
		io.Reader
		io.Closer
	}{r, orig}
	req.ContentLength = n
	if n < 0 {
		req.Header.Del("Content-Length")
	} else {
		req.Header.Set("Content-Length", strconv.FormatInt(n, 10))
	}
}

// refuse journals the refusal and returns the response that tells the
// agent's client why. Refused requests end their connection: the agent
// may still be sending a body no one will read.
func (s *session) refuse(req *http.Request, ev journal.Event, reason journal.Reason, status int, detail string) *http.Response {
	s.record(ev, reason, detail)
	resp := plainResponse(req, status, detail)
	resp.Close = true
	return resp
}

func (s *session) record(ev journal.Event, reason journal.Reason, detail string) {
	if detail != "" {
		ev.Detail += ": " + detail
	}
	ev.Reason, ev.Time = reason, time.Now()
	ev.Kind = journal.Refused
	if reason == journal.ReasonAllowed {
		ev.Kind = journal.Allowed
	}
	s.i.cfg.Journal.Record(ev)
}

// redactedTarget is the request target as the journal keeps it: the path
// as sent, and of the query only the names of its parameters (tokens ride
// in queries; git's own "service" is kept). Headers are never recorded.
func redactedTarget(rawPath, rawQuery string) string {
	if rawQuery == "" {
		return rawPath
	}
	var parts []string
	for _, kv := range strings.Split(rawQuery, "&") {
		k, v, hasValue := strings.Cut(kv, "=")
		if k == "service" && (v == "git-upload-pack" || v == "git-receive-pack") {
			parts = append(parts, kv)
			continue
		}
		if !hasValue { // a bare word may be the token itself
			parts = append(parts, "REDACTED")
			continue
		}
		if uk, err := url.QueryUnescape(k); err == nil {
			k = url.QueryEscape(uk)
		}
		parts = append(parts, k+"=REDACTED")
	}
	return rawPath + "?" + strings.Join(parts, "&")
}

// hasToken reports whether a comma-separated header (such as Connection)
// lists token, in any case.
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
