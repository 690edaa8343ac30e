package app

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	v1 "k8s.io/api/core/v1"

	"github.com/volume-agent/volume-agent/pkg/volume"
)

// healthCheckTimeout bounds each plugin's health check.
const healthCheckTimeout = 5 * time.Second

// PluginStatus is one line of `volume-agent plugins`.
type PluginStatus struct {
	Name        string                          `json:"name"`
	AccessModes []v1.PersistentVolumeAccessMode `json:"accessModes,omitempty"`
	Health      volume.Health                   `json:"health"`
}

// PluginStatuses checks every loaded plugin's health, in name order.
func PluginStatuses(ctx context.Context, plugins *volume.VolumePluginMgr) []PluginStatus {
	var out []PluginStatus
	for _, plugin := range plugins.ListPlugins() {
		status := PluginStatus{Name: plugin.Name(), Health: volume.Health{Usable: true}}
		if persistent, ok := plugin.(volume.PersistentVolumePlugin); ok {
			status.AccessModes = persistent.GetAccessModes()
		}
		if checker, ok := plugin.(volume.HealthCheckingPlugin); ok {
			checkCtx, cancel := context.WithTimeout(ctx, healthCheckTimeout)
			status.Health = checker.CheckHealth(checkCtx)
			cancel()
		}
		out = append(out, status)
	}
	return out
}

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
			statuses := PluginStatuses(cmd.Context(), a.Plugins)
			if output == "json" {
				enc := json.NewEncoder(a.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(statuses)
			}
			w := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "PLUGIN\tACCESS MODES\tUSABLE\tMESSAGE")
			for _, s := range statuses {
				modes := make([]string, 0, len(s.AccessModes))
				for _, m := range s.AccessModes {
					modes = append(modes, string(m))
				}
				fmt.Fprintf(w, "%s\t%s\t%v\t%s\n", s.Name, orDash(strings.Join(modes, ",")), s.Health.Usable, orDash(healthLine(s.Health)))
			}
			if a.pluginLoadErr != nil {
				fmt.Fprintf(w, "\nfailed to load: %v\n", a.pluginLoadErr)
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

// healthLine renders a health message and its details on one line.
func healthLine(h volume.Health) string {
	keys := make([]string, 0, len(h.Details))
	for k := range h.Details {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := []string{h.Message}
	for _, k := range keys {
		parts = append(parts, k+"="+h.Details[k])
	}
	return strings.TrimSpace(strings.Join(parts, " "))
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
