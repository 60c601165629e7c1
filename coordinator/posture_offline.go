package coordinator

import (
	"time"

	"github.com/medmesh/medmesh/coordinator/internal/posture"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
	"github.com/medmesh/medmesh/risk"
)

// AssessPosture is a device's risk posture as the leader computes it (the
// bundle's findings for its identity, what the sensors observed, and the
// score), for tools that run without a cluster (`medmesh compliance
// assess`). intel may be nil (no bundle). alerts are the device's: those
// about destinations outside the hospital count as external
// communication, as in the coordinator. No SBOM is read.
func AssessPosture(intel *risk.Intel, d *medmeshv1.Device, alerts []*medmeshv1.Alert, at time.Time) (*medmeshv1.DevicePosture, error) {
	var ext []posture.Destination
	for _, a := range alerts {
		if x, ok := posture.ExternalAlert(a, d.GetIpAddresses()); ok {
			ext = append(ext, x)
		}
	}
	return posture.Assess(intel, d, ext, "", "", at)
}
