// Package policy holds the pure functions of medmesh's least-privilege
// policies: validation, generation from a frozen baseline plus class
// defaults, simulation against observed flow summaries, and MUD (RFC 8520)
// export and import. Nothing here touches Raft or the network.
package policy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// MaxRules is the number of rules a device policy may hold: what an
// enforcer's datapath has room for.
const MaxRules = 64

// IANA protocol numbers used here.
const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
	protoSCTP   = 132
)

var (
	nameRE    = regexp.MustCompile(`^[a-zA-Z0-9._:/-]{1,128}$`)
	dnsNameRE = regexp.MustCompile(`^([a-zA-Z0-9_]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9])?\.)*[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.?$`)
)

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("invalid policy")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// hasPorts reports whether a protocol carries ports (0, any, may match
// ported protocols).
func hasPorts(proto uint32) bool {
	return proto == 0 || proto == protoTCP || proto == protoUDP || proto == protoSCTP
}

// Validate checks a policy's fields a client may set. Output-only fields
// are not checked.
func Validate(p *medmeshv1.Policy) error {
	if p == nil {
		return invalid("policy is required")
	}
	if !nameRE.MatchString(p.GetName()) {
		return invalid("name %q: want 1-128 characters of [a-zA-Z0-9._:/-]", p.GetName())
	}
	switch s := p.GetSubject().(type) {
	case *medmeshv1.Policy_DeviceMac:
		if !validMAC(s.DeviceMac) {
			return invalid("device_mac %q: want a lower-case colon-separated MAC or ip:ADDRESS", s.DeviceMac)
		}
	case *medmeshv1.Policy_DeviceClass:
		if s.DeviceClass == medmeshv1.DeviceClass_DEVICE_CLASS_UNSPECIFIED || medmeshv1.DeviceClass_name[int32(s.DeviceClass)] == "" {
			return invalid("device_class %v is not a class", s.DeviceClass)
		}
	default:
		return invalid("exactly one of device_mac or device_class is required")
	}
	if _, ok := medmeshv1.PolicyMode_name[int32(p.GetMode())]; !ok {
		return invalid("mode %d unknown", p.GetMode())
	}
	if len(p.GetRules()) > MaxRules {
		return invalid("%d rules: at most %d", len(p.GetRules()), MaxRules)
	}
	names := map[string]bool{}
	for i, r := range p.GetRules() {
		if err := validateRule(r); err != nil {
			return fmt.Errorf("rule %d: %w", i, err)
		}
		if n := r.GetName(); n != "" {
			if names[n] {
				return invalid("rule %d: name %q used twice", i, n)
			}
			names[n] = true
		}
	}
	if len(p.GetDescription()) > 4096 {
		return invalid("description longer than 4096 bytes")
	}
	return nil
}

func validMAC(s string) bool {
	if a, ok := strings.CutPrefix(s, "ip:"); ok {
		_, err := netip.ParseAddr(a)
		return err == nil
	}
	hw, err := net.ParseMAC(s)
	return err == nil && len(hw) == 6 && hw.String() == s
}

func validateRule(r *medmeshv1.Rule) error {
	if r == nil {
		return invalid("rule is nil")
	}
	if len(r.GetName()) > 64 {
		return invalid("rule name longer than 64 characters")
	}
	switch peer := r.GetPeer().(type) {
	case *medmeshv1.Rule_PeerCidr:
		if _, err := parsePeer(peer.PeerCidr); err != nil {
			return invalid("%v", err)
		}
	case *medmeshv1.Rule_PeerDnsName:
		if !ValidDNSName(peer.PeerDnsName) {
			return invalid("peer_dns_name %q is not a DNS name", peer.PeerDnsName)
		}
	}
	if r.GetProtocol() > 255 {
		return invalid("protocol %d out of range", r.GetProtocol())
	}
	if r.GetPortMax() > 65535 || r.GetPortMin() > r.GetPortMax() {
		return invalid("port range %d-%d", r.GetPortMin(), r.GetPortMax())
	}
	if r.GetPortMax() != 0 && !hasPorts(r.GetProtocol()) {
		return invalid("protocol %d has no ports", r.GetProtocol())
	}
	if _, ok := medmeshv1.Direction_name[int32(r.GetDirection())]; !ok {
		return invalid("direction %d unknown", r.GetDirection())
	}
	return nil
}

// parsePeer parses a CIDR or a host address into a masked prefix.
func parsePeer(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("peer_cidr %q is neither a CIDR nor an address", s)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// ValidDNSName reports whether s is a DNS name a policy may use as a peer.
func ValidDNSName(s string) bool { return len(s) <= 253 && dnsNameRE.MatchString(s) }
