package deploy

import (
	"bufio"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// providedBy maps each program the code executes to the Debian package
// that ships it.
var providedBy = map[string]string{
	"ip":          "iproute2",
	"nft":         "nftables",
	"nsenter":     "util-linux",
	"setpriv":     "util-linux",
	"chroot":      "coreutils",
	"dpkg-deb":    "dpkg",
	"mmdebstrap":  "mmdebstrap",
	"lintian":     "lintian",
	"tshark":      "tshark",
	"capinfos":    "tshark", // wireshark-common, which tshark depends on
	"clang":       "clang",
	"etcd":        "etcd-server",
	"etcdctl":     "etcd-client",
	"tcpreplay":   "tcpreplay",
	"softflowd":   "softflowd",
	"softflowctl": "softflowd",
	"pmacctd":     "pmacct",
	"ndpiReader":  "libndpi-bin",
	"jq":          "jq",
	"git":         "git",
	"openssl":     "openssl",
	"rsyslogd":    "rsyslog",
	"chromium":    "chromium", // the console's and the compliance report's browser tests, the report's PDF
}

// notPackaged are programs that come from elsewhere, with the reason.
var notPackaged = map[string]string{
	"go":          "the Go toolchain, a prerequisite (README)",
	"medmesh":     "this repository's own binary (make build)",
	"medmesh-lab": "this repository's lab binary (make build)",
	"bash":        "Debian essential; the Makefile's shell",
	// make bench-risk installs it into bin/ from the Go module proxy.
	"osv-scanner": "peer tool of BenchmarkSBOMMatch and BenchmarkRiskAssess (go install, make bench-risk)",
}

// indirect names the calls whose program is not a string literal at the
// call: "file:function" of the call -> the programs it can run. A new such
// call fails the test until it is listed here.
var indirect = map[string][]string{
	"compliance/report/html.go:PDF":                                     {"chromium"}, // ChromiumPath: chromium on PATH
	"node/datapath/capture_bench_linux_test.go:TestCaptureBench":        {"tcpreplay", "ip", "softflowd", "pmacctd", "ndpiReader"},
	"node/datapath/capture_bench_linux_test.go:func":                    {"ip"},
	"node/gossip/netns_linux_test.go:sh":                                {"ip", "nft"},
	"node/internal/xdp/netns_linux_test.go:sh":                          {"ip", "nft"},
	"enforcer/enforcer_linux_test.go:sh":                                {"ip", "nft"},
	"enforcer/propagation_bench_test.go:startHostProcess":               {"medmesh"},     // the test binary itself (os.Args[0]): coordinators, floor members
	"deploy/lab/scenario_linux.go:runAttack":                            {"medmesh-lab"}, // medmesh-lab sim in a device namespace
	"cmd/medmesh/upgrade_test.go:start":                                 {"medmesh"},     // the previous and the current release
	"cmd/medmesh/upgrade_test.go:TestRollingUpgradeFromPreviousRelease": {"medmesh"},
	"deploy/lab/proc_linux.go:spawn":                                    {"medmesh", "medmesh-lab"},
	"deploy/lab/up_linux.go:probe":                                      {"medmesh"},
	"e2e/benchcoord/medmesh.go:startMedmesh":                            {"medmesh"},
	"e2e/benchcoord/medmesh.go:cli":                                     {"medmesh", "medmesh-lab"},
	"e2e/benchcoord/proc.go:startProc":                                  {"etcd", "medmesh"},
	"cmd/medmesh/readme_linux_test.go:func":                             {"ip", "bash", "medmesh", "medmesh-lab", "jq"}, // the README's commands
	"cmd/medmesh/crossbuild_test.go:func":                               {"go"},
	"risk/sbom_bench_test.go:runOSVScanner":                             {"osv-scanner"},
	"risk/assess_bench_test.go:runMeasured":                             {"medmesh"}, // the test binary itself (os.Args[0]), as a launcher
	"risk/assess_bench_test.go:init":                                    {"medmesh", "osv-scanner"},
	"deploy/package/build.go:run":                                       {"medmesh"}, // gen-man, completion
	"deploy/package/package_test.go:output":                             {"dpkg-deb"},
	"deploy/package/package_test.go:requireTool":                        {"dpkg-deb", "lintian", "mmdebstrap", "chroot", "setpriv", "nsenter"},
	"deploy/doctor/doctor_linux_test.go:TestNoBpffsNamesTheFix":         {"medmesh"}, // the test binary itself, in a new mount namespace
	"deploy/package/package_test.go:func":                               {"medmesh"}, // enforcer --uninstall
}

func readDeps(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("deps.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var pkgs []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		pkgs = append(pkgs, strings.Fields(line)...)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return pkgs
}

// execSite is one exec.Command, exec.CommandContext or exec.LookPath call.
type execSite struct {
	where    string // file:function
	pos      string // file:line
	programs []string
	literal  bool // the program is a string literal at the call
}

// scanExecs parses every Go file under root and returns its exec calls.
// The program is the first literal argument; "ip netns exec NS PROG" and
// "ip -n NS ..." also yield PROG when it is a literal.
func scanExecs(t *testing.T, root string) []execSite {
	t.Helper()
	var sites []execSite
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		execName := ""
		for _, imp := range f.Imports {
			if imp.Path.Value == `"os/exec"` {
				execName = "exec"
				if imp.Name != nil {
					execName = imp.Name.Name
				}
			}
		}
		if execName == "" {
			return nil
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok {
				continue
			}
			ast.Inspect(fn, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok || len(call.Args) == 0 {
					return true
				}
				if x, ok := sel.X.(*ast.Ident); !ok || x.Name != execName {
					return true
				}
				args := call.Args
				switch sel.Sel.Name {
				case "Command", "LookPath":
				case "CommandContext":
					args = args[1:]
				default:
					return true
				}
				name := fn.Name.Name
				if lit := enclosingLit(fn, call); lit {
					name = "func"
				}
				s := execSite{where: rel + ":" + name, pos: fset.Position(call.Pos()).String()}
				lits := literals(args)
				if len(lits) > 0 && isLit(args[0]) {
					s.literal = true
					s.programs = append(s.programs, lits[0])
					if lits[0] == "ip" {
						s.programs = append(s.programs, nested(lits)...)
					}
				}
				if !s.literal && len(args) > 0 {
					// ip with a built argument list: exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
					s.programs = nil
				}
				sites = append(sites, s)
				return true
			})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return sites
}

// enclosingLit reports whether call sits inside a function literal of fn.
func enclosingLit(fn *ast.FuncDecl, call *ast.CallExpr) bool {
	found := false
	ast.Inspect(fn.Body, func(n ast.Node) bool {
		if lit, ok := n.(*ast.FuncLit); ok && lit.Pos() <= call.Pos() && call.End() <= lit.End() {
			found = true
			return false
		}
		return !found
	})
	return found
}

func isLit(e ast.Expr) bool {
	b, ok := e.(*ast.BasicLit)
	return ok && b.Kind == token.STRING
}

// literals returns the string literals among args, in order, including
// those of a composite literal or append(...) argument; "" marks a
// non-literal position.
func literals(args []ast.Expr) []string {
	var out []string
	for _, a := range args {
		switch e := a.(type) {
		case *ast.BasicLit:
			if s, err := strconv.Unquote(e.Value); err == nil {
				out = append(out, s)
			}
		case *ast.CallExpr:
			out = append(out, literals(e.Args)...)
		case *ast.CompositeLit:
			out = append(out, literals(e.Elts)...)
		default:
			out = append(out, "")
		}
	}
	return out
}

// nested finds the program ip runs: "ip netns exec NS PROG".
func nested(lits []string) []string {
	for i := 0; i+3 < len(lits); i++ {
		if lits[i] == "netns" && lits[i+1] == "exec" && lits[i+3] != "" {
			return []string{lits[i+3]}
		}
	}
	return nil
}

// TestExecutedProgramsArePackaged: every program the code executes (found
// by scanning the source for exec.Command, exec.CommandContext and
// exec.LookPath) is shipped by a package that `make deps` installs.
func TestExecutedProgramsArePackaged(t *testing.T) {
	deps := readDeps(t)
	for prog, pkg := range providedBy {
		if !slices.Contains(deps, pkg) {
			t.Errorf("%s comes from %s, which deploy/deps.txt lacks", prog, pkg)
		}
	}
	sites := scanExecs(t, "..")
	if len(sites) < 20 {
		t.Fatalf("found only %d exec calls; is the scan broken?", len(sites))
	}
	seen := map[string]bool{}
	programs := map[string][]string{} // program -> positions
	for _, s := range sites {
		progs := s.programs
		if !s.literal {
			list, ok := indirect[s.where]
			if !ok {
				t.Errorf("%s (%s): executes a program that is not a string literal; list what it runs in indirect", s.pos, s.where)
				continue
			}
			seen[s.where] = true
			progs = list
		}
		for _, p := range progs {
			programs[p] = append(programs[p], s.pos)
		}
	}
	for w := range indirect {
		if !seen[w] {
			t.Errorf("indirect lists %s, which no longer executes anything: remove it", w)
		}
	}
	for p, at := range programs {
		if _, ok := notPackaged[p]; ok {
			continue
		}
		pkg, ok := providedBy[p]
		if !ok {
			t.Errorf("%s is executed (%s) but no Debian package in deploy/deps.txt is known to provide it: add the package and map it in providedBy", p, at[0])
			continue
		}
		t.Logf("%-12s %-12s %d call(s)", p, pkg, len(at))
	}
	for _, want := range []string{"ip", "nft", "tshark", "etcd", "softflowd"} {
		if _, ok := programs[want]; !ok {
			t.Errorf("the scan did not find %s, which the code runs", want)
		}
	}
}
