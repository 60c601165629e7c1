package names

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func TestEnum(t *testing.T) {
	for _, tc := range []struct {
		e    protoreflect.Enum
		want string
	}{
		{medmeshv1.DeviceClass_DEVICE_CLASS_INFUSION_PUMP, "infusion-pump"},
		{medmeshv1.DeviceClass_DEVICE_CLASS_UNSPECIFIED, ""},
		{medmeshv1.Tier_TIER_LIFE_CRITICAL, "life-critical"},
		{medmeshv1.Tier_TIER_NON_CLINICAL, "non-clinical"},
		{medmeshv1.DecisionAction_DECISION_ACTION_ENFORCE_POLICY, "enforce-policy"},
		{medmeshv1.DecisionState_DECISION_STATE_PENDING_APPROVAL, "pending-approval"},
		{medmeshv1.PolicyMode_POLICY_MODE_ENFORCE, "enforce"},
		{medmeshv1.Direction_DIRECTION_OUTBOUND, "outbound"},
		{medmeshv1.Tier(99), "99"},
		{nil, ""},
	} {
		if got := Enum(tc.e); got != tc.want {
			t.Errorf("Enum(%v) = %q, want %q", tc.e, got, tc.want)
		}
	}
}

// TestEnumRoundTrip checks that every value of every enum the CLI shows is
// spelled without underscores or its prefix, and parses back to itself.
func TestEnumRoundTrip(t *testing.T) {
	for _, d := range []protoreflect.EnumDescriptor{
		medmeshv1.DeviceClass(0).Descriptor(), medmeshv1.Tier(0).Descriptor(),
		medmeshv1.DecisionAction(0).Descriptor(), medmeshv1.DecisionState(0).Descriptor(),
		medmeshv1.PolicyMode(0).Descriptor(), medmeshv1.Direction(0).Descriptor(),
	} {
		typ, err := protoregistry.GlobalTypes.FindEnumByName(d.FullName())
		if err != nil {
			t.Fatal(err)
		}
		vals := Values(d)
		if len(vals) != d.Values().Len()-1 {
			t.Errorf("%s: %d spellings for %d values", d.FullName(), len(vals), d.Values().Len())
		}
		for i := 0; i < d.Values().Len(); i++ {
			v := d.Values().Get(i)
			if v.Number() == 0 {
				continue
			}
			s := Enum(typ.New(v.Number()))
			if s == "" || strings.ContainsAny(s, "_ ") || s != strings.ToLower(s) {
				t.Errorf("%s: %q is not spelled like the CLI", v.FullName(), s)
			}
			for _, in := range []string{s, strings.ToUpper(strings.ReplaceAll(s, "-", "_")), string(v.Name())} {
				if n, err := Parse(d, in); err != nil || n != v.Number() {
					t.Errorf("Parse(%s, %q) = %d, %v; want %d", d.Name(), in, n, err, v.Number())
				}
			}
		}
	}
}

func TestParseRejects(t *testing.T) {
	d := medmeshv1.Tier(0).Descriptor()
	if n, err := Parse(d, ""); err != nil || n != 0 {
		t.Errorf(`Parse("") = %d, %v; want the unspecified value`, n, err)
	}
	for _, in := range []string{"unspecified", "TIER_UNSPECIFIED", "life critical", "infusion-pump"} {
		_, err := Parse(d, in)
		if err == nil {
			t.Errorf("Parse(tier, %q) accepted", in)
			continue
		}
		if !strings.Contains(err.Error(), "life-critical, clinical, non-clinical") {
			t.Errorf("Parse(tier, %q): %v does not list the spellings", in, err)
		}
	}
}

func TestProtocol(t *testing.T) {
	for _, tc := range []struct {
		p    uint32
		want string
	}{
		{0, "any"}, {1, "icmp"}, {6, "tcp"}, {17, "udp"}, {58, "icmpv6"}, {132, "sctp"},
		{47, "gre"}, {3, "ip-proto-3"}, {255, "ip-proto-255"}, {1000, "ip-proto-1000"},
	} {
		if got := Protocol(tc.p); got != tc.want {
			t.Errorf("Protocol(%d) = %q, want %q", tc.p, got, tc.want)
		}
	}
}

func TestPorts(t *testing.T) {
	for _, tc := range []struct {
		lo, hi uint32
		want   string
	}{
		{0, 0, "any"}, {67, 67, "67"}, {8000, 8100, "8000-8100"}, {0, 1023, "0-1023"}, {65535, 65535, "65535"},
	} {
		if got := Ports(tc.lo, tc.hi); got != tc.want {
			t.Errorf("Ports(%d, %d) = %q, want %q", tc.lo, tc.hi, got, tc.want)
		}
	}
}

func TestDeviceKey(t *testing.T) {
	for in, want := range map[string]string{
		"00:1b:44:11:3a:b7": "00:1b:44:11:3a:b7",
		"00-1B-44-11-3A-B7": "00:1b:44:11:3a:b7",
		"001b.4411.3ab7":    "00:1b:44:11:3a:b7",
		"ip:10.1.0.5":       "ip:10.1.0.5",
		"ip:fe80:0::1":      "ip:fe80::1",
		"":                  "",
		"zz:zz":             "",
		"00:1b:44:11:3a":    "", // 5 bytes
		"00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01": "", // 20-byte InfiniBand
		"ip:10.1.0": "",
		"10.1.0.5":  "",
	} {
		got, ok := DeviceKey(in)
		if got != want || ok != (want != "") {
			t.Errorf("DeviceKey(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

// FuzzDeviceKey: a key DeviceKey accepts is its own canonical form (a
// second pass returns it unchanged), and anything it refuses yields "".
func FuzzDeviceKey(f *testing.F) {
	for _, s := range []string{"00:1b:44:11:3a:b7", "00-1B-44-11-3A-B7", "001b.4411.3ab7", "ip:10.1.0.5", "ip:fe80:0::1%eth0", "ip:", "zz", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		key, ok := DeviceKey(s)
		if !ok {
			if key != "" {
				t.Fatalf("DeviceKey(%q) refused it but returned %q", s, key)
			}
			return
		}
		if again, ok2 := DeviceKey(key); !ok2 || again != key {
			t.Fatalf("DeviceKey(%q) = %q, whose key is %q, %v", s, key, again, ok2)
		}
	})
}
