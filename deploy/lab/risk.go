package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
	"github.com/medmesh/medmesh/risk"
)

// Identity is a device's record in the lab's CMDB.
type Identity struct {
	Vendor  string `json:"vendor,omitempty"`
	Model   string `json:"model,omitempty"`
	Version string `json:"version,omitempty"`
	OS      string `json:"os,omitempty"`
	UDIDI   string `json:"udi_di,omitempty"`
}

// labIdentities are real products of the advisories in
// ../shared/testdata/intel/csaf and of the risk fixtures, so `medmesh risk
// top` has something true to say about the lab's devices:
//
//   - ws1, a Siemens SPECT workplace on Windows XP (ICSMA-17-215-01:
//     CVE-2017-7269 is in CISA's KEV catalog; Windows XP is past its end
//     of life);
//   - modality1, a GE Discovery NM 750b on Windows XP Embedded (ICSMA-18-
//     037-02, CVE-2013-7404: the default "insite" accounts; end of life;
//     its simulator also answers telnet with default credentials);
//   - pump1, a BD Alaris 8015 PC unit whose UDI-DI GUDID knows (the openFDA
//     recall fixture names its 510(k));
//   - monitor1, a Philips IntelliVue MX40 at B.06.17 (ICSMA-17-255-01).
var labIdentities = map[string]*Identity{
	"ws1":       {Vendor: "Siemens", Model: "SPECT Workplaces/Symbia.net Windows XP-Based", Version: "VA60B", OS: "Windows XP Professional SP3"},
	"modality1": {Vendor: "GE Healthcare", Model: "Discovery NM 750b", Version: "1.002", OS: "Windows XP Embedded"},
	"pump1":     {Vendor: "BD", Model: "Alaris 8015 PC unit", Version: "9.7", UDIDI: "10885403801512"},
	"monitor1":  {Vendor: "Philips", Model: "IntelliVue MX40", Version: "B.06.17"},
}

// labels are the device labels an identity sets.
func (id *Identity) labels() map[string]string {
	out := map[string]string{}
	for k, v := range map[string]string{"vendor": id.Vendor, "model": id.Model, "version": id.Version, "os": id.OS, "udi_di": id.UDIDI} {
		if v != "" {
			out[k] = v
		}
	}
	return out
}

// Intel signing key files the lab makes beside its certificates; the
// coordinators refuse bundles not signed with it (--intel-key).
const (
	intelKeyName = "intel.key"
	intelPubName = "intel.pub"
)

// IntelPublicKey is the public key file the coordinators check bundles with.
func (c Config) IntelPublicKey() string { return filepath.Join(c.TLSDir(), intelPubName) }

func (c Config) makeIntelKey() error {
	priv, pub, err := risk.GenerateKey()
	if err != nil {
		return fmt.Errorf("lab intel key: %w", err)
	}
	if err := os.WriteFile(filepath.Join(c.TLSDir(), intelKeyName), priv, 0o600); err != nil {
		return fmt.Errorf("lab intel key: %w", err)
	}
	return os.WriteFile(c.IntelPublicKey(), pub, 0o644)
}

// IntelSources are the directories the lab builds its bundle from:
// Config.IntelDirs, or else the shared public data (../shared/testdata/
// intel beside the repository) and the risk fixtures (risk/testdata/
// intel), found from the working directory or the binary upwards.
func (c Config) IntelSources() []string {
	if len(c.IntelDirs) > 0 {
		return c.IntelDirs
	}
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if c.Binary != "" {
		starts = append(starts, filepath.Dir(c.Binary))
	}
	for _, s := range starts {
		for d := s; ; d = filepath.Dir(d) {
			fixtures := filepath.Join(d, "risk", "testdata", "intel")
			if st, err := os.Stat(fixtures); err == nil && st.IsDir() {
				out := []string{}
				if shared := filepath.Join(filepath.Dir(d), "shared", "testdata", "intel"); isDir(shared) {
					out = append(out, shared)
				}
				return append(out, fixtures)
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	return nil
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

// provisionRisk is the operator's first hour of risk posture: build a
// signed bundle from IntelSources, import it, and give the devices the
// lab's CMDB identities as labels. A lab without them still works: what
// fails is logged, and `medmesh risk top` shows what the sensors saw.
func (l *Lab) provisionRisk(ctx context.Context, timeout time.Duration) error {
	c := l.cfg
	conn, err := c.dial(OperatorName)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var errs []error
	if err := l.importIntel(ctx, conn); err != nil {
		errs = append(errs, fmt.Errorf("intel bundle: %w", err))
	}
	if err := l.labelDevices(ctx, conn); err != nil {
		errs = append(errs, fmt.Errorf("device identities: %w", err))
	}
	return errors.Join(errs...)
}

func (l *Lab) importIntel(ctx context.Context, conn *grpc.ClientConn) error {
	dirs := l.cfg.IntelSources()
	if len(dirs) == 0 {
		return errors.New("no intel sources found (risk/testdata/intel from the working directory or the binary up, or Config.IntelDirs)")
	}
	key, err := risk.ReadPrivateKey(filepath.Join(l.cfg.TLSDir(), intelKeyName))
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	n, err := risk.WriteBundle(&buf, dirs, time.Now().UTC().Truncate(time.Second), key)
	if err != nil {
		return err
	}
	path := filepath.Join(l.cfg.StateDir, "intel.tar.gz")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		return err
	}
	for {
		resp, err := uploadBundle(ctx, conn, buf.Bytes())
		if err == nil {
			l.log.Info("intel bundle imported", "files", n, "digest", resp.GetBundle().GetDigest(), "sources", dirs)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func uploadBundle(ctx context.Context, conn *grpc.ClientConn, data []byte) (*medmeshv1.ImportBundleResponse, error) {
	st, err := medmeshv1.NewRiskServiceClient(conn).ImportBundle(ctx)
	if err != nil {
		return nil, err
	}
	hdr := &medmeshv1.ImportBundleHeader{Name: "lab intel.tar.gz", Reason: "lab up: the campus's intelligence bundle", RequestId: "lab-intel"}
	for first := true; first || len(data) > 0; first = false {
		n := min(len(data), 1<<20)
		m := &medmeshv1.ImportBundleRequest{Chunk: data[:n]}
		if first {
			m.Header = hdr
		}
		if err := st.Send(m); err != nil {
			break
		}
		data = data[n:]
	}
	return st.CloseAndRecv()
}

// labelDevices waits for each device with an identity to be in the
// inventory and sets its identity labels (merged into its labels).
func (l *Lab) labelDevices(ctx context.Context, conn *grpc.ClientConn) error {
	inv := medmeshv1.NewInventoryServiceClient(conn)
	for _, d := range l.cfg.Devices() {
		if d.Identity == nil {
			continue
		}
		for {
			err := l.labelDevice(ctx, inv, d)
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s (%s): %w (last: %v)", d.Name, d.MAC, ctx.Err(), err)
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
	return nil
}

func (l *Lab) labelDevice(ctx context.Context, inv medmeshv1.InventoryServiceClient, d DeviceInfo) error {
	cur, err := inv.GetDevice(ctx, &medmeshv1.GetDeviceRequest{Mac: d.MAC})
	if err != nil {
		return err
	}
	labels := map[string]string{}
	for k, v := range cur.GetDevice().GetLabels() {
		labels[k] = v
	}
	for k, v := range d.Identity.labels() {
		labels[k] = v
	}
	_, err = inv.UpdateDevice(ctx, &medmeshv1.UpdateDeviceRequest{
		Device: &medmeshv1.Device{Mac: d.MAC, Labels: labels}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"labels"}},
		Reason: "lab up: the campus CMDB's record of " + d.Name, RequestId: "lab-identity-" + d.Name,
	})
	return err
}
