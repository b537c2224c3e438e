package journal

import (
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // the database/sql driver "sqlite", pure Go
)

// DefaultPath is where a gateway keeps its journal.
const DefaultPath = "/var/lib/sluice/journal.db"

// StoreConfig says where the journal is and how much of it to keep.
type StoreConfig struct {
	// Path of the database; its directory is made 0700, the file 0600.
	Path string
	// MaxAge and MaxSize bound what is kept: records older than MaxAge,
	// and the oldest records while the database holds more than MaxSize
	// bytes, are deleted (zero: no bound). An anchor record keeps the
	// chain verifiable.
	MaxAge  time.Duration
	MaxSize int64
	// Coalesce is the interval repeats of one decision are folded over;
	// DefaultCoalesce when zero, none when negative.
	Coalesce time.Duration
	// Log reports retention.
	Log *slog.Logger
}

// Store is the journal on disk: an SQLite database in WAL mode whose
// records form a hash chain. As a Writer it is written by one goroutine
// (Async's); reading (List, After, Verify) is safe alongside, from this
// process or another.
type Store struct {
	*Reader // over its own connections: reading never waits for the writer's
	cfg     StoreConfig
	db      *sql.DB
	ins     *sql.Stmt

	// The writer's own state. The chain's end is read inside each write
	// transaction, so several gateways (processes) may share a journal.
	coalesce  *coalescer
	lastPrune time.Time
	pending   []Event // reused

	mu      sync.Mutex
	changed chan struct{} // closed, and replaced, when records are added
}

const schema = `
CREATE TABLE IF NOT EXISTS records (
	id INTEGER PRIMARY KEY,
	time TEXT NOT NULL, agent TEXT NOT NULL, layer TEXT NOT NULL, verdict TEXT NOT NULL,
	reason TEXT NOT NULL, name TEXT NOT NULL, rhost TEXT NOT NULL, dst TEXT NOT NULL,
	proto TEXT NOT NULL, rule TEXT NOT NULL, policy TEXT NOT NULL, count INTEGER NOT NULL,
	addrs TEXT NOT NULL, detail TEXT NOT NULL, prev_policy TEXT NOT NULL,
	prev TEXT NOT NULL, hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_verdict ON records(verdict, id);
CREATE INDEX IF NOT EXISTS records_rhost ON records(rhost);
CREATE INDEX IF NOT EXISTS records_time ON records(time);
`

const columns = `id, time, agent, layer, verdict, reason, name, dst, proto, rule, policy, count, addrs, detail, prev_policy, prev, hash`

// OpenStore opens the journal at cfg.Path for writing, making it if it
// is not there.
func OpenStore(cfg StoreConfig) (*Store, error) {
	if cfg.Path == "" {
		return nil, errors.New("journal: no path")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Coalesce == 0 {
		cfg.Coalesce = DefaultCoalesce
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o700); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	// Made here so that its mode is ours, not the umask's; the WAL and
	// index files SQLite makes beside it take the same mode.
	f, err := os.OpenFile(cfg.Path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	f.Close()
	if err := os.Chmod(cfg.Path, 0o600); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	db, err := openDB(cfg.Path, false)
	if err != nil {
		return nil, err
	}
	s := &Store{cfg: cfg, db: db, coalesce: newCoalescer(cfg.Coalesce), changed: make(chan struct{})}
	if err := s.init(); err != nil {
		db.Close()
		return nil, err
	}
	if s.Reader, err = Open(cfg.Path); err != nil {
		s.ins.Close()
		db.Close()
		return nil, err
	}
	return s, nil
}

// openDB opens path with the journal's settings: WAL (readers never wait
// for the writer), synchronous=NORMAL (a commit survives a crash of the
// process; the last ones may not survive a power cut), and a busy timeout
// for the moments another process holds a lock.
func openDB(path string, readOnly bool) (*sql.DB, error) {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(5000)")
	q.Add("_pragma", "synchronous(NORMAL)")
	if readOnly {
		q.Add("mode", "ro")
	} else {
		q.Add("_pragma", "journal_mode(WAL)")
		q.Set("_txlock", "immediate")
	}
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("journal: open %s: %w", path, err)
	}
	if !readOnly {
		// One connection: the writer is one goroutine, and statements
		// never wait on each other inside the process.
		db.SetMaxOpenConns(1)
	}
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("journal: open %s: %w", path, err)
	}
	return db, nil
}

func (s *Store) init() error {
	if _, err := s.db.Exec(schema); err != nil {
		return fmt.Errorf("journal: create tables: %w", err)
	}
	var err error
	s.ins, err = s.db.Prepare(`INSERT INTO records (` + columns + `, rhost) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	return nil
}

// WriteEvents stores evs (coalescing repeats) and the repeats whose
// interval has ended, in one transaction: when it returns nil, they
// survive a crash of sluice.
func (s *Store) WriteEvents(evs []Event) error {
	out := s.pending[:0]
	for _, ev := range evs {
		out = s.coalesce.add(ev, out)
	}
	s.pending = out
	return s.commit(out, time.Now(), false)
}

// Tick stores the repeats whose interval ended and applies retention;
// Async calls it about once a second.
func (s *Store) Tick(now time.Time) error {
	if err := s.commit(s.pending[:0], now, false); err != nil {
		return err
	}
	if now.Sub(s.lastPrune) >= pruneEvery {
		s.lastPrune = now
		return s.prune(now)
	}
	return nil
}

// StoreLinger is how long a batch of records waits for more before it is
// written: a transaction costs far more than a record in it.
const StoreLinger = 10 * time.Millisecond

// Linger makes Async wait StoreLinger to fill a batch (see Lingerer).
func (s *Store) Linger() time.Duration { return StoreLinger }

// Flush stores every repeat counted so far; Close does too.
func (s *Store) Flush() error { return s.commit(s.pending[:0], time.Now(), true) }

// pruneEvery is how often retention runs.
const pruneEvery = 10 * time.Second

// commit appends evs, and the repeats due by now (all with flush), to
// the chain in one transaction.
func (s *Store) commit(evs []Event, now time.Time, flush bool) error {
	evs = append(evs, s.coalesce.due(now, flush)...)
	if len(evs) == 0 {
		return nil
	}
	if err := s.append(evs, nil); err != nil {
		return err
	}
	s.notify()
	return nil
}

// append adds evs to the end of the chain in one transaction, with the
// events before (if not nil) returns after it has run in it. The transaction takes the
// database's write lock first (BEGIN IMMEDIATE), so the end it reads is
// the end it writes after, whichever process wrote last.
func (s *Store) append(evs []Event, before func(tx *sql.Tx, last int64) ([]Event, error)) error {
	tx, err := s.db.Begin()
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	defer tx.Rollback()
	var last int64
	var prev string
	err = tx.QueryRow(`SELECT id, hash FROM records ORDER BY id DESC LIMIT 1`).Scan(&last, &prev)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("journal: read the last record: %w", err)
	}
	if before != nil {
		more, err := before(tx, last)
		if err != nil {
			return err
		}
		evs = append(evs, more...)
	}
	if err := s.insertTx(tx, chain(evs, last, prev)); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("journal: commit: %w", err)
	}
	return nil
}

func (s *Store) insertTx(tx *sql.Tx, recs []Record) error {
	ins := tx.Stmt(s.ins)
	for i := range recs {
		r := &recs[i]
		if _, err := ins.Exec(r.ID, r.Time, r.Agent, string(r.Layer), r.Verdict, string(r.Reason), r.Name, r.Dst,
			r.Proto, r.Rule, r.Policy, r.Count, r.Addrs, r.Detail, r.PrevPolicy, r.Prev, r.Hash, reverseHost(r.Name)); err != nil {
			return fmt.Errorf("journal: store record %d: %w", r.ID, err)
		}
	}
	return nil
}

// chain makes records of evs, with their ids and links, after the
// record id whose hash is prev.
func chain(evs []Event, id int64, prev string) []Record {
	recs := make([]Record, len(evs))
	for i, ev := range evs {
		r := newRecord(ev)
		id++
		r.ID, r.Prev = id, prev
		r.Hash = r.ComputeHash()
		prev = r.Hash
		recs[i] = r
	}
	return recs
}

func (s *Store) notify() {
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// Changed returns a channel that is closed when records are next added by
// this Store.
func (s *Store) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// Close stores the counted repeats and closes the database.
func (s *Store) Close() error {
	err := s.Flush()
	s.ins.Close()
	return errors.Join(err, s.Reader.Close(), s.db.Close())
}

// prune deletes what retention no longer keeps, oldest first, and appends
// an anchor that names the record the chain now starts with and the hash
// it links to, in the same transaction. The newest record always stays.
func (s *Store) prune(now time.Time) error {
	if s.cfg.MaxAge <= 0 && s.cfg.MaxSize <= 0 {
		return nil
	}
	var first, upTo int64 // to delete first..upTo
	err := s.append(nil, func(tx *sql.Tx, last int64) ([]Event, error) {
		var oldest sql.NullInt64
		if err := tx.QueryRow(`SELECT MIN(id) FROM records`).Scan(&oldest); err != nil {
			return nil, err
		}
		first = oldest.Int64
		if s.cfg.MaxAge > 0 {
			var id sql.NullInt64
			if err := tx.QueryRow(`SELECT MAX(id) FROM records WHERE time < ?`, FormatTime(now.Add(-s.cfg.MaxAge))).Scan(&id); err != nil {
				return nil, err
			}
			upTo = id.Int64
		}
		if s.cfg.MaxSize > 0 {
			var pages, free, size int64
			row := tx.QueryRow(`SELECT page_count, freelist_count, page_size FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()`)
			if err := row.Scan(&pages, &free, &size); err != nil {
				return nil, err
			}
			if used := (pages - free) * size; used > s.cfg.MaxSize {
				// Delete the share of records that is over, and a tenth
				// more, so that this does not run again at once.
				n := last - first + 1
				cut := n*(used-s.cfg.MaxSize)/used + n/10 + 1
				upTo = max(upTo, first+cut-1)
			}
		}
		upTo = min(upTo, last-1)
		if upTo < first {
			return nil, errNothingToPrune
		}
		var headPrev string
		if err := tx.QueryRow(`SELECT prev FROM records WHERE id = ?`, upTo+1).Scan(&headPrev); err != nil {
			return nil, err
		}
		if _, err := tx.Exec(`DELETE FROM records WHERE id <= ?`, upTo); err != nil {
			return nil, err
		}
		return []Event{{Time: now, Layer: LayerJournal, Kind: Pruned, Reason: ReasonRetention, Count: upTo - first + 1,
			Detail: fmt.Sprintf(anchorDetail+" deleted records %d to %d (max age %s, max size %d bytes)",
				upTo+1, headPrev, first, upTo, s.cfg.MaxAge, s.cfg.MaxSize)}}, nil
	})
	if errors.Is(err, errNothingToPrune) {
		return nil
	} else if err != nil {
		return fmt.Errorf("journal: retention: %w", err)
	}
	s.cfg.Log.Info("journal retention deleted the oldest records", "from", first, "to", upTo)
	s.notify()
	return nil
}

var errNothingToPrune = errors.New("nothing to prune")

// reverseHost turns "api.github.com." into "com.github.api.", so that a
// host and all its subdomains are one range of an index.
func reverseHost(name string) string {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if name == "" {
		return ""
	}
	labels := strings.Split(name, ".")
	var b strings.Builder
	b.Grow(len(name) + 1)
	for i := len(labels) - 1; i >= 0; i-- {
		b.WriteString(labels[i])
		b.WriteByte('.')
	}
	return b.String()
}
