package main

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/medmesh/medmesh/risk"
)

func newIntelCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "intel",
		Short: "Build, sign, check and inspect offline intelligence bundles (advisories, KEV, EPSS, end of life, recalls)",
		Long: "A hospital network has no route to the internet, so medmesh's vulnerability, end-of-life, recall\n" +
			"and default-credential data arrive as a bundle: a directory or .tar.gz of source files laid out by\n" +
			"kind (csaf/, osv/, kev/, epss/, endoflife/, openfda/, gudid/, credentials/) with a manifest.json of\n" +
			"every file's sha256, source and date, optionally signed with ed25519. Every command that takes a\n" +
			"bundle also takes a plain directory laid out by kind.",
	}
	c.AddCommand(newIntelKeygenCmd(), newIntelBundleCmd(), newIntelVerifyCmd(), newIntelStatusCmd())
	return c
}

func newIntelKeygenCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "keygen --out NAME",
		Short: "Make an ed25519 key pair for signing bundles: NAME.key (PKCS #8 PEM, 0600) and NAME.pub",
		Long: "keygen writes NAME.key, the private key that signs bundles (keep it on the workstation that\n" +
			"builds them), and NAME.pub, the public key every coordinator and `risk assess` checks them with\n" +
			"(--intel-key). Both are PEM, the forms `openssl genpkey -algorithm ed25519` uses.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usagef("keygen: --out is required")
			}
			priv, pub, err := risk.GenerateKey()
			if err != nil {
				return err
			}
			if err := writeNewFile(out+".key", priv, 0o600); err != nil {
				return err
			}
			if err := writeNewFile(out+".pub", pub, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "private key %s.key (sign with --sign)\npublic key  %s.pub (check with --intel-key)\n", out, out)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "write NAME.key and NAME.pub (new files)")
	return cmd
}

func newIntelBundleCmd() *cobra.Command {
	var out, sign string
	cmd := &cobra.Command{
		Use:   "bundle DIR... --out FILE [--sign KEY]",
		Short: "Make a .tar.gz bundle from directories laid out by kind, computing (and signing) its manifest",
		Long: "bundle reads every file under each DIR (csaf/, osv/, kev/, epss/, endoflife/, openfda/, gudid/,\n" +
			"credentials/; other files travel along as kind \"other\"), checks each with its format's loader\n" +
			"(a file that does not parse stops the bundle, naming the file), and writes FILE with a manifest of\n" +
			"every file's kind, size, sha256, source and date. Several DIRs merge; one path in two is an error.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, dirs []string) error {
			if out == "" {
				return usagef("bundle: --out is required")
			}
			var key ed25519.PrivateKey
			if sign != "" {
				k, err := risk.ReadPrivateKey(sign)
				if err != nil {
					return usagef("bundle: --sign: %v", err)
				}
				key = k
			}
			var buf bytes.Buffer
			n, err := risk.WriteBundle(&buf, dirs, time.Now().UTC().Truncate(time.Second), key)
			if err != nil {
				return fmt.Errorf("bundle: %w", err)
			}
			tmp := out + ".tmp"
			if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
				return err
			}
			if err := os.Rename(tmp, out); err != nil {
				return err
			}
			in, err := risk.Load(out, publicOf(key))
			if err != nil {
				return fmt.Errorf("bundle: the written bundle does not load: %w", err)
			}
			signed := "unsigned"
			if key != nil {
				signed = "signed"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %d files, %s, manifest sha256 %s\n", out, n, signed, in.Digest())
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "the .tar.gz to write")
	cmd.Flags().StringVar(&sign, "sign", "", "sign the manifest with this ed25519 private key (medmesh intel keygen)")
	return cmd
}

func publicOf(k ed25519.PrivateKey) ed25519.PublicKey {
	if k == nil {
		return nil
	}
	return k.Public().(ed25519.PublicKey)
}

// loadIntel loads a bundle, checking it against --intel-key when given.
func loadIntel(path, keyFile string) (*risk.Intel, error) {
	var key ed25519.PublicKey
	if keyFile != "" {
		k, err := risk.ReadPublicKey(keyFile)
		if err != nil {
			return nil, usagef("--intel-key: %v", err)
		}
		key = k
	}
	return risk.Load(path, key)
}

func newIntelVerifyCmd() *cobra.Command {
	var keyFile string
	cmd := &cobra.Command{
		Use:   "verify PATH [--intel-key KEY]",
		Short: "Check a bundle: every file against the manifest, the signature, every source against its format",
		Long: "verify loads PATH (a .tar.gz or a directory) as `risk assess` and the coordinators do and says\n" +
			"why it is refused: a missing file, a wrong sha256, a bad or missing signature (with --intel-key),\n" +
			"a truncated archive, an advisory failing the CSAF 2.0 schema. Exit status 1 when refused.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in, err := loadIntel(args[0], keyFile)
			if err != nil {
				return err
			}
			sig := "not signed"
			if in.Signed() && keyFile != "" {
				sig = "signature verified with " + filepath.Base(keyFile)
			} else if in.Signed() {
				sig = "signed (not checked: no --intel-key)"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok, manifest sha256 %s, %s\n", args[0], in.Digest(), sig)
			return nil
		},
	}
	cmd.Flags().StringVar(&keyFile, "intel-key", "", "ed25519 public key (PEM) the bundle must be signed with")
	return cmd
}

func newIntelStatusCmd() *cobra.Command {
	var path, keyFile, output string
	var maxAge time.Duration
	cmd := &cobra.Command{
		Use:   "status [--intel PATH] [--max-age 720h]",
		Short: "Show every source of a bundle (the cluster's active one, or PATH) with its date and age; warn past --max-age (never refuse)",
		Long: "Without --intel, status asks the coordinators (--addr) for the active bundle, every source in it\n" +
			"with its date and age, the SBOMs attached to device models and how many devices are assessed.\n" +
			"With --intel it reads a bundle file or directory here. Sources older than --max-age are marked;\n" +
			"assessments still use them.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return usagef("status: -o %q: want table or json", output)
			}
			if path == "" {
				return intelStatusCluster(cmd, output, maxAge)
			}
			in, err := loadIntel(path, keyFile)
			if err != nil {
				return err
			}
			st := in.Status(time.Now().UTC(), maxAge)
			w := cmd.OutOrStdout()
			if output == "json" {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(map[string]any{"digest": in.Digest(), "signed": in.Signed(), "max_age_days": int(maxAge.Hours() / 24), "sources": st})
			}
			fmt.Fprintf(w, "bundle %s\nmanifest sha256 %s\n\n", path, in.Digest())
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "KIND\tSOURCE\tFILES\tRECORDS\tDATE\tAGE\t")
			stale := 0
			for _, s := range st {
				date, age := "unknown", "-"
				if !s.Date.IsZero() {
					date, age = s.Date.Format(time.DateOnly), fmt.Sprintf("%dd", s.AgeDays)
				}
				warn := ""
				if s.Stale {
					warn, stale = "WARNING: older than --max-age", stale+1
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\n", s.Kind, s.Source, s.Files, s.Records, date, age, warn)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if stale > 0 {
				fmt.Fprintf(w, "\n%d source(s) older than %s: assessments still use them; bring a newer bundle.\n", stale, maxAge)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&path, "intel", "", "bundle (.tar.gz) or directory")
	cmd.Flags().StringVar(&keyFile, "intel-key", "", "ed25519 public key (PEM) the bundle must be signed with")
	cmd.Flags().DurationVar(&maxAge, "max-age", 30*24*time.Hour, "warn about sources older than this")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}
