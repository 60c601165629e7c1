package detect

import (
	"bytes"
	"net/netip"

	"github.com/medmesh/medmesh/node/flow"
)

// maxValue bounds every extracted field value.
const maxValue = 128

// text returns b as a field value: surrounding spaces trimmed, bytes
// outside printable ASCII replaced by '?', at most max bytes. It is never
// longer than b.
func text(b []byte, max int) string {
	b = bytes.TrimSpace(b)
	if max > maxValue {
		max = maxValue
	}
	if len(b) > max {
		b = b[:max]
	}
	if len(b) == 0 {
		return ""
	}
	out := make([]byte, len(b))
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			c = '?'
		}
		out[i] = c
	}
	return string(out)
}

// printable reports whether b is non-empty printable ASCII.
func printable(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// hasPrefixFold reports whether b starts with the ASCII prefix, ignoring case.
func hasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && bytes.EqualFold(b[:len(prefix)], []byte(prefix))
}

// indexFold returns the index of the lower-case ASCII needle in b ignoring
// case, or -1.
func indexFold(b []byte, needle string) int {
	n := len(needle)
	for i := 0; i+n <= len(b); i++ {
		j := 0
		for ; j < n; j++ {
			c := b[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != needle[j] {
				break
			}
		}
		if j == n {
			return i
		}
	}
	return -1
}

func be16(b []byte) int { return int(b[0])<<8 | int(b[1]) }
func be32(b []byte) int { return int(b[0])<<24 | int(b[1])<<16 | int(b[2])<<8 | int(b[3]) }

var (
	mdns4 = netip.AddrFrom4([4]byte{224, 0, 0, 251})
	mdns6 = netip.MustParseAddr("ff02::fb")
)

func isMDNSGroup(t flow.Tuple) bool { return t.Dst == mdns4 || t.Dst == mdns6 }

const hexDigits = "0123456789abcdef"

// hexString returns at most max bytes of b in lower-case hex.
func hexString(b []byte, max int) string {
	if len(b) > max {
		b = b[:max]
	}
	out := make([]byte, 2*len(b))
	for i, c := range b {
		out[2*i] = hexDigits[c>>4]
		out[2*i+1] = hexDigits[c&15]
	}
	return string(out)
}
