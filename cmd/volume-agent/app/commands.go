package app

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/volume-agent/volume-agent/pkg/apis/config"
	"github.com/volume-agent/volume-agent/pkg/apis/config/loader"
)

// commands returns volume-agent's subcommands, each with the configuration
// flags it uses: every one for the commands that load the plugins, only those
// that find the agent's socket for its clients.
func (a *App) commands() []*cobra.Command {
	agent := []*cobra.Command{
		a.newPluginsCommand(),
		a.newValidateCommand(),
		a.newSetupCommand(),
		a.newTeardownCommand(),
		a.newRunCommand(),
	}
	for _, cmd := range agent {
		loader.AddFlags(cmd.Flags(), loader.Default())
	}
	clients := []*cobra.Command{
		a.newStatusCommand(),
		a.newGetCommand(),
		a.newApplyCommand(),
		a.newDeleteCommand(),
	}
	for _, cmd := range clients {
		addClientFlags(cmd.Flags())
	}
	return append(append([]*cobra.Command{a.newVersionCommand()}, agent...), clients...)
}

// clientFlags are the configuration flags of the agent's clients: where its
// socket is, and how to log.
var clientFlags = []string{config.FlagRootDir, config.FlagSocket, config.FlagLogFormat}

func addClientFlags(fs *pflag.FlagSet) {
	all := pflag.NewFlagSet("config", pflag.ContinueOnError)
	loader.AddFlags(all, loader.Default())
	for _, name := range clientFlags {
		fs.AddFlag(all.Lookup(name))
	}
}

// usageErrorsAreInvalid makes every usage error of cmd and its subcommands
// exit ExitInvalid: a stray or unknown argument here, a missing required flag
// in PreRunE (which cobra runs before its own check); a bad flag goes through
// the root's FlagErrorFunc.
func usageErrorsAreInvalid(cmd *cobra.Command) {
	if cmd.HasParent() {
		check := cmd.Args
		if check == nil {
			check = cobra.NoArgs
		}
		cmd.Args = func(c *cobra.Command, args []string) error {
			if err := check(c, args); err != nil {
				return invalidInput(err)
			}
			return nil
		}
	} else {
		// The root takes no arguments: the first one names an unknown
		// command. Setting Args makes cobra call it instead of failing with
		// its own error.
		if cmd.SuggestionsMinimumDistance <= 0 {
			cmd.SuggestionsMinimumDistance = 2
		}
		cmd.Args = func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
			if suggestions := c.SuggestionsFor(args[0]); len(suggestions) > 0 {
				msg += "; did you mean " + strings.Join(suggestions, " or ") + "?"
			}
			return invalidInput(errors.New(msg))
		}
		cmd.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
	}
	if cmd.PreRunE == nil {
		cmd.PreRunE = func(c *cobra.Command, _ []string) error {
			if err := c.ValidateRequiredFlags(); err != nil {
				return invalidInput(err)
			}
			return nil
		}
	}
	for _, sub := range cmd.Commands() {
		usageErrorsAreInvalid(sub)
	}
}
