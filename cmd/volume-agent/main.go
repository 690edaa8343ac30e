// Command volume-agent sets pod volumes up on a node and keeps them set up:
// once, with the setup and teardown commands, or as a daemon with run.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/volume-agent/volume-agent/cmd/volume-agent/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := app.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
