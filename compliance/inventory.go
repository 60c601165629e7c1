package compliance

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
	"github.com/medmesh/medmesh/risk"
)

// ReadInventories reads devices from files that are either the JSON report
// of `medmesh replay --report -o json` (devices and alerts as the sensor
// engine found them; Source is the file's name) or JSON Lines as `medmesh
// risk assess` reads them (one device per line; the identity becomes the
// device's labels, as an operator's CMDB import would set them). Devices
// are joined by MAC across files: labels add up, alerts too, and the
// observed record wins over an inventory line. A line without a MAC is
// keyed "inventory:NAME".
func ReadInventories(paths []string) ([]Device, error) {
	var out []Device
	index := map[string]int{}
	addDevice := func(d Device) {
		if i, ok := index[d.Device.GetMac()]; ok {
			prev := &out[i]
			for k, v := range d.Device.GetLabels() {
				if prev.Device.Labels == nil {
					prev.Device.Labels = map[string]string{}
				}
				prev.Device.Labels[k] = v
			}
			prev.Alerts = append(prev.Alerts, d.Alerts...)
			prev.Device.Hostname = cmp.Or(prev.Device.GetHostname(), d.Device.GetHostname())
			if len(d.Device.GetProtocols()) > 0 && len(prev.Device.GetProtocols()) == 0 {
				labels := prev.Device.Labels
				prev.Device, prev.Source = d.Device, d.Source
				prev.Device.Labels = labels
			}
			return
		}
		index[d.Device.GetMac()] = len(out)
		out = append(out, d)
	}
	for _, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		var report struct {
			Devices []json.RawMessage `json:"devices"`
			Alerts  []json.RawMessage `json:"alerts"`
		}
		if json.Unmarshal(b, &report) == nil && report.Devices != nil {
			source := filepath.Base(path)
			alerts := map[string][]*medmeshv1.Alert{}
			for i, raw := range report.Alerts {
				a := new(medmeshv1.Alert)
				if err := protojson.Unmarshal(raw, a); err != nil {
					return nil, fmt.Errorf("%s: alert %d: %w", path, i+1, err)
				}
				alerts[a.GetDeviceMac()] = append(alerts[a.GetDeviceMac()], a)
			}
			for i, raw := range report.Devices {
				d := new(medmeshv1.Device)
				if err := protojson.Unmarshal(raw, d); err != nil {
					return nil, fmt.Errorf("%s: device %d: %w", path, i+1, err)
				}
				if d.GetMac() == "" {
					return nil, fmt.Errorf("%s: device %d has no mac", path, i+1)
				}
				addDevice(Device{Device: d, Alerts: alerts[d.GetMac()], Source: source})
			}
			continue
		}
		inv, err := risk.ReadInventory(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("%s: neither a replay report (an object with \"devices\") nor JSON Lines: %w", path, err)
		}
		for _, r := range inv {
			mac := strings.ToLower(r.MAC)
			if mac == "" {
				mac = "inventory:" + cmp.Or(r.Name, r.IP, strings.TrimSpace(r.Vendor+" "+r.Model+" "+r.Serial))
			}
			labels := map[string]string{}
			for k, v := range map[string]string{"vendor": r.Vendor, "model": r.Model, "version": r.Version, "os": r.OS, "udi_di": r.UDIDI} {
				if v != "" {
					labels[k] = v
				}
			}
			d := &medmeshv1.Device{Mac: mac, Hostname: r.Name, Vendor: r.Vendor, Model: r.Model, Firmware: r.Version, Labels: labels}
			if r.IP != "" {
				d.IpAddresses = []string{r.IP}
			}
			addDevice(Device{Device: d})
		}
	}
	return out, nil
}
