package firewall

// RemoveTable deletes the inet table name from the current network
// namespace and reports whether there was one: what the next start does
// with the table of a run that died.
func RemoveTable(name string) (bool, error) { return removeTable(name) }

// ForwardingPlan says which forwarding sysctls the gateway switches on,
// which is also where the ruleset must guard against opening paths
// between the host's other interfaces.
type ForwardingPlan struct {
	Enable4, Enable6 bool
}
