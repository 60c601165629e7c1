package auditlog

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
)

// Export hands fn every segment of the store in dir, oldest first, cut
// after the last record with a sequence number of at most upTo: a backup
// holds the trail up to its snapshot's audit head and nothing a replica
// restored from it would derive differently. Segments past upTo are left
// out. The store may be open and appending: only complete lines count.
func Export(dir string, upTo uint64, fn func(name string, data []byte) error) error {
	segs, err := segments(dir)
	if err != nil {
		return err
	}
	for _, n := range segs {
		data, err := os.ReadFile(segPath(dir, n))
		if err != nil {
			return fmt.Errorf("audit export: %w", err)
		}
		keep, done := 0, false
		for keep < len(data) {
			nl := bytes.IndexByte(data[keep:], '\n')
			if nl < 0 {
				done = true // torn or being written: past any synced head
				break
			}
			e, err := parseLine(data[keep : keep+nl])
			if err != nil {
				return fmt.Errorf("audit export: %s: %w", segPath(dir, n), err)
			}
			if e.Seq > upTo {
				done = true
				break
			}
			keep += nl + 1
		}
		if keep > 0 {
			if err := fn(filepath.Base(segPath(dir, n)), data[:keep]); err != nil {
				return err
			}
		}
		if done {
			return nil
		}
	}
	return nil
}
