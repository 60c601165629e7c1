package gossip

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/medmesh/medmesh/node/flow"
)

// Message types: the first byte of every user message and of the push/pull
// state this package gossips.
const (
	msgSighting byte = 1
	msgState    byte = 2
	msgLeave    byte = 3
)

// Sighting says "sensor Sensor, on floor Floor, saw device MAC last, at
// Time". It is a hint: nothing is enforced or deleted because of it.
type Sighting struct {
	MAC    flow.MAC
	Sensor string
	Floor  string
	Time   time.Time
}

// newer reports whether s should replace old: a later time wins, and equal
// times are broken by sensor name so every member picks the same winner.
func (s Sighting) newer(old Sighting) bool {
	if !s.Time.Equal(old.Time) {
		return s.Time.After(old.Time)
	}
	return s.Sensor > old.Sensor
}

// appendSighting appends the body of a sighting (without type byte):
// [mac 6][unix ns 8][len][sensor][len][floor].
func appendSighting(b []byte, s Sighting) []byte {
	b = append(b, s.MAC[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(s.Time.UnixNano()))
	b = append(b, byte(len(s.Sensor)))
	b = append(b, s.Sensor...)
	b = append(b, byte(len(s.Floor)))
	b = append(b, s.Floor...)
	return b
}

func readSighting(b []byte) (Sighting, []byte, error) {
	var s Sighting
	if len(b) < 14 {
		return s, nil, fmt.Errorf("sighting truncated")
	}
	copy(s.MAC[:], b[:6])
	s.Time = time.Unix(0, int64(binary.BigEndian.Uint64(b[6:14]))).UTC()
	var err error
	if s.Sensor, b, err = readString(b[14:]); err != nil {
		return s, nil, fmt.Errorf("sighting sensor: %w", err)
	}
	if s.Floor, b, err = readString(b); err != nil {
		return s, nil, fmt.Errorf("sighting floor: %w", err)
	}
	return s, b, nil
}

func encodeSightingMsg(s Sighting) []byte {
	return appendSighting(append(make([]byte, 0, 32+len(s.Sensor)+len(s.Floor)), msgSighting), s)
}

// sightingBroadcast is one queued sighting. A newer sighting of the same
// device invalidates an older one still in the queue.
type sightingBroadcast struct {
	mac flow.MAC
	msg []byte
}

var _ memberlist.NamedBroadcast = (*sightingBroadcast)(nil)

func (b *sightingBroadcast) Invalidates(other memberlist.Broadcast) bool {
	o, ok := other.(*sightingBroadcast)
	return ok && o.mac == b.mac
}
func (b *sightingBroadcast) Name() string    { return "sighting/" + b.mac.String() }
func (b *sightingBroadcast) Message() []byte { return b.msg }
func (b *sightingBroadcast) Finished()       {}

// leaveBroadcast announces that a member leaves on purpose.
type leaveBroadcast struct {
	name string
	msg  []byte
	sent chan struct{} // closed when done transmitting; may be nil
}

var _ memberlist.NamedBroadcast = (*leaveBroadcast)(nil)

func (b *leaveBroadcast) Invalidates(other memberlist.Broadcast) bool {
	o, ok := other.(*leaveBroadcast)
	return ok && o.name == b.name
}
func (b *leaveBroadcast) Name() string    { return "leave/" + b.name }
func (b *leaveBroadcast) Message() []byte { return b.msg }
func (b *leaveBroadcast) Finished() {
	if b.sent != nil {
		close(b.sent)
	}
}
