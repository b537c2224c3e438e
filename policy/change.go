package policy

import "time"

// Proposal is a change of the policy in force that a reviewer asked for,
// shown to be confirmed.
type Proposal struct {
	ID       string    `json:"proposal"`
	Allow    string    `json:"allow"` // HOST:PORT or CIDR:PORT, as --allow takes it
	Duration string    `json:"duration"`
	Until    time.Time `json:"until,omitzero"` // zero for "run" and "always"
	// Diff is the change as lines of the policy file, "+" for added.
	Diff string `json:"diff"`
	// Policy is the hash of the policy in force when it was made.
	Policy string `json:"policy"`
}

// Allowance is a temporary addition to the policy in force.
type Allowance struct {
	Entry string    `json:"entry"`
	Until time.Time `json:"until,omitzero"` // zero: until the run ends
	By    string    `json:"by"`
}

// View is the policy in force, for a person: its hash, its entries, the
// allowances among them and the file it comes from.
type View struct {
	Hash       string      `json:"hash"`
	Entries    []string    `json:"entries"`
	Allowances []Allowance `json:"allowances"`
	File       string      `json:"file,omitempty"`
}
