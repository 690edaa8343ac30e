package config

import (
	"maps"
	"strings"
)

// Command-line flags that set configuration fields. The loader registers
// them and validation names them in its messages.
const (
	FlagRootDir                   = "root-dir"
	FlagPodManifestPath           = "pod-manifest-path"
	FlagNodeName                  = "node-name"
	FlagNodeIP                    = "node-ip"
	FlagLogFormat                 = "log-format"
	FlagGitAllowedProtocols       = "git-allowed-protocols"
	FlagGitTimeout                = "git-timeout"
	FlagFlockerControlServiceHost = "flocker-control-service-host"
	FlagFlockerControlServicePort = "flocker-control-service-port"
	FlagWorkers                   = "workers"
	FlagOperationTimeout          = "operation-timeout"
	FlagResyncPeriod              = "resync-period"
	FlagTeardownOnExit            = "teardown-on-exit"
	FlagTeardownOnExitTimeout     = "teardown-on-exit-timeout"
	FlagSocket                    = "socket"
	FlagSocketMode                = "socket-mode"
	FlagMetricsAddress            = "metrics-address"
	FlagHookDir                   = "hook-dir"
	FlagFaultHooksFile            = "fault-hooks-file"
	FlagCSIEndpoint               = "csi-endpoint"
	FlagCSIDriverName             = "csi-driver-name"
	FlagKubeletRegistrationDir    = "kubelet-registration-dir"
)

// Environment variables that set Flocker fields, as read by the Flocker
// command-line tools.
const (
	EnvFlockerControlServiceHost = "FLOCKER_CONTROL_SERVICE_HOST"
	EnvFlockerControlServicePort = "FLOCKER_CONTROL_SERVICE_PORT"
	EnvFlockerCAFile             = "FLOCKER_CONTROL_SERVICE_CA_FILE"
	EnvFlockerClientCertFile     = "FLOCKER_CONTROL_SERVICE_CLIENT_CERT_FILE"
	EnvFlockerClientKeyFile      = "FLOCKER_CONTROL_SERVICE_CLIENT_KEY_FILE"
)

// FieldSource names what, besides the configuration file, can set a field.
type FieldSource struct {
	// Flag is the command-line flag without dashes, or "".
	Flag string
	// EnvVar is the environment variable, or "".
	EnvVar string
}

// fieldSources is the one table of field path -> flag and environment
// variable. Paths are written as field.Path.String() prints them.
var fieldSources = map[string]FieldSource{
	"rootDir":                        {Flag: FlagRootDir},
	"podManifestPath":                {Flag: FlagPodManifestPath},
	"nodeName":                       {Flag: FlagNodeName},
	"nodeIP":                         {Flag: FlagNodeIP},
	"logging.format":                 {Flag: FlagLogFormat},
	"gitRepo.allowedProtocols":       {Flag: FlagGitAllowedProtocols},
	"gitRepo.timeout":                {Flag: FlagGitTimeout},
	"flocker.controlServiceHost":     {Flag: FlagFlockerControlServiceHost, EnvVar: EnvFlockerControlServiceHost},
	"flocker.port":                   {Flag: FlagFlockerControlServicePort, EnvVar: EnvFlockerControlServicePort},
	"flocker.caFile":                 {EnvVar: EnvFlockerCAFile},
	"flocker.clientCertFile":         {EnvVar: EnvFlockerClientCertFile},
	"flocker.clientKeyFile":          {EnvVar: EnvFlockerClientKeyFile},
	"volumeManager.workers":          {Flag: FlagWorkers},
	"volumeManager.operationTimeout": {Flag: FlagOperationTimeout},
	"volumeManager.resyncPeriod":     {Flag: FlagResyncPeriod},
	"volumeManager.teardownOnExit":   {Flag: FlagTeardownOnExit},
	"server.socketPath":              {Flag: FlagSocket},
	"server.socketMode":              {Flag: FlagSocketMode},
	"server.metricsAddress":          {Flag: FlagMetricsAddress},
	"hooks.directories":              {Flag: FlagHookDir},
	"hooks.faultHooksFile":           {Flag: FlagFaultHooksFile},
	"csi.endpoint":                   {Flag: FlagCSIEndpoint},
	"csi.driverName":                 {Flag: FlagCSIDriverName},
	"csi.kubeletRegistrationDir":     {Flag: FlagKubeletRegistrationDir},

	"volumeManager.teardownOnExitTimeout": {Flag: FlagTeardownOnExitTimeout},
}

// SourceOf returns the flag and environment variable that set the field at
// fieldPath (such as "rootDir" or "hooks.directories[1]"; list indexes and
// map keys are ignored). Both are empty when only the file sets the field.
func SourceOf(fieldPath string) FieldSource {
	if i := strings.IndexByte(fieldPath, '['); i >= 0 {
		fieldPath = fieldPath[:i]
	}
	return fieldSources[fieldPath]
}

// FieldSources returns a copy of the field path -> source table.
func FieldSources() map[string]FieldSource {
	return maps.Clone(fieldSources)
}

// String describes the source as it appears in messages, such as
// "--flocker-control-service-port or $FLOCKER_CONTROL_SERVICE_PORT".
func (s FieldSource) String() string {
	var parts []string
	if s.Flag != "" {
		parts = append(parts, "--"+s.Flag)
	}
	if s.EnvVar != "" {
		parts = append(parts, "$"+s.EnvVar)
	}
	return strings.Join(parts, " or ")
}
