//go:build !linux

package xdp

import (
	"errors"
	"runtime"
	"time"

	"github.com/cilium/ebpf"

	"github.com/medmesh/medmesh/node/flow"
)

// ErrNotLinux is what Probe, Load and every method return off Linux: the
// sensor program is XDP, which only Linux has.
var ErrNotLinux = errors.New("the sensor needs Linux (XDP); this build is for " + runtime.GOOS)

// Datapath is a loaded sensor program with its maps. Off Linux, Load never
// returns one; the methods exist so portable code compiles.
type Datapath struct{}

// Probe returns ErrNotLinux.
func Probe() error { return ErrNotLinux }

// Load returns ErrNotLinux.
func Load(Config) (*Datapath, error) { return nil, ErrNotLinux }

// The methods are never reached off Linux, where Load returns no
// Datapath; they mirror the Linux ones that portable code calls.
func (d *Datapath) ForEachFlow(func(FlowKey, *flow.Record) bool) error { return ErrNotLinux }
func (d *Datapath) TakeFlow(FlowKey) (flow.Record, bool, error) {
	return flow.Record{}, false, ErrNotLinux
}
func (d *Datapath) Close() error                               { return nil }
func (d *Datapath) Program() *ebpf.Program                     { return nil }
func (d *Datapath) FlowCapacity() uint32                       { return 0 }
func (d *Datapath) FlowCache() (on bool, why string)           { return false, ErrNotLinux.Error() }
func (d *Datapath) Attach(string, bool) (AttachMode, error)    { return "", ErrNotLinux }
func (d *Datapath) Detach() error                              { return nil }
func (d *Datapath) SetClock(int64) error                       { return ErrNotLinux }
func (d *Datapath) Now() int64                                 { return 0 }
func (d *Datapath) Stats() (Stats, error)                      { return Stats{}, ErrNotLinux }
func (d *Datapath) ExtendSamples(flow.Tuple, uint8) error      { return ErrNotLinux }
func (d *Datapath) SetBaseline(flow.MAC, []BaselineRule) error { return ErrNotLinux }
func (d *Datapath) ClearBaseline(flow.MAC) error               { return ErrNotLinux }
func (d *Datapath) NewReader() (*Reader, error)                { return nil, ErrNotLinux }

// Reader reads events from the ring buffer.
type Reader struct{}

func (r *Reader) Read(time.Time, *Event) error { return ErrNotLinux }
func (r *Reader) Close() error                 { return nil }
