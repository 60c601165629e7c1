//go:build linux

package xdp

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// CheckPinDir returns dir cleaned, or an error when it is not an absolute
// path strictly under BPFFS or, when it exists, is not a directory on a
// bpffs (symbolic links resolved): a pin directory must never point the
// enforcer at, or let an uninstall delete from, an ordinary directory.
func CheckPinDir(dir string) (string, error) {
	if !filepath.IsAbs(dir) {
		return "", fmt.Errorf("pin dir %q: not an absolute path", dir)
	}
	clean := filepath.Clean(dir)
	if !under(clean) {
		return "", fmt.Errorf("pin dir %q is not under %s", dir, BPFFS)
	}
	real, err := filepath.EvalSymlinks(clean)
	if errors.Is(err, os.ErrNotExist) {
		return clean, nil
	}
	if err != nil {
		return "", fmt.Errorf("pin dir %q: %w", dir, err)
	}
	if !under(real) {
		return "", fmt.Errorf("pin dir %q resolves to %s, not under %s", dir, real, BPFFS)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", fmt.Errorf("pin dir %q: %w", dir, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("pin dir %q is not a directory", dir)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(real, &st); err != nil {
		return "", fmt.Errorf("statfs pin dir %q: %w", dir, err)
	}
	if st.Type != unix.BPF_FS_MAGIC {
		return "", fmt.Errorf("pin dir %q is not on a bpffs (filesystem magic %#x)", dir, st.Type)
	}
	return clean, nil
}

func under(p string) bool {
	rel, err := filepath.Rel(BPFFS, p)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, "../")
}

// PinNames are the names Load and Attach pin in a pin directory: one per
// map of the program, the maps of DNS-named rules, and the XDP link.
func PinNames() ([]string, error) {
	spec, err := loadEnforcer()
	if err != nil {
		return nil, fmt.Errorf("load enforcer spec: %w", err)
	}
	names := []string{linkPin, namedDevicesMap, dnsNamesMap}
	for _, m := range spec.Maps {
		names = append(names, m.Name) // Load pins every map by its name
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// Unpin removes the pinned link and maps in dir, by name: the program
// detaches once no process holds it. This is the only way to stop
// enforcing. Anything else in dir is left alone and returned in kept;
// dir itself is removed only when that leaves it empty.
func Unpin(dir string) (kept []string, err error) {
	dir, err = CheckPinDir(dir)
	if err != nil {
		return nil, err
	}
	names, err := PinNames()
	if err != nil {
		return nil, err
	}
	var errs []error
	if l, err := link.LoadPinnedLink(filepath.Join(dir, linkPin), nil); err == nil {
		errs = append(errs, l.Unpin(), l.Close())
	} else if !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("load pinned link: %w", err))
	}
	for _, name := range names {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		errs = append(errs, err)
	case len(entries) == 0:
		if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	default:
		for _, e := range entries {
			kept = append(kept, e.Name())
		}
	}
	return kept, errors.Join(errs...)
}
