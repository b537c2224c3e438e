package main

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
)

// credential is who the command runs as.
type credential struct {
	uid, gid int
	groups   string // comma-separated supplementary group ids
	name     string
	home     string
}

// commandUser picks the user to run the command as: the one named, else
// the one who invoked sudo, else root.
func commandUser(name string) (credential, error) {
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
		return credential{}, fmt.Errorf("--user %s: %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	gids, err := u.GroupIds()
	if err != nil {
		gids = []string{u.Gid}
	}
	return credential{uid: uid, gid: gid, groups: strings.Join(gids, ","), name: u.Username, home: u.HomeDir}, nil
}

// env returns the environment for the command: the caller's, with HOME,
// USER and LOGNAME of the user it runs as.
func (c credential) env(base []string) []string {
	out := make([]string, 0, len(base)+3)
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if k == "HOME" || k == "USER" || k == "LOGNAME" {
			continue
		}
		out = append(out, kv)
	}
	return append(out, "HOME="+c.home, "USER="+c.name, "LOGNAME="+c.name)
}
