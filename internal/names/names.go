// Package names spells what people read: enum values, IP protocols and port
// ranges, the same way in every command, view and report.
//
// An enum value is its proto name without the enum's prefix, lower-case,
// words joined by hyphens: DEVICE_CLASS_INFUSION_PUMP is "infusion-pump",
// TIER_LIFE_CRITICAL is "life-critical". The CLI's flags accept the same
// spelling (Parse).
package names

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// Enum spells e as "infusion-pump"; the unspecified value (number 0) is ""
// and a number the enum does not define is its decimal number.
func Enum(e protoreflect.Enum) string {
	if e == nil {
		return ""
	}
	d := e.Descriptor()
	v := d.Values().ByNumber(e.Number())
	if v == nil {
		return strconv.Itoa(int(e.Number()))
	}
	if v.Number() == 0 {
		return ""
	}
	return spell(strings.TrimPrefix(string(v.Name()), prefix(d)))
}

// Values spells every value of d but the unspecified one, in number order.
func Values(d protoreflect.EnumDescriptor) []string {
	var out []string
	p := prefix(d)
	for i := 0; i < d.Values().Len(); i++ {
		if v := d.Values().Get(i); v.Number() != 0 {
			out = append(out, spell(strings.TrimPrefix(string(v.Name()), p)))
		}
	}
	return out
}

// Parse reads a value of d spelled as Enum spells it, or as its proto name
// with or without the prefix ("infusion-pump", "INFUSION_PUMP",
// "DEVICE_CLASS_INFUSION_PUMP"). "" is the unspecified value.
func Parse(d protoreflect.EnumDescriptor, s string) (protoreflect.EnumNumber, error) {
	if s == "" {
		return 0, nil
	}
	want := strings.ToUpper(strings.ReplaceAll(s, "-", "_"))
	p := prefix(d)
	for i := 0; i < d.Values().Len(); i++ {
		v := d.Values().Get(i)
		if v.Number() == 0 {
			continue
		}
		if n := string(v.Name()); n == want || n == p+want {
			return v.Number(), nil
		}
	}
	return 0, fmt.Errorf("%q is not a %s: want one of %s", s, spell(strings.TrimSuffix(p, "_")), strings.Join(Values(d), ", "))
}

// prefix is the common prefix of d's value names, e.g. "DEVICE_CLASS_",
// read off the unspecified value (DEVICE_CLASS_UNSPECIFIED).
func prefix(d protoreflect.EnumDescriptor) string {
	if z := d.Values().ByNumber(0); z != nil {
		return strings.TrimSuffix(string(z.Name()), "UNSPECIFIED")
	}
	return ""
}

func spell(name string) string { return strings.ReplaceAll(strings.ToLower(name), "_", "-") }

// IP protocol numbers (IANA "Assigned Internet Protocol Numbers").
var protocols = [...]string{
	1:   "icmp",
	2:   "igmp",
	4:   "ipip",
	6:   "tcp",
	17:  "udp",
	41:  "ipv6",
	47:  "gre",
	50:  "esp",
	51:  "ah",
	58:  "icmpv6",
	89:  "ospf",
	103: "pim",
	112: "vrrp",
	132: "sctp",
	136: "udplite",
}

// Protocol spells an IP protocol number: "tcp", "udp", "icmpv6"; one
// without a common name is "ip-proto-N". 0, which policies use for any
// protocol, is "any".
func Protocol(p uint32) string {
	if p == 0 {
		return "any"
	}
	if p < uint32(len(protocols)) && protocols[p] != "" {
		return protocols[p]
	}
	return "ip-proto-" + strconv.FormatUint(uint64(p), 10)
}

// Ports spells a port range: "67" when lo == hi, "8000-8100" otherwise,
// and "any" when both are 0 (a rule without ports).
func Ports(lo, hi uint32) string {
	switch {
	case lo == 0 && hi == 0:
		return "any"
	case lo == hi:
		return strconv.FormatUint(uint64(lo), 10)
	}
	return strconv.FormatUint(uint64(lo), 10) + "-" + strconv.FormatUint(uint64(hi), 10)
}

// DeviceKey is a device's key as the coordinators store it: a MAC in any
// common notation (00:1b:44:11:3a:b7, 00-1B-44-11-3A-B7, 001b.4411.3ab7)
// in its lower-case colon form, or "ip:ADDRESS" (canonical) for a device
// known only by its address. ok is false for anything else.
func DeviceKey(s string) (key string, ok bool) {
	if rest, isIP := strings.CutPrefix(s, "ip:"); isIP {
		a, err := netip.ParseAddr(rest)
		if err != nil {
			return "", false
		}
		return "ip:" + a.String(), true
	}
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return "", false
	}
	return hw.String(), true
}
