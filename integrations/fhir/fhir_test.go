package fhir

import (
	"encoding/json"
	"reflect"
	"testing"

	model "github.com/samply/golang-fhir-models/fhir-models/fhir"
	"google.golang.org/protobuf/proto"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func devices() []*medmeshv1.Device {
	return []*medmeshv1.Device{
		{
			Mac: "00:1b:44:11:3a:b7", IpAddresses: []string{"10.1.0.5", "fd00::5"}, Vendor: "B. Braun", Model: "Perfusor Space",
			Hostname: "pump-icu-07", DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, Tier: medmeshv1.Tier_TIER_LIFE_CRITICAL,
			Firmware: "3.2.1", Location: &medmeshv1.Location{Campus: "north", Floor: "3", Zone: "icu"},
			Identifiers: &medmeshv1.Identifiers{Hl7Udis: []string{"(01)04046964001234(21)PS-20931"}},
			Asset:       &medmeshv1.Asset{Serial: "PS-20931", Owner: "Biomedical Engineering", UdiDi: "04046964001234", RecordId: "BM-0042"},
		},
		{Mac: "ip:10.9.8.7", Tier: medmeshv1.Tier_TIER_UNSPECIFIED},
		{
			Mac: "00:00:00:00:00:02", DeviceClass: medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION, Tier: medmeshv1.Tier_TIER_CLINICAL,
			Asset: &medmeshv1.Asset{Manufacturer: "Dell", Model: "OptiPlex", Version: "10.0.19045", Udi: "+H123PS1234", Criticality: medmeshv1.Tier_TIER_CLINICAL},
		},
	}
}

// TestBundleValidatesAgainstR4Model: the exported Bundle decodes strictly
// into the R4 Go model (no element R4 does not define, every code from its
// value set) and encodes back to the same JSON.
func TestBundleValidatesAgainstR4Model(t *testing.T) {
	for _, typ := range []model.BundleType{model.BundleTypeCollection, model.BundleTypeSearchset} {
		raw, err := Bundle(devices(), typ, "https://c1.example:7405/fhir")
		if err != nil {
			t.Fatal(err)
		}
		devs, err := ParseBundle(raw)
		if err != nil {
			t.Fatalf("%s: the export does not validate: %v\n%s", typ, err, raw)
		}
		if len(devs) != 3 {
			t.Fatalf("%d devices", len(devs))
		}
		var b map[string]any
		if err := json.Unmarshal(raw, &b); err != nil {
			t.Fatal(err)
		}
		if b["resourceType"] != "Bundle" || b["type"] != typ.Code() {
			t.Fatalf("bundle header %v %v", b["resourceType"], b["type"])
		}
		entries := b["entry"].([]any)
		for i, d := range devs {
			again, err := json.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			var x, y any
			json.Unmarshal(again, &x)
			y = entries[i].(map[string]any)["resource"]
			if !reflect.DeepEqual(x, y) {
				t.Errorf("device %d does not round-trip through the model:\n%s\n%v", i, again, y)
			}
		}
	}
	d := Device(devices()[0])
	if *d.Id != "00-1b-44-11-3a-b7" || *d.Manufacturer != "B. Braun" || *d.SerialNumber != "PS-20931" ||
		*d.UdiCarrier[0].CarrierHRF != "(01)04046964001234(21)PS-20931" || *d.UdiCarrier[0].DeviceIdentifier != "04046964001234" ||
		*d.Location.Display != "north//3/icu" || *d.Owner.Display != "Biomedical Engineering" || d.Version[0].Value != "3.2.1" ||
		*d.Safety[0].Coding[0].Code != "life-critical" || *d.Type.Coding[0].Code != "infusion-pump" || *d.Status != model.FHIRDeviceStatusActive {
		t.Errorf("mapping: %+v", d)
	}
}

func TestRecordReadsBackTheExport(t *testing.T) {
	for _, d := range devices() {
		r, err := Record(Device(d))
		if err != nil {
			t.Fatal(err)
		}
		a := d.GetAsset()
		want := &medmeshv1.AssetRecord{Location: FormatLocation(d.GetLocation()), Asset: &medmeshv1.Asset{
			Manufacturer: deref(first(d.GetVendor(), a.GetManufacturer())), Model: deref(first(d.GetModel(), a.GetModel())), Version: deref(first(d.GetFirmware(), a.GetVersion())),
			Serial: a.GetSerial(), UdiDi: a.GetUdiDi(), Owner: a.GetOwner(), RecordId: a.GetRecordId(), Criticality: d.GetTier(),
		}}
		if len(UDIs(d)) > 0 {
			want.Asset.Udi = UDIs(d)[0]
		}
		if ip, ok := stringsCutIP(d.GetMac()); ok {
			want.Ip = ip
		} else {
			want.Mac = d.GetMac()
			if len(d.GetIpAddresses()) > 0 {
				want.Ip = d.GetIpAddresses()[0]
			}
		}
		if !proto.Equal(r, want) {
			t.Errorf("%s:\n got %v\nwant %v", d.GetMac(), r, want)
		}
	}
}

func stringsCutIP(mac string) (string, bool) {
	if len(mac) > 3 && mac[:3] == "ip:" {
		return mac[3:], true
	}
	return "", false
}

func TestIDs(t *testing.T) {
	for _, mac := range []string{"00:1b:44:11:3a:b7", "ip:10.9.8.7", "ip:fd00::5"} {
		id := ID(mac)
		if !idPattern.MatchString(id) {
			t.Errorf("%s: id %q is not a FHIR id", mac, id)
		}
		if back, ok := MAC(id); !ok || back != mac {
			t.Errorf("%s -> %s -> %s %v", mac, id, back, ok)
		}
	}
	for _, bad := range []string{"", "ip-zz", "ip-0a0b", "00:1b:44:11:3a:b7", "hello"} {
		if m, ok := MAC(bad); ok {
			t.Errorf("MAC(%q) = %q", bad, m)
		}
	}
}
