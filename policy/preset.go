package policy

import (
	"embed"
	"fmt"
	"path"
	"slices"
	"strings"
)

// presetFiles are the policy fragments a policy may include by name
// (`include: [pypi, npm]`). Each is a policy file of its own whose
// comments name the sources of its hosts and what it leaves open.
//
//go:embed presets/*.yaml
var presetFiles embed.FS

// Preset is one fragment: its name, the first line of its comment, and
// the file as written.
type Preset struct {
	Name, Summary string
	Data          []byte
}

// Presets lists the presets by name.
func Presets() []Preset {
	files, _ := presetFiles.ReadDir("presets")
	var out []Preset
	for _, f := range files {
		p, _ := LookupPreset(strings.TrimSuffix(f.Name(), ".yaml"))
		out = append(out, p)
	}
	return out
}

// LookupPreset returns the preset name, and whether there is one.
func LookupPreset(name string) (Preset, bool) {
	if name == "" || strings.ContainsAny(name, "/.") {
		return Preset{}, false
	}
	data, err := presetFiles.ReadFile(path.Join("presets", name+".yaml"))
	if err != nil {
		return Preset{}, false
	}
	first, _, _ := strings.Cut(string(data), "\n")
	summary := strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(first, "#"), " "+name+":"))
	return Preset{Name: name, Summary: summary, Data: data}, true
}

// presetNames is the list of the presets' names, for messages.
func presetNames() string {
	var names []string
	for _, p := range Presets() {
		names = append(names, p.Name)
	}
	return strings.Join(names, ", ")
}

// presetEntries parses preset name's entries; each gets at as its Source,
// the place of the include that brought it.
func presetEntries(name, at string) ([]Entry, error) {
	p, ok := LookupPreset(name)
	if !ok {
		return nil, fmt.Errorf("unknown preset %q; the presets are %s (sluice presets lists them)", name, presetNames())
	}
	entries, err := ParseFile("preset "+name, p.Data)
	if err != nil {
		return nil, fmt.Errorf("preset %s: %w", name, err) // a defect of this build: the presets are tested
	}
	for i := range entries {
		entries[i].Source = fmt.Sprintf("preset %s (included at %s)", name, at)
	}
	return slices.Clip(entries), nil
}
