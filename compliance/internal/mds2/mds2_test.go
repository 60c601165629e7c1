package mds2

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xuri/excelize/v2"
)

func open(t *testing.T, name string) *Form {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	form, err := Parse(f, name)
	if err != nil {
		t.Fatal(err)
	}
	return form
}

// TestParseFixture reads the fixture workbook written in the form's layout
// and checks the header and answers the evidence rules use.
func TestParseFixture(t *testing.T) {
	f := open(t, "acme-infuser-3000.xlsx")
	if f.Manufacturer != "Acme Medical" || f.Model != "Infuser 3000" {
		t.Fatalf("DOC-1/DOC-3 = %q/%q", f.Manufacturer, f.Model)
	}
	for id, want := range map[string]Answer{"TXCF-2": No, "NAUT-1": No, "AUDT-1": No, "SBOM-1": Yes, "MLDP-2": NA, "PAUT-6": No, "DOC-7": Other} {
		if got := f.Items[id].Answer; got != want {
			t.Errorf("%s = %q (%q), want %q", id, got, f.Items[id].Text, want)
		}
	}
	if it := f.Items["TXCF-2"]; it.Note != "3" || it.Sheet != "MDS2" || !strings.Contains(it.Question, "encrypted prior to transmission") {
		t.Errorf("TXCF-2 = %+v", it)
	}
	if _, ok := f.Get("MLDP-2"); ok {
		t.Error("Get(MLDP-2) reported a Yes/No answer for N/A")
	}
	if n := len(f.IDs()); n != 35 {
		t.Errorf("%d questions, want 35 (8 DOC + 27)", n)
	}
	g := open(t, "acme-imager-9.xlsx")
	if it, ok := g.Get("TXCF-2"); !ok || it.Answer != Yes {
		t.Errorf("imager TXCF-2 = %+v", it)
	}
	if g.Items["RMOT-1"].Answer != SeeNote {
		t.Errorf("imager RMOT-1 = %+v", g.Items["RMOT-1"])
	}
}

// TestFixtureIsGenerated: the committed workbooks are what mkfixture
// writes, byte for byte.
func TestFixtureIsGenerated(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: runs go run")
	}
	dir := t.TempDir()
	cmd := exec.Command("go", "run", "./testdata/mkfixture", dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mkfixture: %v\n%s", err, out)
	}
	for _, n := range []string{"acme-infuser-3000.xlsx", "acme-imager-9.xlsx"} {
		a, _ := os.ReadFile(filepath.Join("testdata", n))
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("testdata/%s differs from what mkfixture writes (%v): go run ./compliance/internal/mds2/testdata/mkfixture compliance/internal/mds2/testdata", n, err)
		}
	}
}

// TestParseLayouts: a vendor copy with a cover sheet and the answer
// column moved still reads by its header; a workbook without question
// rows, or without a model, is refused with the reason.
func TestParseLayouts(t *testing.T) {
	build := func(fill func(f *excelize.File)) []byte {
		f := excelize.NewFile()
		fill(f)
		var b bytes.Buffer
		if err := f.Write(&b); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	moved := build(func(f *excelize.File) {
		f.SetCellStr("Sheet1", "A1", "Cover page")
		f.NewSheet("Form")
		f.SetSheetRow("Form", "A3", &[]any{"Question ID", "Question", "Note #", "Reference", "Yes, No, N/A, or See Note"})
		f.SetSheetRow("Form", "A4", &[]any{"DOC-3", "Device Model", "", "", "Model X"})
		f.SetSheetRow("Form", "A5", &[]any{"txcf-2", "Encrypted?", "7", "", "no"})
	})
	form, err := Parse(bytes.NewReader(moved), "moved.xlsx")
	if err != nil {
		t.Fatal(err)
	}
	if it := form.Items["TXCF-2"]; it.Answer != No || it.Note != "7" || form.Model != "Model X" {
		t.Errorf("moved layout: %+v, model %q", it, form.Model)
	}
	empty := build(func(f *excelize.File) { f.SetCellStr("Sheet1", "A1", "nothing") })
	if _, err := Parse(bytes.NewReader(empty), "empty.xlsx"); !errors.Is(err, ErrNoQuestions) {
		t.Errorf("empty workbook: %v", err)
	}
	nomodel := build(func(f *excelize.File) { f.SetSheetRow("Sheet1", "A1", &[]any{"AUTH-1", "q", "Yes"}) })
	if _, err := Parse(bytes.NewReader(nomodel), "nomodel.xlsx"); err == nil || !strings.Contains(err.Error(), "DOC-3") {
		t.Errorf("no model: %v", err)
	}
	if _, err := Parse(strings.NewReader("not a zip"), "junk.xlsx"); err == nil || !strings.Contains(err.Error(), "junk.xlsx") {
		t.Errorf("junk: %v", err)
	}
}

// FuzzParse: any bytes either parse or fail with an error; never a panic,
// never unbounded work.
func FuzzParse(f *testing.F) {
	for _, n := range []string{"acme-infuser-3000.xlsx", "acme-imager-9.xlsx"} {
		b, err := os.ReadFile(filepath.Join("testdata", n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("PK\x03\x04"))
	f.Fuzz(func(t *testing.T, b []byte) {
		form, err := Parse(bytes.NewReader(b), "fuzz.xlsx")
		if err == nil && (form.Model == "" || len(form.Items) == 0) {
			t.Fatalf("accepted a form without a model or questions: %+v", form)
		}
	})
}
