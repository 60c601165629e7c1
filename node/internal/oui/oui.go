// Package oui maps MAC address prefixes to vendors, from the IEEE registry
// compiled into a compact table by go generate.
package oui

//go:generate go run gen.go -in /usr/share/ieee-data/oui.csv -out table.go

// Lookup returns the vendor registered for mac's OUI (its first three
// bytes), or "" when the prefix is not registered or the address is locally
// administered. It does not allocate.
func Lookup(mac [6]byte) string {
	if mac[0]&0x02 != 0 { // locally administered: the prefix means nothing
		return ""
	}
	p := uint32(mac[0])<<16 | uint32(mac[1])<<8 | uint32(mac[2])
	lo, hi := 0, len(prefixes)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if prefixes[m] < p {
			lo = m + 1
		} else {
			hi = m
		}
	}
	i := lo
	if i == len(prefixes) || prefixes[i] != p {
		return ""
	}
	v := vendorOf[i]
	start := uint32(0)
	if v > 0 {
		start = nameEnd[v-1]
	}
	return names[start:nameEnd[v]]
}

// Len is the number of registered prefixes in the table.
func Len() int { return len(prefixes) }
