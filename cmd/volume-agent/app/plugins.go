package app

import (
	"github.com/volume-agent/volume-agent/pkg/apis/config"
	"github.com/volume-agent/volume-agent/pkg/volume"
	"github.com/volume-agent/volume-agent/pkg/volume/csi"
	"github.com/volume-agent/volume-agent/pkg/volume/emptydir"
	"github.com/volume-agent/volume-agent/pkg/volume/flocker"
	"github.com/volume-agent/volume-agent/pkg/volume/gitrepo"
)

// PluginProber returns volume plugins configured from the agent's
// configuration.
type PluginProber func(cfg *config.AgentConfiguration) []volume.VolumePlugin

// BuiltinPlugins returns the plugins volume-agent probes at start. The list
// is decided here, by the binary, not by dynamic linking or init() side
// effects.
func BuiltinPlugins(cfg *config.AgentConfiguration) []volume.VolumePlugin {
	var plugins []volume.VolumePlugin
	plugins = append(plugins, emptydir.ProbeVolumePlugins()...)
	plugins = append(plugins, gitrepo.ProbeVolumePlugins(gitrepo.Config{
		AllowedProtocols: cfg.GitRepo.AllowedProtocols,
		Timeout:          cfg.GitRepo.Timeout.Duration,
		MaxSizeBytes:     cfg.GitRepo.MaxSizeBytes,
		MinGitVersion:    cfg.GitRepo.MinGitVersion,
		Cache: gitrepo.CacheConfig{
			Enabled:  cfg.GitRepo.Cache.Enabled,
			MaxBytes: cfg.GitRepo.Cache.MaxBytes,
			Mode:     cfg.GitRepo.Cache.Mode,
		},
	})...)
	plugins = append(plugins, flocker.ProbeVolumePlugins(flocker.Config{
		ControlServiceHost: cfg.Flocker.ControlServiceHost,
		Port:               int(cfg.Flocker.Port),
		CAFile:             cfg.Flocker.CAFile,
		ClientCertFile:     cfg.Flocker.ClientCertFile,
		ClientKeyFile:      cfg.Flocker.ClientKeyFile,
		MoveTimeout:        cfg.Flocker.MoveTimeout.Duration,
	})...)
	csiConfig := csi.Config{RegistrationDir: cfg.ResolvedPluginRegistrationDir(), CallTimeout: cfg.CSI.CallTimeout.Duration}
	for _, d := range cfg.CSI.Drivers {
		csiConfig.Drivers = append(csiConfig.Drivers, csi.DriverConfig{Name: d.Name, Endpoint: d.Endpoint})
	}
	plugins = append(plugins, csi.ProbeVolumePlugins(csiConfig)...)
	return plugins
}
