package detect

import (
	"net/netip"

	"github.com/medmesh/medmesh/node/flow"
)

// ARP (RFC 826) for IPv4 over Ethernet, as the datapath hands it up in a
// DiscoveryARP event: the 8-byte header (hardware type 1, protocol type
// 0x0800, lengths 6 and 4, operation) and the sender and target addresses.

// ARP is one decoded ARP packet.
type ARP struct {
	Reply     bool // operation 2; false: a request (1)
	SenderMAC flow.MAC
	SenderIP  netip.Addr
	TargetIP  netip.Addr
}

// ParseARP decodes an Ethernet/IPv4 ARP request or reply; ok is false for
// anything else.
func ParseARP(b []byte) (ARP, bool) {
	var a ARP
	if len(b) < 28 || b[0] != 0 || b[1] != 1 || b[2] != 0x08 || b[3] != 0 || b[4] != 6 || b[5] != 4 || b[6] != 0 {
		return a, false
	}
	switch b[7] {
	case 1:
	case 2:
		a.Reply = true
	default:
		return a, false
	}
	copy(a.SenderMAC[:], b[8:14])
	a.SenderIP = netip.AddrFrom4([4]byte(b[14:18]))
	a.TargetIP = netip.AddrFrom4([4]byte(b[24:28]))
	return a, true
}
