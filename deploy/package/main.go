// Command package builds medmesh's Debian package, medmesh_VERSION_ARCH.deb,
// with nfpm as a library: the binary, man pages generated from the cobra
// command tree, bash/zsh/fish completions, commented example configuration
// in /etc/medmesh (conffiles), hardened systemd units, and maintainer
// scripts that make the medmesh system user. `make package` runs it once
// per architecture:
//
//	go run ./deploy/package -version 1.2.0 -arch arm64 \
//	    -bin bin/linux-arm64/medmesh -docs-from bin/medmesh -out dist
//
// -docs-from is a medmesh binary this machine can run (the man pages and
// completions are the same for every architecture); -bin is the one
// packaged.
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"
)

func main() {
	var s spec
	flag.StringVar(&s.Version, "version", "", "package version (a git describe is turned into a Debian version)")
	flag.StringVar(&s.Arch, "arch", "amd64", "Debian architecture: amd64 or arm64")
	flag.StringVar(&s.Binary, "bin", "", "the medmesh binary to package, built for -arch")
	flag.StringVar(&s.DocsFrom, "docs-from", "", "a medmesh binary this machine runs, for man pages and completions (default: -bin)")
	flag.StringVar(&s.OutDir, "out", "dist", "directory for the .deb")
	flag.StringVar(&s.Maintainer, "maintainer", defaultMaintainer, "Maintainer field")
	flag.Parse()
	if s.DocsFrom == "" {
		s.DocsFrom = s.Binary
	}
	s.MTime = time.Now().UTC().Truncate(time.Second)
	if e := os.Getenv("SOURCE_DATE_EPOCH"); e != "" {
		sec, err := strconv.ParseInt(e, 10, 64)
		if err != nil {
			fmt.Fprintf(os.Stderr, "package: SOURCE_DATE_EPOCH %q: %v\n", e, err)
			os.Exit(2)
		}
		s.MTime = time.Unix(sec, 0).UTC()
	}
	path, err := build(s)
	if err != nil {
		fmt.Fprintln(os.Stderr, "package:", err)
		os.Exit(1)
	}
	fmt.Println(path)
}
