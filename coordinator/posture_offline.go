package coordinator

import (
	"slices"
	"time"

	"github.com/medmesh/medmesh/coordinator/internal/posture"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
	"github.com/medmesh/medmesh/risk"
)

// AssessPosture is a device's risk posture as the leader computes it (the
// bundle's findings for its identity, what the sensors observed, and the
// score), for tools that run without a cluster (`medmesh compliance
// assess`). intel may be nil (no bundle). alerts are the device's, in
// commit order: those about destinations outside the hospital count as
// external communication and default credentials its service accepted are
// findings, as in the coordinator. No SBOM is read.
func AssessPosture(intel *risk.Intel, d *medmeshv1.Device, alerts []*medmeshv1.Alert, at time.Time) (*medmeshv1.DevicePosture, error) {
	var (
		ext   []posture.Destination
		creds []posture.Credential
	)
	for _, a := range alerts {
		if x, ok := posture.ExternalAlert(a, d.GetIpAddresses()); ok {
			ext = append(ext, x)
		}
		c, ok := posture.CredentialAlert(a, d.GetIpAddresses())
		known := slices.ContainsFunc(creds, func(x posture.Credential) bool {
			return x.Protocol == c.Protocol && x.Port == c.Port && x.Account == c.Account && x.Method == c.Method
		})
		if ok && !known && len(creds) < posture.MaxEvidence {
			creds = append(creds, c)
		}
	}
	return posture.Assess(intel, d, ext, posture.SortCredentials(creds), "", "", at)
}
