package policy

import (
	"fmt"
	"slices"
	"strings"
)

// Warning is a valid but risky entry: the policy loads, and a person is told
// what the entry implies.
type Warning struct {
	Source string
	Risk   string // one of Risks: what `accept:` on the entry silences
	Msg    string // what the entry implies, and what to do
}

func (w Warning) String() string { return w.Source + ": warning: " + w.Msg }

// The risks Lint warns of. An entry acknowledges one with
// `accept: [RISK]`, or a comment `# sluice: accept RISK` on its lines.
const (
	RiskGitPush         = "git-push-risk"
	RiskGitSSH          = "git-ssh"
	RiskDoH             = "doh"
	RiskMultiTenant     = "multi-tenant"
	RiskWideRange       = "wide-range"
	RiskPrivateWildcard = "private-wildcard"
	RiskNoNameBudget    = "no-name-budget"
)

// Risks lists the warnings an entry can accept.
var Risks = []string{RiskGitPush, RiskGitSSH, RiskDoH, RiskMultiTenant, RiskWideRange, RiskPrivateWildcard, RiskNoNameBudget}

// dohProviders are public resolvers that answer DNS over HTTPS or TLS. An
// agent allowed to reach one can resolve, and so leak through, any name
// (Harden-Runner GHSA-46g3-37rh-v698).
var dohProviders = map[string]bool{
	"dns.google": true, "dns.google.com": true, "8888.google": true,
	"cloudflare-dns.com": true, "mozilla.cloudflare-dns.com": true, "one.one.one.one": true,
	"1dot1dot1dot1.cloudflare-dns.com": true, "security.cloudflare-dns.com": true,
	"family.cloudflare-dns.com": true, "dns.quad9.net": true, "dns9.quad9.net": true,
	"dns10.quad9.net": true, "dns11.quad9.net": true, "doh.opendns.com": true,
	"dns.adguard.com": true, "dns.adguard-dns.com": true, "doh.dns.sb": true,
	"dns.nextdns.io": true, "doh.cleanbrowsing.org": true, "dns.alidns.com": true,
	"doh.pub": true, "dns.twnic.tw": true, "doh.mullvad.net": true, "dns.mullvad.net": true,
}

// gitHosts accept pushes, gists and API writes: an agent holding any token
// for them can send data to a repository of its own.
var gitHosts = []string{
	"github.com", "api.github.com", "gist.github.com", "uploads.github.com",
	"gitlab.com", "bitbucket.org", "codeberg.org", "git.sr.ht", "huggingface.co",
}

// multiTenant are suffixes under which anyone can get a name of their own;
// a wildcard over one of them allows an attacker's endpoint.
var multiTenant = []string{
	"amazonaws.com", "cloudfront.net", "azurewebsites.net", "blob.core.windows.net",
	"windows.net", "googleapis.com", "appspot.com", "run.app", "web.app", "firebaseapp.com",
	"github.io", "githubusercontent.com", "gitlab.io", "workers.dev", "pages.dev",
	"vercel.app", "netlify.app", "herokuapp.com", "ngrok.io", "ngrok-free.app",
	"ngrok.app", "trycloudflare.com", "fly.dev", "onrender.com", "r2.dev", "repl.co",
	"glitch.me", "surge.sh", "deno.dev", "supabase.co", "pythonanywhere.com",
}

// Lint returns warnings for entries that are valid but widen what the agent
// can reach or leak through. It never changes the policy.
func Lint(p *Policy) []Warning {
	var ws []Warning
	for _, e := range p.Entries() {
		warn := func(risk, format string, args ...any) {
			if slices.Contains(e.Accept, risk) {
				return
			}
			msg := fmt.Sprintf(format, args...)
			if strings.HasPrefix(e.Source, "--allow") {
				msg += fmt.Sprintf("; to accept this, add --accept %s", risk)
			} else {
				msg += fmt.Sprintf("; to accept this, add 'accept: [%s]' to the entry", risk)
			}
			ws = append(ws, Warning{Source: e.Source, Risk: risk, Msg: msg})
		}
		if e.Host == "" {
			if bits := e.Prefix.Bits(); (e.Prefix.Addr().Is4() && bits < 16) || (e.Prefix.Addr().Is6() && bits < 32) {
				warn(RiskWideRange, "%s is a very wide range; every address in it is reachable on ports %v: list the narrower ranges the agent needs", e.Prefix, e.Ports)
			}
			continue
		}
		base := strings.TrimPrefix(e.Host, "*.")
		if dohProviders[base] || (e.Wildcard() && anyUnder(base, dohProviderList())) {
			warn(RiskDoH, "%s serves DNS over HTTPS/TLS: through it the agent can resolve, and leak data to, any name; remove it unless the agent must use it", e.Host)
		}
		for _, g := range gitHosts {
			if base == g || (e.Wildcard() && strings.HasSuffix(g, "."+base)) {
				if !e.Inspected() {
					warn(RiskGitPush, "%s accepts git pushes and API writes and this entry has no git or http rules: the agent can push data to a repository of its own; add 'git:' rules naming what it may fetch and push (README, Git and HTTP rules)", e.Host)
				}
				if slices.Contains(e.Ports, 22) {
					warn(RiskGitSSH, "%s on port 22: git over SSH cannot be checked, so any push there goes through; use HTTPS (port 443) with git rules instead", e.Host)
				}
				break
			}
		}
		if strings.HasPrefix(base, "ssh.") && slices.ContainsFunc(gitHosts, func(g string) bool { return base == "ssh."+g }) {
			warn(RiskGitSSH, "%s is git over SSH (on port 443 too): its pushes cannot be checked; use HTTPS to the git host with git rules instead", e.Host)
		}
		if e.Wildcard() {
			for _, m := range multiTenant {
				if base == m || strings.HasSuffix(base, "."+m) || strings.HasSuffix(m, "."+base) {
					warn(RiskMultiTenant, "%s covers names anyone can create (%s): an attacker's own endpoint would be allowed; list the exact names the agent needs", e.Host, m)
					break
				}
			}
			if e.Private && LocalName(base) {
				warn(RiskPrivateWildcard, "%s is a wildcard over local names with private: true: any device that can register a name under it (a DHCP client, a cloud's internal DNS) becomes reachable; list the exact names if you can", e.Host)
			} else if e.Private {
				warn(RiskPrivateWildcard, "%s is a wildcard with private: true: any name under it may point into your internal network; list the exact names if you can", e.Host)
			}
			if e.NameBudget() == 0 {
				warn(RiskNoNameBudget, "%s has max_new_names: 0, no budget of new names: the agent can carry data out in the names it asks, at any rate; give it a budget", e.Host)
			}
		}
	}
	return ws
}

func dohProviderList() []string {
	out := make([]string, 0, len(dohProviders))
	for h := range dohProviders {
		out = append(out, h)
	}
	return out
}

func anyUnder(base string, hosts []string) bool {
	for _, h := range hosts {
		if strings.HasSuffix(h, "."+base) {
			return true
		}
	}
	return false
}
