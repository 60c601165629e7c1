package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Daemon configuration files (--config FILE) are TOML. Each key is the
// name of one of the daemon's flags and takes the same value, so a unit
// file stays one line and a flag and its key never mean different things:
//
//	id = "c1"
//	data-dir = "/var/lib/medmesh/c1"
//	join = ["10.0.0.2:7400", "10.0.0.3:7400"]
//
// The command line wins over the file, and so do the MEDMESH_TLS_*
// environment variables; a key the daemon does not have is an error that
// names the key and its line. TOML because it is made for hand-edited
// configuration (comments, no indentation rules, no implicit typing: a
// YAML `no` is false, a TOML `no` is an error), and pelletier/go-toml/v2 is
// maintained and reports an unknown key with its position.
//
// The structs below are the schema: one per daemon, one field per key,
// the toml tag the flag's name. Pointers tell a key that is absent from
// one set to its zero value. TestConfigKeysAreFlags keeps them and the
// flags in step.

// coordinatorConfig is the file of `medmesh coordinator`.
type coordinatorConfig struct {
	ID              *string   `toml:"id"`
	DataDir         *string   `toml:"data-dir"`
	API             *string   `toml:"api"`
	Raft            *string   `toml:"raft"`
	Admin           *string   `toml:"admin"`
	FHIRAddr        *string   `toml:"fhir-addr"`
	Pprof           *bool     `toml:"pprof"`
	Dev             *bool     `toml:"dev"`
	BootstrapExpect *int      `toml:"bootstrap-expect"`
	Join            *[]string `toml:"join"`
	TLSCA           *string   `toml:"tls-ca"`
	TLSCert         *string   `toml:"tls-cert"`
	TLSKey          *string   `toml:"tls-key"`
	LogLevel        *string   `toml:"log-level"`
	IntelKey        *string   `toml:"intel-key"`
	IntelMaxAge     *duration `toml:"intel-max-age"`
	WebAddr         *string   `toml:"web-addr"`
	WebOrigin       *string   `toml:"web-origin"`
	OIDCIssuer      *string   `toml:"oidc-issuer"`
	OIDCClientID    *string   `toml:"oidc-client-id"`
	OIDCSecretFile  *string   `toml:"oidc-client-secret-file"`
	OIDCRedirectURL *string   `toml:"oidc-redirect-url"`
	OIDCRolesClaim  *string   `toml:"oidc-roles-claim"`
	OIDCRole        *[]string `toml:"oidc-role"`
	OIDCRolesFile   *string   `toml:"oidc-roles-file"`
	OIDCCA          *string   `toml:"oidc-ca"`
	OIDCName        *string   `toml:"oidc-name"`
	OIDCScopes      *[]string `toml:"oidc-scopes"`
}

// nodeConfig is the file of `medmesh node`.
type nodeConfig struct {
	ID            *string   `toml:"id"`
	Iface         *string   `toml:"iface"`
	Mode          *string   `toml:"mode"`
	Debug         *bool     `toml:"debug"`
	Generic       *bool     `toml:"generic"`
	Flows         *uint32   `toml:"flows"`
	Admin         *string   `toml:"admin"`
	Pprof         *bool     `toml:"pprof"`
	Coordinator   *[]string `toml:"coordinator"`
	SpoolDir      *string   `toml:"spool-dir"`
	LearnWindow   *duration `toml:"learn-window"`
	Gossip        *string   `toml:"gossip"`
	Join          *[]string `toml:"join"`
	GossipKeyFile *string   `toml:"gossip-key-file"`
	Campus        *string   `toml:"campus"`
	Dev           *bool     `toml:"dev"`
	TLSCA         *string   `toml:"tls-ca"`
	TLSCert       *string   `toml:"tls-cert"`
	TLSKey        *string   `toml:"tls-key"`
	Floor         *int      `toml:"floor"`
	Zone          *string   `toml:"zone"`
	Infra         *[]string `toml:"infra"`
	Collect       *string   `toml:"collect"`
	CollectSite   *[]string `toml:"collect-site"`
}

// enforcerConfig is the file of `medmesh enforcer`.
type enforcerConfig struct {
	ID             *string   `toml:"id"`
	Iface          *string   `toml:"iface"`
	Coordinator    *[]string `toml:"coordinator"`
	PinDir         *string   `toml:"pin-dir"`
	Admin          *string   `toml:"admin"`
	Pprof          *bool     `toml:"pprof"`
	MaxDevices     *int      `toml:"max-devices"`
	DNSServer      *[]string `toml:"dns-server"`
	DHCPServer     *[]string `toml:"dhcp-server"`
	Resolver       *[]string `toml:"resolver"`
	DNSMinTTL      *duration `toml:"dns-min-ttl"`
	DNSMaxTTL      *duration `toml:"dns-max-ttl"`
	AlarmAfter     *duration `toml:"alarm-after"`
	ReportInterval *duration `toml:"report-interval"`
	Debug          *bool     `toml:"debug"`
	Dev            *bool     `toml:"dev"`
	TLSCA          *string   `toml:"tls-ca"`
	TLSCert        *string   `toml:"tls-cert"`
	TLSKey         *string   `toml:"tls-key"`
}

// duration is a TOML string such as "30s" or "168h", as the flags take it.
type duration time.Duration

func (d *duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("want a duration such as \"30s\" or \"168h\": %w", err)
	}
	*d = duration(v)
	return nil
}

// envBeatsFile: flags whose environment variable, when set, wins over the
// file as the command line does.
var envBeatsFile = map[string]string{
	"tls-ca":   "MEDMESH_TLS_CA",
	"tls-cert": "MEDMESH_TLS_CERT",
	"tls-key":  "MEDMESH_TLS_KEY",
}

// parseConfig decodes a daemon's file into schema (a pointer to one of the
// structs above). An unknown key, a value of the wrong type or a syntax
// error names the line.
func parseConfig(data []byte, schema any) error {
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(schema)
	if err == nil {
		return nil
	}
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		var msgs []string
		for _, e := range strict.Errors {
			row, _ := e.Position()
			msgs = append(msgs, fmt.Sprintf("line %d: unknown key %q", row, strings.Join(e.Key(), ".")))
		}
		return errors.New(strings.Join(msgs, "; "))
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, _ := de.Position()
		if k := de.Key(); len(k) > 0 {
			return fmt.Errorf("line %d: key %q: %s", row, strings.Join(k, "."), de.Error())
		}
		return fmt.Errorf("line %d: %s", row, de.Error())
	}
	return err
}

// configSettings lists the keys schema holds after parseConfig, with each
// value as the flag takes it (lists as lists), in the schema's order.
func configSettings(schema any) []configSetting {
	v := reflect.ValueOf(schema).Elem()
	t := v.Type()
	var out []configSetting
	for i := range t.NumField() {
		f := v.Field(i)
		if f.IsNil() {
			continue
		}
		s := configSetting{key: t.Field(i).Tag.Get("toml")}
		switch x := f.Interface().(type) {
		case *string:
			s.value = *x
		case *bool:
			s.value = strconv.FormatBool(*x)
		case *int:
			s.value = strconv.Itoa(*x)
		case *uint32:
			s.value = strconv.FormatUint(uint64(*x), 10)
		case *duration:
			s.value = time.Duration(*x).String()
		case *[]string:
			s.list, s.isList = *x, true
		default:
			panic(fmt.Sprintf("config: field %s has type %T, which configSettings does not know", t.Field(i).Name, x))
		}
		out = append(out, s)
	}
	return out
}

type configSetting struct {
	key    string
	value  string
	list   []string
	isList bool
}

// applyConfig sets each flag of fs that the file holds, unless the command
// line (or its environment variable) already set it.
func applyConfig(path string, fs *pflag.FlagSet, schema any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return usagef("--config: %v", err)
	}
	if err := parseConfig(data, schema); err != nil {
		return usagef("--config %s: %v", path, err)
	}
	for _, s := range configSettings(schema) {
		f := fs.Lookup(s.key)
		if f == nil {
			return fmt.Errorf("--config %s: key %q has no flag (a bug: TestConfigKeysAreFlags should have caught it)", path, s.key)
		}
		if f.Changed {
			continue
		}
		if env, ok := envBeatsFile[s.key]; ok && os.Getenv(env) != "" {
			continue
		}
		if err := setFlag(f, s); err != nil {
			return usagef("--config %s: key %q: %v", path, s.key, err)
		}
	}
	return nil
}

// setFlag sets f to the file's value: a list replaces a slice flag's
// default, or becomes the comma-separated value of a string flag.
func setFlag(f *pflag.Flag, s configSetting) error {
	if !s.isList {
		return f.Value.Set(s.value)
	}
	if sv, ok := f.Value.(pflag.SliceValue); ok {
		return sv.Replace(s.list)
	}
	for _, e := range s.list {
		if strings.Contains(e, ",") {
			return fmt.Errorf("%q: an element may not hold a comma", e)
		}
	}
	return f.Value.Set(strings.Join(s.list, ","))
}

// withConfig gives a daemon command --config FILE, read before it runs.
// newSchema returns a fresh schema struct for the daemon.
func withConfig(cmd *cobra.Command, newSchema func() any) *cobra.Command {
	var path string
	cmd.Flags().StringVar(&path, "config", "", "TOML file of this command's flags (key = flag name, e.g. data-dir = \"/var/lib/medmesh\"); flags given on the command line win")
	pre := cmd.PreRunE
	cmd.PreRunE = func(c *cobra.Command, args []string) error {
		if path != "" {
			if err := applyConfig(path, c.Flags(), newSchema()); err != nil {
				return err
			}
		}
		if pre != nil {
			return pre(c, args)
		}
		return nil
	}
	return cmd
}
