// Package flow defines what the sensor datapath hands the rest of the node:
// flow records (the project's flow-record contract), payload samples and
// discovery events. Payload bytes in samples and events are transient: they
// are handed to detectors and never logged, exported or stored.
package flow

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
)

// MAC is an Ethernet address that marshals as "aa:bb:cc:dd:ee:ff".
type MAC [6]byte

// String returns the lower-case colon form.
func (m MAC) String() string { return net.HardwareAddr(m[:]).String() }

// IsZero reports whether m is 00:00:00:00:00:00.
func (m MAC) IsZero() bool { return m == MAC{} }

// MarshalText implements encoding.TextMarshaler.
func (m MAC) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (m *MAC) UnmarshalText(b []byte) error {
	hw, err := net.ParseMAC(string(b))
	if err != nil || len(hw) != 6 {
		return fmt.Errorf("parse mac %q: not a 48-bit MAC address", b)
	}
	copy(m[:], hw)
	return nil
}

// Tuple is a flow's 5-tuple plus VLAN, oriented from the flow's initiator
// (Src) to its responder (Dst).
type Tuple struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	Proto            uint8
	VLAN             uint16
}

// Dir is a packet's direction within a flow.
type Dir uint8

const (
	// Fwd is initiator to responder.
	Fwd Dir = 0
	// Rev is responder to initiator.
	Rev Dir = 1
)

// Record is one flow, in the project's flow-record contract
// (docs/architecture.md, "Flow record"). Bytes are L3 octets.
type Record struct {
	Src        netip.Addr `json:"src"`
	Dst        netip.Addr `json:"dst"`
	SrcPort    uint16     `json:"sport"`
	DstPort    uint16     `json:"dport"`
	Proto      uint8      `json:"proto"`
	FwdPackets uint64     `json:"fwd_packets"`
	FwdBytes   uint64     `json:"fwd_bytes"`
	RevPackets uint64     `json:"rev_packets"`
	RevBytes   uint64     `json:"rev_bytes"`
	FirstNs    int64      `json:"first_ns"`
	LastNs     int64      `json:"last_ns"`
	App        string     `json:"app"`
	SrcMAC     MAC        `json:"src_mac"`
	DstMAC     MAC        `json:"dst_mac"`
	VLAN       uint16     `json:"vlan"`

	// Not part of the contract's required fields, but useful downstream.
	FwdTCPFlags uint8  `json:"fwd_tcp_flags,omitempty"`
	RevTCPFlags uint8  `json:"rev_tcp_flags,omitempty"`
	Fragments   uint64 `json:"fragments,omitempty"`
	// EndReason is why the flow was exported: "idle", "active", "fin",
	// "rst", "drain".
	EndReason string `json:"end_reason,omitempty"`
	// Baseline is the in-kernel baseline verdict for the flow's device:
	// "" (no baseline installed), "in" or "out".
	Baseline string `json:"baseline,omitempty"`
	// Site is set on records collected from flow export (IPFIX, NetFlow
	// v9): the site named by the exporter. Captured flows have none.
	Site string `json:"site,omitempty"`
}

// Tuple returns the record's initiator-oriented tuple.
func (r *Record) Tuple() Tuple {
	return Tuple{Src: r.Src, Dst: r.Dst, SrcPort: r.SrcPort, DstPort: r.DstPort, Proto: r.Proto, VLAN: r.VLAN}
}

// MarshalJSON is defined so that a zero address prints as "" rather than
// failing.
func (r Record) MarshalJSON() ([]byte, error) {
	type plain Record
	return json.Marshal(plain(r))
}

// Sample is the start of one payload-carrying packet of a flow: up to the
// first 512 bytes of L4 payload of the first 4 such packets per direction.
// Payload is only valid during the call that receives the sample.
type Sample struct {
	Flow   Tuple
	Dir    Dir
	Index  uint8 // 0..3: which payload packet of this direction
	SrcMAC MAC   // of this packet
	DstMAC MAC
	TimeNs int64
	// Payload length on the wire (may exceed len(Payload)).
	WireLen uint16
	// TTL is the packet's IPv4 TTL or IPv6 hop limit. A value below the
	// common initial ones (64, 128, 255) says a router forwarded it.
	TTL     uint8
	Payload []byte
}

// DiscoveryKind says what a discovery event carries.
type DiscoveryKind uint8

const (
	DiscoveryDHCP DiscoveryKind = iota + 1
	DiscoveryDHCPv6
	DiscoveryDNS // a DNS response
	DiscoveryARP
	DiscoveryND // IPv6 neighbour discovery
)

// Discovery is a packet useful for device discovery. For DHCP, DHCPv6 and
// DNS, Data is the UDP payload; for ARP, the ARP header and body; for ND,
// the ICMPv6 message. Data is only valid during the call that receives it.
type Discovery struct {
	Kind             DiscoveryKind
	SrcMAC, DstMAC   MAC
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	VLAN             uint16
	TimeNs           int64
	// TTL is the IPv4 TTL or IPv6 hop limit; 0 for ARP.
	TTL  uint8
	Data []byte
}

// BaselineMiss is raised by the datapath when a new flow of a device with an
// installed baseline matches none of its allowed (prefix, protocol, port).
type BaselineMiss struct {
	Flow      Tuple
	DeviceMAC MAC
	// Which side of the flow is the device.
	DeviceIsSrc bool
	// Reason: "peer", "protocol" or "port": the first element that matched no
	// entry.
	Reason string
	TimeNs int64
}

// Handler consumes what the datapath produces. Implementations must not keep
// Sample.Payload or Discovery.Data beyond the call.
type Handler interface {
	HandleFlow(*Record)
	HandleSample(*Sample)
	HandleDiscovery(*Discovery)
	HandleBaselineMiss(*BaselineMiss)
}

// Payload sample budget: DefaultSamples payload packets per direction are
// sampled unless a handler raises a flow's budget, up to MaxSamples.
const (
	DefaultSamples = 4
	MaxSamples     = 32
)

// SampleBudget raises how many payload packets of one flow the datapath
// samples. Telnet and FTP logins are spread over many tiny packets, so a
// detector may need more than DefaultSamples.
type SampleBudget interface {
	// ExtendSamples raises the per-direction sample limit of the flow t
	// (initiator-oriented, as in Sample.Flow) to perDir, at most MaxSamples.
	ExtendSamples(t Tuple, perDir uint8) error
}

// BudgetSetter is implemented by handlers that raise sample budgets. The
// datapath (live or replay) calls SetSampleBudget once, before any event.
// In replay, a budget raised during a HandleSample call applies from the
// next packet on.
type BudgetSetter interface {
	SetSampleBudget(SampleBudget)
}
