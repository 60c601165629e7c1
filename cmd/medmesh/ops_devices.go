package main

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/medmesh/medmesh/internal/names"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

func newDevicesCmd(o *opFlags) *cobra.Command {
	c := &cobra.Command{
		Use:   "devices",
		Short: "List and show the device inventory; set a device's class and tier",
	}
	var (
		class, tier, floor, zone string
		minRisk                  uint32
		labels                   []string
		limit                    int
	)
	list := &cobra.Command{
		Use:   "list",
		Short: "List devices",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &medmeshv1.ListDevicesRequest{Floor: floor, Zone: zone, MinRiskScore: minRisk, Consistency: o.consistency()}
			n, err := parseEnum(medmeshv1.DeviceClass(0).Descriptor(), "class", class)
			if err != nil {
				return err
			}
			req.DeviceClass = medmeshv1.DeviceClass(n)
			n, err = parseEnum(medmeshv1.Tier(0).Descriptor(), "tier", tier)
			if err != nil {
				return err
			}
			req.Tier = medmeshv1.Tier(n)
			for _, l := range labels {
				k, v, ok := strings.Cut(l, "=")
				if !ok || k == "" {
					return usagef("invalid --label %q: want key=value", l)
				}
				if req.Labels == nil {
					req.Labels = map[string]string{}
				}
				req.Labels[k] = v
			}
			return o.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				cl := medmeshv1.NewInventoryServiceClient(conn)
				var last *medmeshv1.ListDevicesResponse
				devs, next, err := listAll(limit, func(token string, size int32) ([]*medmeshv1.Device, string, error) {
					req.PageToken, req.PageSize = token, size
					resp, err := cl.ListDevices(ctx, req)
					last = resp
					return resp.GetDevices(), resp.GetNextPageToken(), err
				})
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				if o.json() {
					return printProto(w, &medmeshv1.ListDevicesResponse{Devices: devs, NextPageToken: next,
						TotalSize: last.GetTotalSize(), ReadInfo: last.GetReadInfo()})
				}
				t := newTable(w, "MAC", "IP", "VENDOR", "MODEL", "FIRMWARE", "CLASS", "TIER", "FLOOR", "ZONE", "SITE", "RISK", "LAST SEEN")
				for _, d := range devs {
					t.row(d.GetMac(), strings.Join(d.GetIpAddresses(), ","), d.GetVendor(), d.GetModel(), d.GetFirmware(),
						names.Enum(d.GetDeviceClass()), names.Enum(d.GetTier()), d.GetLocation().GetFloor(),
						d.GetLocation().GetZone(), d.GetSite(), d.GetRisk().GetScore(), ts(d.GetLastSeen()))
				}
				return t.flush()
			})
		},
	}
	lf := list.Flags()
	lf.StringVar(&class, "class", "", "only this device class (e.g. infusion-pump)")
	lf.StringVar(&tier, "tier", "", "only this tier (life-critical, clinical, non-clinical)")
	lf.StringVar(&floor, "floor", "", "only this floor")
	lf.StringVar(&zone, "zone", "", "only this zone")
	lf.Uint32Var(&minRisk, "min-risk", 0, "only devices with at least this risk score")
	lf.StringArrayVar(&labels, "label", nil, "only devices with this label, key=value (repeatable)")
	lf.IntVar(&limit, "limit", 0, "at most this many devices (0: all)")

	get := &cobra.Command{
		Use:   "get MAC",
		Short: "Show one device",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := medmeshv1.NewInventoryServiceClient(conn).GetDevice(ctx,
					&medmeshv1.GetDeviceRequest{Mac: args[0], Consistency: o.consistency()})
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				if o.json() {
					return printProto(w, resp)
				}
				return printDevice(w, resp.GetDevice())
			})
		},
	}
	c.AddCommand(list, get, newDevicesSetCmd(o))
	return c
}

// newDevicesSetCmd is `medmesh devices set`: an operator's audited change of
// a device's class or tier, the only way either moves down (sensor reports
// never lower a device's safety tier).
func newDevicesSetCmd(o *opFlags) *cobra.Command {
	var class, tier, reason, actor string
	var labels []string
	set := &cobra.Command{
		Use:   "set MAC",
		Short: "Set a device's class, tier and/or labels (audited with your certificate identity)",
		Long: "Set a device's class, tier and/or labels. Sensors can raise a device's tier but never\n" +
			"lower it; this operator change, recorded in the audit trail under the identity\n" +
			"of your certificate, can. --tier unspecified removes an earlier override: the\n" +
			"tier then follows the class. --label KEY=VALUE sets a label (an empty VALUE removes\n" +
			"it); the labels vendor, model, version, os and udi_di give risk matching the\n" +
			"identity your CMDB holds, and win over what the sensors derived.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			if !f.Changed("class") && !f.Changed("tier") && len(labels) == 0 {
				return usagef("devices set: give --class, --tier, --label or several")
			}
			set := map[string]string{}
			for _, l := range labels {
				k, v, ok := strings.Cut(l, "=")
				if !ok || strings.TrimSpace(k) == "" {
					return usagef("devices set: --label %q: want KEY=VALUE", l)
				}
				set[strings.TrimSpace(k)] = v
			}
			if reason == "" {
				return usagef("devices set: --reason is required (it is recorded in the audit trail)")
			}
			dev := &medmeshv1.Device{Mac: args[0]}
			var paths []string
			if f.Changed("class") {
				n, err := parseEnum(medmeshv1.DeviceClass(0).Descriptor(), "class", class)
				if err != nil {
					return err
				}
				dev.DeviceClass, paths = medmeshv1.DeviceClass(n), append(paths, "device_class")
			}
			if f.Changed("tier") {
				n, err := parseEnum(medmeshv1.Tier(0).Descriptor(), "tier", tier)
				if err != nil {
					return err
				}
				dev.Tier, paths = medmeshv1.Tier(n), append(paths, "tier")
			}
			return o.write(cmd, func(ctx context.Context, conn *grpc.ClientConn, requestID string) error {
				if len(set) > 0 {
					// Labels are replaced as a whole: merge into the current ones.
					cur, err := medmeshv1.NewInventoryServiceClient(conn).GetDevice(ctx, &medmeshv1.GetDeviceRequest{Mac: args[0]})
					if err != nil {
						return err
					}
					dev.Labels = map[string]string{}
					for k, v := range cur.GetDevice().GetLabels() {
						dev.Labels[k] = v
					}
					for k, v := range set {
						if v == "" {
							delete(dev.Labels, k)
						} else {
							dev.Labels[k] = v
						}
					}
					if !slices.Contains(paths, "labels") {
						paths = append(paths, "labels")
					}
				}
				resp, err := medmeshv1.NewInventoryServiceClient(conn).UpdateDevice(ctx, &medmeshv1.UpdateDeviceRequest{
					Device: dev, UpdateMask: &fieldmaskpb.FieldMask{Paths: paths}, Actor: actor, Reason: reason, RequestId: requestID,
				})
				if err != nil {
					return err
				}
				if o.json() {
					return printProto(cmd.OutOrStdout(), resp)
				}
				return printDevice(cmd.OutOrStdout(), resp.GetDevice())
			})
		},
	}
	sf := set.Flags()
	sf.StringVar(&class, "class", "", "device class (e.g. infusion-pump, it-workstation)")
	sf.StringVar(&tier, "tier", "", "tier: life-critical, clinical, non-clinical, or unspecified to follow the class")
	sf.StringVar(&reason, "reason", "", "why (required; recorded in the audit trail)")
	sf.StringVar(&actor, "actor", "", "a comment on who asked (the audit actor is your certificate's identity)")
	sf.StringArrayVar(&labels, "label", nil, "KEY=VALUE label to set (repeatable; an empty VALUE removes KEY)")
	return set
}

func printDevice(w interface{ Write([]byte) (int, error) }, d *medmeshv1.Device) error {
	t := newTable(w, "FIELD", "VALUE")
	loc := d.GetLocation()
	t.row("mac", d.GetMac())
	t.row("ip addresses", strings.Join(d.GetIpAddresses(), ", "))
	t.row("vendor", d.GetVendor())
	t.row("model", d.GetModel())
	t.row("firmware", d.GetFirmware())
	t.row("hostname", d.GetHostname())
	t.row("class", fmt.Sprintf("%s (confidence %.2f)", names.Enum(d.GetDeviceClass()), d.GetClassConfidence()))
	tier := names.Enum(d.GetTier())
	if d.GetTierOverridden() {
		tier += " (set by operator)"
	}
	t.row("tier", tier)
	t.row("location", strings.Trim(strings.Join([]string{loc.GetCampus(), loc.GetBuilding(), loc.GetFloor(), loc.GetZone()}, "/"), "/"))
	if d.GetSite() != "" || d.GetAdvisory() {
		// Seen through flow export (medmesh node --collect).
		t.row("site", d.GetSite())
		t.row("enforcement", "advisory: no inline enforcer on its path; a gateway or NAC acts on its decisions")
		t.row("absent evidence", strings.Join(d.GetAbsentEvidence(), ", "))
	}
	keys := make([]string, 0, len(d.GetLabels()))
	for k := range d.GetLabels() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var ls []string
	for _, k := range keys {
		ls = append(ls, k+"="+d.GetLabels()[k])
	}
	t.row("labels", strings.Join(ls, ", "))
	t.row("protocols", strings.Join(d.GetProtocols(), ", "))
	var svcs []string
	for _, s := range d.GetServices() {
		svc := names.Protocol(s.GetProtocol())
		if s.GetPort() != 0 {
			svc += "/" + strconv.FormatUint(uint64(s.GetPort()), 10)
		}
		if s.GetApp() != "" {
			svc += " " + s.GetApp()
		}
		svcs = append(svcs, svc)
	}
	t.row("services", strings.Join(svcs, ", "))
	id := d.GetIdentifiers()
	t.row("dicom ae titles", strings.Join(id.GetDicomAeTitles(), ", "))
	t.row("hl7 udis", strings.Join(id.GetHl7Udis(), ", "))
	t.row("dhcp hostname", id.GetDhcpHostname())
	t.row("dhcp vendor class", id.GetDhcpVendorClass())
	t.row("hl7 applications", strings.Join(id.GetHl7SendingApplications(), ", "))
	t.row("hl7 software", strings.Join(id.GetHl7Software(), ", "))
	t.row("dicom implementations", strings.Join(id.GetDicomImplementations(), ", "))
	t.row("snmp sysdescr", id.GetSnmpSysDescr())
	t.row("snmp sysname", id.GetSnmpSysName())
	t.row("http servers", strings.Join(id.GetHttpServers(), ", "))
	t.row("ssdp servers", strings.Join(id.GetSsdpServers(), ", "))
	t.row("first seen", ts(d.GetFirstSeen()))
	t.row("last seen", ts(d.GetLastSeen()))
	t.row("last sensor", d.GetLastSensorId())
	t.row("risk", d.GetRisk().GetScore())
	for _, f := range d.GetRisk().GetFactors() {
		t.row("  "+f.GetName(), fmt.Sprintf("%.0f  %s", f.GetWeight(), f.GetDetail()))
	}
	return t.flush()
}
