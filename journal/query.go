package journal

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// Reader reads a journal: the gateway's own (Store.Reader) or one on disk
// that another process writes (Open). It is safe for concurrent use.
type Reader struct {
	db *sql.DB
}

// Open opens the journal at path for reading.
func Open(path string) (*Reader, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	db, err := openDB(path, true)
	if err != nil {
		return nil, err
	}
	return &Reader{db: db}, nil
}

// Close closes the reader.
func (r *Reader) Close() error { return r.db.Close() }

// Filter selects records. Empty fields select everything.
type Filter struct {
	Verdict, Layer, Agent, Reason string
	// Host selects records whose name is Host or a subdomain of it.
	Host string
	// Since selects records from then on.
	Since time.Time
	// Before selects records older than the record of this id (a page's
	// cursor); 0 for the newest.
	Before int64
	// Limit bounds how many; DefaultLimit when 0, MaxLimit at most.
	Limit int
}

// Limits of a page.
const (
	DefaultLimit = 100
	MaxLimit     = 10000
)

// List returns the records f selects, newest first, and the cursor of the
// next page (0 when this one is the last).
func (r *Reader) List(ctx context.Context, f Filter) ([]Record, int64, error) {
	var where []string
	var args []any
	eq := func(col, v string) {
		if v != "" {
			where = append(where, col+" = ?")
			args = append(args, v)
		}
	}
	eq("verdict", f.Verdict)
	eq("layer", f.Layer)
	eq("agent", f.Agent)
	eq("reason", f.Reason)
	if f.Host != "" {
		// The host and its subdomains are one range of reversed names:
		// "com.github." up to, not including, "com.github/".
		lo := reverseHost(f.Host)
		where = append(where, "rhost >= ? AND rhost < ?")
		args = append(args, lo, lo[:len(lo)-1]+"/")
	}
	if !f.Since.IsZero() {
		where = append(where, "time >= ?")
		args = append(args, FormatTime(f.Since))
	}
	if f.Before > 0 {
		where = append(where, "id < ?")
		args = append(args, f.Before)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = DefaultLimit
	}
	limit = min(limit, MaxLimit)
	q := `SELECT ` + columns + ` FROM records`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY id DESC LIMIT ?"
	args = append(args, limit)
	recs, err := r.query(ctx, q, args...)
	if err != nil {
		return nil, 0, err
	}
	var next int64
	if len(recs) == limit {
		next = recs[len(recs)-1].ID
	}
	return recs, next, nil
}

// After returns up to limit records newer than id, oldest first: what a
// live view has not seen yet.
func (r *Reader) After(ctx context.Context, id int64, limit int) ([]Record, error) {
	return r.query(ctx, `SELECT `+columns+` FROM records WHERE id > ? ORDER BY id LIMIT ?`, id, limit)
}

// Last returns the id of the newest record, 0 when there is none.
func (r *Reader) Last(ctx context.Context) (int64, error) {
	var id sql.NullInt64
	err := r.db.QueryRowContext(ctx, `SELECT MAX(id) FROM records`).Scan(&id)
	return id.Int64, err
}

// ErrNoRecord: no record has that id.
var ErrNoRecord = errors.New("journal: no such record")

// Get returns the record of id.
func (r *Reader) Get(ctx context.Context, id int64) (Record, error) {
	recs, err := r.query(ctx, `SELECT `+columns+` FROM records WHERE id = ?`, id)
	if err != nil {
		return Record{}, err
	}
	if len(recs) == 0 {
		return Record{}, ErrNoRecord
	}
	return recs[0], nil
}

func (r *Reader) query(ctx context.Context, q string, args ...any) ([]Record, error) {
	rows, err := r.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	defer rows.Close()
	var out []Record
	for rows.Next() {
		var rec Record
		if err := scan(rows, &rec); err != nil {
			return nil, err
		}
		out = append(out, rec)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	return out, nil
}

func scan(rows *sql.Rows, r *Record) error {
	var layer, reason string
	err := rows.Scan(&r.ID, &r.Time, &r.Agent, &layer, &r.Verdict, &reason, &r.Name, &r.Dst, &r.Proto, &r.Rule,
		&r.Policy, &r.Count, &r.Addrs, &r.Detail, &r.PrevPolicy, &r.Prev, &r.Hash)
	r.Layer, r.Reason = Layer(layer), Reason(reason)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	return nil
}
