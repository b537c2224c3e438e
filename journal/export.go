package journal

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// exportBatch is how many records Export reads at a time.
const exportBatch = 1000

// Export writes every record of r to w, oldest first, as JSON lines
// (format "jsonl") or OCSF events ("ocsf"); with follow it then writes
// new records as they come, until ctx ends.
func Export(ctx context.Context, r *Reader, w io.Writer, format string, follow bool) error {
	if format != "jsonl" && format != "ocsf" {
		return fmt.Errorf("format %q: want jsonl or ocsf", format)
	}
	enc := json.NewEncoder(w)
	var last int64
	for {
		recs, err := r.After(ctx, last, exportBatch)
		if err != nil {
			return err
		}
		for i := range recs {
			var v any = &recs[i]
			if format == "ocsf" {
				v = recs[i].OCSF()
			}
			if err := enc.Encode(v); err != nil {
				return err
			}
			last = recs[i].ID
		}
		if len(recs) == exportBatch {
			continue
		}
		if !follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// WriteList writes recs as JSON lines, or as lines for a person (Line).
func WriteList(w io.Writer, recs []Record, asJSON bool) error {
	enc := json.NewEncoder(w)
	for i := range recs {
		var err error
		if asJSON {
			err = enc.Encode(&recs[i])
		} else {
			_, err = fmt.Fprintln(w, recs[i].Line())
		}
		if err != nil {
			return err
		}
	}
	return nil
}
