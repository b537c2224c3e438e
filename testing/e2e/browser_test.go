package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// hostileHost is what the agent sends as an HTTP Host: markup that would
// run script if the UI ever rendered a name as HTML.
const hostileHost = `x<img src=x onerror="document.title='pwned'">`

// browser is the helper that drives Debian's Chromium through the review
// UI, from the gateway's namespace (where the UI listens; so does the
// browser's own DevTools port): log in through the printed URL, see the
// agent's refusal arrive live, and allow it for an hour. Its arguments:
// the login URL, the file to create once the page is live, the name
// whose refusal to allow.
func browser(args []string) error {
	if len(args) != 3 {
		return errors.New("usage: browser LOGIN_URL READY_FILE NAME")
	}
	login, ready, name := args[0], args[1], args[2]
	profile, err := os.MkdirTemp("", "sluice-chromium-")
	if err != nil {
		return err
	}
	// Removed after the allocator's cancel (deferred below, so run
	// before this), which waits for Chromium to exit: chromedp removes
	// only a profile directory it made itself.
	defer os.RemoveAll(profile)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath("/usr/bin/chromium"), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(profile))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(login), chromedp.WaitVisible(chromedp.ID("live"))); err != nil {
		return fmt.Errorf("log in and go live: %w", err)
	}
	location, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil || strings.Contains(location, "token") {
		return fmt.Errorf("the address after the login: %q, %v", location, err)
	}
	if err := os.WriteFile(ready, nil, 0o644); err != nil {
		return err
	}
	// The refusals arrive while the page is open.
	row := fmt.Sprintf(`//table[@id="events"]//tr[td[normalize-space(.)=%q]]`, name)
	if err := chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.Search(row)),
		chromedp.WaitVisible(chromedp.Search(`//table[@id="events"]//td[contains(., "onerror")]`)),
	); err != nil {
		return fmt.Errorf("see the refusals arrive live: %w", err)
	}
	hostile, err := chromedp.Run(ctx, chromedp.Evaluate[int](`[...document.querySelectorAll("#events td")].filter(td => td.textContent === `+"`"+hostileHost+"`"+`).length`))
	if err != nil {
		return err
	}
	imgs, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("img").length`))
	if err != nil {
		return err
	}
	title, err := chromedp.Run(ctx, chromedp.Title())
	if err != nil {
		return err
	}
	if hostile == 0 || imgs != 0 || title == "pwned" {
		return fmt.Errorf("the hostile name: %d cells show it as text, %d img elements, title %q", hostile, imgs, title)
	}
	step, cancelStep := context.WithTimeout(ctx, 15*time.Second)
	defer cancelStep()
	if err := chromedp.Do(step,
		chromedp.Click(chromedp.Search(row+`//a`)),
		chromedp.WaitVisible(chromedp.ID("allow")),
		chromedp.SetValue(chromedp.ID("duration"), "1h"),
		chromedp.Click(chromedp.ID("allow")),
		chromedp.WaitVisible(chromedp.ID("diff")),
	); err != nil {
		return fmt.Errorf("ask to allow the refusal: %w (at %s)", err, where(ctx))
	}
	diff, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("diff")))
	if err != nil {
		return err
	}
	step, cancelStep = context.WithTimeout(ctx, 15*time.Second)
	defer cancelStep()
	if err := chromedp.Do(step, chromedp.Click(chromedp.ID("confirm")), chromedp.WaitVisible(chromedp.ID("notice"))); err != nil {
		return fmt.Errorf("confirm: %w (at %s)", err, where(ctx))
	}
	notice, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("notice")))
	if err != nil {
		return err
	}
	page, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("main")))
	if err != nil {
		return err
	}
	if !strings.Contains(diff, "host: "+name) || !strings.Contains(notice, "sha256:") || !strings.Contains(page, name+" ports") || !strings.Contains(page, "until 20") {
		return fmt.Errorf("the change: diff %q, notice %q, policy page %q", diff, notice, page)
	}
	return nil
}

// where says which page the browser shows, and what it says, for a
// failure's message.
func where(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	return loc + ": " + text
}

// TestBrowserReview: in a real browser, log in through the URL sluice
// printed, see a refusal arrive live, allow it for an hour, and the agent
// then gets through; a hostile name is shown as text and runs nothing.
func TestBrowserReview(t *testing.T) {
	if _, err := os.Stat("/usr/bin/chromium"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("needs Debian's chromium (make deps installs it)")
		}
		t.Skip("needs Debian's chromium: apt-get install chromium")
	}
	w := newWorld(t)
	dir := t.TempDir()
	c := w.curl()
	ready, waitReady := fileFlag(dir, "browser-ready")
	goOn, waitGo := fileFlag(dir, "go")
	a := startAgent(t, w, []string{"--journal", filepath.Join(dir, "journal.db"), "--ui", "127.0.0.1:" + uiPort, "--allow", "allowed.test"}, prelude+
		waitReady+`try before `+c+` https://www.allowed.test/
try hostile `+c+` -H 'Host: `+strings.ReplaceAll(hostileHost, "'", `'\''`)+`' http://allowed.test/
`+waitGo+`try after `+c+` https://www.allowed.test/
`)
	tok := uiToken(t, a)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", w.gw.Name, exe, "browser",
		tok.url, ready, "www.allowed.test")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	t.Logf("browser:\n%s", out)
	if err != nil || !strings.Contains(string(out), "result=ok") {
		t.Errorf("the browser: %v", err)
	}
	touch(t, goOn)
	expect(t, a.wait(t), map[string]string{"before": curlNoResolve, "hostile": curlRefused, "after": ok})
}
