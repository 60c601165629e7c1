package api

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/policy"
	"github.com/medmesh/medmesh/internal/names"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Limits on request fields; larger requests are INVALID_ARGUMENT.
const (
	defaultPageSize   = 100
	maxPageSize       = 1000
	maxRules          = 1024
	maxDescription    = 64 << 10
	maxTextField      = 1024
	maxLabels         = 64
	maxLabelKeyLength = 128
	maxLabelValLength = 1024
)

var policyNameRE = regexp.MustCompile(`^[a-zA-Z0-9._:/-]{1,128}$`)

func nowPB() *timestamppb.Timestamp { return timestamppb.New(time.Now()) }

// newID returns a time-ordered unique id, stamped by the leader.
func newID(prefix string) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return fmt.Sprintf("%s-%013x-%s", prefix, time.Now().UnixMilli(), hex.EncodeToString(b[:]))
}

// normalizeMAC accepts a MAC in any common notation, or "ip:ADDRESS".
func normalizeMAC(field, s string) (string, error) {
	if s == "" {
		return "", invalid(field, "required")
	}
	key, ok := names.DeviceKey(s)
	if !ok {
		return "", invalid(field, "%q is not a MAC address or ip:ADDRESS", s)
	}
	return key, nil
}

func required(field, v string) error {
	if v == "" {
		return invalid(field, "required")
	}
	if len(v) > maxTextField {
		return invalid(field, "longer than %d bytes", maxTextField)
	}
	return nil
}

func pageSize(n int32) (int, error) {
	switch {
	case n < 0:
		return 0, invalid("page_size", "must not be negative")
	case n == 0:
		return defaultPageSize, nil
	case n > maxPageSize:
		return maxPageSize, nil
	}
	return int(n), nil
}

// Page tokens are opaque: base64 of the last key returned.
func encodeToken(key string) string { return base64.RawURLEncoding.EncodeToString([]byte(key)) }

func decodeToken(tok string) (string, error) {
	if tok == "" {
		return "", nil
	}
	// One token per key: Strict refuses other trailing bits, and comparing
	// with the key encoded again refuses the newlines the decoder skips
	// even in Strict mode.
	b, err := base64.RawURLEncoding.Strict().DecodeString(tok)
	if err != nil || len(b) == 0 || encodeToken(string(b)) != tok {
		return "", invalid("page_token", "malformed")
	}
	return string(b), nil
}

func decodeIndexToken(field, tok string) (uint64, error) {
	k, err := decodeToken(tok)
	if err != nil || k == "" {
		return 0, err
	}
	v, perr := strconv.ParseUint(k, 10, 64)
	if perr != nil {
		return 0, invalid(field, "malformed")
	}
	return v, nil
}

func indexToken(i uint64) string { return encodeToken(strconv.FormatUint(i, 10)) }

// validatePolicy checks a policy from a request; it returns an
// INVALID_ARGUMENT naming the field.
func validatePolicy(p *medmeshv1.Policy) error {
	if p == nil {
		return invalid("policy", "required")
	}
	if p.GetName() == "" {
		return invalid("policy.name", "required")
	}
	if !policyNameRE.MatchString(p.GetName()) {
		return invalid("policy.name", "%q must be 1-128 characters of [a-zA-Z0-9._:/-]", p.GetName())
	}
	switch sub := p.Subject.(type) {
	case *medmeshv1.Policy_DeviceMac:
		mac, err := normalizeMAC("policy.device_mac", sub.DeviceMac)
		if err != nil {
			return err
		}
		sub.DeviceMac = mac
	case *medmeshv1.Policy_DeviceClass:
		if _, ok := medmeshv1.DeviceClass_name[int32(sub.DeviceClass)]; !ok || sub.DeviceClass == 0 {
			return invalid("policy.device_class", "unknown class %d", sub.DeviceClass)
		}
	default:
		return invalid("policy.subject", "one of device_mac or device_class is required")
	}
	if _, ok := medmeshv1.PolicyMode_name[int32(p.GetMode())]; !ok {
		return invalid("policy.mode", "unknown mode %d", p.GetMode())
	}
	if len(p.GetDescription()) > maxDescription {
		return invalid("policy.description", "longer than %d bytes", maxDescription)
	}
	if len(p.GetRules()) > maxRules {
		return invalid("policy.rules", "more than %d rules", maxRules)
	}
	names := map[string]bool{}
	for i, r := range p.GetRules() {
		f := fmt.Sprintf("policy.rules[%d]", i)
		if r.GetName() != "" {
			if names[r.GetName()] {
				return invalid(f+".name", "duplicate rule name %q", r.GetName())
			}
			names[r.GetName()] = true
		}
		switch peer := r.Peer.(type) {
		case *medmeshv1.Rule_PeerCidr:
			if err := checkCIDR(peer.PeerCidr); err != nil {
				return invalid(f+".peer_cidr", "%v", err)
			}
		case *medmeshv1.Rule_PeerDnsName:
			if peer.PeerDnsName == "" || len(peer.PeerDnsName) > 253 {
				return invalid(f+".peer_dns_name", "must be 1-253 characters")
			}
		}
		if r.GetProtocol() > 255 {
			return invalid(f+".protocol", "%d is not an IP protocol number", r.GetProtocol())
		}
		if r.GetPortMax() > 65535 || r.GetPortMin() > r.GetPortMax() {
			return invalid(f+".port_min", "port range %d-%d is not within 0-65535 in order", r.GetPortMin(), r.GetPortMax())
		}
		if _, ok := medmeshv1.Direction_name[int32(r.GetDirection())]; !ok {
			return invalid(f+".direction", "unknown direction %d", r.GetDirection())
		}
	}
	return nil
}

// validatePut checks a policy a client stores: the request's fields, then
// the policy package's rules (what an enforcer can hold).
func validatePut(p *medmeshv1.Policy) error {
	if err := validatePolicy(p); err != nil {
		return err
	}
	if err := policy.Validate(p); err != nil {
		return policyError("policy", err)
	}
	return nil
}

// checkCIDR accepts a prefix ("10.1.2.0/24") or a host address.
func checkCIDR(s string) error {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("malformed CIDR %q: %w", s, err)
		}
		if p.Masked() != p {
			return fmt.Errorf("CIDR %q has host bits set (did you mean %s?)", s, p.Masked())
		}
		return nil
	}
	if _, err := netip.ParseAddr(s); err != nil {
		return fmt.Errorf("malformed address %q: %w", s, err)
	}
	return nil
}
