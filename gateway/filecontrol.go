package gateway

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
)

// FileControl steers a policy file with no gateway running it (`sluice
// ui --policy FILE`): it shows the file's policy and can only add to the
// file ("always"); a sluice that runs the file picks the change up on its
// next reload (SIGHUP). Each change is written to Journal.
type FileControl struct {
	File    string
	Journal journal.Writer

	mu        sync.Mutex
	proposals map[string]*proposal
}

// ErrOnlyAlways: without a running gateway a change can only be written
// to the policy file.
var ErrOnlyAlways = errors.New("no gateway runs this policy here: only \"always\" (written to the file) is possible; sluice picks it up on SIGHUP")

func (c *FileControl) load() (*policy.Policy, error) {
	p, _, err := PolicySource{File: c.File}.Load()
	return p, err
}

// PolicyView shows the file's policy.
func (c *FileControl) PolicyView() policy.View {
	v := policy.View{File: c.File}
	p, err := c.load()
	if err != nil {
		v.Hash = "unreadable: " + err.Error()
		return v
	}
	v.Hash = p.Hash()
	for _, e := range p.Entries() {
		v.Entries = append(v.Entries, e.String())
	}
	return v
}

// Propose prepares adding allow to the file; duration must be "always".
func (c *FileControl) Propose(allow, duration string) (policy.Proposal, error) {
	if duration != DurationAlways {
		return policy.Proposal{}, ErrOnlyAlways
	}
	e, err := policy.ParseAllowFlag(allow)
	if err != nil {
		return policy.Proposal{}, err
	}
	p, err := c.load()
	if err != nil {
		return policy.Proposal{}, err
	}
	if allowedAlready(p, &e) {
		return policy.Proposal{}, fmt.Errorf("%s is allowed by the policy file already", allow)
	}
	pr := &proposal{Proposal: policy.Proposal{ID: newID(), Allow: allow, Duration: duration, Policy: p.Hash(),
		Diff: diffLines(policy.EntryYAML(&e))}, entry: e, expires: time.Now().Add(proposalLife)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proposals == nil {
		c.proposals = map[string]*proposal{}
	}
	for k, old := range c.proposals {
		if time.Now().After(old.expires) {
			delete(c.proposals, k)
		}
	}
	if len(c.proposals) >= maxProposals {
		return policy.Proposal{}, errTooManyProposals
	}
	c.proposals[pr.ID] = pr
	return pr.Proposal, nil
}

// Confirm writes the proposal to the file and journals it.
func (c *FileControl) Confirm(id, who string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock() // one change of the file at a time, read to journal
	pr, ok := c.proposals[id]
	delete(c.proposals, id)
	if !ok || time.Now().After(pr.expires) {
		return "", ErrNoProposal
	}
	old, err := c.load()
	if err != nil {
		return "", err
	}
	pr.entry.Source = "allowed in the web UI by " + who
	if err := writePolicyFile(c.File, &pr.entry); err != nil {
		return "", err
	}
	p, err := c.load()
	if err != nil {
		return "", err
	}
	if c.Journal != nil {
		err = c.Journal.WriteEvents([]journal.Event{{Time: time.Now(), Layer: journal.LayerPolicy, Kind: journal.Changed,
			Reason: journal.ReasonReviewed, PolicyHash: p.Hash(), OldPolicy: old.Hash(),
			Detail: who + ": " + pr.Allow + " always (written to " + c.File + "; not in force until a sluice reloads it)\n" + policyDiff(old, p)}})
	}
	return p.Hash(), err
}
