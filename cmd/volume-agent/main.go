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
	// The first SIGINT or SIGTERM asks the command to stop; the second makes
	// `run` stop at once, without finishing its tear-down on exit.
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	ctx, stop := context.WithCancel(context.Background())
	stopNowCtx, stopNow := context.WithCancel(context.Background())
	go func() {
		<-signals
		stop()
		<-signals
		stopNow()
	}()
	code := app.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, app.WithStopNow(stopNowCtx))
	os.Exit(code)
}
