package lab

import (
	"fmt"
	"slices"

	"github.com/vishvananda/netlink"
)

// Roam moves a device to another floor, as a patient's pump moves with the
// patient: its namespace (and MAC, and simulator) stay, its link moves to
// the other floor's bridge with an address in that floor's subnet, behind
// that floor's enforcer and sensor. The new layout is written to the state
// file. A device's service console keeps listening on its old address.
func (l *Lab) Roam(device string, floor int) (DeviceInfo, error) {
	st, err := ReadState(l.cfg.StateDir)
	if err != nil {
		return DeviceInfo{}, err
	}
	if st == nil || !st.Complete {
		return DeviceInfo{}, fmt.Errorf("the lab is not up")
	}
	cfg := st.Config
	if floor < 1 || floor > len(cfg.Floors) {
		return DeviceInfo{}, fmt.Errorf("floor %d: the lab has floors 1 to %d", floor, len(cfg.Floors))
	}
	// Pin every device's host octet and home floor first, so moving one
	// shifts no one else's address or namespace.
	for _, d := range cfg.Devices() {
		f := &cfg.Floors[d.Floor-1]
		for i := range f.Devices {
			if f.Devices[i].Name == d.Name {
				f.Devices[i].Host = d.Host
				if f.Devices[i].Home == 0 {
					f.Devices[i].Home = d.Floor
				}
			}
		}
	}
	old, ok := cfg.Device(device)
	if !ok {
		return DeviceInfo{}, fmt.Errorf("no device %q in the lab", device)
	}
	if old.Floor == floor {
		return old, fmt.Errorf("%s is already on floor %d", device, floor)
	}
	from := &cfg.Floors[old.Floor-1]
	i := slices.IndexFunc(from.Devices, func(d Device) bool { return d.Name == device })
	moved := from.Devices[i]
	from.Devices = slices.Delete(from.Devices, i, i+1)
	cfg.Floors[floor-1].Devices = append(cfg.Floors[floor-1].Devices, moved)
	now, _ := cfg.Device(device)

	h := newNSHandles()
	defer h.Close()
	t := &topo{cfg: cfg, h: h}
	nl, _, err := h.get(old.Namespace)
	if err != nil {
		return DeviceInfo{}, err
	}
	eth, err := nl.LinkByName("eth0")
	if err != nil {
		return DeviceInfo{}, fmt.Errorf("%s: %w", device, err)
	}
	// Deleting one end of the veth removes the floor port, its mirror too.
	if err := nl.LinkDel(eth); err != nil {
		return DeviceInfo{}, fmt.Errorf("unplug %s: %w", device, err)
	}
	prio := uint16(old.Host)
	if err := t.delFilters(cfg.nsFloor(old.Floor), "enf", netlink.HANDLE_MIN_EGRESS, prio); err != nil {
		return DeviceInfo{}, err
	}
	if err := t.delFilters(cfg.nsEnforcer(old.Floor), "dev0", netlink.HANDLE_MIN_INGRESS, prio); err != nil {
		return DeviceInfo{}, err
	}
	if err := t.attachDevice(now); err != nil {
		return DeviceInfo{}, fmt.Errorf("plug %s into floor %d: %w", device, floor, err)
	}
	st.Config = cfg
	l.cfg = cfg
	return now, writeState(cfg.StateDir, st)
}

// delFilters removes the filters of priority prio on a hook of a link.
func (t *topo) delFilters(ns, name string, parent uint32, prio uint16) error {
	nl, _, err := t.h.get(ns)
	if err != nil {
		return err
	}
	l, err := nl.LinkByName(name)
	if err != nil {
		return fmt.Errorf("link %s in %q: %w", name, ns, err)
	}
	fs, err := nl.FilterList(l, parent)
	if err != nil {
		return err
	}
	for _, f := range fs {
		if f.Attrs().Priority == prio {
			// Deleting by priority removes the whole u32 chain of that
			// priority; stop after the first success.
			if err := nl.FilterDel(f); err != nil {
				return fmt.Errorf("delete filter %d on %s in %q: %w", prio, name, ns, err)
			}
			return nil
		}
	}
	return nil
}
