package journal

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"time"
)

// Record is one stored decision: an event with its place in the journal's
// hash chain. Its JSON field names are those of `sluice journal list
// --json`, the web UI's API and the export.
type Record struct {
	ID         int64  `json:"id"`
	Time       string `json:"time"` // RFC 3339, UTC, nanoseconds
	Agent      string `json:"agent"`
	Layer      Layer  `json:"layer"`
	Verdict    string `json:"verdict"` // the Kind's word
	Reason     Reason `json:"reason"`
	Name       string `json:"name"`
	Dst        string `json:"dst"` // address:port, "" when none
	Proto      string `json:"proto"`
	Rule       string `json:"rule"`
	Policy     string `json:"policy"`
	Count      int64  `json:"count"`
	Addrs      string `json:"addrs,omitempty"` // comma-separated
	Detail     string `json:"detail,omitempty"`
	PrevPolicy string `json:"prev_policy,omitempty"`
	// Prev is the hash of the record before this one in the chain ("" for
	// the first record ever); Hash is this record's, over Prev and its
	// canonical form.
	Prev string `json:"prev"`
	Hash string `json:"hash"`
}

// timeLayout is how a record's time is written: fixed width, so that the
// text sorts as the time does.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

// FormatTime writes t as records do.
func FormatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// ParseTime reads a record's time.
func ParseTime(s string) (time.Time, error) { return time.Parse(timeLayout, s) }

// newRecord makes the content of a record from ev; ID, Prev and Hash are
// the store's to fill. Every string that came from the agent is bounded,
// and a DNS name loses its final dot, so that a host reads the same at
// every layer.
func newRecord(ev Event) Record {
	r := Record{
		Time: FormatTime(ev.Time), Agent: bound(ev.Agent), Layer: ev.Layer, Verdict: ev.Kind.String(),
		Reason: ev.Reason, Name: bound(strings.TrimSuffix(ev.Name, ".")), Proto: bound(ev.Proto), Rule: bound(ev.Rule),
		Policy: ev.PolicyHash, Count: max(ev.Count, 1), Detail: boundDetail(ev.Detail), PrevPolicy: ev.OldPolicy,
	}
	if ev.Dst.IsValid() {
		r.Dst = ev.Dst.String()
	}
	if len(ev.Addrs) > 0 {
		addrs := make([]string, len(ev.Addrs))
		for i, a := range ev.Addrs {
			addrs[i] = a.String()
		}
		r.Addrs = strings.Join(addrs, ",")
	}
	return r
}

// maxDetail bounds a record's free text; a policy diff is the longest.
const maxDetail = 16 << 10

func boundDetail(s string) string {
	if len(s) > maxDetail {
		s = s[:maxDetail] + "…"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\n' || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// canonical is the part of a record its hash covers, in a fixed order:
// everything but the hash itself.
type canonical struct {
	ID         int64  `json:"id"`
	Time       string `json:"time"`
	Agent      string `json:"agent"`
	Layer      Layer  `json:"layer"`
	Verdict    string `json:"verdict"`
	Reason     Reason `json:"reason"`
	Name       string `json:"name"`
	Dst        string `json:"dst"`
	Proto      string `json:"proto"`
	Rule       string `json:"rule"`
	Policy     string `json:"policy"`
	Count      int64  `json:"count"`
	Addrs      string `json:"addrs"`
	Detail     string `json:"detail"`
	PrevPolicy string `json:"prev_policy"`
	Prev       string `json:"prev"`
}

// chainDomain separates the journal's hashes from any other use of
// SHA-256 over the same bytes.
const chainDomain = "sluice journal v1\n"

// ComputeHash is the hash r must carry: SHA-256 over the domain and the
// canonical JSON of every field but Hash, in hex.
func (r *Record) ComputeHash() string {
	c := canonical{r.ID, r.Time, r.Agent, r.Layer, r.Verdict, r.Reason, r.Name, r.Dst, r.Proto, r.Rule,
		r.Policy, r.Count, r.Addrs, r.Detail, r.PrevPolicy, r.Prev}
	b, _ := json.Marshal(c) // strings and integers: it cannot fail
	h := sha256.New()
	h.Write([]byte(chainDomain))
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}
