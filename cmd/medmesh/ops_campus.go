package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/medmesh/medmesh/internal/names"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func newCampusCmd(o *opFlags) *cobra.Command {
	c := &cobra.Command{
		Use:   "campus",
		Short: "Show who talks to whom: the campus map, a zone's devices and their peers, a device's traffic",
		Long: "The coordinators derive the campus's traffic, read-only, from what they already keep: the\n" +
			"devices and their locations (campus, building, floor, zone), the sensors' frozen baselines\n" +
			"and the latest 1,000 flow summaries per device (summaries, not single flows). A segment is\n" +
			"one zone of a floor of a building; a device with no location is in the segment whose\n" +
			"fields are all empty. A peer no single inventory device holds is outside the inventory.",
	}
	var maxCrossings int32
	mapCmd := &cobra.Command{
		Use:   "map",
		Short: "Buildings, floors and zones with their devices by tier, and the traffic crossing between them",
		Long: "Map lists every segment with its devices counted by tier (unknown tier counts as\n" +
			"life-critical), with subtotals per building and floor, then what crosses between\n" +
			"segments or out of the inventory: from the side that opens the connection, the device\n" +
			"pairs, the flows in the recent flow summaries (0 when only baselines show it), the\n" +
			"services and a few example pairs. Most flows first.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if maxCrossings < 0 {
				return usagef("invalid --max-crossings %d: must not be negative", maxCrossings)
			}
			return o.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := medmeshv1.NewCampusServiceClient(conn).GetCampusMap(ctx,
					&medmeshv1.GetCampusMapRequest{MaxCrossings: maxCrossings, Consistency: o.consistency()})
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				if o.json() {
					return printProto(w, resp)
				}
				return printCampusMap(w, resp)
			})
		},
	}
	mapCmd.Flags().Int32Var(&maxCrossings, "max-crossings", 0, "at most this many crossings, most flows first (0: the coordinators' default, 200; at most 1000)")

	var (
		seg      medmeshv1.Segment
		limit    int
		pageSize int
		peers    bool
	)
	devices := &cobra.Command{
		Use:   "devices [--building B] [--floor F] [--zone Z]",
		Short: "List one segment's devices with their peers and where each peer is",
		Long: "Devices pages through one segment's devices by MAC. The segment's fields are compared\n" +
			"exactly, as 'medmesh campus map' prints them; a field left out is the empty one, so no\n" +
			"flags at all is the devices with no location. --peers adds each device's peers: its own\n" +
			"baseline and recent flows, and the peers whose baseline or flows name it (BY PEER).\n" +
			"A segment with no devices is an error (exit 1): segments exist only by their devices.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 0 {
				return usagef("invalid --limit %d: must not be negative", limit)
			}
			if pageSize < 0 || pageSize > maxSegmentPage {
				return usagef("invalid --page-size %d: want 1 to %d (0: %d)", pageSize, maxSegmentPage, maxSegmentPage)
			}
			if pageSize == 0 {
				pageSize = maxSegmentPage
			}
			return o.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				cl := medmeshv1.NewCampusServiceClient(conn)
				var last *medmeshv1.ListSegmentDevicesResponse
				devs, next, err := listPages(limit, pageSize, func(token string, size int32) ([]*medmeshv1.SegmentDevice, string, error) {
					resp, err := cl.ListSegmentDevices(ctx, &medmeshv1.ListSegmentDevicesRequest{Segment: &seg, PageSize: size,
						PageToken: token, Consistency: o.consistency()})
					last = resp
					return resp.GetDevices(), resp.GetNextPageToken(), err
				})
				if err != nil {
					return err
				}
				if last.GetTotalSize() == 0 {
					return fmt.Errorf("no devices in segment %s: the fields are compared exactly, case included ('medmesh campus map' lists the segments)", segmentQuoted(&seg))
				}
				w := cmd.OutOrStdout()
				if o.json() {
					return printProto(w, &medmeshv1.ListSegmentDevicesResponse{Devices: devs, NextPageToken: next,
						TotalSize: last.GetTotalSize(), ReadInfo: last.GetReadInfo()})
				}
				return printSegmentDevices(w, &seg, devs, last.GetTotalSize(), peers)
			})
		},
	}
	df := devices.Flags()
	df.StringVar(&seg.Campus, "campus", "", "the segment's campus")
	df.StringVar(&seg.Building, "building", "", "the segment's building")
	df.StringVar(&seg.Floor, "floor", "", "the segment's floor")
	df.StringVar(&seg.Zone, "zone", "", "the segment's zone")
	df.IntVar(&limit, "limit", 0, "at most this many devices (0: all)")
	df.IntVar(&pageSize, "page-size", 0, fmt.Sprintf("devices per call, each with up to 50 peers (0: %d, the most a coordinator serves)", maxSegmentPage))
	df.BoolVar(&peers, "peers", false, "also list each device's peers")

	traffic := &cobra.Command{
		Use:   "traffic MAC",
		Short: "A device's peers with their flows and bytes, its baseline, policies and what a generated policy would drop",
		Long: "Traffic merges the device's frozen baseline (or its class's) with a summary of its recent\n" +
			"flows, per peer, protocol, port and direction: flows and bytes each way, when last seen,\n" +
			"where the peer is and whether it crosses segments, and how many of its flows a policy\n" +
			"generated from the baseline would drop (generated here, stored nowhere: 'medmesh policies\n" +
			"generate' shows it whole). MAC in any common notation, or ip:ADDRESS.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			mac, err := checkMAC(args[0])
			if err != nil {
				return err
			}
			return o.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := medmeshv1.NewCampusServiceClient(conn).GetDeviceTraffic(ctx,
					&medmeshv1.GetDeviceTrafficRequest{DeviceMac: mac, Consistency: o.consistency()})
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				if o.json() {
					return printProto(w, resp)
				}
				return printDeviceTraffic(w, mac, resp)
			})
		},
	}
	c.AddCommand(mapCmd, devices, traffic)
	return c
}

// maxSegmentPage is the most devices a coordinator returns per
// ListSegmentDevices call.
const maxSegmentPage = 200

// checkMAC accepts what the coordinators accept as a device's MAC (any
// notation net.ParseMAC reads, 6 bytes, or ip:ADDRESS) and spells it as
// they do, so a typo is a usage error before any call.
func checkMAC(s string) (string, error) {
	key, ok := names.DeviceKey(s)
	if !ok {
		return "", usagef("invalid MAC %q: want a MAC address such as 00:1b:44:11:3a:b7 (or 00-1b-44-11-3a-b7, 001b.4411.3ab7), or ip:ADDRESS", s)
	}
	return key, nil
}

// segmentName is a segment as people read it: "building A, floor 3, zone
// icu", leaving out the fields nobody set.
func segmentName(s *medmeshv1.Segment) string {
	if s.GetOutside() {
		return "outside the inventory"
	}
	var parts []string
	for _, f := range [][2]string{{"campus", s.GetCampus()}, {"building", s.GetBuilding()}, {"floor", s.GetFloor()}, {"zone", s.GetZone()}} {
		if f[1] != "" {
			parts = append(parts, f[0]+" "+f[1])
		}
	}
	if len(parts) == 0 {
		return "no location"
	}
	return strings.Join(parts, ", ")
}

// segmentQuoted names a segment as asked for: every field, quoted.
func segmentQuoted(s *medmeshv1.Segment) string {
	if s.GetCampus() == "" && s.GetBuilding() == "" && s.GetFloor() == "" && s.GetZone() == "" {
		return "with no location (no --campus, --building, --floor or --zone)"
	}
	var parts []string
	for _, f := range [][2]string{{"campus", s.GetCampus()}, {"building", s.GetBuilding()}, {"floor", s.GetFloor()}, {"zone", s.GetZone()}} {
		parts = append(parts, f[0]+" "+strconv.Quote(f[1]))
	}
	return strings.Join(parts, ", ")
}

// printCampusMap writes the segments as a tree, campus (when any is
// named) > building > floor > zone, with subtotals per level, then the
// crossings.
func printCampusMap(w io.Writer, resp *medmeshv1.GetCampusMapResponse) error {
	segs := resp.GetSegments()
	campuses := false
	for _, s := range segs {
		campuses = campuses || s.GetSegment().GetCampus() != ""
	}
	fmt.Fprintf(w, "%d devices in %d segments\n\n", resp.GetDevices(), len(segs))
	t := newTable(w, "SEGMENT", "DEVICES", "LIFE-CRITICAL", "CLINICAL", "NON-CLINICAL", "UNKNOWN TIER", "CROSSINGS")
	unknown := func(s string) string {
		if s == "" {
			return "(unknown)"
		}
		return s
	}
	// A level's row sums the segments below it, up to the next segment
	// whose fields above that level differ. The segments come ordered.
	levels := []struct {
		name string
		key  func(*medmeshv1.Segment) []string
	}{
		{"campus", func(s *medmeshv1.Segment) []string { return []string{s.GetCampus()} }},
		{"building", func(s *medmeshv1.Segment) []string { return []string{s.GetCampus(), s.GetBuilding()} }},
		{"floor", func(s *medmeshv1.Segment) []string { return []string{s.GetCampus(), s.GetBuilding(), s.GetFloor()} }},
	}
	if !campuses {
		levels = levels[1:]
	}
	prev := make([]string, len(levels))
	for i, s := range segs {
		seg := s.GetSegment()
		for depth, l := range levels {
			k := strings.Join(l.key(seg), "\x00")
			if i > 0 && prev[depth] == k {
				continue
			}
			prev[depth] = k
			var sum medmeshv1.SegmentSummary
			for _, o := range segs[i:] {
				if strings.Join(l.key(o.GetSegment()), "\x00") != k {
					break
				}
				sum.Devices += o.GetDevices()
				sum.LifeCritical += o.GetLifeCritical()
				sum.Clinical += o.GetClinical()
				sum.NonClinical += o.GetNonClinical()
				sum.UnknownTier += o.GetUnknownTier()
			}
			v := l.key(seg)[len(l.key(seg))-1]
			t.row(strings.Repeat("  ", depth)+l.name+" "+unknown(v), sum.Devices, sum.LifeCritical, sum.Clinical, sum.NonClinical, sum.UnknownTier, "")
		}
		t.row(strings.Repeat("  ", len(levels))+"zone "+unknown(seg.GetZone()), s.GetDevices(), s.GetLifeCritical(), s.GetClinical(),
			s.GetNonClinical(), s.GetUnknownTier(), s.GetCrossings())
	}
	if err := t.flush(); err != nil {
		return err
	}

	fmt.Fprintln(w, "\nCROSSINGS")
	t = newTable(w, "FROM", "TO", "DEVICE PAIRS", "FLOWS", "SERVICES", "EXAMPLES")
	for _, c := range resp.GetCrossings() {
		t.row(segmentName(c.GetFrom()), segmentName(c.GetTo()), c.GetDevicePairs(), c.GetFlows(),
			strings.Join(c.GetServices(), ", "), strings.Join(c.GetExamples(), ", "))
	}
	if err := t.flush(); err != nil {
		return err
	}
	if n := resp.GetTruncatedCrossings(); n > 0 {
		fmt.Fprintf(w, "(%d more crossings with fewer flows: --max-crossings, or -o json)\n", n)
	}
	return nil
}

// printSegmentDevices writes a segment's devices, and with peers each
// device's peers.
func printSegmentDevices(w io.Writer, seg *medmeshv1.Segment, devs []*medmeshv1.SegmentDevice, total int32, peers bool) error {
	fmt.Fprintf(w, "%s: %d of %d devices\n\n", segmentName(seg), len(devs), total)
	t := newTable(w, "MAC", "IP", "HOSTNAME", "CLASS", "TIER", "VENDOR", "MODEL", "PEERS", "CROSSING", "FLOWS")
	for _, d := range devs {
		var crossing int
		var flows uint64
		for _, p := range d.GetPeers() {
			if p.GetCrosses() {
				crossing++
			}
			flows += p.GetFlows()
		}
		n := strconv.Itoa(len(d.GetPeers()))
		if d.GetTruncatedPeers() > 0 {
			n += fmt.Sprintf(" (+%d)", d.GetTruncatedPeers())
		}
		t.row(d.GetMac(), strings.Join(d.GetIpAddresses(), ","), d.GetHostname(), names.Enum(d.GetDeviceClass()), names.Enum(d.GetTier()),
			d.GetVendor(), d.GetModel(), n, crossing, flows)
	}
	if err := t.flush(); err != nil {
		return err
	}
	if !peers {
		return nil
	}
	fmt.Fprintln(w, "\nPEERS")
	t = newTable(w, "DEVICE", "PEER", "PEER DEVICE", "WHERE", "SERVICE", "DIRECTION", "BASELINE", "FLOWS", "BY PEER")
	for _, d := range devs {
		for _, p := range d.GetPeers() {
			t.row(d.GetMac(), peerName(p), p.GetPeerMac(), where(p), service(p), names.Enum(p.GetDirection()),
				yesNo(p.GetInBaseline()), p.GetFlows(), yesNo(p.GetReportedByPeer()))
		}
	}
	return t.flush()
}

// printDeviceTraffic writes what GetDeviceTraffic says of one device.
func printDeviceTraffic(w io.Writer, mac string, r *medmeshv1.GetDeviceTrafficResponse) error {
	fmt.Fprintf(w, "device    %s  %s\n", mac, segmentName(r.GetSegment()))
	switch {
	case !r.GetHasBaseline():
		fmt.Fprintln(w, "baseline  none frozen yet (nor its class's)")
	default:
		whose := "its own"
		if r.GetClassBaseline() {
			whose = "its class's"
		}
		fmt.Fprintf(w, "baseline  %s, version %d, frozen %s by sensor %s; protocols %s\n", whose, r.GetBaselineVersion(),
			dash(ts(r.GetBaselineFreezeTime())), dash(r.GetBaselineSensorId()), dash(strings.Join(r.GetBaselineProtocols(), ", ")))
	}
	fmt.Fprintf(w, "flows     %d in %d flow summaries", r.GetFlows(), r.GetFlowSummaries())
	if since := ts(r.GetFlowsSince()); since != "" {
		fmt.Fprintf(w, " since %s", since)
	}
	fmt.Fprintln(w)
	var pols []string
	for _, p := range r.GetPolicies() {
		pols = append(pols, policyState(p))
	}
	if cp := r.GetClassPolicy(); cp != nil {
		pols = append(pols, "class "+policyState(cp))
	}
	fmt.Fprintf(w, "policies  %s\n", dash(strings.Join(pols, "; ")))
	if g := r.GetGenerated(); r.GetGenerateError() == "" && g != nil {
		fmt.Fprintf(w, "generated policy (from the baseline, not stored) would drop %d of %d recent flows\n", g.GetFlowsDropped(), g.GetFlowsTotal())
	} else if r.GetGenerateError() != "" {
		fmt.Fprintf(w, "generated none: %s\n", r.GetGenerateError())
	}
	fmt.Fprintln(w)
	t := newTable(w, "PEER", "NAME", "PEER DEVICE", "WHERE", "CROSSES", "SERVICE", "DIRECTION", "BASELINE", "FLOWS", "BYTES OUT", "BYTES IN", "LAST SEEN", "WOULD DROP")
	for _, p := range r.GetPeers() {
		t.row(p.GetPeer(), p.GetPeerName(), p.GetPeerMac(), where(p), yesNo(p.GetCrosses()), service(p), names.Enum(p.GetDirection()),
			yesNo(p.GetInBaseline()), p.GetFlows(), p.GetBytesOut(), p.GetBytesIn(), ts(p.GetLastSeen()), p.GetWouldDrop())
	}
	return t.flush()
}

func policyState(p *medmeshv1.Policy) string {
	s := p.GetName() + " (" + names.Enum(p.GetMode())
	if p.GetActive() {
		s += ", active"
	} else {
		s += ", inactive"
	}
	if p.GetQuarantine() {
		s += ", quarantine"
	}
	return s + ")"
}

// peerName is a peer's address, with its name when the sensor knew one.
func peerName(p *medmeshv1.Peer) string {
	if p.GetPeerName() != "" {
		return p.GetPeer() + " (" + p.GetPeerName() + ")"
	}
	return p.GetPeer()
}

// where is the peer's segment; "" when the proto leaves it unset.
func where(p *medmeshv1.Peer) string {
	if p.GetPeerSegment() == nil {
		return ""
	}
	return segmentName(p.GetPeerSegment())
}

// service is "tcp/2575 hl7", as the console and the map's crossings spell it.
func service(p *medmeshv1.Peer) string {
	s := names.Protocol(p.GetProtocol())
	if p.GetPort() != 0 {
		s += "/" + strconv.FormatUint(uint64(p.GetPort()), 10)
	}
	if p.GetApp() != "" {
		s += " " + p.GetApp()
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
