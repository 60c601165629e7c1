package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

const netnsDir = "/var/run/netns"

// inNS runs fn on an OS thread switched into the named namespace ("" is the
// host's). If the thread cannot be switched back it is left locked, so the
// runtime retires it with the goroutine rather than reusing it.
func inNS(name string, fn func() error) error {
	if name == "" {
		return fn()
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(name)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open netns %s: %w", name, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns %s: %w", name, err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		return errors.Join(ferr, fmt.Errorf("leave netns %s: %w", name, err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// createNS makes a named namespace, or reuses it if it exists.
func createNS(name string) error {
	if _, err := os.Stat(filepath.Join(netnsDir, name)); err == nil {
		return nil
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	h, err := netns.NewNamed(name)
	if err == nil {
		h.Close()
	}
	if serr := netns.Set(orig); serr != nil {
		return errors.Join(err, fmt.Errorf("return to host netns: %w", serr))
	}
	runtime.UnlockOSThread()
	if err != nil {
		return fmt.Errorf("create netns %s: %w", name, err)
	}
	return nil
}

// listNS returns the named namespaces starting with prefix.
func listNS(prefix string) ([]string, error) {
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

func deleteNS(name string) error {
	err := netns.DeleteNamed(name)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		// A bind mount that is already gone leaves an empty file behind.
		if rerr := os.Remove(filepath.Join(netnsDir, name)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			return fmt.Errorf("delete netns %s: %w", name, errors.Join(err, rerr))
		}
	}
	return nil
}

// nsHandles caches a netlink handle and a namespace fd per namespace.
type nsHandles struct {
	ns map[string]netns.NsHandle
	nl map[string]*netlink.Handle
}

func newNSHandles() *nsHandles {
	return &nsHandles{ns: map[string]netns.NsHandle{}, nl: map[string]*netlink.Handle{}}
}

func (h *nsHandles) get(name string) (*netlink.Handle, netns.NsHandle, error) {
	if nl, ok := h.nl[name]; ok {
		return nl, h.ns[name], nil
	}
	var fd netns.NsHandle
	var err error
	if name == "" {
		fd, err = netns.GetFromPid(os.Getpid())
	} else {
		fd, err = netns.GetFromName(name)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("open netns %q: %w", name, err)
	}
	nl, err := netlink.NewHandleAt(fd)
	if err != nil {
		fd.Close()
		return nil, 0, fmt.Errorf("netlink handle in %q: %w", name, err)
	}
	h.ns[name], h.nl[name] = fd, nl
	return nl, fd, nil
}

func (h *nsHandles) Close() {
	for k, nl := range h.nl {
		nl.Close()
		fd := h.ns[k]
		fd.Close()
	}
}

// writeSysctl writes a /proc/sys value inside a namespace.
func writeSysctl(ns, path, value string) error {
	return inNS(ns, func() error {
		if err := os.WriteFile(filepath.Join("/proc/sys", path), []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s in %q: %w", path, ns, err)
		}
		return nil
	})
}
