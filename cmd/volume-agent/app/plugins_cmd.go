package app

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/volume-agent/volume-agent/pkg/volumemanager"
)

func (a *App) newPluginsCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "plugins",
		Short: "List the probed volume plugins and whether each is usable on this host",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "text", "json"); err != nil {
				return err
			}
			if err := a.load(cmd); err != nil {
				return err
			}
			statuses := volumemanager.CheckPlugins(cmd.Context(), a.Plugins, time.Now)
			if output == "json" {
				enc := json.NewEncoder(a.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(statuses)
			}
			w := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
			printPlugins(w, statuses)
			if a.pluginLoadErr != nil {
				fmt.Fprintf(w, "\nfailed to load: %v\n", a.pluginLoadErr)
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// checkOutput validates an -o value.
func checkOutput(output string, allowed ...string) error {
	for _, a := range allowed {
		if output == a {
			return nil
		}
	}
	return invalidInput(fmt.Errorf("invalid value %q for --output: must be one of %s", output, strings.Join(allowed, ", ")))
}
