// Command image builds medmesh's container image without Docker, with
// go-containerregistry: a scratch-style image holding only the static
// binary, the CA bundle and an /etc/passwd naming root and nonroot
// (65532), one per architecture, under one OCI image index, written as an
// OCI image layout in a tar file. `make image` runs it:
//
//	go run ./deploy/image -version 1.2.0 -bin amd64=bin/image-amd64/medmesh \
//	    -bin arm64=bin/image-arm64/medmesh -out dist/medmesh-image_1.2.0.oci.tar
//
// Load it with `skopeo copy oci-archive:FILE docker://REGISTRY/medmesh:TAG`
// or `podman load -i FILE`.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
)

type binFlags map[string]string

func (b binFlags) String() string { return fmt.Sprint(map[string]string(b)) }
func (b binFlags) Set(s string) error {
	arch, path, ok := strings.Cut(s, "=")
	if !ok || arch == "" || path == "" {
		return fmt.Errorf("%q: want ARCH=PATH", s)
	}
	b[arch] = path
	return nil
}

func main() {
	s := spec{Binaries: binFlags{}, CABundle: "/etc/ssl/certs/ca-certificates.crt", Created: time.Unix(0, 0).UTC()}
	flag.StringVar(&s.Version, "version", "dev", "image version (label and ref name)")
	flag.Var(binFlags(s.Binaries), "bin", "ARCH=PATH of a static medmesh binary (repeat per architecture)")
	flag.StringVar(&s.CABundle, "ca", s.CABundle, "CA certificate bundle to include")
	flag.StringVar(&s.Out, "out", "", "the OCI layout tar file to write")
	flag.Parse()
	if e := os.Getenv("SOURCE_DATE_EPOCH"); e != "" {
		var sec int64
		if _, err := fmt.Sscan(e, &sec); err != nil {
			fmt.Fprintf(os.Stderr, "image: SOURCE_DATE_EPOCH %q: %v\n", e, err)
			os.Exit(2)
		}
		s.Created = time.Unix(sec, 0).UTC()
	}
	if err := build(s); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
	fmt.Println(s.Out)
}
