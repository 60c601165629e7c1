package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// topo builds links, addresses, routes and tc filters with netlink.
type topo struct {
	cfg Config
	h   *nsHandles
}

func (t *topo) link(ns, name string) (netlink.Link, error) {
	nl, _, err := t.h.get(ns)
	if err != nil {
		return nil, err
	}
	l, err := nl.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("link %s in %q: %w", name, ns, err)
	}
	return l, nil
}

// veth creates a pair with end a in namespace nsA and end b in nsB, both up.
func (t *topo) veth(nsA, a, nsB, b string, macA string) error {
	host, _, err := t.h.get("")
	if err != nil {
		return err
	}
	_, fdA, err := t.h.get(nsA)
	if err != nil {
		return err
	}
	_, fdB, err := t.h.get(nsB)
	if err != nil {
		return err
	}
	v := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: a, Namespace: netlink.NsFd(int(fdA))},
		PeerName:      b,
		PeerNamespace: netlink.NsFd(int(fdB)),
	}
	if macA != "" {
		hw, err := net.ParseMAC(macA)
		if err != nil {
			return fmt.Errorf("mac of %s: %w", a, err)
		}
		v.HardwareAddr = hw
	}
	if err := host.LinkAdd(v); err != nil {
		return fmt.Errorf("add veth %s(%q)-%s(%q): %w", a, nsA, b, nsB, err)
	}
	return errors.Join(t.up(nsA, a), t.up(nsB, b))
}

func (t *topo) up(ns, name string) error {
	nl, _, err := t.h.get(ns)
	if err != nil {
		return err
	}
	l, err := t.link(ns, name)
	if err != nil {
		return err
	}
	if err := nl.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up in %q: %w", name, ns, err)
	}
	return nil
}

func (t *topo) addr(ns, name string, a netip.Addr, bits int) error {
	nl, _, err := t.h.get(ns)
	if err != nil {
		return err
	}
	l, err := t.link(ns, name)
	if err != nil {
		return err
	}
	ipn := &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, 32)}
	if err := nl.AddrAdd(l, &netlink.Addr{IPNet: ipn}); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add %s/%d to %s in %q: %w", a, bits, name, ns, err)
	}
	return nil
}

func (t *topo) route(ns string, dst netip.Prefix, gw netip.Addr) error {
	nl, _, err := t.h.get(ns)
	if err != nil {
		return err
	}
	r := &netlink.Route{Gw: gw.AsSlice()}
	if dst.Bits() > 0 {
		r.Dst = &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), 32)}
	}
	if err := nl.RouteReplace(r); err != nil {
		return fmt.Errorf("route %s via %s in %q: %w", dst, gw, ns, err)
	}
	return nil
}

// bridge adds a bridge; mac, if set, is its address (the MAC the
// namespace's routing uses on it).
func (t *topo) bridge(ns, name, mac string) error {
	nl, _, err := t.h.get(ns)
	if err != nil {
		return err
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if mac != "" {
		hw, err := net.ParseMAC(mac)
		if err != nil {
			return fmt.Errorf("mac of %s: %w", name, err)
		}
		br.HardwareAddr = hw
	}
	if err := nl.LinkAdd(br); err != nil {
		return fmt.Errorf("add bridge %s in %q: %w", name, ns, err)
	}
	return t.up(ns, name)
}

func (t *topo) enslave(ns, port, br string) error {
	nl, _, err := t.h.get(ns)
	if err != nil {
		return err
	}
	p, err := t.link(ns, port)
	if err != nil {
		return err
	}
	b, err := t.link(ns, br)
	if err != nil {
		return err
	}
	if err := nl.LinkSetMaster(p, b); err != nil {
		return fmt.Errorf("enslave %s to %s in %q: %w", port, br, ns, err)
	}
	return nil
}

// clsact adds a clsact qdisc to a link, so filters can hang off its ingress
// and egress hooks.
func (t *topo) clsact(ns, name string) error {
	nl, _, err := t.h.get(ns)
	if err != nil {
		return err
	}
	l, err := t.link(ns, name)
	if err != nil {
		return err
	}
	q := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := nl.QdiscAdd(q); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add clsact to %s in %q: %w", name, ns, err)
	}
	return nil
}

// mirror copies every frame entering port (its ingress; with egress, every
// frame leaving it) to dst with a u32 match-all filter and a mirred egress
// mirror action. (matchall filters do not work on every kernel the lab
// runs on; u32 does.)
func (t *topo) mirror(ns, port, dst string, egress bool) error {
	nl, _, err := t.h.get(ns)
	if err != nil {
		return err
	}
	p, err := t.link(ns, port)
	if err != nil {
		return err
	}
	d, err := t.link(ns, dst)
	if err != nil {
		return err
	}
	if err := t.clsact(ns, port); err != nil {
		return err
	}
	act := netlink.NewMirredAction(d.Attrs().Index)
	act.MirredAction = netlink.TCA_EGRESS_MIRROR
	act.Attrs().Action = netlink.TC_ACT_PIPE
	parent := uint32(netlink.HANDLE_MIN_INGRESS)
	if egress {
		parent = netlink.HANDLE_MIN_EGRESS
	}
	f := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: p.Attrs().Index,
			Parent:    parent,
			Priority:  1,
			Protocol:  unix.ETH_P_ALL,
		},
		Sel:     &netlink.TcU32Sel{Flags: netlink.TC_U32_TERMINAL, Keys: []netlink.TcU32Key{{Mask: 0, Val: 0, Off: 0}}},
		Actions: []netlink.Action{act},
	}
	if err := nl.FilterAdd(f); err != nil {
		return fmt.Errorf("mirror %s to %s in %q: %w", port, dst, ns, err)
	}
	return nil
}

// counter adds a u32 filter on a hook of link counting IPv4 packets from
// src. This kernel has no gact, so the counting action is a mirred mirror to
// "cnt0", one end of a veth pair that stays down: the copy is dropped and
// the action's statistics count the packet; the original goes on.
func (t *topo) counter(ns, name string, parent uint32, prio uint16, src netip.Addr) error {
	nl, _, err := t.h.get(ns)
	if err != nil {
		return err
	}
	l, err := t.link(ns, name)
	if err != nil {
		return err
	}
	if err := t.clsact(ns, name); err != nil {
		return err
	}
	sink, err := nl.LinkByName("cnt0")
	if err != nil {
		if err := nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "cnt0"}, PeerName: "cnt1"}); err != nil {
			return fmt.Errorf("add counter sink in %q: %w", ns, err)
		}
		if sink, err = nl.LinkByName("cnt0"); err != nil {
			return err
		}
	}
	b := src.As4()
	val := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	act := netlink.NewMirredAction(sink.Attrs().Index)
	act.MirredAction = netlink.TCA_EGRESS_MIRROR
	act.Attrs().Action = netlink.TC_ACT_PIPE
	f := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: l.Attrs().Index, Parent: parent, Priority: prio, Protocol: unix.ETH_P_IP},
		Sel:         &netlink.TcU32Sel{Flags: netlink.TC_U32_TERMINAL, Keys: []netlink.TcU32Key{{Mask: 0xffffffff, Val: val, Off: 12}}},
		Actions:     []netlink.Action{act},
	}
	if err := nl.FilterAdd(f); err != nil {
		return fmt.Errorf("count %s on %s in %q: %w", src, name, ns, err)
	}
	return nil
}

// readCounter returns the packets counted by the filter of priority prio.
func readCounter(h *nsHandles, ns, name string, parent uint32, prio uint16) (uint64, error) {
	nl, _, err := h.get(ns)
	if err != nil {
		return 0, err
	}
	l, err := nl.LinkByName(name)
	if err != nil {
		return 0, fmt.Errorf("link %s in %q: %w", name, ns, err)
	}
	fs, err := nl.FilterList(l, parent)
	if err != nil {
		return 0, fmt.Errorf("list filters of %s in %q: %w", name, ns, err)
	}
	var n uint64
	for _, f := range fs {
		u, ok := f.(*netlink.U32)
		if !ok || u.Priority != prio {
			continue
		}
		for _, a := range u.Actions {
			if s := a.Attrs().Statistics; s != nil && s.Basic != nil {
				n += uint64(s.Basic.Packets)
			}
		}
	}
	return n, nil
}

// build makes the whole topology. Namespaces must exist.
func (t *topo) build() error {
	c := t.cfg
	core := c.nsCore()
	for _, ns := range c.namespaces() {
		if err := t.up(ns, "lo"); err != nil {
			return err
		}
	}
	if err := writeSysctl(core, "net/ipv4/ip_forward", "1"); err != nil {
		return err
	}

	// Host <-> core.
	if err := t.veth("", c.hostLink(), core, "host0", ""); err != nil {
		return err
	}
	hostCore := c.ip(3, 0, 2)
	if err := t.addr("", c.hostLink(), c.HostIP(), 24); err != nil {
		return err
	}
	for i := 1; i <= 3; i++ {
		if err := t.addr("", c.hostLink(), c.CoordinatorVIP(i), 24); err != nil {
			return err
		}
	}
	if err := t.addr(core, "host0", hostCore, 24); err != nil {
		return err
	}
	if err := t.route("", c.Block(), hostCore); err != nil {
		return err
	}
	// Let DNAT to 127.0.0.N work for packets that arrive on the host link.
	if err := writeSysctl("", "net/ipv4/conf/"+c.hostLink()+"/route_localnet", "1"); err != nil {
		return err
	}
	if err := t.nat(); err != nil {
		return err
	}

	// Core services on a bridge.
	if err := t.bridge(core, "svcbr", c.coreMAC()); err != nil {
		return err
	}
	if err := t.addr(core, "svcbr", c.ip(2, 0, 1), 24); err != nil {
		return err
	}
	for i, s := range services {
		ns := c.nsService(s.name)
		port := "v-" + s.name
		if err := t.veth(ns, "eth0", core, port, s.mac); err != nil {
			return err
		}
		if err := errors.Join(t.enslave(core, port, "svcbr"), t.addr(ns, "eth0", c.ServiceIP(i), 24)); err != nil {
			return err
		}
		if err := t.route(ns, netip.Prefix{}, c.ip(2, 0, 1)); err != nil {
			return err
		}
	}
	// The internet host.
	inet := c.nsService("inet")
	if err := t.veth(inet, "eth0", core, "inet0", ""); err != nil {
		return err
	}
	if err := errors.Join(t.addr(inet, "eth0", InternetIP, 24), t.addr(core, "inet0", netip.MustParseAddr("203.0.113.1"), 24)); err != nil {
		return err
	}
	if err := t.route(inet, netip.Prefix{}, netip.MustParseAddr("203.0.113.1")); err != nil {
		return err
	}

	if err := t.coreSensor(); err != nil {
		return err
	}
	for fi, f := range c.Floors {
		if err := t.floor(fi+1, f); err != nil {
			return err
		}
	}
	return nil
}

// coreSensor connects the core's sensor: tap0 gets every frame the
// services send (their ports' ingress) and every frame the core routes to
// them (the bridge's egress); mgmt0 reaches the coordinators.
func (t *topo) coreSensor() error {
	c := t.cfg
	core, sen := c.nsCore(), c.nsSensor(0)
	if err := t.veth(sen, "tap0", core, "svcmirror", ""); err != nil {
		return err
	}
	if err := quiet(core, "svcmirror"); err != nil {
		return err
	}
	for _, s := range services {
		if err := t.mirror(core, "v-"+s.name, "svcmirror", false); err != nil {
			return err
		}
	}
	if err := t.mirror(core, "svcbr", "svcmirror", true); err != nil {
		return err
	}
	return t.sensorMgmt(0)
}

// sensorMgmt links sensor n's mgmt0 (n = 0: the core's sensor) to the
// core. The sensor reaches the host link (coordinators) and other sensors
// through the core only; it has no route to the floors.
func (t *topo) sensorMgmt(n int) error {
	c := t.cfg
	core, sen := c.nsCore(), c.nsSensor(n)
	if err := t.veth(sen, "mgmt0", core, fmt.Sprintf("s%d", n), ""); err != nil {
		return err
	}
	if err := errors.Join(
		t.addr(sen, "mgmt0", c.SensorMgmt(n), 24),
		t.addr(core, fmt.Sprintf("s%d", n), c.ip(0, n, 1), 24),
	); err != nil {
		return err
	}
	return errors.Join(
		t.route(sen, netip.PrefixFrom(c.HostIP(), 24).Masked(), c.ip(0, n, 1)),
		t.route(sen, netip.PrefixFrom(c.ip(0, 0, 0), 16), c.ip(0, n, 1)),
	)
}

// quiet turns IPv6 off on a capture link's far end, so that its own
// duplicate-address probes and router solicitations never reach the
// sensor as traffic of the segment.
func quiet(ns, link string) error {
	return writeSysctl(ns, "net/ipv6/conf/"+link+"/disable_ipv6", "1")
}

func (t *topo) floor(n int, _ Floor) error {
	c := t.cfg
	core, fl, enf, sen := c.nsCore(), c.nsFloor(n), c.nsEnforcer(n), c.nsSensor(n)
	if err := t.bridge(fl, "br0", ""); err != nil {
		return err
	}
	// Enforcer: dev0 on the floor (the floor's gateway), up0 to the core.
	if err := t.veth(enf, "dev0", fl, "enf", c.gatewayMAC(n)); err != nil {
		return err
	}
	if err := t.veth(enf, "up0", core, fmt.Sprintf("e%d", n), ""); err != nil {
		return err
	}
	if err := errors.Join(
		t.enslave(fl, "enf", "br0"),
		t.addr(enf, "dev0", c.FloorGateway(n), 24),
		t.addr(enf, "up0", c.EnforcerUplink(n), 24),
		t.addr(core, fmt.Sprintf("e%d", n), c.ip(1, n, 1), 24),
		writeSysctl(enf, "net/ipv4/ip_forward", "1"),
	); err != nil {
		return err
	}
	if err := errors.Join(
		t.route(enf, netip.Prefix{}, c.ip(1, n, 1)),
		t.route(core, c.FloorSubnet(n), c.EnforcerUplink(n)),
	); err != nil {
		return err
	}
	// Sensor: tap0 gets the mirror, mgmt0 reaches the coordinators.
	if err := t.veth(sen, "tap0", fl, "mirror", ""); err != nil {
		return err
	}
	if err := quiet(fl, "mirror"); err != nil {
		return err
	}
	if err := t.sensorMgmt(n); err != nil {
		return err
	}
	if err := t.mirror(fl, "enf", "mirror", false); err != nil {
		return err
	}
	for _, d := range c.Devices() {
		if d.Floor != n {
			continue
		}
		if err := t.attachDevice(d); err != nil {
			return err
		}
	}
	return nil
}

// attachDevice plugs a device namespace into its floor: a veth to the
// bridge, its address and default route, the mirror of its port, and its
// enforcer counters (tc priority = its host octet).
func (t *topo) attachDevice(d DeviceInfo) error {
	c, n := t.cfg, d.Floor
	fl, enf := c.nsFloor(n), c.nsEnforcer(n)
	port := "p-" + d.Name
	if err := t.veth(d.Namespace, "eth0", fl, port, d.MAC); err != nil {
		return err
	}
	ip := netip.MustParseAddr(d.IP)
	if err := errors.Join(t.enslave(fl, port, "br0"), t.addr(d.Namespace, "eth0", ip, 24)); err != nil {
		return err
	}
	if err := t.route(d.Namespace, netip.Prefix{}, c.FloorGateway(n)); err != nil {
		return err
	}
	if err := t.mirror(fl, port, "mirror", false); err != nil {
		return err
	}
	// Frames the floor hands the enforcer, and packets that got past the
	// enforcer's XDP program.
	prio := uint16(d.Host)
	return errors.Join(
		t.counter(fl, "enf", netlink.HANDLE_MIN_EGRESS, prio, ip),
		t.counter(enf, "dev0", netlink.HANDLE_MIN_INGRESS, prio, ip),
	)
}

// nat installs the host's nftables table that maps the coordinators'
// lab-facing addresses to their loopback API listeners.
func (t *topo) nat() error {
	c := t.cfg
	var b strings.Builder
	fmt.Fprintf(&b, "table ip %s {\n chain pre {\n  type nat hook prerouting priority dstnat; policy accept;\n", c.nftTable())
	for i := 1; i <= 3; i++ {
		fmt.Fprintf(&b, "  iifname %q ip daddr %s tcp dport %d dnat to 127.0.0.%d:%d\n", c.hostLink(), c.CoordinatorVIP(i), c.APIPort, i, c.APIPort)
	}
	b.WriteString(" }\n}\n")
	return nft(b.String())
}

func nft(script string) error {
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

func deleteNftTable(name string) error {
	if err := exec.Command("nft", "list", "table", "ip", name).Run(); err != nil {
		return nil // absent
	}
	if err := nft("delete table ip " + name + "\n"); err != nil && !strings.Contains(err.Error(), "No such file") {
		return err
	}
	return nil
}

func deleteHostLink(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}
