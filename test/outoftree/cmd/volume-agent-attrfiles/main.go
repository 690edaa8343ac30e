// Command volume-agent-attrfiles is volume-agent with the out-of-tree
// attribute-files plugin added, through the public entry point
// cmd/volume-agent/app.Run.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/volume-agent/volume-agent/cmd/volume-agent/app"
	"github.com/volume-agent/volume-agent/pkg/apis/config"
	"github.com/volume-agent/volume-agent/pkg/volume"

	"example.com/volume-agent-outoftree/attrfiles"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is volume-agent's Run with the attribute-files plugin added.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return app.Run(ctx, args, stdin, stdout, stderr, app.WithPlugins(func(*config.AgentConfiguration) []volume.VolumePlugin {
		return attrfiles.ProbeVolumePlugins()
	}))
}
