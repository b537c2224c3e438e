package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
)

// Durations a reviewer may give an allowance: for a while, until the run
// ends, or always (written to the policy file).
const (
	DurationRun    = "run"
	DurationAlways = "always"
)

// Durations lists what Propose accepts, in the order a person would pick.
var Durations = []string{"15m", "1h", "8h", DurationRun, DurationAlways}

// proposalLife is how long a proposal waits for its confirmation, and
// maxProposals how many may wait at once.
const (
	proposalLife = 10 * time.Minute
	maxProposals = 100
)

var errTooManyProposals = errors.New("too many proposals wait for confirmation")

// proposal is a Proposal waiting for its confirmation.
type proposal struct {
	policy.Proposal
	entry   policy.Entry
	expires time.Time
}

// allowance is an Allowance in force.
type allowance struct {
	policy.Allowance
	entry policy.Entry
}

// allowances are the reviewers' temporary additions, and the proposals
// waiting for confirmation.
type allowances struct {
	mu        sync.Mutex
	base      *policy.Policy // the policy source's, without allowances
	active    []allowance
	proposals map[string]*proposal
}

// effective is base with the allowances: an allowance for a host the
// policy has adds its ports to that entry.
func effective(base *policy.Policy, active []allowance) (*policy.Policy, error) {
	var entries []policy.Entry
	at := map[string]int{}
	add := func(e policy.Entry) {
		key := e.Host
		if key == "" {
			key = e.Prefix.String()
		}
		if i, ok := at[key]; ok {
			merged := slices.Concat(entries[i].Ports, e.Ports)
			slices.Sort(merged)
			entries[i].Ports = slices.Compact(merged)
			return
		}
		at[key] = len(entries)
		e.Ports = slices.Clone(e.Ports)
		entries = append(entries, e)
	}
	for _, e := range base.Entries() {
		add(*e)
	}
	for _, a := range active {
		add(a.entry)
	}
	return policy.New(entries)
}

// PolicyView returns the policy in force and the allowances on it.
func (g *Gateway) PolicyView() policy.View {
	g.allow.mu.Lock()
	defer g.allow.mu.Unlock()
	p := g.policy.Load()
	v := policy.View{Hash: p.Hash(), File: g.cfg.PolicySource.File}
	for _, a := range g.allow.active {
		v.Allowances = append(v.Allowances, a.Allowance)
	}
	for _, e := range p.Entries() {
		v.Entries = append(v.Entries, e.String())
	}
	return v
}

// Propose prepares allowing allow (HOST, HOST:PORT, CIDR:PORT, as --allow
// takes it) for duration (one of Durations) and returns the change for a
// person to confirm. Something the policy in force allows already is
// refused: an allowance would change nothing.
func (g *Gateway) Propose(allow, duration string) (policy.Proposal, error) {
	e, err := policy.ParseAllowFlag(allow)
	if err != nil {
		return policy.Proposal{}, err
	}
	pr := proposal{Proposal: policy.Proposal{Allow: allow, Duration: duration}, entry: e, expires: time.Now().Add(proposalLife)}
	switch duration {
	case DurationRun:
	case DurationAlways:
		if g.cfg.PolicySource.File == "" {
			return policy.Proposal{}, policy.ErrNoPolicyFile
		}
	default:
		d, err := time.ParseDuration(duration)
		if err != nil || d <= 0 || d > 7*24*time.Hour {
			return policy.Proposal{}, fmt.Errorf("duration %q: want one of %v, or a duration up to 168h", duration, Durations)
		}
		pr.Until = time.Now().Add(d).Truncate(time.Second)
	}
	p := g.policy.Load()
	if allowedAlready(p, &e) {
		return policy.Proposal{}, fmt.Errorf("%s is allowed by the policy in force already; the refusal was for another reason", allow)
	}
	pr.Policy = p.Hash()
	pr.Diff = diffLines(policy.EntryYAML(&e))
	pr.ID = newID()
	g.allow.mu.Lock()
	defer g.allow.mu.Unlock()
	for k, old := range g.allow.proposals {
		if time.Now().After(old.expires) {
			delete(g.allow.proposals, k)
		}
	}
	if len(g.allow.proposals) >= maxProposals {
		return policy.Proposal{}, errTooManyProposals
	}
	g.allow.proposals[pr.ID] = &pr
	return pr.Proposal, nil
}

func allowedAlready(p *policy.Policy, e *policy.Entry) bool {
	for _, port := range e.Ports {
		var d policy.Decision
		if e.Host != "" {
			d = p.MatchNamePort(e.Host, port)
		} else {
			d = p.MatchAddr(e.Prefix.Addr(), port)
		}
		if !d.Allow {
			return false
		}
	}
	return true
}

func diffLines(yamlText string) string {
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimSuffix(yamlText, "\n"), "\n") {
		b.WriteString("+ " + line + "\n")
	}
	return b.String()
}

// ErrNoProposal: no proposal of that id waits (never made, confirmed
// already, or expired).
var ErrNoProposal = errors.New("no such proposal: it was confirmed already, expired, or never made")

// Confirm puts proposal id in force, as who, and returns the hash of the
// policy in force after it. The agent is let through from the next
// question on; nothing allowed before is dropped.
func (g *Gateway) Confirm(id, who string) (string, error) {
	g.allow.mu.Lock()
	pr, ok := g.allow.proposals[id]
	if ok {
		delete(g.allow.proposals, id)
	}
	g.allow.mu.Unlock()
	if !ok || time.Now().After(pr.expires) {
		return "", ErrNoProposal
	}
	pr.entry.Source = "allowed in the web UI by " + who
	if pr.Duration == DurationAlways {
		if err := writePolicyFile(g.cfg.PolicySource.File, &pr.entry); err != nil {
			return "", err
		}
		if err := g.reloadAs(journal.ReasonReviewed, who+": "+pr.Allow+" always (written to "+g.cfg.PolicySource.File+")"); err != nil {
			return "", err
		}
		return g.policy.Load().Hash(), nil
	}
	a := allowance{policy.Allowance{Entry: pr.entry.String(), Until: pr.Until, By: who}, pr.entry}
	g.change.Lock()
	defer g.change.Unlock()
	g.allow.mu.Lock()
	prev := g.allow.active
	active := append(slices.Clone(prev), a)
	p, err := effective(g.allow.base, active)
	if err != nil {
		g.allow.mu.Unlock()
		return "", err
	}
	g.allow.active = active
	g.allow.mu.Unlock()
	until := "until the run ends"
	if !pr.Until.IsZero() {
		until = "until " + pr.Until.UTC().Format(time.RFC3339)
	}
	if err := g.setPolicy(p, journal.ReasonReviewed, who+": "+pr.Allow+" "+until); err != nil {
		g.allow.mu.Lock()
		g.allow.active = prev // g.change held: nothing else changed it
		g.allow.mu.Unlock()
		return "", err
	}
	return p.Hash(), nil
}

// policyFileMu serialises the rewrites of policy files: two confirmations
// at once would each read the old file and the second would lose the
// first's entry.
var policyFileMu sync.Mutex

// writePolicyFile adds e to the policy file. The new file is written
// beside it under a name of its own, checked, synced and renamed over it,
// with the owner and mode the file had; the old one is kept as FILE.bak
// the same way. A symbolic link is followed: its target is rewritten.
func writePolicyFile(file string, e *policy.Entry) error {
	policyFileMu.Lock()
	defer policyFileMu.Unlock()
	file, err := filepath.EvalSymlinks(file)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	out, err := policy.AddEntry(file, data, e)
	if err != nil {
		return err
	}
	fi, err := os.Stat(file)
	if err != nil {
		return err
	}
	if err := replaceFile(file+".bak", data, fi); err != nil {
		return fmt.Errorf("keep the old policy: %w", err)
	}
	return replaceFile(file, out, fi)
}

// replaceFile puts data at path atomically: a new file in the same
// directory, with like's mode and owner, synced, then renamed over path.
func replaceFile(path string, data []byte, like os.FileInfo) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // gone after the rename; left only on failure
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(like.Mode().Perm())
	}
	if st, ok := like.Sys().(*syscall.Stat_t); ok && err == nil {
		err = f.Chown(int(st.Uid), int(st.Gid))
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// expireAllowances is a part of the gateway (see start): it takes the
// allowances whose time is up out of the policy in force, each journaled.
type expireAllowances struct{ g *Gateway }

func (x expireAllowances) Run(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			if err := x.g.expire(now); err != nil {
				return err
			}
		}
	}
}

func (g *Gateway) expire(now time.Time) error {
	g.change.Lock()
	defer g.change.Unlock()
	g.allow.mu.Lock()
	var left, gone []allowance
	for _, a := range g.allow.active {
		if !a.Until.IsZero() && !now.Before(a.Until) {
			gone = append(gone, a)
		} else {
			left = append(left, a)
		}
	}
	if len(gone) == 0 {
		g.allow.mu.Unlock()
		return nil
	}
	p, err := effective(g.allow.base, left)
	if err == nil {
		g.allow.active = left
	}
	g.allow.mu.Unlock()
	if err != nil {
		return err
	}
	var names []string
	for _, a := range gone {
		names = append(names, a.Entry+" (allowed by "+a.By+")")
	}
	return g.setPolicy(p, journal.ReasonAllowanceExpired, fmt.Sprintf("expired: %v", names))
}

func newID() string {
	var id [8]byte
	_, _ = rand.Read(id[:])
	return hex.EncodeToString(id[:])
}
