package safety

import (
	"testing"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// TestTiers is the one table of the safety rule: every class, the tier it
// implies, and whether automatic enforcement against it must wait for an
// operator with and without a recorded tier.
func TestTiers(t *testing.T) {
	const (
		lc  = medmeshv1.Tier_TIER_LIFE_CRITICAL
		cl  = medmeshv1.Tier_TIER_CLINICAL
		nc  = medmeshv1.Tier_TIER_NON_CLINICAL
		unk = medmeshv1.Tier_TIER_UNSPECIFIED
	)
	table := []struct {
		class medmeshv1.DeviceClass
		tier  medmeshv1.Tier
	}{
		{medmeshv1.DeviceClass_DEVICE_CLASS_UNSPECIFIED, unk},
		{medmeshv1.DeviceClass_DEVICE_CLASS_UNKNOWN, nc},
		{medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, lc},
		{medmeshv1.DeviceClass_DEVICE_CLASS_PATIENT_MONITOR, lc},
		{medmeshv1.DeviceClass_DEVICE_CLASS_VENTILATOR, lc},
		{medmeshv1.DeviceClass_DEVICE_CLASS_CENTRAL_STATION, lc},
		{medmeshv1.DeviceClass_DEVICE_CLASS_IMAGING_MODALITY, cl},
		{medmeshv1.DeviceClass_DEVICE_CLASS_PACS, cl},
		{medmeshv1.DeviceClass_DEVICE_CLASS_HL7_INTERFACE_ENGINE, cl},
		{medmeshv1.DeviceClass_DEVICE_CLASS_NURSE_CALL, cl},
		{medmeshv1.DeviceClass_DEVICE_CLASS_BUILDING_AUTOMATION, nc},
		{medmeshv1.DeviceClass_DEVICE_CLASS_NETWORK_INFRASTRUCTURE, nc},
		{medmeshv1.DeviceClass_DEVICE_CLASS_IT_WORKSTATION, nc},
		{medmeshv1.DeviceClass_DEVICE_CLASS_ROUTER, nc},
		{medmeshv1.DeviceClass_DEVICE_CLASS_DHCP_DNS_SERVER, nc},
		{medmeshv1.DeviceClass_DEVICE_CLASS_NTP_SERVER, nc},
		{medmeshv1.DeviceClass_DEVICE_CLASS_SYSLOG_SERVER, nc},
		{medmeshv1.DeviceClass_DEVICE_CLASS_DIRECTORY_SERVER, nc},
	}
	// Every class has a row: a class added to the enum needs a tier
	// decided here, not the default by accident.
	values := medmeshv1.DeviceClass(0).Descriptor().Values()
	if len(table) != values.Len() {
		t.Errorf("%d classes in the table, %d in the enum: give every new class its tier here", len(table), values.Len())
	}
	for _, c := range table {
		if got := TierForClass(c.class); got != c.tier {
			t.Errorf("TierForClass(%v) = %v, want %v", c.class, got, c.tier)
		}
		// With the tier its class implies: life-critical exactly when the
		// tier is life-critical or unknown.
		if got, want := LifeCritical(c.tier, c.class), c.tier == lc || c.tier == unk; got != want {
			t.Errorf("LifeCritical(%v, %v) = %v, want %v", c.tier, c.class, got, want)
		}
		if got, want := Why(c.tier, c.class) != "", c.tier == lc || c.tier == unk; got != want {
			t.Errorf("Why(%v, %v) = %q", c.tier, c.class, Why(c.tier, c.class))
		}
		// An unknown tier is life-critical whatever the class.
		if !LifeCritical(unk, c.class) {
			t.Errorf("LifeCritical(unknown tier, %v) = false", c.class)
		}
		// A life-critical class stays life-critical whatever tier is recorded.
		if c.tier == lc && (!LifeCritical(nc, c.class) || !LifeCritical(cl, c.class)) {
			t.Errorf("life-critical class %v with a lower recorded tier is not life-critical", c.class)
		}
	}
	// An unknown or class-unspecified device counts as life-critical.
	if !LifeCritical(unk, medmeshv1.DeviceClass_DEVICE_CLASS_UNSPECIFIED) {
		t.Error("unknown device is not life-critical")
	}
	for _, c := range []struct {
		from, to medmeshv1.Tier
		lowers   bool
	}{
		{lc, nc, true}, {unk, nc, true}, {unk, cl, true}, {lc, unk, false}, {unk, lc, false},
		{cl, nc, true}, {nc, cl, false}, {nc, lc, false}, {cl, cl, false},
	} {
		if got := Lowers(c.from, c.to); got != c.lowers {
			t.Errorf("Lowers(%v, %v) = %v, want %v", c.from, c.to, got, c.lowers)
		}
	}
}
