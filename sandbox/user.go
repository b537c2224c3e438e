package sandbox

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
)

// Credential is who the agent's command runs as.
type Credential struct {
	UID, GID int
	Groups   string // comma-separated supplementary group ids
	Name     string
	Home     string
}

// LookupUser picks the user to run the command as: the one named, else
// the one who invoked sudo, else root.
func LookupUser(name string) (Credential, error) {
	if name == "" {
		name = os.Getenv("SUDO_USER")
		if id := os.Getenv("SUDO_UID"); name == "" && id != "" {
			name = id
		}
	}
	if name == "" {
		name = "root"
	}
	u, err := user.Lookup(name)
	if err != nil {
		if _, nerr := strconv.Atoi(name); nerr == nil {
			u, err = user.LookupId(name)
		}
	}
	if err != nil {
		return Credential{}, fmt.Errorf("--user %s: %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	gids, err := u.GroupIds()
	if err != nil {
		gids = []string{u.Gid}
	}
	return Credential{UID: uid, GID: gid, Groups: strings.Join(gids, ","), Name: u.Username, Home: u.HomeDir}, nil
}

// Env returns the environment for the command: base, with HOME, USER and
// LOGNAME of the user it runs as.
func (c Credential) Env(base []string) []string {
	out := make([]string, 0, len(base)+3)
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if k == "HOME" || k == "USER" || k == "LOGNAME" {
			continue
		}
		out = append(out, kv)
	}
	return append(out, "HOME="+c.Home, "USER="+c.Name, "LOGNAME="+c.Name)
}
