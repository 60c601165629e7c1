package coordinator

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
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
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed (deploy/deps.txt has it: make deps)")
	}
	shots := os.Getenv("MEDMESH_SCREENSHOTS")
	if shots == "" {
		shots = filepath.Join("..", "bin", "console-screenshots")
	}
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	cl := newCluster(t, 1, nil)
	idp, webs := ssoConsoles(t, "localhost", cl.nodes[0])
	origin := webs[0].srv.URL

	actx, cancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.WindowSize(1200, 800))...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()

	var mu sync.Mutex
	var problems []string
	listen := func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *runtime.EventExceptionThrown:
			problems = append(problems, "exception: "+e.ExceptionDetails.Text)
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeAssert {
				var args []string
				for _, a := range e.Args {
					args = append(args, string(a.Value))
				}
				problems = append(problems, "console error: "+strings.Join(args, " "))
			}
		case *network.EventRequestWillBeSent:
			u := e.Request.URL
			if !strings.HasPrefix(u, origin+"/") && !strings.HasPrefix(u, idp.Issuer+"/") && !strings.HasPrefix(u, "data:") && u != "about:blank" {
				problems = append(problems, "request left the console's and the provider's origins: "+u)
			}
		}
	}
	type step = chromedp.Action[chromedp.Void]
	run := func(what string, steps ...step) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			st, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + " | " + document.body.innerText.slice(0, 300)`))
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("%s: %v\npage: %s\nbrowser: %s", what, err, st, strings.Join(problems, "\n"))
		}
	}
	get := func(what string, a chromedp.Action[string]) string {
		t.Helper()
		v, err := chromedp.Run(ctx, a)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
	shot := func(name string) step {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			buf, err := chromedp.FullScreenshot(100)(ctx, tg)
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(shots, name+".png"), buf, 0o644)
		})
	}
	// poll waits for expr to hold; it goes on across the navigations
	// between the console and the provider (a page being replaced
	// destroys the context an evaluation ran in).
	poll := func(expr string) step {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			deadline := time.Now().Add(30 * time.Second)
			for {
				_, err := chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(time.Until(deadline)))(ctx, tg)
				if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
					return err
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	ready := func(page string) step { return poll(fmt.Sprintf(`document.body.dataset.ready === %q`, page)) }
	signIn := func(user, password string) step {
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

	run("start", chromedp.Navigate("about:blank"))
	if err := chromedp.Listen(ctx, listen); err != nil {
		t.Fatal(err)
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
	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Fatalf("the browser reported:\n%s", strings.Join(problems, "\n"))
	}
}
