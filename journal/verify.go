package journal

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Verify walks the whole chain, oldest first, and returns how many
// records it checked. It fails at the first record whose content does
// not match its hash, or whose link does not match the hash of the record
// before it (a record deleted or changed in between), or when the oldest
// record does not link to what the last retention anchor says it deleted.
// Deleting the newest records leaves a shorter chain that verifies: keep
// the last hash elsewhere (`sluice journal verify` prints it) to tell.
func (r *Reader) Verify(ctx context.Context) (n int64, last Record, err error) {
	anchor, err := r.lastAnchor(ctx)
	if err != nil {
		return 0, Record{}, err
	}
	rows, err := r.db.QueryContext(ctx, `SELECT `+columns+` FROM records ORDER BY id`)
	if err != nil {
		return 0, Record{}, fmt.Errorf("journal: %w", err)
	}
	defer rows.Close()
	var prev Record
	for rows.Next() {
		var rec Record
		if err := scan(rows, &rec); err != nil {
			return n, prev, err
		}
		if rec.ComputeHash() != rec.Hash {
			return n, prev, fmt.Errorf("record %d: its content does not match its hash (changed after it was stored)", rec.ID)
		}
		switch {
		case n > 0 && rec.Prev != prev.Hash:
			return n, prev, fmt.Errorf("record %d: its link does not match the hash of record %d before it (a record in between was deleted or changed)", rec.ID, prev.ID)
		case n == 0 && rec.Prev != "" && (anchor.head != rec.ID || anchor.prev != rec.Prev):
			return n, prev, fmt.Errorf("record %d, the oldest: it links to a record that no retention anchor says was deleted (records before it were removed by hand)", rec.ID)
		}
		prev = rec
		n++
	}
	if err := rows.Err(); err != nil {
		return n, prev, fmt.Errorf("journal: %w", err)
	}
	return n, prev, nil
}

type anchor struct {
	head int64
	prev string
}

// anchorDetail is the start of a retention anchor's detail; the rest,
// after a space, says what was deleted, for a person.
const anchorDetail = "head %d prev %s"

func (r *Reader) lastAnchor(ctx context.Context) (anchor, error) {
	var detail string
	err := r.db.QueryRowContext(ctx, `SELECT detail FROM records WHERE verdict = ? ORDER BY id DESC LIMIT 1`, Pruned.String()).Scan(&detail)
	if errors.Is(err, sql.ErrNoRows) {
		return anchor{}, nil // none: the chain must start at its genesis
	} else if err != nil {
		return anchor{}, fmt.Errorf("journal: %w", err)
	}
	var a anchor
	if _, err := fmt.Sscanf(detail, anchorDetail, &a.head, &a.prev); err != nil {
		return anchor{}, fmt.Errorf("journal: the retention anchor %q does not parse: %w", detail, err)
	}
	return a, nil
}
