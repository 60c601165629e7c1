package xdp

import "fmt"

// Config sizes and places the datapath.
type Config struct {
	// PinDir is the bpffs directory for the maps and the XDP link, e.g.
	// /sys/fs/bpf/medmesh/e1. Empty: nothing is pinned (tests, benchmarks).
	PinDir string
	// MaxDevices is the number of devices the maps hold.
	MaxDevices int
}

// DefaultConfig sizes the datapath for 10,000 devices.
func DefaultConfig() Config { return Config{MaxDevices: 10000} }

func (c Config) validate() error {
	if c.MaxDevices < 1 || c.MaxDevices > 1<<20 {
		return fmt.Errorf("max devices %d: want 1..%d", c.MaxDevices, 1<<20)
	}
	return nil
}

// Slots returns the number of rule slots: one per device plus spares, so a
// device's new rules are written to a free slot before its entry switches.
func (c Config) Slots() uint32 { return uint32(c.MaxDevices + c.MaxDevices/4 + 16) }

// BPFFS is the bpffs mount every pin directory must lie under.
const BPFFS = "/sys/fs/bpf"

// Counter is a packet and byte count.
type Counter struct{ Packets, Bytes uint64 }

// What the enforcer keeps, beside the program's maps, about devices whose
// policy names peers by DNS name (see SetNamed and SetDNSName).
const (
	// MaxNamedRecord bounds a device's record of its DNS-named rules.
	MaxNamedRecord = 1598
	// MaxDNSName is the longest DNS name (RFC 1035, without the final dot).
	MaxDNSName = 253
)

// NameKey identifies a stored DNS name: the first 16 bytes of its SHA-256.
type NameKey [16]byte
