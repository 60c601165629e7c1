package coordinator

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/medmesh/medmesh/coordinator/internal/api"
	"github.com/medmesh/medmesh/coordinator/internal/fsm/fsmpb"
	"github.com/medmesh/medmesh/coordinator/internal/posture"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
	"github.com/medmesh/medmesh/risk"
)

// Blob kinds kept in the data directory, out of Raft.
const (
	blobBundle = "bundle"
	blobSBOM   = "sbom"
)

// MaxSBOMSize bounds an uploaded SBOM.
const MaxSBOMSize = 64 << 20

// MaxBundleSize bounds an uploaded or fetched bundle archive.
const MaxBundleSize = 4 << 30

// intelStore keeps bundles and SBOMs content-addressed in the data
// directory (intel/bundle/DIGEST, intel/sbom/DIGEST; a bundle's digest is
// its manifest's SHA-256, an SBOM's the file's) and the active bundle
// loaded.
type intelStore struct {
	dir string
	key ed25519.PublicKey

	mu     sync.Mutex
	intel  *risk.Intel // the loaded bundle, or nil
	loaded string      // its digest
	failed string      // why the active bundle is not loaded ("" when it is)
	// admitted is the bundle last admitted (checked and loaded on
	// receipt), kept so that activating it does not load it again.
	admitted *risk.Intel
}

func newIntelStore(dataDir string, key ed25519.PublicKey) (*intelStore, error) {
	s := &intelStore{dir: filepath.Join(dataDir, "intel"), key: key}
	for _, d := range []string{blobBundle, blobSBOM, "tmp"} {
		if err := os.MkdirAll(filepath.Join(s.dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("intel store: %w", err)
		}
	}
	// Uploads and fetches that a crash interrupted.
	tmp, _ := os.ReadDir(filepath.Join(s.dir, "tmp"))
	for _, e := range tmp {
		_ = os.Remove(filepath.Join(s.dir, "tmp", e.Name()))
	}
	return s, nil
}

func (s *intelStore) path(kind, digest string) string { return filepath.Join(s.dir, kind, digest) }

func (s *intelStore) has(kind, digest string) bool {
	st, err := os.Stat(s.path(kind, digest))
	return err == nil && st.Mode().IsRegular()
}

// NewUpload is a temporary file in the store's directory (so admitting it
// is a rename).
func (s *intelStore) NewUpload() (*os.File, error) {
	return os.CreateTemp(filepath.Join(s.dir, "tmp"), "upload-*")
}

// admitBundle checks the archive at tmp (as `medmesh intel verify` does,
// with the configured key) and moves it into the store by its digest. It
// returns the loaded bundle. A refused bundle's error names the file and
// the reason; tmp is removed either way.
func (s *intelStore) admitBundle(tmp string) (*risk.Intel, int64, error) {
	defer os.Remove(tmp)
	in, err := risk.Load(tmp, s.key)
	if err != nil {
		return nil, 0, err
	}
	st, err := os.Stat(tmp)
	if err != nil {
		return nil, 0, err
	}
	if err := os.Rename(tmp, s.path(blobBundle, in.Digest())); err != nil {
		return nil, 0, err
	}
	s.mu.Lock()
	s.admitted = in
	s.mu.Unlock()
	return in, st.Size(), nil
}

// admitSBOM moves an SBOM into the store by its SHA-256.
func (s *intelStore) admitSBOM(tmp string) (string, int64, error) {
	defer os.Remove(tmp)
	f, err := os.Open(tmp)
	if err != nil {
		return "", 0, err
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	f.Close()
	if err != nil {
		return "", 0, err
	}
	d := hex.EncodeToString(h.Sum(nil))
	if err := os.Rename(tmp, s.path(blobSBOM, d)); err != nil {
		return "", 0, err
	}
	return d, n, nil
}

func timestampOf(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }

func protoSize(m proto.Message) int { return proto.Size(m) }

// current is the loaded bundle if it is digest's.
func (s *intelStore) current(digest string) *risk.Intel {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.loaded == digest {
		return s.intel
	}
	return nil
}

// load makes digest's bundle (held in the store) the loaded one.
func (s *intelStore) load(digest string) (*risk.Intel, error) {
	if in := s.current(digest); in != nil {
		return in, nil
	}
	s.mu.Lock()
	in := s.admitted
	s.admitted = nil
	s.mu.Unlock()
	if in != nil && in.Digest() == digest {
		s.mu.Lock()
		s.intel, s.loaded, s.failed = in, digest, ""
		s.mu.Unlock()
		return in, nil
	}
	in, err := risk.Load(s.path(blobBundle, digest), s.key)
	if err == nil && in.Digest() != digest {
		err = fmt.Errorf("stored bundle %s has digest %s", digest, in.Digest())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.failed = err.Error()
		return nil, err
	}
	s.intel, s.loaded, s.failed = in, digest, ""
	return in, nil
}

// The coordinator's side of RiskService (api.RiskBackend).

var _ api.RiskBackend = (*Coordinator)(nil)

// NewUpload is a temporary file for an upload.
func (c *Coordinator) NewUpload() (*os.File, error) { return c.intel.NewUpload() }

// AdmitBundle checks an uploaded bundle and keeps it (api.RiskBackend).
func (c *Coordinator) AdmitBundle(tmp, name string) (*medmeshv1.IntelBundle, error) {
	in, size, err := c.intel.admitBundle(tmp)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error()+"; the active bundle is unchanged")
	}
	b := &medmeshv1.IntelBundle{Digest: in.Digest(), Signed: in.Signed(), Files: uint32(in.FileCount()), Size: uint64(size), Name: name}
	if t := in.Created(); !t.IsZero() {
		b.Created = timestampOf(t)
	}
	return b, nil
}

// AdmitSBOM checks an uploaded SBOM and keeps it (api.RiskBackend).
func (c *Coordinator) AdmitSBOM(tmp, name string) (*medmeshv1.SBOMAttachment, error) {
	info, err := risk.ReadSBOM(tmp)
	if err != nil {
		os.Remove(tmp)
		// The error names the temporary file: say the client's name.
		return nil, status.Error(codes.InvalidArgument, strings.ReplaceAll(err.Error(), tmp, name))
	}
	format, components := strings.TrimSpace(info.Format+" "+info.SpecVersion), info.Components
	d, size, err := c.intel.admitSBOM(tmp)
	if err != nil {
		return nil, err
	}
	return &medmeshv1.SBOMAttachment{Digest: d, Format: format, Components: uint32(components), Size: uint64(size), Name: name}, nil
}

// BlobPath is where a stored blob is, and whether this coordinator has it.
func (c *Coordinator) BlobPath(kind, digest string) (string, bool) {
	if (kind != blobBundle && kind != blobSBOM) || len(digest) != 64 || strings.Trim(digest, "0123456789abcdef") != "" {
		return "", false
	}
	return c.intel.path(kind, digest), c.intel.has(kind, digest)
}

// IntelSources is the active bundle's status as loaded here.
func (c *Coordinator) IntelSources(digest string, maxAge time.Duration) ([]risk.SourceStatus, error) {
	in := c.intel.current(digest)
	if in == nil {
		c.intel.mu.Lock()
		why := c.intel.failed
		c.intel.mu.Unlock()
		if why == "" {
			why = "still being fetched from a peer"
		}
		return nil, status.Errorf(codes.Unavailable, "bundle %s is not loaded on %s: %s", digest, c.cfg.ID, why)
	}
	return in.Status(time.Now().UTC(), maxAge), nil
}

// IntelMaxAge is the configured age past which sources are stale.
func (c *Coordinator) IntelMaxAge() time.Duration { return c.cfg.IntelMaxAge }

// ensureBlob fetches a blob this coordinator lacks from a peer that has
// it, and checks it by digest: a bundle is loaded and its manifest digest
// compared (which checks every file), an SBOM hashed.
func (c *Coordinator) ensureBlob(ctx context.Context, kind, digest string) error {
	if c.intel.has(kind, digest) {
		return nil
	}
	servers := c.fsm.Servers()
	ids := make([]string, 0, len(servers))
	for id := range servers {
		if id != c.cfg.ID {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	var errs []error
	for _, id := range ids {
		err := c.fetchBlob(ctx, servers[id].GetApiAddr(), kind, digest)
		if err == nil {
			c.log.Info("fetched from a peer", "kind", kind, "digest", digest, "peer", id)
			return nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", id, err))
	}
	if len(errs) == 0 {
		return fmt.Errorf("%s %s: no peer to fetch it from", kind, digest)
	}
	return fmt.Errorf("%s %s: %w", kind, digest, errors.Join(errs...))
}

func (c *Coordinator) fetchBlob(ctx context.Context, addr, kind, digest string) error {
	conn, err := c.conn(addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	st, err := medmeshv1.NewRiskServiceClient(conn).FetchBlob(ctx, &medmeshv1.FetchBlobRequest{Kind: kind, Digest: digest})
	if err != nil {
		return err
	}
	f, err := c.intel.NewUpload()
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	limit := int64(MaxBundleSize)
	if kind == blobSBOM {
		limit = MaxSBOMSize
	}
	var n int64
	for {
		m, err := st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			f.Close()
			return err
		}
		if n += int64(len(m.GetChunk())); n > limit {
			f.Close()
			return fmt.Errorf("larger than %d bytes", limit)
		}
		if _, err := f.Write(m.GetChunk()); err != nil {
			f.Close()
			return err
		}
	}
	if err := errors.Join(f.Sync(), f.Close()); err != nil {
		return err
	}
	if kind == blobBundle {
		in, err := risk.Load(tmp, c.intel.key)
		if err != nil {
			return fmt.Errorf("fetched bundle refused: %w", err)
		}
		if in.Digest() != digest {
			return fmt.Errorf("fetched bundle has digest %s, not %s", in.Digest(), digest)
		}
		return os.Rename(tmp, c.intel.path(blobBundle, digest))
	}
	d, _, err := c.intel.admitSBOM(tmp)
	if err != nil {
		return err
	}
	if d != digest {
		_ = os.Remove(c.intel.path(blobSBOM, d))
		return fmt.Errorf("fetched sbom has digest %s, not %s", d, digest)
	}
	return nil
}

// assessor keeps every replica's copy of the active bundle and attached
// SBOMs (fetching what it lacks from peers), and on the leader keeps every
// device's committed posture current: it wakes when applied commands
// changed devices (fsm.TakeRiskChanges), reads the alerts committed since
// it last looked for external destinations and default credentials, and assesses again the devices
// whose inputs changed, all of them only when the bundle or an SBOM
// changed, a snapshot was restored or it became leader.
type assessor struct {
	c *Coordinator

	gen      uint64                           // leadership generation it assessed for
	alertPos uint64                           // next alert position to read
	ext      map[string][]posture.Destination // by device MAC, from alerts
	creds    map[string][]posture.Credential  // by device MAC, from default_credentials alerts
	pending  map[string]bool                  // devices to assess
	all      bool
}

func (c *Coordinator) runAssessor() {
	defer c.wg.Done()
	a := &assessor{c: c, pending: map[string]bool{}}
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	backoff := time.Second
	idle := time.NewTicker(500 * time.Millisecond) // only to notice leadership changes
	defer idle.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.fsm.RiskChanged():
		case <-retry.C:
		case <-idle.C:
			gen := c.leaderGen.Load()
			newLeader := c.IsLeader() && c.leaderReady.Load() == gen && a.gen != gen
			if !newLeader {
				// Nothing to do until something is applied; blobs still
				// missing are retried by the retry timer.
				continue
			}
		}
		if err := a.step(); err != nil {
			// A blob no peer has yet, a bundle this replica's key refuses:
			// try again, less often the longer it lasts.
			c.log.Warn("risk assessment", "err", err, "retry in", backoff)
			retry.Reset(backoff)
			backoff = min(2*backoff, 30*time.Second)
		} else {
			backoff = time.Second
		}
	}
}

// step does one round. An error leaves what is pending for the next one.
func (a *assessor) step() error {
	c := a.c
	macs, all := c.fsm.TakeRiskChanges()
	a.all = a.all || all
	for _, m := range macs {
		a.pending[m] = true
	}
	var errs []error
	active := c.fsm.ActiveIntel()
	var in *risk.Intel
	if active != nil {
		if err := c.ensureBlob(c.ctx, blobBundle, active.GetDigest()); err != nil {
			errs = append(errs, err)
		} else if in, _ = c.intel.load(active.GetDigest()); in == nil {
			errs = append(errs, fmt.Errorf("bundle %s does not load: %s", active.GetDigest(), c.intel.failed))
		}
	}
	for _, s := range c.fsm.SBOMs() {
		if err := c.ensureBlob(c.ctx, blobSBOM, s.GetDigest()); err != nil {
			errs = append(errs, err)
		}
	}
	gen := c.leaderGen.Load()
	if !c.IsLeader() || c.leaderReady.Load() != gen {
		// Followers keep the blobs; the leader assesses.
		a.gen, a.all, a.ext, a.creds, a.alertPos = 0, false, nil, nil, 0
		clear(a.pending)
		return errors.Join(errs...)
	}
	if active != nil && in == nil {
		return errors.Join(errs...) // assess once the bundle is here
	}
	if a.gen != gen {
		a.gen, a.all, a.ext, a.creds, a.alertPos = gen, true, map[string][]posture.Destination{}, map[string][]posture.Credential{}, 0
	}
	a.readAlerts()
	if err := a.assess(in); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// readAlerts folds the alerts committed since the last call into the
// external destinations and the default credentials seen accepted of their
// devices, marking those devices. Alerts are read in commit order, so the
// first alert of a credential is the same on whichever leader reads them.
func (a *assessor) readAlerts() {
	f := a.c.fsm
	for {
		page, first, _ := f.AlertsFrom(a.alertPos, 1024)
		a.alertPos = first
		for _, al := range page {
			a.alertPos++
			mac := al.GetDeviceMac()
			d := f.Device(mac)
			if cr, ok := posture.CredentialAlert(al, d.GetIpAddresses()); ok {
				known := slices.ContainsFunc(a.creds[mac], func(x posture.Credential) bool {
					return x.Protocol == cr.Protocol && x.Port == cr.Port && x.Account == cr.Account && x.Method == cr.Method
				})
				if !known && len(a.creds[mac]) < posture.MaxEvidence {
					a.creds[mac] = append(a.creds[mac], cr)
					a.pending[mac] = true
				}
			}
			dst, ok := posture.ExternalAlert(al, d.GetIpAddresses())
			if !ok {
				continue
			}
			known := slices.ContainsFunc(a.ext[mac], func(x posture.Destination) bool {
				return x.Addr == dst.Addr && x.Proto == dst.Proto && x.Port == dst.Port
			})
			if !known && len(a.ext[mac]) < 4*posture.MaxEvidence {
				a.ext[mac] = append(a.ext[mac], dst)
				a.pending[mac] = true
			}
		}
		if len(page) < 1024 {
			return
		}
	}
}

// maxPutBytes bounds one FindingsPut entry.
const maxPutBytes = 1 << 20

// assess assesses the pending devices (every device after a full change)
// whose inputs differ from their committed posture's, and commits them in
// batches.
func (a *assessor) assess(in *risk.Intel) error {
	c := a.c
	f := c.fsm
	var macs []string
	if a.all {
		for _, d := range f.Devices() {
			macs = append(macs, d.GetMac())
		}
	} else {
		for m := range a.pending {
			macs = append(macs, m)
		}
		slices.Sort(macs)
	}
	bundle := ""
	if in != nil {
		bundle = in.Digest()
	}
	now := time.Now().UTC()
	var batch []*medmeshv1.DevicePosture
	size := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.ApplyTimeout)
		defer cancel()
		_, err := c.Apply(ctx, &fsmpb.Command{Time: timestampOf(now), Command: &fsmpb.Command_FindingsPut{FindingsPut: &fsmpb.FindingsPut{Postures: batch}}})
		batch, size = nil, 0
		return err
	}
	for _, mac := range macs {
		d := f.Device(mac)
		if d == nil {
			delete(a.pending, mac)
			continue
		}
		id := posture.Identity(d)
		sbomDigest, sbomPath := "", ""
		if s := f.SBOMFor(id.Vendor, id.Model, id.Version); s != nil && c.intel.has(blobSBOM, s.GetDigest()) {
			sbomDigest, sbomPath = s.GetDigest(), c.intel.path(blobSBOM, s.GetDigest())
		}
		ext := a.ext[mac]
		creds := a.creds[mac]
		want := posture.InputsOf(d, ext, creds, bundle, sbomDigest).Digest()
		if p := f.Posture(mac); p != nil && p.GetInputDigest() == want {
			delete(a.pending, mac)
			continue
		}
		p, err := posture.Assess(in, d, ext, creds, sbomPath, sbomDigest, now)
		if p == nil {
			return fmt.Errorf("assess %s: %w", mac, err)
		}
		if err != nil {
			c.log.Warn("sbom not matched", "device", mac, "sbom", sbomDigest, "err", err)
		}
		batch = append(batch, p)
		size += protoSize(p)
		delete(a.pending, mac)
		if size >= maxPutBytes {
			if err := flush(); err != nil {
				a.all = true
				return err
			}
		}
	}
	if err := flush(); err != nil {
		a.all = true
		return err
	}
	a.all = false
	return nil
}
