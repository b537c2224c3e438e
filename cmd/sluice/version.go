package main

import (
	"fmt"
	"runtime/debug"
)

// version may be set at build time with -ldflags "-X main.version=v1.2.3";
// otherwise it comes from the build info.
var version = ""

// versionCmd prints the module version, the VCS revision it was built
// from (marked when the tree had changes), and the Go version.
func versionCmd(args []string) error {
	fs := newFlags("version", help{usage: "sluice version", about: "Prints the version, the source revision and the Go version sluice was built with."})
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("version", fmt.Sprintf("unexpected %q", fs.Arg(0)))
	}
	fmt.Fprintln(stdout, versionLine())
	return nil
}

func versionLine() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "sluice " + orDefault(version, "(unknown version)")
	}
	return formatVersion(info)
}

// formatVersion is "sluice VERSION (REVISION[, modified], DATE) GOVERSION".
func formatVersion(info *debug.BuildInfo) string {
	v := version
	if v == "" {
		v = info.Main.Version
	}
	if v == "" || v == "(devel)" {
		v = "devel"
	}
	var rev, when string
	dirty := false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			when = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	out := "sluice " + v
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if dirty {
			rev += ", modified"
		}
		if when != "" {
			rev += ", " + when
		}
		out += " (" + rev + ")"
	}
	return out + " " + info.GoVersion
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
