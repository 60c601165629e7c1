// Package gudid reads FDA's Global Unique Device Identification Database
// (GUDID) "delimited full release" as AccessGUDID publishes it
// (https://accessgudid.nlm.nih.gov/download): pipe-delimited text files
// with a header line, of which medmesh reads device.txt (PrimaryDI,
// BrandName, VersionModelNumber, CompanyName, ...), identifiers.txt
// (PrimaryDI, DeviceId, ...), productCodes.txt (PrimaryDI, ProductCode,
// ...) and premarketSubmissions.txt (PrimaryDI, submissionNumber,
// supplementNumber).
package gudid

import (
	"bufio"
	"bytes"
	"fmt"
	"path"
	"slices"
	"strings"
)

// Device is one GUDID device record with its codes.
type Device struct {
	PrimaryDI    string
	Brand        string
	Model        string // VersionModelNumber
	Company      string
	IDs          []string // every device identifier (package levels too)
	ProductCodes []string
	Premarket    []string // 510(k) K numbers, PMA P numbers, De Novo DEN numbers
}

// Files are the four files medmesh reads, by base name.
var Files = []string{"device.txt", "identifiers.txt", "productCodes.txt", "premarketSubmissions.txt"}

// DB is a loaded GUDID release.
type DB struct {
	byDI map[string]*Device
}

// NewDB starts an empty release.
func NewDB() *DB { return &DB{byDI: map[string]*Device{}} }

// Add reads one file of the release; name's base says which. device.txt
// must be added before the others. It returns the number of rows read;
// errors name the line.
func (db *DB) Add(name string, data []byte) (int, error) {
	base := path.Base(name)
	rows, err := table(data, map[string][]string{
		"device.txt":               {"PrimaryDI", "BrandName", "VersionModelNumber", "CompanyName"},
		"identifiers.txt":          {"PrimaryDI", "DeviceId"},
		"productCodes.txt":         {"PrimaryDI", "ProductCode"},
		"premarketSubmissions.txt": {"PrimaryDI", "submissionNumber"},
	}[base])
	if err != nil {
		return 0, err
	}
	for _, r := range rows {
		di := r.get("PrimaryDI")
		if base == "device.txt" {
			if di == "" {
				return 0, fmt.Errorf("line %d: empty PrimaryDI", r.line)
			}
			db.byDI[di] = &Device{PrimaryDI: di, Brand: r.get("BrandName"), Model: r.get("VersionModelNumber"), Company: r.get("CompanyName"), IDs: []string{di}}
			continue
		}
		d := db.byDI[di]
		if d == nil {
			return 0, fmt.Errorf("line %d: PrimaryDI %q is not in device.txt", r.line, di)
		}
		switch base {
		case "identifiers.txt":
			if id := r.get("DeviceId"); id != "" && !slices.Contains(d.IDs, id) {
				d.IDs = append(d.IDs, id)
			}
		case "productCodes.txt":
			if c := r.get("ProductCode"); c != "" {
				d.ProductCodes = append(d.ProductCodes, c)
			}
		case "premarketSubmissions.txt":
			if s := r.get("submissionNumber"); s != "" && !slices.Contains(d.Premarket, s) {
				d.Premarket = append(d.Premarket, s)
			}
		}
	}
	return len(rows), nil
}

// Index finishes loading: every identifier finds its device.
func (db *DB) Index() {
	for _, d := range slices.Collect(mapValues(db.byDI)) {
		for _, id := range d.IDs {
			if _, ok := db.byDI[id]; !ok {
				db.byDI[id] = d
			}
		}
	}
}

func mapValues(m map[string]*Device) func(func(*Device) bool) {
	return func(yield func(*Device) bool) {
		for _, v := range m {
			if !yield(v) {
				return
			}
		}
	}
}

// Lookup finds a device by any of its device identifiers (UDI-DI).
func (db *DB) Lookup(di string) (*Device, bool) {
	d, ok := db.byDI[strings.TrimSpace(di)]
	return d, ok
}

// Devices returns every distinct device, sorted by primary DI.
func (db *DB) Devices() []*Device {
	seen := map[*Device]bool{}
	var out []*Device
	for _, d := range db.byDI {
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(a, b *Device) int { return strings.Compare(a.PrimaryDI, b.PrimaryDI) })
	return out
}

type row struct {
	line int
	idx  map[string]int
	f    []string
}

func (r row) get(k string) string {
	i, ok := r.idx[k]
	if !ok || i >= len(r.f) {
		return ""
	}
	return strings.TrimSpace(r.f[i])
}

// table reads a pipe-delimited file whose header must name want.
func table(data []byte, want []string) ([]row, error) {
	if want == nil {
		return nil, fmt.Errorf("not a GUDID file medmesh reads (want one of %s)", strings.Join(Files, ", "))
	}
	sc := bufio.NewScanner(bytes.NewReader(bytes.TrimPrefix(data, []byte("\ufeff"))))
	sc.Buffer(make([]byte, 64*1024), 4<<20)
	var rows []row
	var idx map[string]int
	var width int
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimRight(sc.Text(), "\r")
		if idx == nil {
			idx = map[string]int{}
			h := strings.Split(line, "|")
			width = len(h)
			for i, k := range h {
				idx[strings.TrimSpace(k)] = i
			}
			for _, k := range want {
				if _, ok := idx[k]; !ok {
					return nil, fmt.Errorf("line 1: header has no %s column", k)
				}
			}
			continue
		}
		if line == "" {
			continue
		}
		f := strings.Split(line, "|")
		if len(f) != width {
			return nil, fmt.Errorf("line %d: %d fields, the header has %d", n, len(f), width)
		}
		rows = append(rows, row{n, idx, f})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("after line %d: %w", n, err)
	}
	if idx == nil {
		return nil, fmt.Errorf("empty file: no header")
	}
	return rows, nil
}
