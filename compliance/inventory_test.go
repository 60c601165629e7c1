package compliance

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReadInventories joins a replay report and a JSON Lines inventory
// by MAC: the observed record keeps its traffic, the CMDB line adds the
// identity as labels; a line without a MAC is its own device.
func TestReadInventories(t *testing.T) {
	devs, err := ReadInventories([]string{"testdata/hl7-adt-report.json", "testdata/cmdb.jsonl"})
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 3 {
		t.Fatalf("%d devices, want 2 from the capture and 1 from the CMDB alone", len(devs))
	}
	var pump, mon *Device
	for i := range devs {
		switch devs[i].Device.GetMac() {
		case "00:0c:29:b5:b6:48":
			pump = &devs[i]
		case "inventory:mon-3a-07":
			mon = &devs[i]
		}
	}
	if pump == nil || pump.Source != "hl7-adt-report.json" || pump.Device.GetLabels()["model"] != "Infuser 3000" || pump.Device.GetProtocols()[0] != "hl7" || pump.Device.GetHostname() != "pump-3a-01" {
		t.Errorf("pump %+v", pump)
	}
	if mon == nil || mon.Source != "" || mon.Device.GetLabels()["version"] != "B.06.17" {
		t.Errorf("monitor %+v", mon)
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(`{"devices":[{"mac":"a","tier":"TIER_NOPE"}]}`), 0o600)
	if _, err := ReadInventories([]string{bad}); err == nil || !strings.Contains(err.Error(), "bad.json: device 1") {
		t.Errorf("a bad device: %v", err)
	}
}

// FuzzReadInventory: any file is either refused or read into devices that
// Evaluate takes without panicking.
func FuzzReadInventory(f *testing.F) {
	for _, p := range []string{"testdata/hl7-adt-report.json", "testdata/cmdb.jsonl"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"devices":[{"mac":"a","protocols":["hl7","telnet"],"services":[{"app":"dicom"}]}],"alerts":[{"device_mac":"a","kind":"default_credentials","login":{"protocol":"ftp"}},{"device_mac":"a","kind":"failed_login_burst"}]}`))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(dir, "inv")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		devs, err := ReadInventories([]string{path})
		if err != nil {
			return
		}
		if _, err := Evaluate(Input{Devices: devs, Now: time.Unix(1764547200, 0)}); err != nil {
			t.Fatalf("evaluate: %v", err)
		}
	})
}
