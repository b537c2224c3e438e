// Package latency summarises what a benchmark tool measured.
package latency

import (
	"fmt"
	"slices"
	"time"
)

// Percentiles sorts lat and returns its p50, p99 and p99.9 as
// "p50=… p99=… p999=…" (zero when nothing was measured).
func Percentiles(lat []time.Duration) string {
	slices.Sort(lat)
	p := func(q float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(float64(len(lat))*q))]
	}
	return fmt.Sprintf("p50=%v p99=%v p999=%v", p(0.5), p(0.99), p(0.999))
}
