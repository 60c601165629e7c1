package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/medmesh/medmesh/internal/testutil"
)

// README code blocks and the markers that say how to run them. A marker is
// an HTML comment on the last non-blank line before the block's fence:
//
//	<!-- not run: REASON -->   not run; the reason is required
//	<!-- run: background -->   each line is a daemon, started in the
//	                           background; later blocks run once
//	                           `medmesh cluster status` answers
//	<!-- run: lab -->          runs against the campus lab when it is
//	                           up and MEDMESH_README_LAB=1 asks for it
//	<!-- run: scratch -->      runs in one scratch directory that every
//	                           scratch block shares, in README order
//
// An unmarked block fenced as sh (or with no language) runs line by line
// from the repository root; every line must exit 0. A line whose comment
// says "until Ctrl-C" gets SIGINT after two seconds and must then exit 0.
// A line `eval "$(CMD)"` runs CMD and sets the `export K=V` lines it prints
// for the rest of its block, as the shell would.
// Blocks fenced as text are not commands.
type readmeBlock struct {
	line   int // of the opening fence
	marker string
	reason string
	cmds   []string
}

func parseREADME(t *testing.T, path string) []readmeBlock {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		blocks  []readmeBlock
		prev    string // last non-blank line outside a block
		cur     *readmeBlock
		pending string
	)
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if cur == nil {
			if lang, ok := strings.CutPrefix(line, "```"); ok {
				b := readmeBlock{line: n}
				switch lang = strings.TrimSpace(lang); lang {
				case "text":
					b.marker = "text"
				case "", "sh", "bash":
				default:
					t.Fatalf("README:%d: block fenced as %q: want sh (a command) or text", n, lang)
				}
				if m, ok := strings.CutPrefix(strings.TrimSpace(prev), "<!--"); ok && strings.HasSuffix(m, "-->") {
					m = strings.TrimSpace(strings.TrimSuffix(m, "-->"))
					switch {
					case strings.HasPrefix(m, "not run:"):
						b.marker, b.reason = "not run", strings.TrimSpace(strings.TrimPrefix(m, "not run:"))
						if b.reason == "" {
							t.Fatalf("README:%d: not run without a reason", n)
						}
					case m == "run: background", m == "run: lab", m == "run: scratch":
						b.marker = strings.TrimPrefix(m, "run: ")
					default:
						t.Fatalf("README:%d: unknown marker %q", n, m)
					}
				}
				cur = &b
			} else if strings.TrimSpace(line) != "" {
				prev = line
			}
			continue
		}
		if line == "```" {
			blocks = append(blocks, *cur)
			cur, prev = nil, ""
			continue
		}
		if c, ok := strings.CutSuffix(line, "\\"); ok {
			pending += c + " "
			continue
		}
		if cmd := strings.TrimSpace(pending + line); cmd != "" && !strings.HasPrefix(cmd, "#") {
			cur.cmds = append(cur.cmds, cmd)
		}
		pending = ""
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cur != nil {
		t.Fatalf("README:%d: block not closed", cur.line)
	}
	return blocks
}

// TestREADMECommands runs the README's commands as written: the tour
// against a `medmesh coordinator --dev` in a network namespace of its own
// (the commands use the default ports, which the lab or another
// coordinator on this host may hold), and the lab blocks against the
// campus lab when it is up and MEDMESH_README_LAB=1 says so: they change
// the lab (a pump's policy enforced), so a `go test ./...` must not run
// them against a lab another run is measuring, or one whose baselines are
// still learning.
func TestREADMECommands(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	blocks := parseREADME(t, filepath.Join(root, "README.md"))
	var run, lab, background, scratch []readmeBlock
	for _, b := range blocks {
		switch b.marker {
		case "text":
		case "not run":
			t.Logf("README:%d not run: %s", b.line, b.reason)
		case "background":
			background = append(background, b)
		case "lab":
			lab = append(lab, b)
		case "scratch":
			scratch = append(scratch, b)
		default:
			run = append(run, b)
		}
	}
	if len(run) == 0 || len(background) == 0 {
		t.Fatalf("README has %d blocks to run and %d background blocks; the tour is gone?", len(run), len(background))
	}
	testutil.RequireRoot(t) // a network namespace for the tour; replay loads XDP programs
	if _, err := os.Stat(filepath.Join(root, "..", "shared", "testdata", "pcap")); err != nil {
		t.Skipf("skipped: the tour replays the shared captures, absent here: %v", err)
	}

	bin := t.TempDir()
	for name, pkg := range map[string]string{"medmesh": ".", "medmesh-lab": "../medmesh-lab"} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, name), pkg).CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", name, err, out)
		}
	}
	env := append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"), "MEDMESH_ADDR=")

	ns := fmt.Sprintf("medmesh-readme-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	if out, err := exec.Command("ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v\n%s", err, out)
	}
	shell := func(ctx context.Context, dir, cmd string, inNS bool) *exec.Cmd {
		argv := []string{"bash", "-o", "pipefail", "-c", cmd}
		if inNS {
			argv = append([]string{"ip", "netns", "exec", ns}, argv...)
		}
		c := exec.CommandContext(ctx, argv[0], argv[1:]...)
		c.Dir, c.Env = dir, env
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
		return c
	}

	logs := t.TempDir()
	for _, b := range background {
		for i, cmd := range b.cmds {
			log, err := os.Create(filepath.Join(logs, fmt.Sprintf("bg%d-%d.log", b.line, i)))
			if err != nil {
				t.Fatal(err)
			}
			c := shell(context.Background(), root, "exec "+cmd, true)
			c.Stdout, c.Stderr = log, log
			if err := c.Start(); err != nil {
				t.Fatalf("README:%d %s: %v", b.line, cmd, err)
			}
			t.Cleanup(func() {
				_ = syscall.Kill(-c.Process.Pid, syscall.SIGTERM)
				done := make(chan struct{})
				go func() { _ = c.Wait(); close(done) }()
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
					<-done
				}
				log.Close()
			})
			t.Logf("README:%d started in the background: %s", b.line, cmd)
		}
	}
	testutil.Eventually(t, 20*time.Second, 100*time.Millisecond, func() bool {
		return shell(context.Background(), root, "medmesh cluster status --timeout 1s", true).Run() == nil
	}, "the background daemons never answered medmesh cluster status")

	runBlock := func(t *testing.T, b readmeBlock, dir string, inNS bool) {
		blockEnv := env
		for _, cmd := range b.cmds {
			if inner, ok := evalLine(cmd); ok {
				c := shell(context.Background(), dir, inner, inNS)
				c.Env = blockEnv
				out, err := c.Output()
				if err != nil {
					t.Errorf("README:%d %s: %v", b.line, cmd, err)
					continue
				}
				exports, err := parseExports(string(out))
				if err != nil {
					t.Errorf("README:%d %s: %v", b.line, cmd, err)
					continue
				}
				blockEnv = append(append([]string(nil), blockEnv...), exports...)
				t.Logf("README:%d ok: %s (%d variables)", b.line, cmd, len(exports))
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			c := shell(ctx, dir, cmd, inNS)
			c.Env = blockEnv
			var out strings.Builder
			c.Stdout, c.Stderr = &out, &out
			if strings.Contains(cmd, "until Ctrl-C") {
				if err := c.Start(); err != nil {
					t.Fatalf("README:%d %s: %v", b.line, cmd, err)
				}
				time.Sleep(2 * time.Second)
				_ = syscall.Kill(-c.Process.Pid, syscall.SIGINT)
				err = c.Wait()
			} else {
				err = c.Run()
			}
			cancel()
			if err != nil {
				t.Errorf("README:%d %s: %v\n%s", b.line, cmd, err, out.String())
				continue
			}
			t.Logf("README:%d ok: %s (%d bytes of output)", b.line, cmd, out.Len())
		}
	}
	for _, b := range run {
		runBlock(t, b, root, true)
	}
	dir := t.TempDir()
	for _, b := range scratch {
		runBlock(t, b, dir, true)
	}

	t.Run("lab", func(t *testing.T) {
		if os.Getenv("MEDMESH_README_LAB") != "1" {
			t.Skipf("skipped: %d lab block(s) run only with MEDMESH_README_LAB=1, against an up lab (make demo)", len(lab))
		}
		out, err := shell(context.Background(), root, "medmesh-lab status -o json", false).Output()
		var st struct {
			Up bool `json:"up"`
		}
		if err != nil || json.Unmarshal(out, &st) != nil || !st.Up {
			t.Skipf("skipped: the campus lab is not up (make demo brings it up); %d lab block(s) not run", len(lab))
		}
		dir := t.TempDir() // the lab block writes p.json and pump.mud.json
		for _, b := range lab {
			runBlock(t, b, dir, false)
		}
	})
}

// evalLine recognises `eval "$(CMD)"` and returns CMD.
func evalLine(cmd string) (string, bool) {
	cmd = strings.TrimSpace(cmd)
	if i := strings.Index(cmd, "  #"); i >= 0 {
		cmd = strings.TrimSpace(cmd[:i])
	}
	inner, ok := strings.CutPrefix(cmd, `eval "$(`)
	if !ok {
		return "", false
	}
	return strings.CutSuffix(inner, `)"`)
}

// parseExports reads `export K=V` lines, V bare or single-quoted as
// medmesh-lab's shellQuote writes it, into K=V environment entries.
func parseExports(out string) ([]string, error) {
	var env []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		kv, ok := strings.CutPrefix(strings.TrimSpace(line), "export ")
		k, v, ok2 := strings.Cut(kv, "=")
		if !ok || !ok2 || k == "" {
			return nil, fmt.Errorf("not an export line: %q", line)
		}
		if q, ok := strings.CutPrefix(v, "'"); ok {
			v = strings.ReplaceAll(strings.TrimSuffix(q, "'"), `'\''`, "'")
		}
		env = append(env, k+"="+v)
	}
	return env, nil
}
