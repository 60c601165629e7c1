// Package credential reads lists of publicly documented default
// credentials of medical devices: YAML with, per entry, the vendor, a model
// pattern (shell glob, case-insensitive), the protocol, the account and the
// SHA-256 of the password, and the public source that documents it. The
// password itself is never in the list, and the hash never leaves this
// package: a default password's hash is as good as the password to anyone
// with a word list, so findings name the account and protocol only. A
// sensor that sees a login can hash what it saw and ask Known.
//
// The list shipped with medmesh (defaults.yaml, embedded) is loaded first;
// a bundle's credentials/*.yaml add to it.
package credential

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Entry is one default account.
type Entry struct {
	Vendor         string
	Model          string // glob; "*" is every model of the vendor
	Protocol       string
	User           string
	Source         string
	passwordSHA256 string
}

// Protocols an entry may name.
var Protocols = []string{"telnet", "ftp", "ssh", "http", "https", "smb", "snmp", "vnc", "rdp", "dicom", "hl7", "serial", "any"}

//go:embed defaults.yaml
var defaults []byte

// DefaultSource names the shipped list.
const DefaultSource = "medmesh default-credential list"

// shipped is the shipped list, parsed once.
var shipped = func() []Entry {
	e, err := Parse(defaults)
	if err != nil {
		panic("shipped defaults.yaml: " + err.Error())
	}
	return e
}()

// Defaults returns (a copy of) the shipped list.
func Defaults() []Entry { return slices.Clone(shipped) }

var hexSHA = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Parse reads a list; errors name the line of the entry at fault.
func Parse(data []byte) ([]Entry, error) {
	var doc struct {
		Credentials []yaml.Node `yaml:"credentials"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	if doc.Credentials == nil {
		return nil, fmt.Errorf("no credentials: list")
	}
	var out []Entry
	for _, n := range doc.Credentials {
		var raw struct {
			Vendor         string  `yaml:"vendor"`
			Model          string  `yaml:"model"`
			Protocol       string  `yaml:"protocol"`
			User           string  `yaml:"user"`
			PasswordSHA256 string  `yaml:"password_sha256"`
			Source         string  `yaml:"source"`
			Password       *string `yaml:"password"`
		}
		if err := n.Decode(&raw); err != nil {
			return nil, fmt.Errorf("line %d: %w", n.Line, err)
		}
		switch {
		case raw.Password != nil:
			return nil, fmt.Errorf("line %d: a password in clear; give password_sha256 instead", n.Line)
		case raw.Vendor == "" || raw.User == "" && raw.Protocol != "snmp":
			return nil, fmt.Errorf("line %d: vendor and user are required", n.Line)
		case !slices.Contains(Protocols, raw.Protocol):
			return nil, fmt.Errorf("line %d: protocol %q, want one of %s", n.Line, raw.Protocol, strings.Join(Protocols, ", "))
		case !hexSHA.MatchString(raw.PasswordSHA256):
			return nil, fmt.Errorf("line %d: password_sha256 must be 64 lower-case hex digits", n.Line)
		case raw.Source == "":
			return nil, fmt.Errorf("line %d: source is required (where the default is publicly documented)", n.Line)
		}
		if raw.Model == "" {
			raw.Model = "*"
		}
		if _, err := path.Match(strings.ToLower(raw.Model), ""); err != nil {
			return nil, fmt.Errorf("line %d: model pattern %q: %v", n.Line, raw.Model, err)
		}
		out = append(out, Entry{Vendor: raw.Vendor, Model: raw.Model, Protocol: raw.Protocol, User: raw.User, Source: raw.Source, passwordSHA256: raw.PasswordSHA256})
	}
	return out, nil
}

// MatchModel reports whether the entry's pattern covers model.
func (e Entry) MatchModel(model string) bool {
	ok, _ := path.Match(strings.ToLower(e.Model), strings.ToLower(strings.TrimSpace(model)))
	return ok
}

// Known reports whether password is this entry's default.
func (e Entry) Known(password string) bool {
	s := sha256.Sum256([]byte(password))
	return hex.EncodeToString(s[:]) == e.passwordSHA256
}
