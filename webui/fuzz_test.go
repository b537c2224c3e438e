package webui

import (
	"net/url"
	"testing"

	"github.com/sluicegw/sluice/journal"
)

// FuzzFilterFrom: any query string gives a filter or an error, never a
// panic, and a filter's limit stays within the journal's bounds.
func FuzzFilterFrom(f *testing.F) {
	for _, s := range []string{"", "verdict=refused&host=github.com&since=1h&limit=5", "before=-1", "since=2026-12-01T08:00:00Z",
		"limit=99999999999999999999", "host=%00.evil", "since=-5m", "verdict=all&before=12"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		flt, err := filterFrom(q)
		if err == nil && (flt.Limit < 0 || flt.Limit > journal.MaxLimit || flt.Before < 0) {
			t.Errorf("%q gave %+v", raw, flt)
		}
		rec := journal.Record{Name: q.Get("host"), Verdict: "refused"}
		_ = matches(&rec, &flt)
	})
}
