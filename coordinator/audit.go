package coordinator

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/medmesh/medmesh/coordinator/internal/auditlog"
)

// AuditReport is what VerifyAudit found: segments, records, the head, gaps
// (records this coordinator never held, after a snapshot restore) and the
// first break, if any.
type AuditReport = auditlog.Report

// AuditDir is where a coordinator keeps its audit trail under its data
// directory.
func AuditDir(dataDir string) string { return filepath.Join(dataDir, "audit") }

// VerifyAudit recomputes every hash of the audit trail in a coordinator's
// data directory (stopped, or running: it reads only complete lines).
func VerifyAudit(dataDir string) (AuditReport, error) {
	dir := AuditDir(dataDir)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return AuditReport{}, fmt.Errorf("no audit trail in %s (expected %s)", dataDir, dir)
	}
	return auditlog.Verify(dir)
}
