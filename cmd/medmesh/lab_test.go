package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func runLab(t *testing.T, args ...string) (string, int) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	code := 0
	if err != nil {
		out.WriteString(err.Error())
		code = exitFailure
		var ue usageError
		if errors.As(err, &ue) {
			code = exitUsage
		}
	}
	return out.String(), code
}

func TestLabCLIUsage(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"lab", "run", "--state-dir", dir}, exitUsage, "--scenario is required"},
		{[]string{"lab", "status", "-o", "yaml", "--state-dir", dir}, exitUsage, "want table or json"},
		{[]string{"lab", "status", "--state-dir", dir}, 0, "lab: down"},
		{[]string{"lab", "status", "-o", "json", "--state-dir", dir}, 0, `"up": false`},
		{[]string{"lab", "run", "--scenario", "meteor-strike", "--state-dir", dir}, exitFailure, "unknown scenario"},
		{[]string{"lab", "sim", "--config", "{"}, exitUsage, "--config"},
		{[]string{"lab", "roam", "pump1", "--state-dir", dir}, exitUsage, "--floor is required"},
	} {
		out, code := runLab(t, tc.args...)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("%v: exit %d, output %q; want exit %d containing %q", tc.args, code, out, tc.code, tc.want)
		}
	}
}
