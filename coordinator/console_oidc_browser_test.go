package coordinator

import (
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/medmesh/medmesh/internal/consoletest"
)

// TestConsoleSingleSignOnInBrowser signs in to the console through a real
// OpenID provider in real headless Chromium: the login page offers "Sign
// in with Hospital IdP", the browser goes to the provider's login page (at
// localhost: another site than the console at 127.0.0.1, as a hospital's
// IdP is), back to the console, signed in with the role the person's
// group maps to; logout returns to the login page; a person with no
// mapped group comes back refused, with the reason on the login page. No
// console error, and no request leaves the console's and the provider's
// origins. Screenshots go beside the console test's
// (MEDMESH_SCREENSHOTS, default bin/console-screenshots).
func TestConsoleSingleSignOnInBrowser(t *testing.T) {
	if _, err := exec.LookPath("chromium"); err != nil {
		t.Skip("chromium is not installed (deploy/deps.txt has it: make deps)")
	}
	shots := os.Getenv("MEDMESH_SCREENSHOTS")
	if shots == "" {
		shots = filepath.Join("..", "bin", "console-screenshots")
	}
	cl := newCluster(t, 1, nil)
	idp, webs := ssoConsoles(t, "localhost", cl.nodes[0])
	origin := webs[0].srv.URL
	b := consoletest.Start(t, consoletest.Options{Origin: origin, Shots: shots, Timeout: 2 * time.Minute, Others: []string{idp.Issuer}})
	run, get, shot, css := b.Run, b.Get, b.Shot, consoletest.CSS
	// The console and the provider replace each other's pages: every wait
	// goes on across those navigations.
	poll := consoletest.PollAcross
	ready := func(page string) consoletest.Step {
		return poll(fmt.Sprintf(`document.body.dataset.ready === %q`, page))
	}
	signIn := func(user, password string) consoletest.Step {
		return chromedp.Steps(
			ready("login"), poll(`!document.getElementById("sso").hidden`),
			chromedp.Click(css("#sso-login")),
			poll(fmt.Sprintf(`location.href.startsWith(%q) && document.getElementById("username") !== null`, idp.Issuer+"/login/username")),
			chromedp.SetValue(css("#username"), user),
			chromedp.SetValue(css("#password"), password),
			chromedp.Click(css("#submit")),
			poll(fmt.Sprintf(`location.href.startsWith(%q)`, origin+"/")),
		)
	}

	run("login page", chromedp.Navigate(origin+"/"), ready("login"), poll(`!document.getElementById("sso").hidden`), shot("sso-01-login"))
	if txt := get("sso link", chromedp.Text(css("#sso-login"))); txt != "Sign in with Hospital IdP" {
		t.Fatalf("the login page offers %q", txt)
	}
	run("ann signs in", signIn("ann@hospital.example", "ann at the IdP"), ready("overview"), shot("sso-02-signed-in"))
	if who := get("who", chromedp.Text(css("#who"))); !strings.Contains(who, "Logged in as approver/oidc.u-ann") {
		t.Fatalf("signed in as %q", who)
	}
	run("logout", chromedp.Click(css("#logout")), ready("login"))
	run("nora is refused", signIn("nora@hospital.example", "nora at the IdP"), ready("login"),
		poll(`document.getElementById("login-error").textContent !== ""`), shot("sso-03-refused"))
	if msg := get("refusal", chromedp.Text(css("#login-error"))); !strings.Contains(msg, "none of your groups") {
		t.Fatalf("refusal shown: %q", msg)
	}
	if loc := get("location", chromedp.Evaluate[string](`location.href`)); strings.Contains(loc, "sso-error") {
		t.Errorf("the refusal code stayed in the address bar: %s", loc)
	}
	u, _ := url.Parse(origin)
	t.Logf("single sign-on in Chromium: console %s, provider %s", u.Host, idp.Issuer)
	b.CheckClean()
}
