package replay

import (
	"bytes"
	"testing"
)

func TestToEthernet(t *testing.T) {
	ip4 := []byte{0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2}
	ip6 := append([]byte{0x60}, make([]byte, 39)...)
	mac := []byte{2, 0, 0, 0, 0, 9}
	eth := func(src []byte, etype uint16, rest []byte) []byte {
		b := append(make([]byte, 6), src...)
		b = append(b, byte(etype>>8), byte(etype))
		return append(b, rest...)
	}
	zero := make([]byte, 6)
	sll := append(append([]byte{0, 0, 0, 1, 0, 6}, mac...), 0, 0, 0x86, 0xdd)
	sll2 := append(append([]byte{0x08, 0, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6}, mac...), 0, 0)
	for _, tc := range []struct {
		name string
		lt   int
		in   []byte
		want []byte
	}{
		{"ethernet", linkEthernet, eth(mac, 0x0800, ip4), eth(mac, 0x0800, ip4)},
		{"raw v4", linkRaw, ip4, eth(zero, 0x0800, ip4)},
		{"raw 12 v6", linkRaw12, ip6, eth(zero, 0x86dd, ip6)},
		{"raw 14", linkRaw14, ip4, eth(zero, 0x0800, ip4)},
		{"ipv6 link", linkIPv6, ip6, eth(zero, 0x86dd, ip6)},
		{"null v4 little-endian", linkNull, append([]byte{2, 0, 0, 0}, ip4...), eth(zero, 0x0800, ip4)},
		{"null v6 big-endian", linkNull, append([]byte{0, 0, 0, 30}, ip6...), eth(zero, 0x86dd, ip6)},
		{"loop v6 (24)", linkLoop, append([]byte{0, 0, 0, 24}, ip6...), eth(zero, 0x86dd, ip6)},
		{"sll", linkSLL, append(sll, ip6...), eth(mac, 0x86dd, ip6)},
		{"sll2", linkSLL2, append(sll2, ip4...), eth(mac, 0x0800, ip4)},
		{"null unknown family", linkNull, append([]byte{99, 0, 0, 0}, ip4...), nil},
		{"raw not ip", linkRaw, []byte{0x10, 1}, nil},
		{"short sll", linkSLL, sll[:10], nil},
		{"unknown link", 147, ip4, nil},
	} {
		got, ok := toEthernet(tc.lt, tc.in, nil)
		if ok != (tc.want != nil) || !bytes.Equal(got, tc.want) {
			t.Errorf("%s: got %x (%v), want %x", tc.name, got, ok, tc.want)
		}
	}
}
