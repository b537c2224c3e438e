package journal

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Line is the record as one line for a person: id, time, agent, layer,
// verdict, reason, then the fields it has.
func (r *Record) Line() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s %s %s %s %s", r.ID, r.Time, r.Agent, r.Layer, r.Verdict, r.Reason)
	for _, f := range []struct{ k, v string }{
		{"name", r.Name}, {"dst", r.Dst}, {"proto", r.Proto}, {"rule", r.Rule}, {"addrs", r.Addrs},
		{"policy", r.Policy}, {"prev_policy", r.PrevPolicy},
	} {
		if f.v != "" {
			b.WriteString(" " + f.k + "=" + strconv.Quote(f.v))
		}
	}
	if r.Count > 1 {
		fmt.Fprintf(&b, " count=%d", r.Count)
	}
	if r.Detail != "" {
		b.WriteString(" detail=" + strconv.Quote(r.Detail))
	}
	return b.String()
}

// ParseSince reads a --since value: a duration before now ("15m", "24h")
// or a time in RFC 3339.
func ParseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("since %q: want a positive duration", s)
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("since %q: want a duration such as 15m or 24h, or a time such as 2026-12-01T08:00:00Z", s)
}

// OCSF class and category numbers (OCSF 1.3).
const (
	ocsfNetworkCategory = 4
	ocsfNetwork         = 4001
	ocsfHTTP            = 4002
	ocsfDNS             = 4003
	ocsfVersion         = "1.3.0"
)

// OCSF is the record as an OCSF event: DNS Activity for the resolver's
// decisions, HTTP Activity for the HTTP proxy's, Network Activity for the
// rest (firewall, TLS, and the journal's own records), with the
// journal's fields kept under "unmapped".
func (r *Record) OCSF() map[string]any {
	class, activity := ocsfNetwork, 6 // Traffic
	switch r.Layer {
	case LayerDNS:
		class, activity = ocsfDNS, 1 // Query
	case LayerHTTP:
		class, activity = ocsfHTTP, 99 // Other: the method is not kept
	case LayerTLS, LayerFirewall:
		activity = 1 // Open
	}
	t, _ := ParseTime(r.Time)
	ev := map[string]any{
		"class_uid": class, "category_uid": ocsfNetworkCategory, "activity_id": activity,
		"type_uid": class*100 + activity, "time": t.UnixMilli(), "severity_id": 1, "count": r.Count,
		"message": string(r.Reason),
		"metadata": map[string]any{
			"version": ocsfVersion, "uid": r.Hash, "sequence": r.ID,
			"product": map[string]any{"name": "sluice", "vendor_name": "sluice"},
		},
		"src_endpoint": map[string]any{"name": r.Agent},
		"unmapped": map[string]any{"layer": r.Layer, "verdict": r.Verdict, "reason": r.Reason, "rule": r.Rule,
			"policy": r.Policy, "prev_policy": r.PrevPolicy, "prev": r.Prev, "addrs": r.Addrs, "detail": r.Detail},
	}
	switch r.Verdict {
	case Refused.String():
		ev["action_id"], ev["action"], ev["disposition_id"], ev["disposition"] = 2, "Denied", 2, "Blocked"
		ev["status_id"], ev["status"], ev["severity_id"] = 2, "Failure", 3
	case Allowed.String():
		ev["action_id"], ev["action"], ev["disposition_id"], ev["disposition"] = 1, "Allowed", 1, "Allowed"
		ev["status_id"], ev["status"] = 1, "Success"
	case WouldRefuse.String():
		// Report mode: it passed, and what would have refused it is
		// detected, not acted on.
		ev["action_id"], ev["action"], ev["disposition_id"], ev["disposition"] = 1, "Allowed", 15, "Detected"
		ev["status_id"], ev["status"], ev["severity_id"] = 1, "Success", 2
	}
	dst := map[string]any{}
	if ap, err := netip.ParseAddrPort(r.Dst); err == nil {
		dst["ip"], dst["port"] = ap.Addr().String(), ap.Port()
	}
	if r.Name != "" && class != ocsfDNS {
		dst["hostname"] = strings.TrimSuffix(r.Name, ".")
	}
	if len(dst) > 0 {
		ev["dst_endpoint"] = dst
	}
	if r.Proto != "" && class != ocsfDNS {
		ev["connection_info"] = map[string]any{"protocol_name": r.Proto}
	}
	switch class {
	case ocsfDNS:
		ev["query"] = map[string]any{"hostname": r.Name, "type": r.Proto}
	case ocsfHTTP:
		ev["http_request"] = map[string]any{"url": map[string]any{"hostname": r.Name}}
	}
	return ev
}
