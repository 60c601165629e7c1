package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/medmesh/medmesh/internal/testutil"
)

// daemonSchemas pairs each daemon command with its config schema.
func daemonSchemas(t *testing.T) map[string]struct {
	cmd    *cobra.Command
	schema any
} {
	t.Helper()
	root := newRootCmd()
	out := map[string]struct {
		cmd    *cobra.Command
		schema any
	}{}
	for name, schema := range map[string]any{
		"coordinator": new(coordinatorConfig),
		"node":        new(nodeConfig),
		"enforcer":    new(enforcerConfig),
	} {
		c, _, err := root.Find([]string{name})
		if err != nil || c.Name() != name {
			t.Fatalf("no %s command: %v", name, err)
		}
		out[name] = struct {
			cmd    *cobra.Command
			schema any
		}{c, schema}
	}
	return out
}

// notInConfig are flags a config file does not set, with why.
var notInConfig = map[string]string{
	"config":       "the file itself",
	"help":         "not configuration",
	"uninstall":    "an action (enforcer --uninstall), not configuration",
	"gossip-label": "deprecated name of campus",
}

// TestConfigKeysAreFlags: every key of a daemon's config file is one of its
// flags, of the flag's type, and every flag but notInConfig has a key.
func TestConfigKeysAreFlags(t *testing.T) {
	kinds := map[reflect.Type][]string{
		reflect.TypeFor[*string]():   {"string"},
		reflect.TypeFor[*bool]():     {"bool"},
		reflect.TypeFor[*int]():      {"int"},
		reflect.TypeFor[*uint32]():   {"uint32"},
		reflect.TypeFor[*duration](): {"duration"},
		reflect.TypeFor[*[]string](): {"stringSlice", "string"},
	}
	for name, d := range daemonSchemas(t) {
		keys := map[string]bool{}
		st := reflect.TypeOf(d.schema).Elem()
		for i := range st.NumField() {
			f := st.Field(i)
			key := f.Tag.Get("toml")
			keys[key] = true
			fl := d.cmd.Flags().Lookup(key)
			if fl == nil {
				t.Errorf("%s: config key %q (%s) is not a flag", name, key, f.Name)
				continue
			}
			want, ok := kinds[f.Type]
			if !ok {
				t.Errorf("%s: config key %q has type %s, which configSettings does not handle", name, key, f.Type)
				continue
			}
			if got := fl.Value.Type(); !contains(want, got) {
				t.Errorf("%s: config key %q is %s, but flag --%s is %s", name, key, f.Type, key, got)
			}
		}
		d.cmd.Flags().VisitAll(func(fl *pflag.Flag) {
			if _, skip := notInConfig[fl.Name]; !skip && !keys[fl.Name] {
				t.Errorf("%s: flag --%s has no config key: add it to the schema, or to notInConfig with why", name, fl.Name)
			}
		})
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestConfigFileAndFlags: the file sets what the command line left alone;
// the command line wins; lists replace slice defaults and become comma
// lists for string flags.
func TestConfigFileAndFlags(t *testing.T) {
	ds := daemonSchemas(t)
	path := writeFile(t, "enforcer.toml", `# an enforcer on ward 3
id = "e3"
iface = "ward3"
coordinator = ["10.0.0.1:7400", "10.0.0.2:7400"]
dns-server = ["10.0.0.53"]
alarm-after = "45s"
max-devices = 2048
debug = true
admin = "127.0.0.1:9405"
`)
	d := ds["enforcer"]
	fs := d.cmd.Flags()
	if err := fs.Parse([]string{"--iface", "ward9", "--admin", "127.0.0.1:7777"}); err != nil {
		t.Fatal(err)
	}
	if err := applyConfig(path, fs, new(enforcerConfig)); err != nil {
		t.Fatal(err)
	}
	for flag, want := range map[string]string{
		"id":          "e3",
		"iface":       "ward9",          // command line wins
		"admin":       "127.0.0.1:7777", // command line wins
		"coordinator": "10.0.0.1:7400,10.0.0.2:7400",
		"dns-server":  "[10.0.0.53]",
		"alarm-after": "45s",
		"max-devices": "2048",
		"debug":       "true",
	} {
		if got := fs.Lookup(flag).Value.String(); got != want {
			t.Errorf("--%s = %q, want %q", flag, got, want)
		}
	}

	t.Setenv("MEDMESH_TLS_CA", "/env/ca.pem")
	c := ds["coordinator"]
	cpath := writeFile(t, "coordinator.toml", "tls-ca = \"/file/ca.pem\"\ntls-key = \"/file/key.pem\"\njoin = [\"a:1\", \"b:2\"]\n")
	cfs := c.cmd.Flags()
	if err := cfs.Set("tls-ca", "/env/ca.pem"); err != nil { // what the env default gives a fresh command
		t.Fatal(err)
	}
	cfs.Lookup("tls-ca").Changed = false
	if err := applyConfig(cpath, cfs, new(coordinatorConfig)); err != nil {
		t.Fatal(err)
	}
	if got := cfs.Lookup("tls-ca").Value.String(); got != "/env/ca.pem" {
		t.Errorf("tls-ca = %q: MEDMESH_TLS_CA should win over the file", got)
	}
	if got := cfs.Lookup("tls-key").Value.String(); got != "/file/key.pem" {
		t.Errorf("tls-key = %q, want the file's", got)
	}
	if got := cfs.Lookup("join").Value.String(); got != "[a:1,b:2]" {
		t.Errorf("join = %q", got)
	}
}

// TestConfigErrorsNameKeyAndLine: an unknown key, a wrong type and a bad
// duration each say where.
func TestConfigErrorsNameKeyAndLine(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		schema     any
		want       []string
	}{
		{"unknown key", "id = \"c1\"\n\ndatadir = \"/x\"\n", new(coordinatorConfig), []string{`line 3`, `unknown key "datadir"`}},
		{"two unknown", "idd = 1\napi = \"x\"\n[tls]\nca = \"y\"\n", new(coordinatorConfig), []string{`line 1: unknown key "idd"`, `line 3: unknown key "tls"`}},
		{"wrong type", "id = \"c1\"\nbootstrap-expect = \"three\"\n", new(coordinatorConfig), []string{"line 2", "bootstrap-expect"}},
		{"bad duration", "\nlearn-window = \"a week\"\n", new(nodeConfig), []string{"line 2", "learn-window", "duration"}},
		{"syntax", "id = \"c1\nx", new(coordinatorConfig), []string{"line 1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := parseConfig([]byte(tc.body), tc.schema)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
	// Through the command: a usage error (exit 2) that names the file.
	path := writeFile(t, "c.toml", "dev = true\nbogus = 1\n")
	if got := run([]string{"coordinator", "--config", path}); got != exitUsage {
		t.Errorf("exit %d, want %d", got, exitUsage)
	}
}

// TestCoordinatorFromConfigFile runs `medmesh coordinator --config FILE`
// in process with everything in the file: it serves /readyz on the
// admin address the file names.
func TestCoordinatorFromConfigFile(t *testing.T) {
	adminAddr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	path := writeFile(t, "coordinator.toml", fmt.Sprintf(`# a single development node
dev = true
api = "127.0.0.1:%d"
raft = "127.0.0.1:%d"
admin = %q
log-level = "warn"
`, testutil.FreePort(t), testutil.FreePort(t), adminAddr))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root := newRootCmd()
	root.SetArgs([]string{"coordinator", "--config", path})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	testutil.Eventually(t, 10*time.Second, 50*time.Millisecond, func() bool {
		select {
		case err := <-done:
			t.Fatalf("coordinator exited: %v", err)
		default:
		}
		resp, err := http.Get("http://" + adminAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "coordinator from %s not ready on %s", path, adminAddr)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("coordinator: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("coordinator did not stop")
	}
}

// FuzzParseConfig: any bytes give a schema or an error, never a panic; an
// error about a key says which line.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		"id = \"c1\"\ndata-dir = \"/var/lib/medmesh\"\njoin = [\"a:1\"]\n",
		"learn-window = \"168h\"\nflows = 65536\nfloor = 3\n",
		"[x]\ny = 1\n",
		"alarm-after = \"30s\"\ncoordinator = [\"a\", \"b\"]\n",
		"id = 'x'\n# comment\n\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, schema := range []any{new(coordinatorConfig), new(nodeConfig), new(enforcerConfig)} {
			err := parseConfig(data, schema)
			if err != nil {
				if strings.Contains(err.Error(), "unknown key") && !strings.Contains(err.Error(), "line ") {
					t.Fatalf("unknown key without a line: %v", err)
				}
				continue
			}
			_ = configSettings(schema) // every decoded value converts
		}
	})
}

// TestShippedConfigsParse: the commented examples the Debian package puts
// in /etc/medmesh parse, as shipped and with every `#key = value` line
// uncommented, so no example names a key the daemon does not have.
func TestShippedConfigsParse(t *testing.T) {
	keyLine := regexp.MustCompile(`^#([a-z][a-z0-9-]*) = `)
	for file, schema := range map[string]func() any{
		"coordinator.toml": func() any { return new(coordinatorConfig) },
		"node.toml":        func() any { return new(nodeConfig) },
		"enforcer.toml":    func() any { return new(enforcerConfig) },
	} {
		b, err := os.ReadFile(filepath.Join("../../deploy/package/etc", file))
		if err != nil {
			t.Fatal(err)
		}
		if err := parseConfig(b, schema()); err != nil {
			t.Errorf("%s as shipped: %v", file, err)
		}
		var lines []string
		n := 0
		for _, l := range strings.Split(string(b), "\n") {
			if keyLine.MatchString(l) {
				l, n = l[1:], n+1
			}
			lines = append(lines, l)
		}
		s := schema()
		if err := parseConfig([]byte(strings.Join(lines, "\n")), s); err != nil {
			t.Errorf("%s uncommented: %v", file, err)
		}
		if got := len(configSettings(s)); got != n || n < 10 {
			t.Errorf("%s: %d example keys, %d decoded", file, n, got)
		}
		// The Kubernetes base's ConfigMap holds one of each.
		k, err := os.ReadFile(filepath.Join("../../deploy/k8s/base/config", file))
		if err != nil {
			t.Fatal(err)
		}
		ks := schema()
		if err := parseConfig(k, ks); err != nil {
			t.Errorf("deploy/k8s/base/config/%s: %v", file, err)
		}
		if len(configSettings(ks)) < 3 {
			t.Errorf("deploy/k8s/base/config/%s sets almost nothing", file)
		}
	}
}
