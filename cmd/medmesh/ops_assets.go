package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	model "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/medmesh/medmesh/integrations/assetfile"
	"github.com/medmesh/medmesh/integrations/fhir"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// importChunk is how many records one ImportDevices request carries (the
// server takes at most 10,000).
const importChunk = 5000

// newDevicesExportCmd is `medmesh devices export`: the inventory as a FHIR
// R4 Bundle of Device resources.
func newDevicesExportCmd(o *opFlags) *cobra.Command {
	var format, out string
	c := &cobra.Command{
		Use:   "export --format fhir [--out FILE]",
		Short: "Export the inventory as a FHIR R4 Bundle of Device resources",
		Long: "Export the inventory as a FHIR R4 Bundle (type collection) of Device resources:\n" +
			"udiCarrier, manufacturer, modelNumber, serialNumber, version, type, location,\n" +
			"owner, status and safety (the tier, system urn:medmesh:tier). Where the network\n" +
			"and the asset register both know a field the network's value is exported.\n" +
			"medmesh devices import reads the file back.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "fhir" {
				return usagef("devices export: --format %q: only fhir", format)
			}
			return o.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				cl := medmeshv1.NewInventoryServiceClient(conn)
				devs, _, err := listAll(0, func(token string, size int32) ([]*medmeshv1.Device, string, error) {
					resp, err := cl.ListDevices(ctx, &medmeshv1.ListDevicesRequest{PageToken: token, PageSize: size, Consistency: o.consistency()})
					return resp.GetDevices(), resp.GetNextPageToken(), err
				})
				if err != nil {
					return err
				}
				b, err := fhir.Bundle(devs, model.BundleTypeCollection, "")
				if err != nil {
					return err
				}
				b = append(b, '\n')
				if out == "" || out == "-" {
					_, err = cmd.OutOrStdout().Write(b)
					return err
				}
				if err := os.WriteFile(out, b, 0o644); err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "wrote %d devices to %s\n", len(devs), out)
				return nil
			})
		},
	}
	c.Flags().StringVar(&format, "format", "fhir", "output format: fhir (an R4 Bundle of Device resources)")
	c.Flags().StringVar(&out, "out", "", "write to FILE instead of standard output")
	return c
}

// newDevicesImportCmd is `medmesh devices import`: asset register data
// merged into the inventory, audited, conflicts reported.
func newDevicesImportCmd(o *opFlags) *cobra.Command {
	var format, reason, actor string
	var dryRun bool
	c := &cobra.Command{
		Use:   "import FILE [--dry-run]",
		Short: "Merge CMDB / biomed asset data (CSV, JSON Lines, FHIR Bundle) into the inventory",
		Long: "Merge asset register data into the inventory: model, version, serial, UDI,\n" +
			"location, owner and criticality. FILE (- for standard input) is CSV with a header,\n" +
			"JSON Lines in the fields of medmesh risk assess --inventory, or a FHIR R4 Bundle of\n" +
			"Device resources (medmesh devices export writes one); the format is detected\n" +
			"unless --format says. Fields: mac, ip, vendor (or manufacturer), model, version,\n" +
			"serial, udi, udi_di, location (campus/building/floor/zone), owner, criticality\n" +
			"(life-critical, clinical, non-clinical), record_id; name, os and sbom are ignored.\n" +
			"A record names its device by mac, or by an ip exactly one device used.\n\n" +
			"What the network shows is never overwritten: a different register value is\n" +
			"reported as a conflict and not applied. A criticality may raise a device's tier,\n" +
			"never lower it. Devices the sensors have not seen are reported, not created.\n" +
			"Every changed device gets an audit record under your certificate's identity.\n" +
			"--dry-run shows the changes and conflicts and changes nothing.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch format {
			case "", "csv", "jsonl", "fhir":
			default:
				return usagef("devices import: --format %q: want csv, jsonl or fhir", format)
			}
			var data []byte
			var err error
			if args[0] == "-" {
				data, err = io.ReadAll(io.LimitReader(cmd.InOrStdin(), assetfile.MaxSize+1))
			} else {
				data, err = os.ReadFile(args[0])
			}
			if err != nil {
				return err
			}
			recs, f, err := assetfile.Read(data, assetfile.Format(format))
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			if len(recs) == 0 {
				return fmt.Errorf("%s: no records", args[0])
			}
			source := filepath.Base(args[0])
			if args[0] == "-" {
				source = "stdin"
			}
			source += " (" + string(f) + ")"
			total := &medmeshv1.ImportDevicesResponse{DryRun: dryRun}
			err = o.write(cmd, func(ctx context.Context, conn *grpc.ClientConn, requestID string) error {
				total.Changes, total.Conflicts, total.Unmatched, total.DevicesChanged = nil, nil, nil, 0
				cl := medmeshv1.NewInventoryServiceClient(conn)
				for i := 0; i < len(recs); i += importChunk {
					req := &medmeshv1.ImportDevicesRequest{
						Records: recs[i:min(i+importChunk, len(recs))], DryRun: dryRun, Source: source, Actor: actor, Reason: reason,
					}
					if !dryRun {
						req.RequestId = chunkRequestID(requestID, i/importChunk)
					}
					resp, err := cl.ImportDevices(ctx, req)
					if err != nil {
						return err
					}
					total.Changes = append(total.Changes, resp.GetChanges()...)
					total.Conflicts = append(total.Conflicts, resp.GetConflicts()...)
					total.Unmatched = append(total.Unmatched, resp.GetUnmatched()...)
					total.DevicesChanged += resp.GetDevicesChanged()
				}
				return nil
			})
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if o.json() {
				return printProto(w, total)
			}
			return printImport(w, len(recs), total)
		},
	}
	f := c.Flags()
	f.BoolVar(&dryRun, "dry-run", false, "show what would change and the conflicts; change nothing")
	f.StringVar(&format, "format", "", "input format: csv, jsonl or fhir (default: detected)")
	f.StringVar(&reason, "reason", "", "why (recorded in the audit trail)")
	f.StringVar(&actor, "actor", "", "a comment on who asked (the audit actor is your certificate's identity)")
	return c
}

func printImport(w io.Writer, records int, r *medmeshv1.ImportDevicesResponse) error {
	verb := "changed"
	if r.GetDryRun() {
		verb = "would change"
	}
	fmt.Fprintf(w, "%d records: %s %d devices (%d fields), %d conflicts, %d unmatched\n",
		records, verb, r.GetDevicesChanged(), len(r.GetChanges()), len(r.GetConflicts()), len(r.GetUnmatched()))
	if len(r.GetChanges()) > 0 {
		fmt.Fprintln(w, "\nCHANGES")
		t := newTable(w, "MAC", "FIELD", "OLD", "NEW")
		for _, c := range r.GetChanges() {
			t.row(c.GetMac(), c.GetField(), c.GetOldValue(), c.GetNewValue())
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	if len(r.GetConflicts()) > 0 {
		fmt.Fprintln(w, "\nCONFLICTS (not applied)")
		t := newTable(w, "LINE", "MAC", "FIELD", "INVENTORY", "IMPORT", "WHY")
		for _, c := range r.GetConflicts() {
			t.row(c.GetLine(), c.GetMac(), c.GetField(), c.GetInventoryValue(), c.GetImportValue(), c.GetReason())
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	if len(r.GetUnmatched()) > 0 {
		fmt.Fprintln(w, "\nUNMATCHED")
		t := newTable(w, "LINE", "MAC", "IP", "WHY")
		for _, u := range r.GetUnmatched() {
			t.row(u.GetLine(), u.GetMac(), u.GetIp(), u.GetReason())
		}
		return t.flush()
	}
	return nil
}

// chunkRequestID is the request id of an import's nth request: the
// invocation's id for the first, one derived from it for the others (so a
// retried invocation repeats every chunk's id, and ids stay short).
func chunkRequestID(id string, n int) string {
	if n == 0 {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return fmt.Sprintf("%x-%d", sum[:16], n)
}
