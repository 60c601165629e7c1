//go:build linux

package xdp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Two maps the program never reads hold what a device's allow rules were
// expanded from when its policy names peers by DNS name: a record per
// device (namedDevicesMap) and the names the records refer to by key
// (dnsNamesMap). They are pinned beside the program's maps, so an
// enforcer that restarts knows which of a device's installed rules came
// from which name and can keep them up to date; without them those rules
// would be frozen at the last answer before the restart. Both are hashes
// without preallocation: they cost memory only for devices whose policy
// names peers.
const (
	namedDevicesMap = "named_devices"
	dnsNamesMap     = "dns_names"
	namedValueSize  = 2 + MaxNamedRecord
	dnsNameValue    = 1 + MaxDNSName
)

func (d *Datapath) openNamed() (err error) {
	open := func(name string, key, value, entries uint32) (*ebpf.Map, error) {
		spec := &ebpf.MapSpec{Name: name, Type: ebpf.Hash, KeySize: key, ValueSize: value, MaxEntries: entries, Flags: unix.BPF_F_NO_PREALLOC}
		opts := ebpf.MapOptions{}
		if d.cfg.PinDir != "" {
			spec.Pinning, opts.PinPath = ebpf.PinByName, d.cfg.PinDir
		}
		m, err := ebpf.NewMapWithOptions(spec, opts)
		if errors.Is(err, ebpf.ErrMapIncompatible) {
			return nil, fmt.Errorf("pinned map %s in %q does not fit this enforcer (another max devices, or another medmesh version); `medmesh enforcer --uninstall` removes it: %w", name, d.cfg.PinDir, err)
		}
		if err != nil {
			return nil, fmt.Errorf("map %s: %w", name, err)
		}
		return m, nil
	}
	if d.named, err = open(namedDevicesMap, 8, namedValueSize, uint32(d.cfg.MaxDevices)); err != nil {
		return err
	}
	// Every rule of every device could name another peer.
	d.dnsNames, err = open(dnsNamesMap, uint32(len(NameKey{})), dnsNameValue, uint32(d.cfg.MaxDevices)*MaxRules)
	return err
}

// SetNamed stores a device's record (at most MaxNamedRecord bytes),
// replacing any earlier one in one map update: a reader sees the old
// record or the new one.
func (d *Datapath) SetNamed(mac net.HardwareAddr, rec []byte) error {
	k, err := macKey(mac)
	if err != nil {
		return err
	}
	if len(rec) > MaxNamedRecord {
		return fmt.Errorf("device %s: named record of %d bytes, at most %d", mac, len(rec), MaxNamedRecord)
	}
	v := make([]byte, namedValueSize)
	binary.LittleEndian.PutUint16(v, uint16(len(rec)))
	copy(v[2:], rec)
	if err := d.named.Put(k, v); err != nil {
		return fmt.Errorf("put named record of %s: %w", mac, err)
	}
	return nil
}

// DeleteNamed removes a device's record, if any.
func (d *Datapath) DeleteNamed(mac net.HardwareAddr) error {
	k, err := macKey(mac)
	if err != nil {
		return err
	}
	if err := d.named.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete named record of %s: %w", mac, err)
	}
	return nil
}

// NamedRecords returns every device's record, by MAC.
func (d *Datapath) NamedRecords() (map[string][]byte, error) {
	out := map[string][]byte{}
	var k enforcerMacKey
	var v []byte
	it := d.named.Iterate()
	for it.Next(&k, &v) {
		mac := net.HardwareAddr(slices.Clone(k.Addr[:])).String()
		n := int(binary.LittleEndian.Uint16(v))
		if len(v) < 2 || n > len(v)-2 {
			return nil, fmt.Errorf("named record of %s: length %d beyond its %d bytes", mac, n, len(v))
		}
		out[mac] = slices.Clone(v[2 : 2+n])
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate named records: %w", err)
	}
	return out, nil
}

// SetDNSName stores name (at most MaxDNSName bytes) under key.
func (d *Datapath) SetDNSName(key NameKey, name string) error {
	if len(name) > MaxDNSName {
		return fmt.Errorf("dns name of %d bytes, at most %d", len(name), MaxDNSName)
	}
	v := make([]byte, dnsNameValue)
	v[0] = uint8(len(name))
	copy(v[1:], name)
	if err := d.dnsNames.Put(key[:], v); err != nil {
		return fmt.Errorf("put dns name %q: %w", name, err)
	}
	return nil
}

// DeleteDNSName removes the name stored under key, if any.
func (d *Datapath) DeleteDNSName(key NameKey) error {
	if err := d.dnsNames.Delete(key[:]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete dns name: %w", err)
	}
	return nil
}

// DNSNames returns every stored name by key.
func (d *Datapath) DNSNames() (map[NameKey]string, error) {
	out := map[NameKey]string{}
	var k NameKey
	var v []byte
	it := d.dnsNames.Iterate()
	for it.Next(&k, &v) {
		if len(v) < 1 || int(v[0]) > len(v)-1 {
			return nil, fmt.Errorf("dns name entry %x: length beyond its %d bytes", k, len(v))
		}
		out[k] = string(v[1 : 1+int(v[0])])
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate dns names: %w", err)
	}
	return out, nil
}
