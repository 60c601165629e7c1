//go:build !linux

package xdp

import (
	"errors"
	"net"
	"net/netip"
	"runtime"
)

// ErrNotLinux is what every entry point returns off Linux: the verdict
// program is XDP, which only Linux has.
var ErrNotLinux = errors.New("the enforcer needs Linux (XDP); this build is for " + runtime.GOOS)

// Datapath is the loaded enforcer program and its maps. Off Linux, Load
// never returns one; the methods exist so portable code compiles.
type Datapath struct{}

// Load returns ErrNotLinux.
func Load(Config) (*Datapath, error) { return nil, ErrNotLinux }

// CheckPinDir returns ErrNotLinux: there is no bpffs.
func CheckPinDir(string) (string, error) { return "", ErrNotLinux }

// Unpin returns ErrNotLinux.
func Unpin(string) ([]string, error) { return nil, ErrNotLinux }

// The methods are never reached off Linux, where Load returns no
// Datapath; they mirror the Linux ones that portable code calls.
func (d *Datapath) Slots() uint32                                 { return 0 }
func (d *Datapath) Attach(int) (bool, error)                      { return false, ErrNotLinux }
func (d *Datapath) Close() error                                  { return nil }
func (d *Datapath) SetDevice(net.HardwareAddr, DeviceEntry) error { return ErrNotLinux }
func (d *Datapath) DeleteDevice(net.HardwareAddr) error           { return ErrNotLinux }
func (d *Datapath) Devices() (map[string]DeviceEntry, error)      { return nil, ErrNotLinux }
func (d *Datapath) WriteSlot(uint32, []Rule) error                { return ErrNotLinux }
func (d *Datapath) ClearSlot(uint32, []Rule) error                { return ErrNotLinux }
func (d *Datapath) UsedSlots() (map[uint32][]Rule, error)         { return nil, ErrNotLinux }
func (d *Datapath) AppliedIndex() (uint64, error)                 { return 0, ErrNotLinux }
func (d *Datapath) SetAppliedIndex(uint64) error                  { return ErrNotLinux }
func (d *Datapath) SetInfra(map[netip.Addr]uint32) error          { return ErrNotLinux }
func (d *Datapath) Verdicts() ([NumVerdicts]Counter, error) {
	return [NumVerdicts]Counter{}, ErrNotLinux
}
func (d *Datapath) CacheStats() (hits, misses uint64, err error) { return 0, 0, ErrNotLinux }
func (d *Datapath) SetNamed(net.HardwareAddr, []byte) error      { return ErrNotLinux }
func (d *Datapath) DeleteNamed(net.HardwareAddr) error           { return ErrNotLinux }
func (d *Datapath) NamedRecords() (map[string][]byte, error)     { return nil, ErrNotLinux }
func (d *Datapath) SetDNSName(NameKey, string) error             { return ErrNotLinux }
func (d *Datapath) DeleteDNSName(NameKey) error                  { return ErrNotLinux }
func (d *Datapath) DNSNames() (map[NameKey]string, error)        { return nil, ErrNotLinux }
