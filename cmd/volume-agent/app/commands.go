package app

import "github.com/spf13/cobra"

// commands returns volume-agent's subcommands.
func (a *App) commands() []*cobra.Command {
	return []*cobra.Command{
		a.newVersionCommand(),
		a.newPluginsCommand(),
		a.newValidateCommand(),
		a.newSetupCommand(),
		a.newTeardownCommand(),
		a.newRunCommand(),
		a.newStatusCommand(),
		a.newGetCommand(),
		a.newApplyCommand(),
		a.newDeleteCommand(),
	}
}
