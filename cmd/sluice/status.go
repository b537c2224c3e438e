package main

// statusCmd is `sluice status`: the runs of this machine, alive and dead.
func statusCmd(args []string) error {
	return usageError("status", "not yet")
}

// cleanupCmd is `sluice cleanup`: removes what dead runs left.
func cleanupCmd(args []string) error {
	return usageError("cleanup", "not yet")
}
