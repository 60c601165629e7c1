package replay

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/medmesh/medmesh/internal/testutil"
)

// analyze runs a capture through the real datapath and the sensor engine,
// as `medmesh replay --report -o json` does, and returns the JSON report.
func analyze(t *testing.T, file string) (string, *Analysis) {
	t.Helper()
	testutil.RequireRoot(t)
	if _, err := os.Stat(file); err != nil {
		t.Skipf("skipped: %s absent (%v)", file, err)
	}
	a, err := Analyze(context.Background(), file, AnalyzeOptions{Replay: DefaultOptions()}, nil)
	if err != nil {
		t.Fatalf("analyze %s: %v", file, err)
	}
	var buf bytes.Buffer
	if err := a.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	if !json.Valid(buf.Bytes()) {
		t.Fatalf("report is not JSON: %s", buf.String())
	}
	return buf.String(), a
}

// TestAnalyzeTapirx is issue 4's first acceptance point end to end, through
// the XDP program rather than a test-only pcap reader: HL7 in every HL7
// capture with the UDI where the message carries one, DICOM with both AE
// titles in every DICOM capture.
func TestAnalyzeTapirx(t *testing.T) {
	dir := filepath.Join(pcapDir, "tapirx")
	files, _ := filepath.Glob(filepath.Join(dir, "*.pcap"))
	if len(files) == 0 {
		t.Skipf("skipped: no tapirx captures under %s", dir)
	}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			rep, a := analyze(t, f)
			switch {
			case strings.HasPrefix(name, "HL7"):
				if !hasApp(a, "hl7") {
					t.Fatalf("no flow tagged hl7")
				}
				if strings.Contains(name, "UDI") && !strings.Contains(rep, "Hospira Plum A+") {
					t.Fatalf("UDI not extracted: %s", rep)
				}
			case strings.HasPrefix(name, "dicom"):
				if !hasApp(a, "dicom") {
					t.Fatalf("no flow tagged dicom")
				}
				if !strings.Contains(rep, "dicom.calling_ae") || !strings.Contains(rep, "dicom.called_ae") {
					t.Fatalf("AE titles missing: %s", rep)
				}
			}
		})
	}
}

// TestAnalyzeCredentials is issue 4's third acceptance point through the
// datapath: cleartext logins in http_auth.pcap and telnet.pcap raise alerts
// with a credential factor, and no secret reaches the report.
func TestAnalyzeCredentials(t *testing.T) {
	for _, tc := range []struct{ file, secret string }{
		{"http_auth.pcap", "fail2"},
		{"telnet.pcap", ""},
	} {
		t.Run(tc.file, func(t *testing.T) {
			rep, a := analyze(t, filepath.Join(pcapDir, "ndpi", tc.file))
			if a.Alerts() == 0 || !strings.Contains(rep, "cleartext_credentials") {
				t.Fatalf("no cleartext-credential alert: %s", rep)
			}
			if tc.secret != "" && strings.Contains(rep, tc.secret) {
				t.Fatalf("report leaks the password %q", tc.secret)
			}
		})
	}
}

func hasApp(a *Analysis, app string) bool {
	for _, r := range a.Records {
		if r.App == app {
			return true
		}
	}
	return false
}
