package detect

import (
	"net/netip"

	"github.com/medmesh/medmesh/node/flow"
)

// ARP (RFC 826) and IPv6 neighbour discovery (RFC 4861) say which MAC
// owns which address, and ND says which neighbours are routers. They carry
// no application fields, so they are decoded into typed values for the
// device inventory rather than into a Detection.

// ARP is one Ethernet/IPv4 ARP packet.
type ARP struct {
	// Op is 1 for a request, 2 for a reply.
	Op uint16
	// SenderMAC owns SenderIP (unless the sender answers for another host,
	// as a proxy-ARP router does).
	SenderMAC flow.MAC
	SenderIP  netip.Addr
	TargetIP  netip.Addr
}

// ParseARP decodes an ARP header and body for Ethernet and IPv4.
func ParseARP(b []byte) (ARP, bool) {
	// htype 1, ptype 0x0800, hlen 6, plen 4, op, sha, spa, tha, tpa.
	if len(b) < 28 || be16(b) != 1 || be16(b[2:]) != 0x0800 || b[4] != 6 || b[5] != 4 {
		return ARP{}, false
	}
	a := ARP{Op: uint16(be16(b[6:]))}
	if a.Op != 1 && a.Op != 2 {
		return ARP{}, false
	}
	copy(a.SenderMAC[:], b[8:14])
	a.SenderIP = netip.AddrFrom4([4]byte(b[14:18]))
	a.TargetIP = netip.AddrFrom4([4]byte(b[24:28]))
	return a, true
}

// ND message types (ICMPv6).
const (
	NDRouterSolicitation    = 133
	NDRouterAdvertisement   = 134
	NDNeighborSolicitation  = 135
	NDNeighborAdvertisement = 136
	NDRedirect              = 137
)

// ND is one neighbour-discovery message.
type ND struct {
	Type uint8
	// Router is set when the message comes from a router: a router
	// advertisement with a non-zero router lifetime, a neighbour
	// advertisement with the router flag, or a redirect.
	Router bool
	// Target is the address a solicitation asks for or an advertisement
	// answers for (the unspecified address for other types).
	Target netip.Addr
	// LinkAddr is the source or target link-layer address option, if any.
	LinkAddr flow.MAC
}

// ParseND decodes an ICMPv6 neighbour-discovery message (types 133-137).
func ParseND(b []byte) (ND, bool) {
	if len(b) < 8 || b[0] < NDRouterSolicitation || b[0] > NDRedirect || b[1] != 0 {
		return ND{}, false
	}
	n := ND{Type: b[0]}
	opts := 8
	switch n.Type {
	case NDRouterAdvertisement:
		if len(b) < 16 {
			return ND{}, false
		}
		n.Router = be16(b[6:]) != 0
		opts = 16
	case NDNeighborSolicitation, NDNeighborAdvertisement:
		if len(b) < 24 {
			return ND{}, false
		}
		n.Router = n.Type == NDNeighborAdvertisement && b[4]&0x80 != 0
		n.Target = netip.AddrFrom16([16]byte(b[8:24]))
		opts = 24
	case NDRedirect:
		if len(b) < 40 {
			return ND{}, false
		}
		n.Router = true
		opts = 40
	}
	// Options: type, length in units of 8 bytes (never 0), data.
	for i := opts; i+2 <= len(b); {
		l := int(b[i+1]) * 8
		if l == 0 || i+l > len(b) {
			return ND{}, false
		}
		if (b[i] == 1 || b[i] == 2) && l == 8 {
			copy(n.LinkAddr[:], b[i+2:i+8])
		}
		i += l
	}
	return n, true
}
