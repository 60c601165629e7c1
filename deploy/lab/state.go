package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// State is what the lab wrote down about itself in StateDir/state.json.
type State struct {
	Config     Config    `json:"config"`
	Created    time.Time `json:"created"`
	Namespaces []string  `json:"namespaces"`
	Procs      []Proc    `json:"procs"`
	// Skipped names the components that were not started and why (for
	// example, a medmesh binary that does not have them yet).
	Skipped map[string]string `json:"skipped,omitempty"`
	// Complete is set once Up finished.
	Complete bool `json:"complete"`
}

const stateFile = "state.json"

func statePath(dir string) string { return filepath.Join(dir, stateFile) }

// ReadState reads the state file of the lab in dir; it returns (nil, nil)
// when there is none.
func ReadState(dir string) (*State, error) {
	b, err := os.ReadFile(statePath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read lab state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parse lab state %s: %w", statePath(dir), err)
	}
	return &s, nil
}

func writeState(dir string, s *State) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := statePath(dir) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("write lab state: %w", err)
	}
	return os.Rename(tmp, statePath(dir))
}
