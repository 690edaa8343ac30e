// Package validation checks a defaulted internal AgentConfiguration.
package validation

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	utilvalidation "k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apimachinery/pkg/util/version"

	"github.com/volume-agent/volume-agent/pkg/apis/config"
)

// MaxSocketPathLength is the longest unix socket path Linux accepts
// (sun_path holds 108 bytes including the terminating NUL).
const MaxSocketPathLength = 107

// GitProtocols are the values gitRepo.allowedProtocols may hold.
var GitProtocols = sets.New("https", "ssh", "git", "http", "file")

var logFormats = sets.New(config.LogFormatText, config.LogFormatJSON)

// gitCacheModes are the values gitRepo.cache.mode takes.
var gitCacheModes = sets.New("auto", "copy", "overlay")

// ValidateAgentConfiguration checks every field of a defaulted configuration
// and returns every problem found, not only the first; nil means valid.
// It touches neither the file system nor the network.
//
// The Field of each error is the field path followed, when a flag or
// environment variable also sets that field, by its name in parentheses, so
// that an error reads like
//
//	rootDir (--root-dir): Invalid value: "rel/path": must be an absolute path
//
// Use ToAggregate on the result to get a single error.
func ValidateAgentConfiguration(cfg *config.AgentConfiguration) field.ErrorList {
	var allErrs field.ErrorList
	allErrs = append(allErrs, validateAbsolutePath(field.NewPath("rootDir"), cfg.RootDir, true)...)
	allErrs = append(allErrs, validateAbsolutePath(field.NewPath("podManifestPath"), cfg.PodManifestPath, false)...)
	allErrs = append(allErrs, validateNodeName(field.NewPath("nodeName"), cfg.NodeName)...)
	if cfg.NodeIP != "" {
		allErrs = append(allErrs, utilvalidation.IsValidIP(field.NewPath("nodeIP"), cfg.NodeIP)...)
	}
	allErrs = append(allErrs, validateLogging(field.NewPath("logging"), &cfg.Logging)...)
	allErrs = append(allErrs, validateGitRepo(field.NewPath("gitRepo"), &cfg.GitRepo)...)
	allErrs = append(allErrs, validateFlocker(field.NewPath("flocker"), &cfg.Flocker)...)
	allErrs = append(allErrs, validateVolumeManager(field.NewPath("volumeManager"), &cfg.VolumeManager)...)
	allErrs = append(allErrs, validateServer(field.NewPath("server"), cfg)...)
	allErrs = append(allErrs, validateHooks(field.NewPath("hooks"), &cfg.Hooks)...)
	allErrs = append(allErrs, validateCSI(field.NewPath("csi"), &cfg.CSI)...)

	for _, err := range allErrs {
		if source := config.SourceOf(err.Field).String(); source != "" {
			err.Field = fmt.Sprintf("%s (%s)", err.Field, source)
		}
	}
	return allErrs
}

func validateNodeName(fldPath *field.Path, name string) field.ErrorList {
	if name == "" {
		return field.ErrorList{field.Required(fldPath, "the host name could not be read; set the node name")}
	}
	if msgs := utilvalidation.IsDNS1123Subdomain(name); len(msgs) > 0 {
		return field.ErrorList{field.Invalid(fldPath, name, strings.Join(msgs, "; "))}
	}
	return nil
}

func validateLogging(fldPath *field.Path, logging *config.LoggingConfiguration) field.ErrorList {
	var allErrs field.ErrorList
	if logging.Verbosity < 0 {
		allErrs = append(allErrs, field.Invalid(fldPath.Child("verbosity"), logging.Verbosity, "must not be negative"))
	}
	if !logFormats.Has(logging.Format) {
		allErrs = append(allErrs, field.NotSupported(fldPath.Child("format"), logging.Format, sets.List(logFormats)))
	}
	return allErrs
}

func validateGitRepo(fldPath *field.Path, git *config.GitRepoConfiguration) field.ErrorList {
	var allErrs field.ErrorList
	protocolsPath := fldPath.Child("allowedProtocols")
	if len(git.AllowedProtocols) == 0 {
		allErrs = append(allErrs, field.Required(protocolsPath, "at least one protocol must be allowed"))
	}
	seen := sets.New[string]()
	for i, protocol := range git.AllowedProtocols {
		switch {
		case !GitProtocols.Has(protocol):
			allErrs = append(allErrs, field.NotSupported(protocolsPath.Index(i), protocol, sets.List(GitProtocols)))
		case seen.Has(protocol):
			allErrs = append(allErrs, field.Duplicate(protocolsPath.Index(i), protocol))
		}
		seen.Insert(protocol)
	}
	allErrs = append(allErrs, validatePositiveDuration(fldPath.Child("timeout"), git.Timeout)...)
	if git.MaxSizeBytes < 0 {
		allErrs = append(allErrs, field.Invalid(fldPath.Child("maxSizeBytes"), git.MaxSizeBytes, "must not be negative (0 means no limit)"))
	}
	if _, err := version.ParseGeneric(git.MinGitVersion); err != nil {
		allErrs = append(allErrs, field.Invalid(fldPath.Child("minGitVersion"), git.MinGitVersion, `must be a version such as "2.30.0"`))
	}
	cachePath := fldPath.Child("cache", "maxBytes")
	switch {
	case git.Cache.MaxBytes < 0:
		allErrs = append(allErrs, field.Invalid(cachePath, git.Cache.MaxBytes, "must not be negative"))
	case git.Cache.Enabled && git.Cache.MaxBytes == 0:
		allErrs = append(allErrs, field.Invalid(cachePath, git.Cache.MaxBytes, "must be greater than zero when the cache is enabled"))
	}
	if git.Cache.Mode != "" && !gitCacheModes.Has(git.Cache.Mode) {
		allErrs = append(allErrs, field.NotSupported(fldPath.Child("cache", "mode"), git.Cache.Mode, sets.List(gitCacheModes)))
	}
	return allErrs
}

func validateFlocker(fldPath *field.Path, flocker *config.FlockerConfiguration) field.ErrorList {
	var allErrs field.ErrorList
	hostPath := fldPath.Child("controlServiceHost")
	host := flocker.ControlServiceHost
	switch {
	case host == "":
		allErrs = append(allErrs, field.Required(hostPath, ""))
	case net.ParseIP(host) == nil && len(utilvalidation.IsDNS1123Subdomain(strings.ToLower(host))) > 0:
		allErrs = append(allErrs, field.Invalid(hostPath, host, "must be a host name or an IP address, without scheme or port"))
	}
	for _, msg := range utilvalidation.IsValidPortNum(int(flocker.Port)) {
		allErrs = append(allErrs, field.Invalid(fldPath.Child("port"), flocker.Port, msg))
	}
	allErrs = append(allErrs, validateAbsolutePath(fldPath.Child("caFile"), flocker.CAFile, true)...)
	allErrs = append(allErrs, validateAbsolutePath(fldPath.Child("clientCertFile"), flocker.ClientCertFile, true)...)
	allErrs = append(allErrs, validateAbsolutePath(fldPath.Child("clientKeyFile"), flocker.ClientKeyFile, true)...)
	allErrs = append(allErrs, validatePositiveDuration(fldPath.Child("moveTimeout"), flocker.MoveTimeout)...)
	return allErrs
}

func validateVolumeManager(fldPath *field.Path, vm *config.VolumeManagerConfiguration) field.ErrorList {
	var allErrs field.ErrorList
	allErrs = append(allErrs, validatePositiveDuration(fldPath.Child("resyncPeriod"), vm.ResyncPeriod)...)
	if vm.Workers < 1 {
		allErrs = append(allErrs, field.Invalid(fldPath.Child("workers"), vm.Workers, "must be at least 1"))
	}
	allErrs = append(allErrs, validatePositiveDuration(fldPath.Child("initialBackoff"), vm.InitialBackoff)...)
	allErrs = append(allErrs, validatePositiveDuration(fldPath.Child("maxBackoff"), vm.MaxBackoff)...)
	if vm.MaxBackoff.Duration < vm.InitialBackoff.Duration {
		allErrs = append(allErrs, field.Invalid(fldPath.Child("maxBackoff"), vm.MaxBackoff.Duration.String(),
			fmt.Sprintf("must not be less than initialBackoff (%s)", vm.InitialBackoff.Duration)))
	}
	allErrs = append(allErrs, validatePositiveDuration(fldPath.Child("operationTimeout"), vm.OperationTimeout)...)
	allErrs = append(allErrs, validatePositiveDuration(fldPath.Child("healthCheckPeriod"), vm.HealthCheckPeriod)...)
	allErrs = append(allErrs, validatePositiveDuration(fldPath.Child("sizeCheckPeriod"), vm.SizeCheckPeriod)...)
	allErrs = append(allErrs, validatePositiveDuration(fldPath.Child("verifyPeriod"), vm.VerifyPeriod)...)
	allErrs = append(allErrs, validatePositiveDuration(fldPath.Child("sourceLoadTimeout"), vm.SourceLoadTimeout)...)
	allErrs = append(allErrs, validatePositiveDuration(fldPath.Child("teardownOnExitTimeout"), vm.TeardownOnExitTimeout)...)
	return allErrs
}

func validateServer(fldPath *field.Path, cfg *config.AgentConfiguration) field.ErrorList {
	var allErrs field.ErrorList
	server := &cfg.Server
	socketPath := fldPath.Child("socketPath")
	allErrs = append(allErrs, validateAbsolutePath(socketPath, server.SocketPath, false)...)
	if resolved := cfg.ResolvedSocketPath(); len(resolved) > MaxSocketPathLength {
		detail := fmt.Sprintf("must be at most %d bytes long, the limit of a unix socket path", MaxSocketPathLength)
		if server.SocketPath == "" {
			detail += "; the default socket path is inside rootDir, so shorten rootDir or set the socket path"
		}
		allErrs = append(allErrs, field.Invalid(socketPath, resolved, detail))
	}
	if _, err := config.ParseSocketMode(server.SocketMode); err != nil {
		allErrs = append(allErrs, field.Invalid(fldPath.Child("socketMode"), server.SocketMode,
			`must be octal permission bits between 0000 and 0777, such as "0600"`))
	}
	if server.MetricsAddress != "" {
		allErrs = append(allErrs, validateListenAddress(fldPath.Child("metricsAddress"), server.MetricsAddress)...)
	}
	return allErrs
}

func validateHooks(fldPath *field.Path, hooks *config.HooksConfiguration) field.ErrorList {
	var allErrs field.ErrorList
	dirsPath := fldPath.Child("directories")
	seen := sets.New[string]()
	for i, dir := range hooks.Directories {
		if seen.Has(dir) {
			allErrs = append(allErrs, field.Duplicate(dirsPath.Index(i), dir))
		}
		seen.Insert(dir)
		allErrs = append(allErrs, validateAbsolutePath(dirsPath.Index(i), dir, true)...)
	}
	allErrs = append(allErrs, validateAbsolutePath(fldPath.Child("faultHooksFile"), hooks.FaultHooksFile, false)...)
	return allErrs
}

// CSIEndpointScheme starts csi.endpoint.
const CSIEndpointScheme = "unix://"

// maxCSIDriverNameLength is the CSI spec's limit of a driver name.
const maxCSIDriverNameLength = 63

func validateCSI(fldPath *field.Path, csi *config.CSIConfiguration) field.ErrorList {
	var allErrs field.ErrorList
	endpointPath := fldPath.Child("endpoint")
	if csi.Endpoint != "" {
		path, ok := strings.CutPrefix(csi.Endpoint, CSIEndpointScheme)
		switch {
		case !ok || !filepath.IsAbs(path):
			allErrs = append(allErrs, field.Invalid(endpointPath, csi.Endpoint, "must be unix:// followed by an absolute path, as unix:///run/volume-agent/csi.sock"))
		case len(path) > MaxSocketPathLength:
			allErrs = append(allErrs, field.Invalid(endpointPath, csi.Endpoint,
				fmt.Sprintf("the socket path must be at most %d bytes long, the limit of a unix socket path", MaxSocketPathLength)))
		}
	}
	namePath := fldPath.Child("driverName")
	if msgs := utilvalidation.IsDNS1123Subdomain(csi.DriverName); len(msgs) > 0 {
		allErrs = append(allErrs, field.Invalid(namePath, csi.DriverName, strings.Join(msgs, "; ")))
	} else if len(csi.DriverName) > maxCSIDriverNameLength {
		allErrs = append(allErrs, field.TooLong(namePath, csi.DriverName, maxCSIDriverNameLength))
	}
	dirPath := fldPath.Child("kubeletRegistrationDir")
	allErrs = append(allErrs, validateAbsolutePath(dirPath, csi.KubeletRegistrationDir, false)...)
	if dir := csi.KubeletRegistrationDir; dir != "" {
		if csi.Endpoint == "" {
			allErrs = append(allErrs, field.Invalid(dirPath, dir, "registering with the kubelet needs csi.endpoint (--"+config.FlagCSIEndpoint+")"))
		}
		if sock := filepath.Join(dir, csi.DriverName+"-reg.sock"); len(sock) > MaxSocketPathLength {
			allErrs = append(allErrs, field.Invalid(dirPath, dir,
				fmt.Sprintf("the registration socket %q must be at most %d bytes long, the limit of a unix socket path", sock, MaxSocketPathLength)))
		}
	}
	allErrs = append(allErrs, validateAbsolutePath(fldPath.Child("pluginRegistrationDir"), csi.PluginRegistrationDir, false)...)
	names := map[string]bool{}
	for i, d := range csi.Drivers {
		driverPath := fldPath.Child("drivers").Index(i)
		switch msgs := utilvalidation.IsDNS1123Subdomain(d.Name); {
		case len(msgs) > 0:
			allErrs = append(allErrs, field.Invalid(driverPath.Child("name"), d.Name, strings.Join(msgs, "; ")))
		case len(d.Name) > maxCSIDriverNameLength:
			allErrs = append(allErrs, field.TooLong(driverPath.Child("name"), d.Name, maxCSIDriverNameLength))
		case names[d.Name]:
			allErrs = append(allErrs, field.Duplicate(driverPath.Child("name"), d.Name))
		}
		names[d.Name] = true
		if path, ok := strings.CutPrefix(d.Endpoint, CSIEndpointScheme); !ok || !filepath.IsAbs(path) {
			allErrs = append(allErrs, field.Invalid(driverPath.Child("endpoint"), d.Endpoint, "must be unix:// followed by an absolute path, as unix:///run/csi/driver.sock"))
		}
	}
	if csi.CallTimeout.Duration < 0 {
		allErrs = append(allErrs, field.Invalid(fldPath.Child("callTimeout"), csi.CallTimeout.Duration.String(), "must not be negative"))
	}
	return allErrs
}

// validateAbsolutePath requires value to be an absolute path; an empty value
// is an error only when required.
func validateAbsolutePath(fldPath *field.Path, value string, required bool) field.ErrorList {
	switch {
	case value == "" && required:
		return field.ErrorList{field.Required(fldPath, "must be an absolute path")}
	case value != "" && !filepath.IsAbs(value):
		return field.ErrorList{field.Invalid(fldPath, value, "must be an absolute path")}
	}
	return nil
}

func validatePositiveDuration(fldPath *field.Path, d metav1.Duration) field.ErrorList {
	if d.Duration <= 0 {
		return field.ErrorList{field.Invalid(fldPath, d.Duration.String(), "must be greater than zero")}
	}
	return nil
}

// validateListenAddress requires "host:port" or ":port" with a numeric port;
// port 0 asks for any free port.
func validateListenAddress(fldPath *field.Path, address string) field.ErrorList {
	_, port, err := net.SplitHostPort(address)
	if err != nil {
		return field.ErrorList{field.Invalid(fldPath, address, `must be "host:port" or ":port"`)}
	}
	number, err := strconv.Atoi(port)
	if err != nil {
		return field.ErrorList{field.Invalid(fldPath, address, "port must be a number")}
	}
	if msgs := utilvalidation.IsInRange(number, 0, 65535); len(msgs) > 0 {
		return field.ErrorList{field.Invalid(fldPath, address, "port "+strings.Join(msgs, "; "))}
	}
	return nil
}
