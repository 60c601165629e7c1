// Package safety owns medmesh's patient-safety classification: the tier a
// device class implies, and which devices are life-critical. Every
// component (the sensor's identity, the coordinator's state machine and its
// response rules) asks this package, so they cannot disagree.
//
// The rule: a device is treated as life-critical when its tier is
// life-critical, when its class implies that tier, or when nobody has
// established its tier yet (unknown counts as life-critical). Automatic
// enforcement against such a device waits for an operator's approval.
package safety

import medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"

// TierForClass is the tier a device class implies when no operator
// overrode it. An unspecified class implies an unspecified (unknown) tier;
// a class the sensor could not narrow down (DEVICE_CLASS_UNKNOWN) and the
// other non-medical classes are non-clinical.
func TierForClass(c medmeshv1.DeviceClass) medmeshv1.Tier {
	switch c {
	case medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP,
		medmeshv1.DeviceClass_DEVICE_CLASS_PATIENT_MONITOR,
		medmeshv1.DeviceClass_DEVICE_CLASS_VENTILATOR,
		medmeshv1.DeviceClass_DEVICE_CLASS_CENTRAL_STATION:
		return medmeshv1.Tier_TIER_LIFE_CRITICAL
	case medmeshv1.DeviceClass_DEVICE_CLASS_IMAGING_MODALITY,
		medmeshv1.DeviceClass_DEVICE_CLASS_PACS,
		medmeshv1.DeviceClass_DEVICE_CLASS_HL7_INTERFACE_ENGINE,
		medmeshv1.DeviceClass_DEVICE_CLASS_NURSE_CALL:
		return medmeshv1.Tier_TIER_CLINICAL
	case medmeshv1.DeviceClass_DEVICE_CLASS_UNSPECIFIED:
		return medmeshv1.Tier_TIER_UNSPECIFIED
	case medmeshv1.DeviceClass_DEVICE_CLASS_ROUTER,
		medmeshv1.DeviceClass_DEVICE_CLASS_DHCP_DNS_SERVER,
		medmeshv1.DeviceClass_DEVICE_CLASS_NTP_SERVER,
		medmeshv1.DeviceClass_DEVICE_CLASS_SYSLOG_SERVER,
		medmeshv1.DeviceClass_DEVICE_CLASS_DIRECTORY_SERVER,
		medmeshv1.DeviceClass_DEVICE_CLASS_NETWORK_INFRASTRUCTURE:
		// Campus infrastructure: routers and the servers devices ask for
		// addresses, names, time, logging and directory lookups.
		return medmeshv1.Tier_TIER_NON_CLINICAL
	default:
		return medmeshv1.Tier_TIER_NON_CLINICAL
	}
}

// LifeCritical reports whether a device of this tier and class must never
// be blocked automatically: a life-critical tier, a life-critical class
// (whatever the recorded tier says), or an unknown tier.
func LifeCritical(tier medmeshv1.Tier, class medmeshv1.DeviceClass) bool {
	return tier == medmeshv1.Tier_TIER_LIFE_CRITICAL || tier == medmeshv1.Tier_TIER_UNSPECIFIED ||
		TierForClass(class) == medmeshv1.Tier_TIER_LIFE_CRITICAL
}

// Why says why LifeCritical holds ("" when it does not), for decision
// reasons.
func Why(tier medmeshv1.Tier, class medmeshv1.DeviceClass) string {
	switch {
	case tier == medmeshv1.Tier_TIER_UNSPECIFIED:
		return "device tier unknown"
	case tier == medmeshv1.Tier_TIER_LIFE_CRITICAL:
		return "life-critical device"
	case TierForClass(class) == medmeshv1.Tier_TIER_LIFE_CRITICAL:
		return "life-critical class"
	}
	return ""
}

// Protection ranks tiers by how carefully a device must be treated (higher
// is more careful); an unknown tier ranks with life-critical until someone
// establishes it.
func Protection(t medmeshv1.Tier) int {
	switch t {
	case medmeshv1.Tier_TIER_LIFE_CRITICAL, medmeshv1.Tier_TIER_UNSPECIFIED:
		return 3
	case medmeshv1.Tier_TIER_CLINICAL:
		return 2
	default:
		return 1
	}
}

// Lowers reports whether moving a device from tier from to tier to would
// lower its protection.
func Lowers(from, to medmeshv1.Tier) bool { return Protection(to) < Protection(from) }
