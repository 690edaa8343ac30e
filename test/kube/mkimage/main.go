// Command mkimage writes volume-agent's OCI image tarball: a root file system
// directory plus the volume-agent binary as /usr/local/bin/volume-agent, the
// entrypoint. Run by `make image` (test/kube/make-image.sh).
//
//	mkimage --rootfs DIR --binary FILE --name REF --output FILE.tar
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/volume-agent/volume-agent/test/kube/oci"
)

func main() {
	rootfs := flag.String("rootfs", "", "root file system directory (required)")
	binary := flag.String("binary", "", "the static volume-agent binary (required)")
	name := flag.String("name", "docker.io/library/volume-agent:dev", "image reference ctr gives the imported image")
	output := flag.String("output", "", "the tarball to write (required)")
	flag.Parse()
	if *rootfs == "" || *binary == "" || *output == "" {
		fmt.Fprintln(os.Stderr, "mkimage: --rootfs, --binary and --output are required")
		os.Exit(2)
	}
	err := oci.WriteFile(*output, oci.Image{
		Name:       *name,
		Rootfs:     *rootfs,
		Files:      []oci.File{{Path: "/usr/local/bin/volume-agent", Source: *binary, Mode: 0o755}},
		Entrypoint: []string{"/usr/local/bin/volume-agent"},
		Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "mkimage: %v\n", err)
		os.Exit(1)
	}
}
