package gossip

import (
	"errors"
	"fmt"
)

// Role is what a member does in the mesh.
type Role string

// The roles a member can have.
const (
	RoleSensor      Role = "sensor"
	RoleCoordinator Role = "coordinator"
	RoleEnforcer    Role = "enforcer"
)

func (r Role) code() (byte, error) {
	switch r {
	case RoleSensor:
		return 1, nil
	case RoleCoordinator:
		return 2, nil
	case RoleEnforcer:
		return 3, nil
	}
	return 0, fmt.Errorf("unknown role %q", string(r))
}

func roleFromCode(b byte) (Role, error) {
	switch b {
	case 1:
		return RoleSensor, nil
	case 2:
		return RoleCoordinator, nil
	case 3:
		return RoleEnforcer, nil
	}
	return "", fmt.Errorf("unknown role code %d", b)
}

// Meta is the node metadata every member gossips about itself.
type Meta struct {
	Role    Role
	Floor   string
	Zone    string
	APIAddr string
	Version string
}

// metaVersion is the first byte of encoded metadata. A decoder rejects
// versions it does not know rather than guessing.
const metaVersion byte = 1

// maxField bounds each string so the encoding stays far inside
// memberlist.MetaMaxSize (512 bytes): 2 + 4*(1+64) = 262 bytes at most.
const maxField = 64

var errMetaShort = errors.New("metadata truncated")

// encode writes [version][role][len floor][floor][len zone][zone]
// [len api][api][len version][version].
func (m Meta) encode() ([]byte, error) {
	rc, err := m.Role.code()
	if err != nil {
		return nil, err
	}
	fields := []string{m.Floor, m.Zone, m.APIAddr, m.Version}
	n := 2
	for _, f := range fields {
		if len(f) > maxField {
			return nil, fmt.Errorf("metadata field %q longer than %d bytes", f, maxField)
		}
		n += 1 + len(f)
	}
	b := make([]byte, 0, n)
	b = append(b, metaVersion, rc)
	for _, f := range fields {
		b = append(b, byte(len(f)))
		b = append(b, f...)
	}
	return b, nil
}

func decodeMeta(b []byte) (Meta, error) {
	if len(b) < 2 {
		return Meta{}, errMetaShort
	}
	if b[0] != metaVersion {
		return Meta{}, fmt.Errorf("metadata version %d not supported", b[0])
	}
	role, err := roleFromCode(b[1])
	if err != nil {
		return Meta{}, err
	}
	rest := b[2:]
	var fields [4]string
	for i := range fields {
		fields[i], rest, err = readString(rest)
		if err != nil {
			return Meta{}, err
		}
	}
	return Meta{Role: role, Floor: fields[0], Zone: fields[1], APIAddr: fields[2], Version: fields[3]}, nil
}

func readString(b []byte) (string, []byte, error) {
	if len(b) < 1 {
		return "", nil, errMetaShort
	}
	n := int(b[0])
	if len(b) < 1+n {
		return "", nil, errMetaShort
	}
	return string(b[1 : 1+n]), b[1+n:], nil
}
