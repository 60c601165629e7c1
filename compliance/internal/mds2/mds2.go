// Package mds2 reads a Manufacturer Disclosure Statement for Medical Device Security (ANSI/NEMA HN 1-2019) workbook.
//
// The form is published by NEMA/MITA as "ANSI/NEMA HN 1-2019, Manufacturer
// Disclosure Statement for Medical Device Security" (an Excel workbook with
// instructions, https://www.nema.org/standards/view/manufacturer-disclosure-statement-for-medical-device-security).
// Its "MDS2" sheet lists one question a row: a question ID in the first
// column ("DOC-1", "AUTH-1", "TXCF-2" ...), the question, and the
// manufacturer's answer ("Yes", "No", "N/A", "See Note", or text for the
// DOC rows) in the column headed "Yes, No, N/A, or See Note"; a note
// column may follow. Parse finds that header on any sheet, so vendor
// copies with an extra cover sheet or moved columns still read; without
// the header the answer is the cell right of the question.
package mds2

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"

	"github.com/xuri/excelize/v2"
)

// Answer is a manufacturer's answer to one question.
type Answer string

const (
	Yes     Answer = "Yes"
	No      Answer = "No"
	NA      Answer = "N/A"
	SeeNote Answer = "See Note"
	// Other is any other text (DOC rows, free answers); Item.Text has it.
	Other Answer = "other"
)

// Item is one answered question.
type Item struct {
	ID       string // "TXCF-2"
	Question string
	Answer   Answer
	Text     string // the answer cell as written
	Note     string
	Sheet    string
	Row      int
}

// Form is one device model's disclosure statement.
type Form struct {
	// Name is where it was read from (a file name).
	Name         string
	Manufacturer string // DOC-1
	Model        string // DOC-3
	Items        map[string]Item
}

// Limits keep a hostile workbook from costing more than a real one.
const (
	maxBytes = 16 << 20
	maxRows  = 5000
	maxCell  = 4096
	// A published MDS2 workbook is a few hundred KiB unpacked; these bound
	// what a small, highly compressed file can make excelize inflate and
	// parse (a 10 KiB file could otherwise unpack to tens of MiB of XML).
	unzipLimit    = 16 << 20
	unzipXMLLimit = 4 << 20
)

var idRE = regexp.MustCompile(`^([A-Z]{3,4})-([0-9]{1,2}(?:\.[0-9]{1,2})?)$`)

// ErrNoQuestions says the workbook holds no MDS2 question rows.
var ErrNoQuestions = errors.New("no MDS2 question rows (IDs like AUTH-1) found")

// Parse reads a workbook. name is for messages and Form.Name.
func Parse(r io.Reader, name string) (*Form, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("mds2 %s: %w", name, err)
	}
	if len(b) > maxBytes {
		return nil, fmt.Errorf("mds2 %s: larger than %d bytes", name, maxBytes)
	}
	f, err := excelize.OpenReader(bytes.NewReader(b), excelize.Options{UnzipSizeLimit: unzipLimit, UnzipXMLSizeLimit: unzipXMLLimit})
	if err != nil {
		return nil, fmt.Errorf("mds2 %s: not an Excel workbook: %w", name, err)
	}
	defer f.Close()
	form := &Form{Name: name, Items: map[string]Item{}}
	for _, sheet := range f.GetSheetList() {
		rows, err := f.GetRows(sheet)
		if err != nil {
			return nil, fmt.Errorf("mds2 %s: sheet %q: %w", name, sheet, err)
		}
		if len(rows) > maxRows {
			return nil, fmt.Errorf("mds2 %s: sheet %q has more than %d rows", name, sheet, maxRows)
		}
		ansCol, noteCol := -1, -1
		for i, row := range rows {
			if c := headerCol(row, "yes, no, n/a"); c >= 0 {
				ansCol, noteCol = c, headerCol(row, "note #")
				continue
			}
			if len(row) == 0 {
				continue
			}
			id := strings.ToUpper(strings.TrimSpace(row[0]))
			if !idRE.MatchString(id) {
				continue
			}
			cell := func(c int) string {
				if c < 0 || c >= len(row) {
					return ""
				}
				s := strings.TrimSpace(row[c])
				if len(s) > maxCell {
					s = s[:maxCell]
				}
				return s
			}
			it := Item{ID: id, Question: cell(1), Sheet: sheet, Row: i + 1}
			ac := ansCol
			if ac < 0 {
				ac = 2
			}
			it.Text = cell(ac)
			if noteCol >= 0 && noteCol != ac {
				it.Note = cell(noteCol)
			}
			it.Answer = normalize(it.Text)
			if _, dup := form.Items[id]; dup {
				return nil, fmt.Errorf("mds2 %s: sheet %q row %d: question %s answered twice", name, sheet, i+1, id)
			}
			form.Items[id] = it
		}
	}
	if len(form.Items) == 0 {
		return nil, fmt.Errorf("mds2 %s: %w", name, ErrNoQuestions)
	}
	form.Manufacturer = form.Items["DOC-1"].Text
	form.Model = form.Items["DOC-3"].Text
	if form.Model == "" {
		return nil, fmt.Errorf("mds2 %s: DOC-3 (device model) is not answered", name)
	}
	return form, nil
}

func headerCol(row []string, prefix string) int {
	return slices.IndexFunc(row, func(s string) bool {
		return strings.HasPrefix(strings.ToLower(strings.TrimSpace(s)), prefix)
	})
}

func normalize(s string) Answer {
	switch strings.ToLower(strings.TrimSuffix(strings.TrimSpace(s), ".")) {
	case "yes", "y":
		return Yes
	case "no", "n":
		return No
	case "n/a", "na", "not applicable":
		return NA
	case "see note", "see notes":
		return SeeNote
	}
	return Other
}

// Get returns the answer to id, and whether the form answers it with Yes
// or No (the answers evidence can rest on).
func (f *Form) Get(id string) (Item, bool) {
	it, ok := f.Items[id]
	return it, ok && (it.Answer == Yes || it.Answer == No)
}

// IDs lists the answered question IDs in order.
func (f *Form) IDs() []string {
	ids := make([]string, 0, len(f.Items))
	for id := range f.Items {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
