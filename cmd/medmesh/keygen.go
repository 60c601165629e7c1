package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/spf13/cobra"
)

// gossipKeyBytes is the size of a gossip key made by keygen: AES-256.
const gossipKeyBytes = 32

func newKeygenCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "keygen",
		Short: "Make a gossip encryption key (base64 of 32 random bytes) for --gossip-key-file",
		Long: "keygen makes a new AES-256 key for the sensors' gossip and prints it, or with --out writes\n" +
			"it to a new file readable only by its owner. Every sensor of a campus gets the same key file:\n" +
			"\n" +
			"  medmesh keygen --out /etc/medmesh/gossip.key\n" +
			"  medmesh node ... --gossip 10.0.5.2:7402 --gossip-key-file /etc/medmesh/gossip.key\n" +
			"\n" +
			"To rotate, put the new key first in the file and keep the old one on the next line until\n" +
			"every sensor has the new file.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			line, err := newGossipKey()
			if err != nil {
				return err
			}
			if out == "" {
				_, err := fmt.Fprintln(cmd.OutOrStdout(), line)
				return err
			}
			return writeNewFile(out, []byte(line+"\n"), 0o600)
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "write the key to this new file (mode 0600) instead of printing it")
	return cmd
}

// newGossipKey returns a new gossip key, base64-encoded.
func newGossipKey() (string, error) {
	k := make([]byte, gossipKeyBytes)
	if _, err := rand.Read(k); err != nil {
		return "", fmt.Errorf("keygen: %w", err)
	}
	return base64.StdEncoding.EncodeToString(k), nil
}

// writeNewFile writes data to a file that must not exist yet.
func writeNewFile(path string, data []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return usagef("%s exists; remove it first to make a new key", path)
		}
		return fmt.Errorf("keygen: %w", err)
	}
	_, err = f.Write(data)
	return errors.Join(err, f.Close())
}
