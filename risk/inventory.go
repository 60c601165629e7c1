package risk

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// ReadInventory reads an inventory in JSON Lines: one Device object per
// line; blank lines and lines starting with # are skipped. Errors name the
// line. Unknown fields are errors, so a misspelt "vendor" is not silently
// an unknown vendor.
func ReadInventory(r io.Reader) ([]Device, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	var out []Device
	n := 0
	for sc.Scan() {
		n++
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		var d Device
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&d); err != nil {
			return nil, fmt.Errorf("inventory line %d: %w", n, err)
		}
		if dec.More() {
			return nil, fmt.Errorf("inventory line %d: more than one JSON value", n)
		}
		if strings.TrimSpace(d.Vendor+d.Model+d.OS+d.UDIDI+d.SBOM) == "" {
			return nil, fmt.Errorf("inventory line %d: a device needs at least one of vendor, model, os, udi_di, sbom", n)
		}
		out = append(out, d)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("inventory after line %d: %w", n, err)
	}
	return out, nil
}
